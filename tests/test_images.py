"""Safe image loading: every odd or broken file becomes an RGB array or a clear ImageError."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from captioner.data import images
from captioner.data.images import find_images, load_array, load_image
from captioner.errors import ImageError


def _save(image: Image.Image, path, **kwargs):
    image.save(path, **kwargs)
    return path


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "I;16", "I", "F", "1"])
def test_every_mode_becomes_rgb(mode, tmp_path):
    image = Image.new(mode, (30, 20))
    array = load_array(image, (16, 16))
    assert array.shape == (16, 16, 3) and array.dtype == np.uint8


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    pixels = np.full((10, 10), 40000, np.uint16)
    path = _save(Image.fromarray(pixels), tmp_path / "deep.png")
    array = load_array(path, (10, 10))
    assert 150 < array[0, 0, 0] < 160  # 40000 / 65535 * 255 ≈ 156, not clipped to 255


def test_transparent_png_is_composited_on_white(tmp_path):
    path = _save(Image.new("RGBA", (4, 4), (255, 0, 0, 0)), tmp_path / "clear.png")
    assert (load_array(path, (4, 4)) == 255).all()


def test_cmyk_jpeg(tmp_path):
    path = _save(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), tmp_path / "print.jpg")
    red, green, blue = load_array(path, (32, 32))[16, 16]
    assert red > 200 and green < 60 and blue < 60


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    path = _save(image, tmp_path / "rotated.jpg", exif=exif)
    assert load_image(path).size == (20, 40)


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (10, 10), colour) for colour in ("red", "blue")]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    red, _, blue = load_array(path, (10, 10))[5, 5]
    assert red > 200 and blue < 50


def test_bytes_and_file_objects(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "green").save(buffer, format="PNG")
    assert load_array(buffer.getvalue(), (4, 4)).shape == (4, 4, 3)
    buffer.seek(0)
    assert load_array(buffer, (4, 4)).shape == (4, 4, 3)


def test_broken_files_give_clear_errors(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("this is not an image")
    good = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(good, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(good.getvalue()[:200])
    cases = {"empty.jpg": "empty", "notes.jpg": "not an image", "cut.jpg": "corrupt or truncated",
             "absent.jpg": "no such image"}
    for name, message in cases.items():
        with pytest.raises(ImageError, match=message) as caught:
            load_image(tmp_path / name)
        assert name in str(caught.value)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    path = _save(Image.new("L", (200, 200)), tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 100 * 100)
    with pytest.raises(ImageError, match="too large"):
        load_image(path)


def test_find_images_expands_folders_and_globs(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    for name in ("a.jpg", "b.PNG", "sub/c.webp", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = find_images([str(tmp_path)])
    assert [p.name for p in found] == ["a.jpg", "b.PNG", "c.webp"]
    monkeypatch.chdir(tmp_path)
    assert [p.name for p in find_images(["*.jpg", "a.jpg"])] == ["a.jpg"]
    with pytest.raises(ImageError, match="no such file"):
        find_images(["missing/*.png"])
