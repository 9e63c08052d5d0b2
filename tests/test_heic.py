"""Phone photos: HEIC files made by pillow-heif caption in the CLI and the app, upright, with the same bad-input
guarantees as every other format."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image
from tiny_model import save_random_model

import captioner
from captioner.cli.main import main
from captioner.data.images import IMAGE_EXTENSIONS, load_image
from captioner.errors import ImageError


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    return save_random_model(tmp_path_factory.mktemp("model"))


def heic_bytes(orientation: int = 1) -> bytes:
    """A 80x60 HEIC photo written by pillow-heif, with an EXIF orientation."""
    import io

    assert ".heic" in IMAGE_EXTENSIONS, "pillow-heif is not installed"
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="HEIF", exif=exif.tobytes())
    return buffer.getvalue()


def test_a_heic_photo_captions_in_the_cli(tmp_path, model_files, capsys):
    (tmp_path / "IMG_0001.HEIC").write_bytes(heic_bytes())
    model, tokenizer = model_files
    assert main(["caption", str(tmp_path), "--model", str(model), "--tokenizer", str(tokenizer),
                 "--encoder-weights", "none"]) == 0  # the folder is searched for .heic too
    expected = captioner.load(model, tokenizer, "none").caption(tmp_path / "IMG_0001.HEIC").text
    assert capsys.readouterr().out.strip() == expected != ""


def test_heic_rotation_is_honoured():
    assert load_image(heic_bytes(orientation=6)).size == (60, 80)  # 90° clockwise: portrait
    assert load_image(heic_bytes()).size == (80, 60)


def test_a_truncated_heic_is_one_line():
    data = heic_bytes()
    with pytest.raises(ImageError) as error:
        load_image(data[: len(data) // 2])
    assert str(error.value).startswith("uploaded image: the image data is corrupt or truncated (")
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_a_heic_upload_captions_in_the_app(model_files, monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    import app

    assert "heic" in app.UPLOAD_TYPES
    model, tokenizer = model_files
    monkeypatch.setenv("CAPTIONER_MODEL", str(model))
    monkeypatch.setenv("CAPTIONER_TOKENIZER", str(tokenizer))
    monkeypatch.setenv("CAPTIONER_ENCODER_WEIGHTS", "none")
    for lang in ("zh", "de"):
        monkeypatch.setenv(f"CAPTIONER_MODEL_{lang.upper()}", str(tmp_path / "absent" / lang / "mymodel.h5"))
        monkeypatch.setenv(f"CAPTIONER_TOKENIZER_{lang.upper()}", str(tmp_path / "absent" / lang / "tokenizer.pkl"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180).run()
    at.file_uploader[0].set_value(("IMG_0001.heic", heic_bytes(), "image/heic")).run()
    assert not at.exception and not at.error
    shown = at.main.get_by_key("caption_0_en").markdown[0].value.strip("*")
    assert shown == captioner.load(model, tokenizer, "none").caption(heic_bytes()).text
