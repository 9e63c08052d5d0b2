"""Captions where photo tools read them: XMP sidecars, metadata embedded in the image, `.txt` files beside it.

Metadata is read and written by ExifTool (Debian's libimage-exiftool-perl, driven through PyExifTool), never
by hand: pixels are not re-encoded and every other tag is kept. An image or sidecar is never written in place:
ExifTool edits a copy beside it, which then replaces the original in one rename, so a failure or a killed
process at any point leaves the original byte-identical.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from captioner.atomic import atomic_path
from captioner.errors import CaptionerError

#: The --write targets, in the order they are written.
TARGETS = ("xmp", "embed", "txt")
#: Sidecar naming: photo.xmp (Lightroom, ExifTool, Immich) or photo.jpg.xmp (darktable, digiKam).
SIDECAR_STYLES = ("photo.xmp", "photo.jpg.xmp")
#: Formats ExifTool writes EXIF and XMP into without touching the image data.
EMBED_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif")
IPTC_SUFFIXES = (".jpg", ".jpeg", ".tif", ".tiff")  # IPTC-IIM is standard only in these
DESCRIPTION_TAGS = ("XMP-dc:Description", "EXIF:ImageDescription", "IPTC:Caption-Abstract")


class MetadataError(CaptionerError):
    """ExifTool could not write (or read) an image's metadata."""


class ExifTool:
    """One long-running `exiftool -stay_open` process (about 0.2 s to start, milliseconds per file after)."""

    def __init__(self):
        if shutil.which("exiftool") is None:
            raise CaptionerError("--write xmp and embed need ExifTool: apt-get install libimage-exiftool-perl "
                                 "(macOS: brew install exiftool).")
        try:
            import exiftool
        except ImportError:
            raise CaptionerError("--write xmp and embed need PyExifTool: pip install PyExifTool.") from None
        self._helper = exiftool.ExifToolHelper(common_args=["-charset", "filename=utf8"], encoding="utf-8")
        self._errors = (exiftool.exceptions.ExifToolException, OSError, ValueError)

    def close(self) -> None:
        self._helper.terminate()

    def __enter__(self) -> ExifTool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, *args: str) -> None:
        """Run one ExifTool command; MetadataError with ExifTool's own message if it fails."""
        try:
            self._helper.execute(*args)
        except self._errors as error:
            message = (getattr(error, "stderr", "") or str(error)).strip().splitlines()
            raise MetadataError(message[-1] if message else type(error).__name__) from None

    def descriptions(self, path: Path) -> dict[str, str]:
        """The description tags a file already holds (XMP, EXIF, IPTC), by ExifTool group:name."""
        try:
            found = self._helper.get_tags([str(path)], list(DESCRIPTION_TAGS), params=["-G1"])[0]
        except self._errors as error:
            raise MetadataError(f"{path}: ExifTool cannot read its metadata ({error}).") from None
        return {key: str(value) for key, value in found.items() if key != "SourceFile" and str(value).strip()}


def caption_tags(text: str, lang: str, keywords: Sequence[str], iptc: bool) -> list[str]:
    """ExifTool arguments that set the description in XMP (x-default and the language), EXIF and optionally IPTC,
    and add the keywords to XMP dc:subject (and IPTC Keywords) without duplicating any."""
    text = " ".join(text.split())  # one line: ExifTool's argument file is line-based
    args = [f"-XMP-dc:Description={text}", f"-XMP-dc:Description-{lang}={text}"]
    for word in keywords:
        args += [f"-XMP-dc:Subject-={word}", f"-XMP-dc:Subject+={word}"]
        if iptc:
            args += [f"-IPTC:Keywords-={word}", f"-IPTC:Keywords+={word}"]
    return args


def replace_atomically(path: Path, edit: Callable[[Path], object], copy_original: bool = True) -> None:
    """Apply `edit(temp)` to a copy of `path` (or, for a new file, to a fresh name) beside it and rename the
    copy over `path` (captioner.atomic); on any failure the copy is removed and `path` is as it was."""
    with atomic_path(path, suffix=path.suffix) as temp:  # ExifTool picks the format by the suffix
        if copy_original:
            shutil.copy2(path, temp)  # keeps mode and times
        edit(temp)


def sidecar_path(image: Path, style: str = SIDECAR_STYLES[0]) -> Path:
    """photo.jpg → photo.xmp, or photo.jpg.xmp with style "photo.jpg.xmp"."""
    return image.with_name(image.name + ".xmp") if style == SIDECAR_STYLES[1] else image.with_suffix(".xmp")


def text_path(image: Path) -> Path:
    """photo.jpg → photo.txt, the caption file dataset trainers (kohya, OneTrainer) read."""
    return image.with_suffix(".txt")


class Writer:
    """Where one --write target puts a caption, and whether it already holds one."""

    def __init__(self, target: str, tool: ExifTool | None, sidecar_style: str = SIDECAR_STYLES[0], prefix: str = ""):
        if target not in TARGETS:
            raise CaptionerError(f"unknown --write target {target!r}; choose from {', '.join(TARGETS)}.")
        if target != "txt" and tool is None:
            raise CaptionerError(f"--write {target} reads and writes metadata with ExifTool; none was given.")
        self.target, self._tool, self.sidecar_style, self.prefix = target, tool, sidecar_style, prefix

    @property
    def tool(self) -> ExifTool:
        """The ExifTool session of the xmp and embed targets (txt files need none)."""
        assert self._tool is not None  # checked in __init__ for every target that reaches here
        return self._tool

    def destination(self, image: Path) -> Path:
        """The file this target writes for `image`."""
        if self.target == "xmp":
            return sidecar_path(image, self.sidecar_style)
        return text_path(image) if self.target == "txt" else image

    def has_caption(self, image: Path) -> bool:
        """Whether the destination already holds a caption (written by us or by a person): left alone
        unless --overwrite, which also makes every --write resumable."""
        path = self.destination(image)
        if self.target == "txt" or not path.is_file():
            return path.is_file()
        return bool(self.tool.descriptions(path))

    def write(self, image: Path, text: str, lang: str, keywords: Sequence[str] = ()) -> Path:
        """Write the caption for `image`; returns the file written."""
        path = self.destination(image)
        if self.target == "txt":
            replace_atomically(path, lambda temp: temp.write_text(self.prefix + text + "\n", encoding="utf-8"),
                               copy_original=False)
            return path
        if self.target == "embed" and image.suffix.lower() not in EMBED_SUFFIXES:
            raise MetadataError(f"{image}: captions cannot be embedded in a {image.suffix} file; use --write xmp "
                                f"(a sidecar) for it.")
        iptc = self.target == "embed" and image.suffix.lower() in IPTC_SUFFIXES
        tags = caption_tags(text, lang, keywords, iptc)
        if self.target == "embed":
            tags.append(f"-EXIF:ImageDescription={' '.join(text.split())}")
        if iptc:  # UTF-8 declared, so Chinese and German captions stay readable
            tags += [f"-IPTC:Caption-Abstract={' '.join(text.split())}", "-IPTC:CodedCharacterSet=UTF8"]
        if path.is_file():  # merge into the file: every other tag kept
            replace_atomically(path, lambda temp: self.tool.run(*tags, "-overwrite_original", str(temp)))
        else:  # a new sidecar holding only the caption
            replace_atomically(path, lambda temp: self.tool.run(*tags, "-o", str(temp)), copy_original=False)
        return path
