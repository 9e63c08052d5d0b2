"""Reading captions files safely: bounded lines, decoded text, CSV/TSV, Flickr8k token, Karpathy and COCO rows.

Each reader yields (line, image, caption, split) rows and reports what it cannot use as a Problem
(file and line) instead of raising, so one bad row never stops a dataset from loading.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captioner.errors import DataError

_IMAGE_COLUMNS = ("image", "image_name", "filename", "file_name", "file", "path", "image_path")
_CAPTION_COLUMNS = ("caption", "comment", "text", "sentence", "description")


@dataclass(frozen=True)
class Problem:
    """One skipped row or file: where it is and what is wrong with it."""

    source: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.message}"


MAX_LINE_BYTES = 65_536  # a longer line is no captions row (a pasted blob, binary data): reported, skipped
MAX_CAPTION_CHARS = 5_000  # longer: no caption, a bad row; shorter ones past max_length: kept, Vocabulary truncates
_MAX_RECORD_LINES = 10  # a quoted CSV field may go on over this many lines; past that its quote is unbalanced
CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x7f]")  # control characters left after whitespace is normalised
NAME_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clip(text: str, size: int = 80) -> str:
    return text if len(text) <= size else f"{text[:size]}… ({len(text):,} characters)"


def read_lines(path: Path, problems: list[Problem]) -> Iterator[tuple[int, str]]:
    """The lines of a text file, decoded one by one: a line that is too long, holds NUL bytes or is not
    UTF-8 is reported and skipped, and the others are read on."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise DataError(f"{path}: captions file not found.") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read the captions file ({error.strerror}).") from None
    with handle:
        if handle.read(2) in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            raise DataError(f"{path}: UTF-16 text; save it as UTF-8.")
        handle.seek(0)
        number = 0
        while raw := handle.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                size = len(raw)
                while raw and not raw.endswith(b"\n"):  # skip the rest of the line without holding it
                    raw = handle.readline(1 << 20)
                    size += len(raw)
                size -= raw.endswith(b"\n")
                problems.append(Problem(path.name, number, f"line of {size:,} bytes, more than the "
                                                           f"{MAX_LINE_BYTES:,} a captions row may have"))
                continue
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            if b"\0" in raw:
                problems.append(Problem(path.name, number, "NUL bytes in the line (binary data?)"))
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                problems.append(Problem(path.name, number, f"not UTF-8 text (byte 0x{raw[error.start]:02x} at "
                                                           f"column {error.start + 1}); save the file as UTF-8"))
                continue
            yield number, text.rstrip("\r\n")


def _csv_record(lines: list[tuple[int, str]], start: int, delimiter: str) -> tuple[list[str] | str, int]:
    """The CSV record starting at lines[start] and how many lines it takes, or why it is unreadable."""
    if '"' not in lines[start][1]:  # no quoting: the common case, read fast
        return lines[start][1].split(delimiter), 1
    for used in range(1, min(_MAX_RECORD_LINES, len(lines) - start) + 1):
        text = "\n".join(line for _, line in lines[start:start + used])
        try:
            return next(csv.reader([text], delimiter=delimiter, strict=True), []), used
        except csv.Error as error:
            if "unexpected end of data" in str(error):
                continue  # inside a quoted field: it may go on on the next line
            if used > 1:
                break
            try:  # a stray quote inside a field ('a 5" dog', '"a" dog'): read leniently, as csv always did
                return next(csv.reader([text], delimiter=delimiter), []), used
            except csv.Error as error:
                return f"not a CSV row ({error})", 1
    return 'unbalanced quotes: a quoted field (") is never closed', 1


