"""Fuzz the image loader every surface uses: captioner.data.images.load_array(bytes, (224, 224)).

    pip install atheris && nice -n 10 python scripts/fuzz_images.py --minutes 11 --log logs/fuzz.log  # coverage-guided
    python scripts/fuzz_images.py --random 300 --seed 0                          # seeded mutations, no atheris needed
    python scripts/fuzz_images.py --limits                                       # memory and time at the pixel limit

The contract for every input, whatever its bytes: `load_array` returns a (224, 224, 3) uint8 array or
raises the library's own error (captioner.errors.CaptionerError, in practice ImageError), within
TIME_LIMIT seconds and MEMORY_LIMIT_MB of resident memory over what the process held before the
call. Anything else is a finding: another exception, a timeout, too much memory, a wrong array.

Inputs are seed files that Pillow writes here (JPEG, PNG, GIF, WebP, BMP and TIFF in many modes,
plus a few other formats Pillow also opens, as an upload with a wrong name would be), crafted files
whose headers lie about their size (a PNG, GIF, TIFF, BMP, JPEG or WebP claiming 100000×100000
pixels, or a small GIF screen with a huge frame), the regression inputs of earlier findings, and
mutations of all of these: bit flips, interesting integers, cut, duplicated or spliced ranges,
rewritten width/height fields, and PNG chunks with their CRCs fixed so that Pillow reads past them.

With --minutes the supervisor runs atheris children (coverage of Pillow's Python plugins, libFuzzer's
mutations mixed with the ones above) until the time is spent, restarting a child that libFuzzer
stopped (its -timeout and -rss_limit_mb are backstops for hangs in C code). Findings are logged with
their traceback and saved under logs/fuzz/findings/ as <kind>-<sha1>.bin; the run goes on after them.
tests/test_fuzz_images.py runs the seeded --random mode and every regression input.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import random
import re
import signal
import struct
import subprocess
import sys
import time
import traceback
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from captioner.data.images import MAX_PIXELS, load_array  # noqa: E402
from captioner.errors import CaptionerError  # noqa: E402

SIZE = (224, 224)
TIME_LIMIT = 15.0  # seconds per input; a legitimate image at the pixel limit decodes in under 10 on a busy core
#: Resident memory an input may add. A legitimate image at the pixel limit needs up to ~2.4 GB today
#: (a 16-bit or 32-bit one, see --limits); anything the fuzzer makes from small seeds should stay far below.
MEMORY_LIMIT_MB = 3072
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FUZZ_DIR = ROOT / "logs" / "fuzz"


# --------------------------------------------------------------------------------------------- inputs
def _save(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def _picture(mode: str = "RGB", size: tuple[int, int] = (40, 30), seed: int = 0) -> Image.Image:
    """A small noisy gradient with a rectangle: enough structure for every encoder to use its tools."""
    rng = np.random.default_rng(seed)
    w, h = size
    x, y = np.meshgrid(np.linspace(0, 255, w), np.linspace(0, 255, h))
    rgb = np.stack([x, y, 255 - x], axis=-1) + rng.normal(0, 12, (h, w, 3))
    rgb[h // 4: h // 2, w // 4: w // 2] = (200, 30, 40)
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    if mode == "RGBA":
        alpha = Image.fromarray((x * 0.8 + 40).astype(np.uint8), "L")
        image = image.copy()
        image.putalpha(alpha)
        return image
    if mode == "I;16":
        return Image.fromarray((x * 250 + y).astype(np.uint16))
    if mode == "F":
        return Image.fromarray((x / 255).astype(np.float32), "F")
    if mode == "I":
        return Image.fromarray((x * 1000).astype(np.int32), "I")
    return image.convert(mode)


def _bmp_rle8(width: int = 32, height: int = 16) -> bytes:
    """An 8-bit run-length-encoded BMP (Pillow writes only uncompressed ones)."""
    rows = b"".join(bytes([width, (r * 7) % 256]) + b"\x00\x00" for r in range(height)) + b"\x00\x01"
    palette = b"".join(bytes([i, 255 - i, (i * 3) % 256, 0]) for i in range(256))
    header_size = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(rows), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", header_size + len(rows), 0, 0, header_size) + info + palette + rows


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def seed_files() -> dict[str, bytes]:
    """Valid files of every format and mode the loader must read; each one decodes."""
    rgb, rgba = _picture(), _picture("RGBA")
    frames = [_picture(seed=i).quantize(16) for i in range(3)]
    seeds = {
        "baseline.jpg": _save(rgb, "JPEG", quality=80),
        "progressive.jpg": _save(rgb, "JPEG", quality=60, progressive=True, subsampling=2),
        "grey.jpg": _save(rgb.convert("L"), "JPEG"),
        "cmyk.jpg": _save(rgb.convert("CMYK"), "JPEG"),
        "rotated.jpg": _save(rgb, "JPEG", exif=_exif(6)),
        "restart.jpg": _save(rgb, "JPEG", restart_marker_blocks=1, optimize=True),
        "rgb.png": _save(rgb, "PNG"),
        "rgba.png": _save(rgba, "PNG"),
        "palette-transparent.png": _save(rgb.quantize(8), "PNG", transparency=0),
        "grey.png": _save(rgb.convert("L"), "PNG"),
        "la.png": _save(rgba.convert("LA"), "PNG"),
        "bilevel.png": _save(rgb.convert("1"), "PNG"),
        "deep-16bit.png": _save(_picture("I;16"), "PNG"),
        "interlaced.png": _save(rgb, "PNG", interlace=1) if _png_interlace_supported() else _save(rgb, "PNG"),
        "rotated.png": _save(rgb, "PNG", exif=_exif(8)),
        "animated.png": _save(frames[0].convert("RGB"), "PNG", save_all=True,
                              append_images=[f.convert("RGB") for f in frames[1:]], duration=100),
        "still.gif": _save(frames[0], "GIF"),
        "animated.gif": _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0,
                              transparency=0, disposal=2),
        "interlaced.gif": _save(frames[1], "GIF", interlace=True),
        "lossy.webp": _save(rgb, "WEBP", quality=50),
        "lossless.webp": _save(rgba, "WEBP", lossless=True),
        "alpha.webp": _save(rgba, "WEBP", quality=70),
        "animated.webp": _save(frames[0].convert("RGB"), "WEBP", save_all=True,
                               append_images=[f.convert("RGB") for f in frames[1:]], duration=100),
        "rgb.bmp": _save(rgb, "BMP"),
        "palette.bmp": _save(rgb.quantize(16), "BMP"),
        "bilevel.bmp": _save(rgb.convert("1"), "BMP"),
        "rle8.bmp": _bmp_rle8(),
        "raw.tif": _save(rgb, "TIFF"),
        "lzw.tif": _save(rgb, "TIFF", compression="tiff_lzw"),
        "deflate.tif": _save(rgba, "TIFF", compression="tiff_adobe_deflate"),
        "packbits.tif": _save(rgb.convert("L"), "TIFF", compression="packbits"),
        "jpeg.tif": _save(rgb, "TIFF", compression="jpeg"),
        "cmyk.tif": _save(rgb.convert("CMYK"), "TIFF"),
        "deep-16bit.tif": _save(_picture("I;16"), "TIFF"),
        "float.tif": _save(_picture("F"), "TIFF"),
        "int32.tif": _save(_picture("I"), "TIFF"),
        "multipage.tif": _save(rgb, "TIFF", save_all=True, append_images=[rgba, rgb.convert("L")]),
        # Other formats Pillow opens whatever the file is called: what a renamed upload would be.
        "icon.ico": _save(rgb, "ICO", sizes=[(16, 16), (32, 32)]),
        "rle.tga": _save(rgb, "TGA", compression="tga_rle"),
        "image.pcx": _save(rgb, "PCX"),
        "image.ppm": _save(rgb, "PPM"),
        "image.sgi": _save(rgb, "SGI"),
        "image.qoi": _save(rgba, "QOI"),
        "image.dds": _save(rgba, "DDS"),
        "image.im": _save(rgb, "IM"),
    }
    return seeds


def _png_interlace_supported() -> bool:
    try:
        _save(Image.new("RGB", (2, 2)), "PNG", interlace=1)
        return True
    except (TypeError, ValueError, OSError):
        return False


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int, mode_bytes: bytes = b"\x08\x02") -> bytes:
    """A PNG whose IHDR (CRC correct) claims width × height pixels, with one tiny IDAT."""
    ihdr = struct.pack(">II", width, height) + mode_bytes + b"\x00\x00\x00"
    return PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        _png_chunk(b"IEND", b"")


def gif_claiming(width: int, height: int, frame: tuple[int, int] | None = None) -> bytes:
    """A GIF whose logical screen is width × height; its one frame is `frame` (default: the same size)."""
    fw, fh = frame or (width, height)
    return (b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
            + b"\x2c" + struct.pack("<HHHHB", 0, 0, fw, fh, 0) + b"\x02\x02\x44\x01\x00" + b"\x3b")


#: A TIFF IFD entry: (tag, field type, count, value); types 1 BYTE, 3 SHORT, 4 LONG, 7 UNDEFINED, value inline.
TiffEntry = tuple[int, int, int, int]
_TIFF_VALUE = {1: "<BBBB", 7: "<BBBB", 3: "<HH", 4: "<I"}


def tiff_entries(columns: int, rows: int, **changes: int | None) -> list[TiffEntry]:
    """The IFD of an 8-bit grey image with one 16-byte strip; changes={'compression': 5, 'width': None}."""
    fields = {"width": (256, 4, 1, columns), "height": (257, 4, 1, rows), "bits": (258, 3, 1, 8),
              "compression": (259, 3, 1, 1), "photometric": (262, 3, 1, 1), "strip_offsets": (273, 4, 1, 0),
              "samples_per_pixel": (277, 3, 1, 1), "rows_per_strip": (278, 4, 1, rows),
              "strip_byte_counts": (279, 4, 1, 16)}
    for name, value in changes.items():
        if value is None:
            del fields[name]
        else:
            tag, kind, count, _ = fields[name]
            fields[name] = (tag, kind, count, value)
    return list(fields.values())


def tiff_pages(*pages: list[TiffEntry], loop_to_first: bool = False) -> bytes:
    """A little-endian TIFF with one IFD per page, each followed by its 16-byte strip of grey pixels
    (tag 273, the strip offset, is filled in); loop_to_first makes the last IFD point back at the first."""
    out = bytearray(b"II*\x00" + struct.pack("<I", 8))
    for index, entries in enumerate(pages):
        ifd_start = len(out)
        strip = ifd_start + 2 + 12 * len(entries) + 4
        next_ifd = strip + 16 if index < len(pages) - 1 else 8 if loop_to_first else 0
        out += struct.pack("<H", len(entries))
        for tag, kind, count, value in entries:
            value = strip if tag == 273 else value
            packed = struct.pack(_TIFF_VALUE[kind], value, *([0] * (len(_TIFF_VALUE[kind]) - 2)))
            out += struct.pack("<HHI", tag, kind, count) + packed
        out += struct.pack("<I", next_ifd) + b"\x80" * 16
    return bytes(out)


def tiff_claiming(width: int, height: int, pages: int = 1) -> bytes:
    """A TIFF whose IFD says width × height (LONG fields); with pages > 1 only the last page claims it,
    the ones before are 1×1."""
    return tiff_pages(*[tiff_entries(1, 1) for _ in range(pages - 1)], tiff_entries(width, height))


def tiff_with_ifd_loop() -> bytes:
    """A TIFF whose second IFD points back at the first: counting its frames must not loop forever."""
    return tiff_pages(tiff_entries(4, 4), tiff_entries(4, 4), loop_to_first=True)


def bmp_claiming(width: int, height: int) -> bytes:
    data = bytearray(_save(_picture(size=(4, 4)), "BMP"))
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


def jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(_save(_picture(size=(16, 16)), "JPEG"))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def webp_claiming(width: int, height: int) -> bytes:
    """A VP8X WebP whose canvas is width × height (at most 2^24 each) around a 4×4 lossy frame."""
    frame = _save(_picture(size=(4, 4)), "WEBP")[12:]  # the VP8 chunk
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + \
        (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + frame
    return b"RIFF" + struct.pack("<I", len(body)) + body


def crafted_files() -> dict[str, bytes]:
    """Files whose headers lie about their size: each must be refused as too large, fast and in little memory.

    100000 × 100000 is 10^10 pixels; the format-capped ones (GIF, JPEG: 65535; WebP: 16384 here)
    are still far above MAX_PIXELS. `*-9000x9000` ones are under the limit: they must fail as truncated.
    """
    big = 100_000
    return {
        "claims-100000x100000.png": png_claiming(big, big),
        "claims-100000x100000-rgba16.png": png_claiming(big, big, b"\x10\x06"),
        "claims-1x2147483647.png": png_claiming(1, 2**31 - 1),
        "claims-65535x65535.gif": gif_claiming(65535, 65535),
        "small-screen-huge-frame.gif": gif_claiming(16, 16, frame=(65535, 65535)),
        "claims-100000x100000.tif": tiff_claiming(big, big),
        "claims-100000x100000-page2.tif": tiff_claiming(big, big, pages=2),
        "claims-100000x100000.bmp": bmp_claiming(big, big),
        "claims-100000x-100000-topdown.bmp": bmp_claiming(big, -big),
        "claims-65535x65535.jpg": jpeg_claiming(65535, 65535),
        "claims-16384x16384.webp": webp_claiming(16384, 16384),
        "truncated-9000x9000.png": png_claiming(9000, 9000),
        "truncated-9000x9000.tif": tiff_claiming(9000, 9000),
        "ifd-loop.tif": tiff_with_ifd_loop(),
    }


def gif_frames(*frames: bytes) -> bytes:
    """A 16×16 GIF89a with a two-colour global palette, these blocks, and no trailer (add b";" yourself)."""
    return b"GIF89a" + struct.pack("<HHBBB", 16, 16, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff" + b"".join(frames)


GIF_DESCRIPTOR = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0)  # a 1×1 frame at (0, 0), no local palette
GIF_FRAME = GIF_DESCRIPTOR + b"\x02\x02\x44\x01\x00"  # LZW, minimum code size 2: clear, pixel 0, end


def dds_with_pixel_format(flags: int, fourcc: bytes = b"\x00\x00\x00\x00") -> bytes:
    """A valid small DDS texture whose pixel-format block says `flags` / `fourcc` (Pillow knows few)."""
    data = bytearray(_save(_picture("RGBA", size=(4, 4)), "DDS"))
    struct.pack_into("<I4s", data, 80, flags, fourcc)
    return bytes(data)


#: Inputs fuzz runs found to break the contract (an exception other than CaptionerError escaped
#: load_array), rebuilt in code: name → (builder, what broke). Every one is checked by the test.
REGRESSIONS: dict[str, tuple[Callable[[], bytes], str]] = {
    "gif-cut-in-second-descriptor.gif": (
        lambda: gif_frames(GIF_FRAME, GIF_DESCRIPTOR[:4]),
        "struct.error from GifImagePlugin._seek (i16 of a short descriptor) via n_frames: an animated GIF cut "
        "off inside its second frame's header, like a truncated download"),
    "gif-cut-in-second-descriptor-flags.gif": (
        lambda: gif_frames(GIF_FRAME, GIF_DESCRIPTOR[:9]),
        "IndexError from GifImagePlugin._seek (s[8], the flags byte of an 8-byte descriptor) via n_frames"),
    "gif-cut-before-second-lzw.gif": (
        lambda: gif_frames(GIF_FRAME, GIF_DESCRIPTOR),
        "IndexError from GifImagePlugin._seek (fp.read(1)[0] at end of file) via n_frames: an animated GIF "
        "cut off right after its second frame's header"),
    "gif-short-graphic-control.gif": (
        lambda: gif_frames(GIF_FRAME, b"\x21\xf9\x03\x01\x00\x00\x00", GIF_FRAME, b";"),
        "IndexError from GifImagePlugin._seek (block[3] of a 3-byte graphic control extension that says "
        "'transparent') via n_frames"),
    "gif-one-byte-graphic-control.gif": (
        lambda: gif_frames(GIF_FRAME, b"\x21\xf9\x01\x00\x00", GIF_FRAME, b";"),
        "struct.error from GifImagePlugin._seek (i16 of a 1-byte graphic control extension) via n_frames"),
    "tiff-page2-unknown-compression.tif": (
        lambda: tiff_pages(tiff_entries(4, 4), tiff_entries(4, 4, compression=34892)),
        "KeyError 34892 from TiffImagePlugin._setup (COMPRESSION_INFO lookup) via n_frames: a two-page TIFF "
        "whose second page uses a compression Pillow does not know (34892, DNG lossy JPEG)"),
    "tiff-page2-without-width.tif": (
        lambda: tiff_pages(tiff_entries(4, 4), tiff_entries(4, 4, width=None)),
        "TypeError 'Missing dimensions' from TiffImagePlugin._setup via n_frames: the second page has no "
        "ImageWidth tag"),
    "tiff-page2-samples-per-pixel-undefined.tif": (
        lambda: tiff_pages(tiff_entries(4, 4), [(277, 7, 1, 1) if e[0] == 277 else e for e in tiff_entries(4, 4)]),
        "TypeError \"'>' not supported between 'bytes' and 'int'\" from TiffImagePlugin._setup via n_frames: "
        "the second page's SamplesPerPixel is stored as UNDEFINED"),
    "dds-pixel-format-flags-0.png": (
        lambda: dds_with_pixel_format(0),
        "NotImplementedError 'Unknown pixel format flags 0' from DdsImagePlugin._open, out of Image.open: a "
        "DDS texture (whatever the file is called) in a pixel format Pillow does not read"),
    "dds-unknown-fourcc.png": (
        lambda: dds_with_pixel_format(4, b"ABCD"),
        "NotImplementedError 'Unimplemented pixel format' from DdsImagePlugin._open, out of Image.open"),
}


def regression_files() -> dict[str, bytes]:
    return {name: build() for name, (build, _) in REGRESSIONS.items()}


# ------------------------------------------------------------------------------------------ mutations
INTERESTING = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 100_000, 0x7FFFFFFF,
               0x80000000, 0xFFFFFFFF)


def fix_png_crcs(data: bytes) -> bytes:
    """Recompute every PNG chunk's CRC (lengths as they stand), so mutations reach the decoder."""
    if not data.startswith(PNG_SIGNATURE):
        return data
    out = bytearray(data)
    pos = 8
    while pos + 12 <= len(out):
        length = struct.unpack_from(">I", out, pos)[0]
        end = pos + 8 + length
        if end + 4 > len(out):
            break
        struct.pack_into(">I", out, end, zlib.crc32(bytes(out[pos + 4:end])))
        pos = end + 4
    return bytes(out)


