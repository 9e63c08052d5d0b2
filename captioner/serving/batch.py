"""Batch captioning: many image files into a CSV or JSONL file, streamed, resumable, bad files reported.

Results are appended after every batch, so an interrupted run loses at most one batch, and a
re-run skips every image the file already holds. Memory stays bounded by the batch size, not by
the number of images.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from captioner.data.images import Failure
from captioner.decoding.options import DEFAULT_DECODING, Caption, DecodeOptions
from captioner.errors import CaptionerError
from captioner.features.cache import image_key

if TYPE_CHECKING:  # the file side needs no TensorFlow (the Ray driver only writes rows)
    from captioner.serving.api import Captioner

FORMATS = (".csv", ".jsonl")
# n_best, tags, grounded_by: JSON lists in cells
CSV_COLUMNS = ("image", "caption", "confidence", "log_prob", "n_best", "tags", "grounded_by")


@dataclass
class BatchReport:
    """What one batch run did: new rows written, images already in the file, unreadable files."""

    output: Path
    captioned: int = 0
    already_done: int = 0
    failures: list[Failure] = field(default_factory=list)


def caption_record(image: str, caption: Caption) -> dict:
    """One output row: the image, its best caption with confidence and log p, the n-best list, the classifier's tags
    and the tag words it names because of them (grounded_by: required by a constrained search, or copied)."""

    def scores(c: Caption) -> dict:
        return {"confidence": round(c.confidence, 4), "log_prob": round(c.log_prob, 4)}

    return {"image": image, "caption": caption.text, **scores(caption),
            "n_best": [{"caption": c.text, **scores(c)} for c in caption.ranked],
            "tags": [{"name": t.name, "probability": round(t.probability, 4), "word": t.word} for t in caption.tags],
            "grounded_by": caption.grounded_by}


class CaptionFile:
    """An append-only CSV or JSONL file of caption records (the format follows the suffix)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.format = self.path.suffix.lower()
        if self.format not in FORMATS:
            raise CaptionerError(f"{self.path}: the output must be a .csv or .jsonl file.")

    def _drop_cut_line(self) -> None:
        """Remove a last line cut short (no newline) by a crash during a write."""
        with self.path.open("rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(size - 65536, 0))  # far more than one record
            tail = handle.read()
            if tail and not tail.endswith(b"\n"):
                handle.truncate(size - len(tail) + tail.rfind(b"\n") + 1)

    def images(self) -> list[str]:
        """The images the file already holds, as written."""
        if not self.path.is_file():
            return []
        self._drop_cut_line()
        with self.path.open(encoding="utf-8", newline="") as handle:
            if self.format == ".csv":
                reader = csv.DictReader(handle)
                if reader.fieldnames is not None and "image" not in reader.fieldnames:
                    raise CaptionerError(f"{self.path}: exists but has no 'image' column, so it is not a "
                                         f"captions file to resume; choose another output file.")
                return [row["image"] for row in reader]
            try:
                return [json.loads(line)["image"] for line in handle if line.strip()]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise CaptionerError(f"{self.path}: exists but is not a captions JSONL file to resume "
                                     f"({error}); choose another output file.") from None

    def _columns(self) -> list[str]:
        with self.path.open(encoding="utf-8", newline="") as handle:
            return next(csv.reader(handle), list(CSV_COLUMNS))

    def append(self, records: Sequence[dict]) -> None:
        """Write the records in one go, with a header first if the CSV file is new."""
        buffer = io.StringIO()
        if self.format == ".csv":
            new = not self.path.is_file() or self.path.stat().st_size == 0
            # A file begun by an older version keeps its own columns (it may have no tags or grounded_by column).
            writer = csv.DictWriter(buffer, CSV_COLUMNS if new else self._columns(), lineterminator="\n",
                                    extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerows({**r, "n_best": json.dumps(r["n_best"], ensure_ascii=False),
                              "tags": json.dumps(r["tags"], ensure_ascii=False),
                              "grounded_by": json.dumps(r["grounded_by"], ensure_ascii=False)} for r in records)
        else:
            buffer.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        with self.path.open("a", encoding="utf-8", newline="") as handle:
            handle.write(buffer.getvalue())


def pending(paths: Sequence[str | os.PathLike], output: str | os.PathLike
            ) -> tuple[CaptionFile, list[Path], BatchReport]:
    """The resume rule, for every engine: the output file, the images it does not hold yet (matched by
    absolute path, in the order given) and a report counting those it holds."""
    out = CaptionFile(output)
    done = {image_key(image) for image in out.images()}
    todo = [Path(p) for p in paths if image_key(p) not in done]
    out.path.parent.mkdir(parents=True, exist_ok=True)
    return out, todo, BatchReport(out.path, already_done=len(paths) - len(todo))


def caption_to_file(captioner: Captioner, paths: Sequence[str | os.PathLike], output: str | os.PathLike,
                    options: DecodeOptions = DEFAULT_DECODING, batch_size: int = 32,
                    progress: bool = True) -> BatchReport:
    """Caption image files into a CSV or JSONL file (beam 3 unless `options` says otherwise), skipping the
    images it already holds.

    Images are matched by absolute path, so re-run from the same folder (or give absolute paths)
    to resume. Unreadable files are skipped and returned with the reason; they are not written,
    so a re-run tries them again.
    """
    out, todo, report = pending(paths, output)
    if not todo:
        return report
    with tqdm(total=len(todo), desc="Captioning", unit="img", disable=not progress) as bar:
        for captioned, failures in captioner.caption_files(todo, options, batch_size):
            out.append([caption_record(str(path), caption) for path, caption in captioned])
            report.captioned += len(captioned)
            report.failures.extend(failures)
            bar.update(len(captioned) + len(failures))
    return report
