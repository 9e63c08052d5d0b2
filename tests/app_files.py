"""Files a user might drop into the app: good photos, and every kind of awkward or broken one."""

from __future__ import annotations

import io
import random
import struct
import zlib

import numpy as np
from conftest import draw_shape
from PIL import Image


def _save(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def shape_png(seed: int = 0) -> bytes:
    """A synthetic photo the shapes model knows: a coloured shape on a plain background."""
    return _save(draw_shape("circle", "red", "white", random.Random(seed)), "PNG")


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A tiny PNG whose header claims width × height pixels (a decompression bomb)."""
    data = bytearray(_save(Image.new("L", (1, 1)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # IHDR CRC
    return bytes(data)


def animated_gif() -> bytes:
    frames = [draw_shape("square", colour, "black", random.Random(i)) for i, colour in enumerate(("blue", "red"))]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)


def png_16bit() -> bytes:
    ramp = np.tile(np.linspace(0, 65535, 128, dtype=np.uint16), (96, 1))
    return _save(Image.fromarray(ramp), "PNG")  # mode I;16


def cmyk_jpeg() -> bytes:
    return _save(draw_shape("triangle", "yellow", "grey", random.Random(3)).convert("CMYK"), "JPEG")


def exif_rotated_jpeg() -> bytes:
    """A 120×60 landscape JPEG whose EXIF orientation (6) says: show it rotated, as 60×120."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(draw_shape("circle", "green", "white", random.Random(4)).resize((120, 60)), "JPEG", exif=exif)


#: name → (bytes, MIME type, the error the app must show, or None if it must caption the file)
AWKWARD_FILES: dict[str, tuple[bytes, str, str | None]] = {
    "shape.png": (shape_png(), "image/png", None),
    "animated.gif": (animated_gif(), "image/gif", None),
    "deep-16bit.png": (png_16bit(), "image/png", None),
    "cmyk.jpg": (cmyk_jpeg(), "image/jpeg", None),
    "rotated.jpg": (exif_rotated_jpeg(), "image/jpeg", None),
    "notes.jpg": (b"shopping list: milk, eggs\n" * 20, "image/jpeg", "notes.jpg: not an image Pillow can read"),
    "truncated.jpg": (cmyk_jpeg()[:300], "image/jpeg", "truncated.jpg: the image data is corrupt or truncated"),
    "empty.png": (b"", "image/png", "empty.png: the file is empty (0 bytes)"),
    "bomb.png": (png_bomb(), "image/png", "bomb.png: image is too large to decode safely"),
}