def size_fields(data: bytes) -> list[tuple[int, str]]:
    """(offset, struct format) of the width/height fields of a file's header, for the formats fuzzed."""
    fields: list[tuple[int, str]] = []
    if data.startswith(PNG_SIGNATURE) and len(data) >= 24:
        fields += [(16, ">I"), (20, ">I")]
    elif data[:3] == b"GIF" and len(data) >= 10:
        fields += [(6, "<H"), (8, "<H")]
        fields += [(m.start() + 5, "<H") for m in re.finditer(b"\x2c", data[10:200])][:2]
    elif data[:2] == b"BM" and len(data) >= 26:
        fields += [(18, "<i"), (22, "<i")]
    elif data[:2] == b"\xff\xd8":
        for m in re.finditer(b"\xff[\xc0-\xc3\xc5-\xc7\xc9-\xcb\xcd-\xcf]", data):
            fields += [(m.start() + 5, ">H"), (m.start() + 7, ">H")]
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        if data[12:16] == b"VP8X":
            fields += [(24, "<H"), (27, "<H")]
        elif data[12:16] == b"VP8 ":
            fields += [(26, "<H"), (28, "<H")]
    elif data[:4] in (b"II*\x00", b"MM\x00*") and len(data) >= 8:
        order = "<" if data[:2] == b"II" else ">"
        ifd = struct.unpack_from(order + "I", data, 4)[0]
        if ifd + 2 <= len(data):
            for k in range(min(struct.unpack_from(order + "H", data, ifd)[0], 64)):
                entry = ifd + 2 + 12 * k
                if entry + 12 > len(data):
                    break
                tag, kind = struct.unpack_from(order + "HH", data, entry)
                if tag in (256, 257, 278, 322, 323):
                    fields.append((entry + 8, order + ("I" if kind == 4 else "H")))
    return [(offset, fmt) for offset, fmt in fields if offset + struct.calcsize(fmt) <= len(data)]


