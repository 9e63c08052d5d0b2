"""Safe image loading: any file Pillow reads becomes an upright RGB array of a fixed size."""

from __future__ import annotations

import glob
import io
import os
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from captioner.errors import CaptionerError, ImageError

ImageSource = str | os.PathLike[str] | bytes | BinaryIO | Image.Image

#: Largest image (in pixels) we agree to decode; Pillow's own bomb limit, enforced as an error.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


def _register_plugins() -> tuple[str, ...]:
    """Teach Pillow phone photos: HEIC/HEIF through pillow-heif, AVIF where Pillow was built with it; the
    extensions this adds."""
    from PIL import features

    added = (".avif",) if features.check("avif") else ()
    try:
        from pillow_heif import register_heif_opener
    except ImportError:  # pillow-heif not installed: HEIC files get the usual "not an image" message
        return added
    register_heif_opener()
    return (".heic", ".heif", *added)


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", *_register_plugins())


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return getattr(source, "name", None) or "uploaded image"


def _open(source: ImageSource) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"{path}: no such image file; check the path.")
        if path.stat().st_size == 0:
            raise ImageError(f"{path}: the file is empty (0 bytes); re-export or re-download it.")
    return Image.open(source)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is composited on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        if image.mode == "F" and pixels.max() <= 1.0:
            top = 1.0  # float images are commonly written in [0, 1]
        else:  # 32-bit integer images declare no range: 16-bit if any value needs it, else 8-bit
            top = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        pixels = np.clip(pixels / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(pixels, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(source: ImageSource) -> Image.Image:
    """Decode an image safely: first frame, EXIF orientation applied, RGB.

    Raises ImageError (never a Pillow exception) for missing, empty, corrupt, truncated or
    oversized ("decompression bomb") files.
    """
    name = _describe(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = _open(source)
            if image.width * image.height > MAX_PIXELS:
                raise Image.DecompressionBombError(f"{image.width}x{image.height}")
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)  # animated GIF/WebP/TIFF: caption the first frame
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(
            f"{name}: image is too large to decode safely ({error}); "
            f"the limit is {MAX_PIXELS:,} pixels, so downscale it first."
        ) from None
    except UnidentifiedImageError:
        raise ImageError(
            f"{name}: not an image Pillow can read; use a JPEG, PNG, WebP, HEIC, BMP or GIF file."
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:  # libheif's messages end in a newline
        raise ImageError(f"{name}: the image data is corrupt or truncated ({' '.join(str(error).split())}).") from None
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to decode this image; downscale it first.") from None
    except Exception as error:
        # IndexError, TypeError, struct.error, NotImplementedError…): for the user, a file we cannot read
        raise ImageError(f"{name}: the image data is corrupt or truncated ({type(error).__name__}: {error}).") from None


def image_to_array(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB image to (width, height) and return uint8 pixels of shape (h, w, 3)."""
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def load_array(source: ImageSource, size: tuple[int, int]) -> np.ndarray:
    """Load, normalise and resize an image in one call: (h, w, 3) uint8."""
    return image_to_array(load_image(source), size)


@dataclass(frozen=True)
class Failure:
    """An image that could not be read, and why."""

    path: Path
    reason: str


def load_batches(paths: Sequence[Path], size: tuple[int, int], batch_size: int,
                 ) -> Iterator[tuple[list[int], np.ndarray | None, list[Failure]]]:
    """Decode images on a thread pool, one batch ahead of the consumer (bounded memory).

    Yields per batch: the positions in `paths` of the images that loaded, their pixels
    (n, h, w, 3) uint8 (None if none loaded), and the images that failed, with the reason.
    """

    def load(path: Path) -> np.ndarray | Failure:
        try:
            return load_array(path, size)
        except CaptionerError as error:
            return Failure(path, str(error))

    starts = range(0, len(paths), batch_size)
    with ThreadPoolExecutor(max_workers=4) as pool:
        pending = pool.map(load, paths[0:batch_size])
        for start in starts:
            results = list(pending)
            nxt = start + batch_size
            pending = pool.map(load, paths[nxt:nxt + batch_size])  # the next batch decodes while this one is used
            rows = [start + i for i, r in enumerate(results) if not isinstance(r, Failure)]
            images = [r for r in results if not isinstance(r, Failure)]
            yield rows, (np.stack(images) if images else None), [r for r in results if isinstance(r, Failure)]


def find_images(patterns: list[str]) -> list[Path]:
    """Expand files, folders (recursively) and glob patterns into a sorted list of image paths.

    A folder without image files, or a pattern that matches no file, is an ImageError naming it.
    """
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            images = [p for p in sorted(path.rglob("*")) if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
            if not images:
                raise ImageError(f"{pattern}: no image found in this folder or its subfolders (no "
                                 f"{', '.join(IMAGE_EXTENSIONS)} file); give image files or a folder that has some.")
            found.extend(images)
        elif path.exists():
            found.append(path)
        else:
            matches = [Path(p) for p in sorted(glob.glob(pattern, recursive=True))]
            files = [p for p in matches if p.is_file()]
            if matches and not files:
                raise ImageError(f"{pattern}: no image found: the pattern matches only folders; give the folders "
                                 f"themselves to caption the images in them.")
            if not files:
                raise ImageError(f"{pattern}: no image found: no such file or folder, and no file matches it as "
                                 f"a pattern; check the path.")
            found.extend(files)
    return list(dict.fromkeys(found))
