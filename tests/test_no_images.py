"""Nothing to work on is an error: `captioner caption` and `captioner extract` with no image say where
they looked, in one line, and exit non-zero."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from PIL import Image

from captioner.artifacts.model_files import ModelInfo, save_model
from captioner.cli.main import main
from captioner.models.base import build_caption_model
from captioner.text.vocabulary import Vocabulary

VOCAB = Vocabulary.build(["a dog runs on the grass"], min_count=1, max_length=6)


@pytest.fixture(scope="module")
def model_args(tmp_path_factory) -> list[str]:
    """A saved random-weight model; with `--encoder-weights none` the CLI runs without downloads."""
    folder = tmp_path_factory.mktemp("model")
    keras.utils.set_random_seed(0)
    model = build_caption_model(len(VOCAB), (49, 1280), embedding_dim=8, units=16, attention_units=8)
    save_model(model, VOCAB, ModelInfo("mobilenet_v2", 224, len(VOCAB), VOCAB.fingerprint),
               folder / "mymodel.h5", folder / "tokenizer.pkl")
    return ["--model", str(folder / "mymodel.h5"), "--tokenizer", str(folder / "tokenizer.pkl"),
            "--encoder-weights", "none"]


def _error(capsys) -> str:
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("captioner: error: "), err
    assert not out.strip()
    return lines[0]


def test_caption_on_an_empty_folder(model_args, tmp_path, capsys):
    assert main(["caption", str(tmp_path), *model_args]) == 1
    line = _error(capsys)
    assert f"{tmp_path}: no image found in this folder" in line and ".jpg" in line


def test_caption_on_a_folder_without_image_files(model_args, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a photo")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "deeper" / "data.csv").write_text("a,b\n")
    assert main(["caption", str(tmp_path), *model_args]) == 1
    assert f"{tmp_path}: no image found in this folder or its subfolders" in _error(capsys)


def test_caption_on_a_glob_that_matches_nothing(model_args, tmp_path, capsys):
    pattern = str(tmp_path / "*.jpg")
    assert main(["caption", pattern, *model_args]) == 1
    assert f"{pattern}: no image found" in _error(capsys)


def test_caption_on_a_glob_that_matches_only_folders(model_args, tmp_path, capsys):
    for name in ("2023", "2024"):
        (tmp_path / name).mkdir()
    pattern = str(tmp_path / "20*")
    assert main(["caption", pattern, *model_args]) == 1
    assert f"{pattern}: no image found: the pattern matches only folders" in _error(capsys)


def test_an_empty_folder_among_images_is_named(model_args, tmp_path, capsys):
    image = tmp_path / "a.jpg"
    Image.new("RGB", (32, 32), "red").save(image)
    (tmp_path / "empty").mkdir()
    assert main(["caption", str(image), str(tmp_path / "empty"), *model_args]) == 1
    assert f"{tmp_path / 'empty'}: no image found" in _error(capsys)


def test_batch_output_on_an_empty_folder_writes_nothing(model_args, tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    out = tmp_path / "captions.csv"
    assert main(["caption", str(tmp_path / "photos"), "--output", str(out), *model_args]) == 1
    assert f"{tmp_path / 'photos'}: no image found" in _error(capsys)
    assert not out.exists()


def _captions(folder, names):
    (folder / "Images").mkdir(parents=True, exist_ok=True)
    (folder / "captions.txt").write_text("image,caption\n" + "".join(f"{n},A photo of {n}\n" for n in names))


def test_extract_when_no_captioned_image_is_there(tmp_path, capsys):
    _captions(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])  # Images/ is empty
    code = main(["extract", "--data", str(tmp_path), "--encoder-weights", "none",
                 "--cache-dir", str(tmp_path / "cache")])
    assert code == 1
    line = _error(capsys)
    assert f"none of the 3 images its captions name is in {tmp_path / 'Images'}" in line and "--images" in line
    assert not (tmp_path / "cache").exists()


def test_extract_when_no_image_can_be_read(tmp_path, capsys):
    names = ["a.jpg", "b.jpg", "c.jpg"]
    _captions(tmp_path, names)
    for name in names:
        (tmp_path / "Images" / name).write_bytes(b"\xff\xd8 not really a jpeg")
    code = main(["extract", "--data", str(tmp_path), "--encoder-weights", "none",
                 "--cache-dir", str(tmp_path / "cache")])
    out, err = capsys.readouterr()
    assert code == 1
    assert sum(line.startswith("skipped ") for line in err.splitlines()) == 3
    assert err.strip().splitlines()[-1] == (
        f"captioner: error: {tmp_path}: none of its 3 images could be read, so no features were cached (see the "
        f"skipped files above); replace or re-download the images.")
    assert "images cached" not in out


def test_extract_with_some_readable_images_still_succeeds(tmp_path, capsys):
    names = [f"{i}.jpg" for i in range(3)]
    _captions(tmp_path, names)
    for i, name in enumerate(names):
        pixels = np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "Images" / name)
    (tmp_path / "Images" / names[0]).write_bytes(b"broken")
    code = main(["extract", "--data", str(tmp_path), "--encoder-weights", "none",
                 "--cache-dir", str(tmp_path / "cache")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "2 images cached" in out and "skipped" in err