def read_csv_rows(path: Path, problems: list[Problem]) -> Iterator[tuple[int, str, str, str | None]]:
    """Rows of a CSV/TSV of image,caption[,split]; the header is optional."""
    lines = list(read_lines(path, problems))
    delimiter = "\t" if path.suffix.lower() == ".tsv" or (lines and lines[0][1].count("\t")) else ","
    columns: tuple[int, int, int | None] = (0, 1, None)
    first = True
    index = 0
    while index < len(lines):
        line = lines[index][0]
        row, used = _csv_record(lines, index, delimiter)
        index += used
        if isinstance(row, str):
            problems.append(Problem(path.name, line, row))
            continue
        if not row or not "".join(row).strip():
            continue
        if first:
            first = False
            header = [cell.strip().lower() for cell in row]
            if header and header[0] in (*_IMAGE_COLUMNS, "image_id"):
                columns = _header_columns(header, path)
                continue
        image_col, caption_col, split_col = columns
        if len(row) <= max(image_col, caption_col):
            problems.append(Problem(path.name, line, f"expected image{delimiter}caption, got {clip(repr(row))}"))
            continue
        image = row[image_col].strip()
        if split_col is None and len(row) > caption_col + 1:
            caption = delimiter.join(row[caption_col:])  # unquoted commas inside the caption
        else:
            caption = row[caption_col]
        split = row[split_col].strip() if split_col is not None and split_col < len(row) else None
        yield line, image, caption, split


def _header_columns(header: list[str], path: Path) -> tuple[int, int, int | None]:
    image = next((i for i, h in enumerate(header) if h in (*_IMAGE_COLUMNS, "image_id")), None)
    caption = next((i for i, h in enumerate(header) if h in _CAPTION_COLUMNS), None)
    if image is None or caption is None:
        raise DataError(
            f"{path}: header {header} has no image and caption columns; "
            f"name them e.g. 'image,caption'."
        )
    split = header.index("split") if "split" in header else None
    return image, caption, split


def read_token_rows(path: Path, problems: list[Problem]) -> Iterator[tuple[int, str, str, None]]:
    """Rows of Flickr8k.token.txt: `name.jpg#N<TAB>caption`."""
    for line, text in read_lines(path, problems):
        if not text.strip():
            continue
        key, tab, caption = text.partition("\t")
        name, hash_, number = key.rpartition("#")
        if not tab or not hash_ or not number.strip().isdigit() or not name:
            problems.append(Problem(path.name, line, "expected 'image.jpg#N<TAB>caption'"))
            continue
        yield line, name.strip(), caption, None


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: captions file not found.") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error}); save it as UTF-8.") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror}).") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(read_text(path))
    except (json.JSONDecodeError, RecursionError) as error:
        raise DataError(f"{path}: invalid JSON ({clip(str(error))}).") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with 'images' (and 'annotations').")
    return data


def _json_list(data: dict[str, Any], key: str, path: Path) -> list[Any]:
    value = data.get(key, [])
    if not isinstance(value, list):
        raise DataError(f"{path}: '{key}' should be a list, not {type(value).__name__}.")
    return value


def karpathy_rows(path: Path, problems: list[Problem]) -> Iterator[tuple[None, str, str, str]]:
    """Rows of Karpathy's dataset_{flickr8k,flickr30k,coco}.json."""
    for number, entry in enumerate(_json_list(_read_json(path), "images", path), start=1):
        try:
            name = str(Path(entry.get("filepath", "")) / entry["filename"])
            split = entry.get("split", "train")
            for sentence in entry["sentences"]:
                yield None, name, sentence.get("raw") or " ".join(sentence.get("tokens", [])), split
        except (KeyError, TypeError, AttributeError, ValueError):
            problems.append(Problem(path.name, None, f"images[{number - 1}] lacks filename/sentences"))


def coco_rows(path: Path, problems: list[Problem]) -> Iterator[tuple[None, str, str, str | None]]:
    """Rows of a COCO captions_<folder>.json; images live in <folder>/, the split is in its name."""
    data = _read_json(path)
    folder = path.stem.partition("_")[2]  # captions_train2014 -> train2014
    split = next((s for s in ("train", "val", "test") if s in folder), None)
    files = {image["id"]: f"{folder}/{image['file_name']}" for image in _json_list(data, "images", path)
             if isinstance(image, dict) and isinstance(image.get("id"), (int, str))
             and isinstance(image.get("file_name"), str)}
    for number, note in enumerate(_json_list(data, "annotations", path), start=1):
        try:
            yield None, files[note["image_id"]], note["caption"], split
        except (KeyError, TypeError):
            problems.append(Problem(path.name, None, f"annotations[{number - 1}] has no known image_id/caption"))


# --------------------------------------------------------------------------- assembling


