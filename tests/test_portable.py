"""The portable runtime's bad inputs: a corrupt exported folder, one from another version, a missing runtime.
Each is one clear line from `captioner caption` and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import asdict

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

import captioner
from captioner.cli.main import main
from captioner.errors import ArtifactError, CaptionerError
from captioner.export.manifest import EXPORT_VERSION, MANIFEST_FILE, VOCABULARY_FILE, Manifest
from captioner.text.vocabulary import SPECIAL_TOKENS, Vocabulary

VOCAB = Vocabulary([*SPECIAL_TOKENS, "red", "dog"])


def _fake_export(folder, runtime: str = "onnx", payload: bytes = b"not an onnx graph"):
    """A folder laid out as an export (manifest, vocabulary, three model files) whose model files are junk."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = {"onnx": ".onnx", "litert": ".tflite"}[runtime]
    files = {name: f"{name}{suffix}" for name in ("encoder", "prepare", "step")}
    for name in files.values():
        (folder / name).write_bytes(payload)
    (folder / VOCABULARY_FILE).write_text(json.dumps(VOCAB.to_dict()))
    info = {"encoder": "mobilenet_v2", "image_size": 224, "vocab_size": len(VOCAB),
            "vocab_fingerprint": VOCAB.fingerprint}
    Manifest(runtime, files, 2, 2, (7, 7), 224, info, captioner_version="0.1.0").write(folder)
    return folder


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(path)
    return path


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("captioner: error: "), err
    return err[0]


def _edit_manifest(folder, **changes) -> None:
    data = json.loads((folder / MANIFEST_FILE).read_text())
    (folder / MANIFEST_FILE).write_text(json.dumps({**data, **changes}))


def test_a_folder_from_another_version_is_one_line(tmp_path, photo, capsys):
    folder = _fake_export(tmp_path / "export")
    _edit_manifest(folder, version=EXPORT_VERSION + 1, captioner_version="9.0")
    assert main(["caption", str(photo), "--model", str(folder)]) == 1
    line = _one_line(capsys)
    assert f"export format version {EXPORT_VERSION + 1}" in line and "captioner 9.0" in line and "again" in line


@pytest.mark.parametrize("damage", ["junk model files", "manifest not JSON", "manifest incomplete",
                                    "a file missing", "vocabulary altered", "no manifest"])
def test_a_corrupt_folder_is_one_line(tmp_path, photo, capsys, damage):
    folder = _fake_export(tmp_path / "export")
    if damage == "manifest not JSON":
        (folder / MANIFEST_FILE).write_text("{ truncated")
    elif damage == "manifest incomplete":
        data = json.loads((folder / MANIFEST_FILE).read_text())
        del data["files"]
        (folder / MANIFEST_FILE).write_text(json.dumps(data))
    elif damage == "a file missing":
        (folder / "step.onnx").unlink()
    elif damage == "vocabulary altered":
        (folder / VOCABULARY_FILE).write_text(json.dumps({**VOCAB.to_dict(), "tokens": [*SPECIAL_TOKENS, "cat"]}))
    elif damage == "no manifest":
        (folder / MANIFEST_FILE).unlink()
    assert main(["caption", str(photo), "--model", str(folder)]) == 1
    line = _one_line(capsys)
    assert str(folder) in line
    with pytest.raises(ArtifactError):
        captioner.load(folder)


def test_a_missing_runtime_is_one_line(tmp_path, photo):
    """Without onnxruntime installed, the command says what to install, in one line, and exits 1."""
    folder = _fake_export(tmp_path / "export")
    script = textwrap.dedent(f"""
        import sys
        class Refuse:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("onnxruntime", "tensorflow", "keras"):
                    raise ImportError(name)
        sys.meta_path.insert(0, Refuse())
        from captioner.cli.main import main
        sys.exit(main(["caption", {str(photo)!r}, "--model", {str(folder)!r}]))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "captioner: error: this model was exported for onnx, whose runtime onnxruntime is not installed: pip install "
        "onnxruntime (or pip install -r requirements-app.txt)."]


def test_load_refuses_a_manifest_of_another_kind(tmp_path):
    folder = _fake_export(tmp_path / "export")
    _edit_manifest(folder, format="something-else")
    with pytest.raises(CaptionerError, match="not a captioner export manifest"):
        captioner.load(folder)
    assert asdict(Manifest("onnx", {}, 1, 1, (7, 7), 224, {}))["version"] == EXPORT_VERSION
