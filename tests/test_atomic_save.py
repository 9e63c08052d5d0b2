"""Saving never leaves a half-written mymodel.h5 or tokenizer.pkl: killed, failing or out of disk space,
the previous complete files stay in place (or none appear), and failures clean their temporary files."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from conftest import ROOT

from captioner.artifacts import model_files
from captioner.artifacts.model_files import ModelInfo, load_model, load_vocabulary, save_model, save_vocabulary
from captioner.models.base import build_caption_model
from captioner.text.vocabulary import Vocabulary

VOCAB = Vocabulary.build(["a dog runs on the grass", "a red circle on a grey background"], min_count=1,
                         max_length=6)
INFO = ModelInfo("mobilenet_v2", 224, len(VOCAB), VOCAB.fingerprint)


def _model(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return build_caption_model(len(VOCAB), (49, 1280), embedding_dim=8, units=16, attention_units=8)


def _weights(model: keras.Model) -> list[np.ndarray]:
    return [np.asarray(w, dtype="float16") for w in model.get_weights()]  # as stored: float16


def _assert_first_model_intact(folder: Path, first: list[np.ndarray]) -> None:
    model, vocab, _ = load_model(folder / "mymodel.h5", folder / "tokenizer.pkl")
    assert vocab.fingerprint == VOCAB.fingerprint
    for saved, expected in zip(_weights(model), first, strict=True):
        np.testing.assert_array_equal(saved, expected)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in ("mymodel.h5", "tokenizer.pkl"))


# A process that saves one model, then pauses in the middle of writing a second one (at the given fraction of
# the HDF5 datasets the save writes) and waits there to be killed.
PAUSING_SAVER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import h5py
    sys.path.insert(0, sys.argv[3])
    from test_atomic_save import INFO, VOCAB, _model
    from captioner.artifacts.model_files import save_model

    folder, fraction = Path(sys.argv[1]), float(sys.argv[2])
    calls = [0]
    create_dataset = h5py.Group.create_dataset

    def counting(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == pause_at:
            print("paused", flush=True)
            time.sleep(600)
        return create_dataset(self, *args, **kwargs)

    pause_at = -1
    h5py.Group.create_dataset = counting
    save_model(_model(0), VOCAB, INFO, folder / "mymodel.h5", folder / "tokenizer.pkl")
    total, calls[0] = calls[0], 0
    pause_at = max(1, int(total * fraction))
    print("saved", total, flush=True)
    save_model(_model(1), VOCAB, INFO, folder / "mymodel.h5", folder / "tokenizer.pkl")
    print("finished", flush=True)
""")


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
@pytest.mark.parametrize("fraction", [0.25, 0.75])  # in the float32 save, and in the float16 copy
def test_sigkill_during_a_save_leaves_the_previous_model(tmp_path, fraction):
    script = tmp_path / "saver.py"
    script.write_text(PAUSING_SAVER)
    folder = tmp_path / "model"
    folder.mkdir()
    saver = subprocess.Popen([sys.executable, str(script), str(folder), str(fraction), str(ROOT / "tests")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        lines = []
        for line in saver.stdout:
            lines.append(line)
            if line.startswith("paused"):
                break
        assert lines and lines[-1].startswith("paused"), "".join(lines) + saver.stderr.read()
        assert _leftovers(folder), "the save is under way: a temporary file is being written"
        saver.send_signal(signal.SIGKILL)
        saver.wait(timeout=30)
    finally:
        saver.kill()
        saver.wait()
    _assert_first_model_intact(folder, _weights(_model(0)))
    save_model(_model(2), VOCAB, INFO, folder / "mymodel.h5", folder / "tokenizer.pkl")
    assert _leftovers(folder) == []  # the next save clears what the killed one left
    _assert_first_model_intact(folder, _weights(_model(2)))


def test_an_error_during_a_save_keeps_the_previous_model_and_cleans_up(tmp_path, monkeypatch):
    first = _model(0)
    save_model(first, VOCAB, INFO, tmp_path / "mymodel.h5", tmp_path / "tokenizer.pkl")
    copy = model_files._copy_as_float16

    def copy_half_then_fail(source: h5py.Group, target: h5py.Group) -> None:
        for name in list(source)[:1]:
            source.copy(name, target)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model_files, "_copy_as_float16", copy_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_model(_model(1), VOCAB, INFO, tmp_path / "mymodel.h5", tmp_path / "tokenizer.pkl")
    monkeypatch.setattr(model_files, "_copy_as_float16", copy)
    _assert_first_model_intact(tmp_path, _weights(first))
    assert _leftovers(tmp_path) == []


def test_a_first_save_that_fails_leaves_nothing(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(model_files, "_copy_as_float16", fail)
    with pytest.raises(OSError):
        save_model(_model(0), VOCAB, INFO, tmp_path / "mymodel.h5", tmp_path / "tokenizer.pkl")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE")
def test_disk_full_while_writing_a_vocabulary_keeps_the_previous_one(tmp_path):
    path = tmp_path / "tokenizer.pkl"
    save_vocabulary(VOCAB, path)
    bigger = Vocabulary.build([" ".join(f"word{i}" for i in range(5000))], min_count=1)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit, write() fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))  # "the disk is full" past 4 kB per file
    try:
        with pytest.raises(OSError):
            save_vocabulary(bigger, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert load_vocabulary(path).fingerprint == VOCAB.fingerprint
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.pkl"]