def _size_value(rng: random.Random, fmt: str) -> int:
    side = int(MAX_PIXELS ** 0.5)
    value = rng.choice((0, 1, 2, 3, 7, 64, 255, 256, 4096, side - 1, side, side + 1, 65535, 100_000,
                        rng.randrange(1, 1 << 16), rng.randrange(1, 1 << 31)))
    bits = struct.calcsize(fmt) * 8
    if fmt[-1].islower():  # signed
        value = rng.choice((value, -value)) if value < 1 << (bits - 1) else (1 << (bits - 1)) - 1
        return max(min(value, (1 << (bits - 1)) - 1), -(1 << (bits - 1)))
    return value % (1 << bits)


def mutate(data: bytes, rng: random.Random, pool: Sequence[bytes] = ()) -> bytes:
    """One to eight random edits of `data`; PNG CRCs are usually fixed up afterwards."""
    buf = bytearray(data or b"\x00")
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4, 8))):
        n = len(buf)
        op = rng.randrange(10)
        pos = rng.randrange(n) if n else 0
        if op == 0 and n:  # flip a bit
            buf[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # an interesting or random byte
            buf[pos] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2 and n >= 4:  # an interesting 16- or 32-bit integer
            fmt = rng.choice(("<H", ">H", "<I", ">I"))
            pos = min(pos, n - struct.calcsize(fmt))
            struct.pack_into(fmt, buf, pos, rng.choice(INTERESTING) % (1 << (8 * struct.calcsize(fmt))))
        elif op == 3 and n > 1:  # cut a range
            del buf[pos:pos + rng.randrange(1, max(2, n // 4))]
        elif op == 4 and n:  # duplicate a range
            chunk = buf[pos:pos + rng.randrange(1, 256)]
            at = rng.randrange(n)
            buf[at:at] = chunk * rng.choice((1, 1, 2, 16))
        elif op == 5:  # insert random bytes
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 32)))
        elif op == 6 and n > 1:  # truncate
            del buf[rng.randrange(1, n):]
        elif op == 7 and pool:  # splice: this file's head, another's tail
            other = rng.choice(pool)
            if other:
                buf = buf[:pos] + other[rng.randrange(len(other)):]
        elif op in (8, 9):  # rewrite a width/height field
            fields = size_fields(bytes(buf))
            if fields:
                offset, fmt = rng.choice(fields)
                struct.pack_into(fmt, buf, offset, _size_value(rng, fmt))
    out = bytes(buf)
    return fix_png_crcs(out) if rng.random() < 0.8 else out


# ---------------------------------------------------------------------------------------------- check
class Finding(Exception):
    """An input that broke the loader's contract."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


class _Deadline(BaseException):  # not Exception: Pillow's `except Exception` must not swallow it
    pass


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise _Deadline in Python code after `seconds` (a C loop is caught when it returns, or by libFuzzer)."""
    if seconds <= 0 or not hasattr(signal, "setitimer"):
        yield
        return

    def expired(signum, frame):
        raise _Deadline

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _status_mb(field_name: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _reset_peak() -> bool:
    """Reset VmHWM (the kernel's peak RSS) to the current RSS; False where /proc does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def check(data: bytes, time_limit: float = TIME_LIMIT, memory_limit_mb: float = MEMORY_LIMIT_MB) -> str:
    """Run one input through load_array; returns 'decoded' or the kind of refusal, raises Finding otherwise."""
    measured = _reset_peak()
    base = _status_mb("VmRSS")
    start = time.perf_counter()
    outcome = "decoded"
    array = None
    try:
        with _deadline(time_limit):
            try:
                array = load_array(data, SIZE)
            except CaptionerError as error:
                message = str(error)
                outcome = ("too-large" if "too large" in message else "not-an-image" if "not an image" in message
                           else "corrupt" if "corrupt" in message else "refused")
    except _Deadline:
        raise Finding("timeout", f"still running after {time_limit:.0f} s") from None
    except Exception as error:
        raise Finding("exception", "".join(traceback.format_exception(error)).strip()) from None
    elapsed = time.perf_counter() - start
    if elapsed > time_limit:
        raise Finding("timeout", f"took {elapsed:.1f} s (limit {time_limit:.0f} s)")
    grown = _status_mb("VmHWM") - base if measured else 0.0
    if grown > memory_limit_mb:
        raise Finding("memory", f"peak RSS grew by {grown:.0f} MB (limit {memory_limit_mb:.0f} MB), outcome {outcome}")
    if array is not None and not (isinstance(array, np.ndarray) and array.shape == (SIZE[1], SIZE[0], 3)
                                  and array.dtype == np.uint8):
        raise Finding("bad-array", f"got {type(array).__name__} {getattr(array, 'shape', '')} "
                                   f"{getattr(array, 'dtype', '')}")
    return outcome


def signature(finding: Finding) -> str:
    """What makes two findings the same bug: the kind, the exception type and where it was raised."""
    if finding.kind != "exception":
        return finding.kind
    lines = finding.detail.splitlines()
    where = [line.strip() for line in lines if line.strip().startswith("File ")]
    return f"exception {lines[-1].split(':')[0]} at {where[-1] if where else '?'}"


def save_finding(finding: Finding, data: bytes, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{finding.kind}-{hashlib.sha1(data).hexdigest()}.bin"
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------------------- random mode
@dataclass
class Report:
    inputs: int = 0
    outcomes: Counter = field(default_factory=Counter)
    findings: dict[str, tuple[Finding, bytes]] = field(default_factory=dict)  # signature → first one
    seconds: float = 0.0

    def summary(self) -> str:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        return (f"{self.inputs} inputs in {self.seconds:.1f} s ({parts}); "
                f"{len(self.findings)} distinct finding(s)")


def fixed_inputs() -> dict[str, bytes]:
    return {**seed_files(), **crafted_files(), **regression_files()}


def run_random(count: int, seed: int = 0, time_limit: float = TIME_LIMIT, memory_limit_mb: float = MEMORY_LIMIT_MB,
               log: Callable[[str], None] = print, save_to: Path | None = None) -> Report:
    """Every fixed input once, then `count` seeded mutations of them (deterministic for a seed)."""
    rng = random.Random(seed)
    fixed = fixed_inputs()
    pool = list(fixed.values())
    report = Report()
    start = time.perf_counter()
    inputs = [(name, data) for name, data in fixed.items()]
    inputs += [(f"mutation {i} (seed {seed})", mutate(rng.choice(pool), rng, pool)) for i in range(count)]
    for name, data in inputs:
        report.inputs += 1
        try:
            report.outcomes[check(data, time_limit, memory_limit_mb)] += 1
        except Finding as finding:
            report.outcomes[finding.kind] += 1
            key = signature(finding)
            if key not in report.findings:
                report.findings[key] = (finding, data)
                where = f", saved to {save_finding(finding, data, save_to)}" if save_to else ""
                log(f"FINDING {key} on {name} ({len(data)} bytes{where}):\n{finding.detail}")
    report.seconds = time.perf_counter() - start
    return report


# ---------------------------------------------------------------------------------------- atheris mode
def _atheris_child(argv: list[str]) -> None:
    """One libFuzzer process (started by the supervisor): atheris over check(), findings logged, run goes on."""
    import atheris

    with atheris.instrument_imports(include=["PIL", "captioner"]):
        Image.init()  # import every plugin now, so that the instrumentation covers it
    atheris.instrument_func(check)
    pool = list(fixed_inputs().values())
    findings_dir = FUZZ_DIR / "findings"
    seen: set[str] = set()
    counts: Counter = Counter()
    last = [time.monotonic()]

    def test_one_input(data: bytes) -> None:
        try:
            counts[check(data)] += 1
        except Finding as finding:
            counts[finding.kind] += 1
            key = signature(finding)
            if key not in seen:
                seen.add(key)
                path = save_finding(finding, data, findings_dir)
                print(f"FINDING {key} ({len(data)} bytes, saved to {path}):\n{finding.detail}", flush=True)
        if time.monotonic() - last[0] > 60:
            last[0] = time.monotonic()
            print(f"fuzz: {sum(counts.values())} inputs in this child: {dict(counts)}", flush=True)

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.5:
            out = atheris.Mutate(data, max_size)
            out = fix_png_crcs(out) if rng.random() < 0.7 else out
        else:
            out = mutate(data, rng, pool)
        return out[:max_size]

    atheris.Setup(argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


def supervise(minutes: float, log_path: Path, jobs_timeout: int = 60, rss_limit_mb: int = 4096) -> int:
    """Run atheris children until `minutes` are spent; returns the number of inputs libFuzzer ran."""
    try:
        import atheris  # noqa: F401  (only checked here: the children import it)
    except ImportError:
        raise SystemExit("--minutes needs atheris (pip install atheris); --random N needs nothing more") from None
    corpus = FUZZ_DIR / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for name, data in fixed_inputs().items():
        (corpus / f"seed-{name}").write_bytes(data)
    (FUZZ_DIR / "findings").mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + minutes * 60
    total, children, stops = 0, 0, Counter()
    with log_path.open("a") as log:
        log.write(f"fuzz: start {time.strftime('%Y-%m-%d %H:%M:%S')}, {minutes} min, time limit {TIME_LIMIT} s, "
                  f"memory limit {MEMORY_LIMIT_MB} MB per input, MAX_PIXELS {MAX_PIXELS:,}\n")
        log.flush()
        while (left := int(deadline - time.monotonic())) > 5:
            children += 1
            command = [sys.executable, "-W", "ignore", __file__, "--atheris-child", str(corpus),
                       f"-max_total_time={left}", f"-timeout={jobs_timeout}", f"-rss_limit_mb={rss_limit_mb}",
                       "-max_len=65536",
                       f"-artifact_prefix={FUZZ_DIR / 'findings'}/", "-print_final_stats=1", "-reload=0"]
            start, began = log.tell(), time.monotonic()
            result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=left + jobs_timeout + 120)
            with log_path.open(errors="replace") as written:
                written.seek(start)
                output = written.read()
            runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", output)
            done = int(runs[-1]) if runs else max((int(n) for n in re.findall(r"#(\d+)\s", output)), default=0)
            total += done
            stops[result.returncode] += 1
            log.write(f"fuzz: child {children} exited {result.returncode} after {done} inputs\n")
            log.flush()
            if result.returncode != 0 and time.monotonic() - began < 10:
                log.write("fuzz: the child failed within 10 s; stopping (see above)\n")
                break
        findings = sorted(p.name for p in (FUZZ_DIR / "findings").iterdir())
        log.write(f"fuzz: done {time.strftime('%H:%M:%S')}: {total} inputs in {children} child run(s) "
                  f"(exit codes {dict(stops)}); findings saved: {findings or 'none'}\n")
    return total


# ---------------------------------------------------------------------------------------------- limits
def probe_limits(log: Callable[[str], None] = print) -> None:
    """Peak memory and time of legitimate images right at MAX_PIXELS, mode by mode (slow: GBs, seconds)."""
    side = int(MAX_PIXELS ** 0.5)
    for mode, fmt, params in [("L", "PNG", {}), ("RGB", "PNG", {}), ("RGB", "JPEG", {}), ("RGBA", "PNG", {}),
                              ("I;16", "PNG", {}), ("I", "TIFF", {"compression": "tiff_adobe_deflate"})]:
        data = _save(Image.new(mode, (side, side)), fmt, **params)
        _reset_peak()
        base, start = _status_mb("VmRSS"), time.perf_counter()
        load_array(data, SIZE)
        grown, seconds = _status_mb("VmHWM") - base, time.perf_counter() - start
        log(f"{side}x{side} {mode} {fmt}: {len(data) / 1e3:.0f} kB file, peak RSS +{grown:.0f} MB, {seconds:.1f} s")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--atheris-child"]:
        _atheris_child([sys.argv[0], *argv[1:]])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--minutes", type=float, help="atheris (libFuzzer) for this long, in child processes")
    mode.add_argument("--random", type=int, metavar="N", help="seeded mutations: the fixed inputs, then N more")
    mode.add_argument("--limits", action="store_true", help="memory and time of legitimate images at MAX_PIXELS")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", type=Path, default=ROOT / "logs" / "fuzz.log")
    args = parser.parse_args(argv)
    if args.limits:
        probe_limits()
        return 0
    if args.random is not None:
        report = run_random(args.random, args.seed, save_to=FUZZ_DIR / "findings")
        print(report.summary())
        return 1 if report.findings else 0
    total = supervise(args.minutes, args.log)
    print(f"fuzz: {total} inputs; see {args.log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
