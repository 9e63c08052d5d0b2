"""`--write xmp|embed|txt`: caption image files into their sidecars, their own metadata or caption files.

Resumable like batch mode: an image whose every target already holds a caption is not captioned again
(unless `overwrite`), and one already listed for review is skipped. With `min_confidence`, captions
below it are not written but appended to a review CSV (batch mode's format) that a person edits and
feeds back with `write_reviewed` (`captioner write --from reviewed.csv`).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from captioner.data.images import Failure
from captioner.decoding.options import DEFAULT_DECODING, Caption, DecodeOptions
from captioner.errors import CaptionerError
from captioner.features.cache import image_key
from captioner.serving.batch import CaptionFile, caption_record
from captioner.serving.metadata import ExifTool, Writer

if TYPE_CHECKING:
    from captioner.decoding.captioning import ImageCaptioner


@dataclass
class WriteReport:
    """What a --write run did: images written, those that already had captions, those left for review, failures."""

    written: int = 0
    already_done: int = 0
    for_review: int = 0
    failures: list[Failure] = field(default_factory=list)
    review_file: Path | None = None


def keywords(caption: Caption) -> list[str]:
    """The caption's tag names (XMP dc:subject / IPTC Keywords); none for a model without a classifier."""
    return [tag.name for tag in caption.tags]


def needs_tool(targets: Iterable[str]) -> bool:
    """Whether the targets read or write metadata (everything but txt)."""
    return any(target != "txt" for target in targets)


@contextmanager
def open_writers(targets: Sequence[str], sidecar_style: str, prefix: str) -> Iterator[list[Writer]]:
    """One Writer per target (repeats dropped), sharing one ExifTool process that is closed afterwards."""
    tool = ExifTool() if needs_tool(targets) else None
    try:
        yield [Writer(target, tool, sidecar_style, prefix) for target in dict.fromkeys(targets)]
    finally:
        if tool is not None:
            tool.close()


def _skip(writers: Sequence[Writer], path: Path, overwrite: bool, report: WriteReport) -> bool:
    """Whether `path` needs no write: every target holds a caption already (counted as done, unless
    overwrite), or they cannot be read (counted as a failure)."""
    try:
        done = not overwrite and all(writer.has_caption(path) for writer in writers)
    except CaptionerError as error:
        report.failures.append(Failure(path, str(error)))
        return True
    report.already_done += done
    return done


def _write_one(writers: Sequence[Writer], path: Path, text: str, lang: str, words: Sequence[str],
               overwrite: bool) -> Failure | None:
    """Write one caption to every target that needs it; the first failure, named, or None."""
    try:
        for writer in writers:
            if overwrite or not writer.has_caption(path):
                writer.write(path, text, lang, words)
    except CaptionerError as error:
        message = str(error)
        return Failure(path, message if message.startswith(str(path)) else f"{path}: {message}")
    return None


def _pending(paths: Sequence[Path], writers: Sequence[Writer], overwrite: bool, review: CaptionFile | None,
             report: WriteReport) -> list[Path]:
    """The images to caption: not yet written to every target (unless overwrite), not waiting for review."""
    waiting = {image_key(image) for image in review.images()} if review else set()
    owners: dict[Path, Path] = {}  # sidecar or .txt file → the image it belongs to in this run
    todo = []
    for path in paths:
        shared = [owners.setdefault(w.destination(path), path) for w in writers if w.target != "embed"]
        if clash := next((other for other in shared if other != path), None):
            report.failures.append(Failure(path, f"{path}: its sidecar or .txt file would be {clash}'s too; give "
                                                 f"--sidecar photo.jpg.xmp, or rename one of them."))
            continue
        if image_key(path) in waiting:
            report.for_review += 1
        elif not _skip(writers, path, overwrite, report):
            todo.append(path)
    return todo


def write_captions(captioner: ImageCaptioner, paths: Sequence[str | os.PathLike], targets: Sequence[str],
                   options: DecodeOptions = DEFAULT_DECODING, batch_size: int = 32, *, overwrite: bool = False,
                   sidecar_style: str = "photo.xmp", prefix: str = "", min_confidence: float | None = None,
                   review_file: str | os.PathLike = "review.csv", progress: bool = True) -> WriteReport:
    """Caption image files into each of `targets` (xmp, embed, txt); see the module docstring."""
    review = CaptionFile(review_file) if min_confidence is not None else None
    report = WriteReport(review_file=review.path if review else None)
    lang = captioner.vocab.lang
    with open_writers(targets, sidecar_style, prefix) as writers:
        todo = _pending([Path(p) for p in paths], writers, overwrite, review, report)
        with tqdm(total=len(todo), desc="Captioning", unit="img", disable=not progress or not todo) as bar:
            for captioned, failures in captioner.caption_files(todo, options, batch_size):
                report.failures.extend(failures)
                low = []
                for path, caption in captioned:
                    if min_confidence is not None and caption.confidence < min_confidence:
                        low.append(caption_record(str(path), caption))
                    elif failure := _write_one(writers, path, caption.text, lang, keywords(caption), overwrite):
                        report.failures.append(failure)
                    else:
                        report.written += 1
                if low:
                    assert review is not None  # low captions exist only with --min-confidence
                    review.path.parent.mkdir(parents=True, exist_ok=True)
                    review.append(low)
                    report.for_review += len(low)
                bar.update(len(captioned) + len(failures))
    return report


def read_reviewed(path: str | os.PathLike) -> list[tuple[Path, str]]:
    """(image, caption) rows of a captions CSV or JSONL file a person edited; rows with an empty caption are
    the captions they rejected, and are left out."""
    file = Path(path)
    if not file.is_file():
        raise CaptionerError(f"{file}: no such file; give the review CSV that `captioner caption --min-confidence` "
                             f"wrote (or a --output captions file).")
    CaptionFile(file)  # the suffix check
    try:
        with file.open(encoding="utf-8-sig", newline="") as handle:
            rows = (list(csv.DictReader(handle)) if file.suffix.lower() == ".csv"
                    else [json.loads(line) for line in handle if line.strip()])
        pairs = [(Path(row["image"]), " ".join(str(row["caption"] or "").split())) for row in rows]
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as error:
        raise CaptionerError(f"{file}: not a captions file with 'image' and 'caption' columns ({error}); "
                             f"keep the header the review file was written with.") from None
    return [(image, text) for image, text in pairs if text]


def write_reviewed(path: str | os.PathLike, targets: Sequence[str], lang: str = "en", *, overwrite: bool = False,
                   sidecar_style: str = "photo.xmp", prefix: str = "") -> WriteReport:
    """Write the captions of a reviewed CSV/JSONL file into each of `targets`, as `write_captions` would have."""
    rows = read_reviewed(path)
    report = WriteReport()
    with open_writers(targets, sidecar_style, prefix) as writers:
        for image, text in rows:
            if not image.is_file():
                report.failures.append(Failure(image, f"{image}: no such image file; run from the folder the "
                                                      f"review file was written in."))
            elif _skip(writers, image, overwrite, report):
                continue
            elif failure := _write_one(writers, image, text, lang, (), overwrite):
                report.failures.append(failure)
            else:
                report.written += 1
    return report
