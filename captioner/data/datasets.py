"""Dataset readers: captions files of the common layouts → images, captions and splits.

Supported: the Kaggle Flickr8k layout (Images/ + captions.txt), the original Flickr8k release
(Flickr8k.token.txt + split lists), Karpathy's dataset_*.json (Flickr8k/30k/COCO), COCO
captions_*.json and any CSV/TSV of image,caption. Bad rows are reported with file and line and
skipped; the rest is kept.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from captioner.errors import DataError

SPLITS = ("train", "dev", "test")
_SPLIT_ALIASES = {"train": "train", "restval": "train", "val": "dev", "valid": "dev",
                  "validation": "dev", "dev": "dev", "test": "test"}
_IMAGE_COLUMNS = ("image", "image_name", "filename", "file_name", "file", "path", "image_path")
_CAPTION_COLUMNS = ("caption", "comment", "text", "sentence", "description")
_IMAGE_FOLDERS = ("Images", "images", "Flicker8k_Dataset", "Flickr8k_Dataset", "flickr30k_images")


@dataclass(frozen=True)
class Problem:
    """One skipped row or file: where it is and what is wrong with it."""

    source: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.message}"


@dataclass
class CaptionDataset:
    """Images (names relative to `images_dir`) with their captions and split membership."""

    images_dir: Path
    captions: dict[str, list[str]]
    splits: dict[str, list[str]]
    problems: list[Problem] = field(default_factory=list)
    source: str = ""

    def path(self, image: str) -> Path:
        return self.images_dir / image

    def split(self, name: str) -> list[str]:
        """Image names of one split ('train', 'dev' or 'test'); empty if the split is absent."""
        return list(self.splits.get(name, []))

    def items(self, split: str) -> list[tuple[Path, list[str]]]:
        return [(self.path(name), self.captions[name]) for name in self.split(split)]

    def limit(self, n: int | None) -> CaptionDataset:
        """Keep at most the first `n` images of each split (for quick runs)."""
        if not n:
            return self
        splits = {name: images[:n] for name, images in self.splits.items()}
        kept = {image for images in splits.values() for image in images}
        captions = {k: v for k, v in self.captions.items() if k in kept}
        return CaptionDataset(self.images_dir, captions, splits, self.problems, self.source)

    def summary(self) -> str:
        parts = ", ".join(f"{name} {len(self.splits.get(name, []))}" for name in SPLITS)
        n_captions = sum(len(c) for c in self.captions.values())
        text = f"{self.source}: {len(self.captions)} images, {n_captions} captions ({parts})"
        if self.problems:
            text += f"; skipped {len(self.problems)} bad rows or files"
        return text


# --------------------------------------------------------------------------- row readers
# Each yields (line number or None, image name, caption) and appends Problems for bad rows.


def _read_csv_rows(path: Path, problems: list[Problem]) -> Iterator[tuple[int, str, str, str | None]]:
    """Rows of a CSV/TSV of image,caption[,split]; the header is optional."""
    text = _read_text(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" or text.split("\n", 1)[0].count("\t") else ","
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    columns = (0, 1, None)
    first = True
    for row in reader:
        line = reader.line_num
        if first:
            first = False
            header = [cell.strip().lower() for cell in row]
            if header and header[0] in (*_IMAGE_COLUMNS, "image_id"):
                columns = _header_columns(header, path)
                continue
        if not row or not "".join(row).strip():
            continue
        image_col, caption_col, split_col = columns
        if len(row) <= max(image_col, caption_col):
            problems.append(Problem(path.name, line, f"expected image{delimiter}caption, got {row!r}"))
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


def _read_token_rows(path: Path, problems: list[Problem]) -> Iterator[tuple[int, str, str, None]]:
    """Rows of Flickr8k.token.txt: `name.jpg#N<TAB>caption`."""
    for line, text in enumerate(_read_text(path).splitlines(), start=1):
        if not text.strip():
            continue
        key, tab, caption = text.partition("\t")
        name, hash_, number = key.rpartition("#")
        if not tab or not hash_ or not number.strip().isdigit() or not name:
            problems.append(Problem(path.name, line, "expected 'image.jpg#N<TAB>caption'"))
            continue
        yield line, name.strip(), caption, None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: captions file not found.") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error}); save it as UTF-8.") from None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: invalid JSON ({error}).") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with 'images' (and 'annotations').")
    return data


def _karpathy_rows(path: Path, problems: list[Problem]) -> Iterator[tuple[None, str, str, str]]:
    """Rows of Karpathy's dataset_{flickr8k,flickr30k,coco}.json."""
    for number, entry in enumerate(_read_json(path).get("images", []), start=1):
        try:
            name = str(Path(entry.get("filepath", "")) / entry["filename"])
            split = entry.get("split", "train")
            for sentence in entry["sentences"]:
                yield None, name, sentence.get("raw") or " ".join(sentence.get("tokens", [])), split
        except (KeyError, TypeError, AttributeError):
            problems.append(Problem(path.name, None, f"images[{number - 1}] lacks filename/sentences"))


def _coco_rows(path: Path, problems: list[Problem]) -> Iterator[tuple[None, str, str, str | None]]:
    """Rows of a COCO captions_<folder>.json; images live in <folder>/, the split is in its name."""
    data = _read_json(path)
    folder = path.stem.partition("_")[2]  # captions_train2014 -> train2014
    split = next((s for s in ("train", "val", "test") if s in folder), None)
    files = {image["id"]: f"{folder}/{image['file_name']}" for image in data.get("images", [])
             if isinstance(image, dict) and "id" in image and "file_name" in image}
    for number, note in enumerate(data.get("annotations", []), start=1):
        try:
            yield None, files[note["image_id"]], note["caption"], split
        except (KeyError, TypeError):
            problems.append(Problem(path.name, None, f"annotations[{number - 1}] has no known image_id/caption"))


# --------------------------------------------------------------------------- assembling


def _collect(rows: Iterable[tuple[int | None, str, str, str | None]], source: str,
             images_dir: Path, problems: list[Problem]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Group rows by image, dropping empty captions and images missing on disk."""
    captions: dict[str, list[str]] = {}
    split_of: dict[str, str] = {}
    missing: set[str] = set()
    exists: dict[str, bool] = {}
    for line, image, caption, split in rows:
        caption = " ".join(str(caption).split())
        if not image:
            problems.append(Problem(source, line, "empty image name"))
            continue
        if not caption:
            problems.append(Problem(source, line, f"empty caption for {image}"))
            continue
        if image not in exists:
            exists[image] = (images_dir / image).is_file()
        if not exists[image]:
            if image not in missing:
                missing.add(image)
                problems.append(Problem(source, line, f"image {image} not found in {images_dir}"))
            continue
        captions.setdefault(image, []).append(caption)
        if split:
            alias = _SPLIT_ALIASES.get(split.strip().lower())
            if alias is None:
                problems.append(Problem(source, line, f"unknown split {split!r} (use train/dev/test)"))
            else:
                split_of[image] = alias
    return captions, split_of


def _read_split_lists(folder: Path, captions: dict[str, list[str]]) -> dict[str, list[str]]:
    """Official Flickr8k split lists (Flickr_8k.{train,dev,test}Images.txt), where present."""
    splits = {}
    for name in SPLITS:
        path = folder / f"Flickr_8k.{name}Images.txt"
        if path.is_file():
            listed = [line.strip() for line in _read_text(path).splitlines() if line.strip()]
            splits[name] = [image for image in listed if image in captions]
    return splits


def seeded_split(images: Iterable[str], seed: int = 0,
                 fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> dict[str, list[str]]:
    """Split images reproducibly into train/dev/test by the given fractions."""
    shuffled = sorted(images)
    random.Random(seed).shuffle(shuffled)
    n = len(shuffled)
    n_dev = max(1, round(n * fractions[1])) if n >= 3 else 0
    n_test = max(1, round(n * fractions[2])) if n >= 3 and fractions[2] > 0 else 0
    n_train = n - n_dev - n_test
    return {"train": shuffled[:n_train], "dev": shuffled[n_train:n_train + n_dev],
            "test": shuffled[n_train + n_dev:]}


def _find_images_dir(root: Path) -> Path:
    return next((root / name for name in _IMAGE_FOLDERS if (root / name).is_dir()), root)


def _detect(path: Path, lang: str | None) -> tuple[str, list[Path], Path]:
    """Return (format, captions files, folder holding split lists) for a path."""
    if path.is_file():
        if path.suffix.lower() == ".json":
            kind = "karpathy" if "sentences" in _read_text(path)[:100_000] else "coco"
            return kind, [path], path.parent
        with path.open(encoding="utf-8", errors="replace") as handle:
            head = handle.readline()
        kind = "token" if "#" in head.split("\t")[0] and "\t" in head else "csv"
        return kind, [path], path.parent
    if not path.is_dir():
        raise DataError(f"{path}: no such dataset file or folder.")
    captions_name = f"captions_{lang}.txt" if lang and lang != "en" else "captions.txt"
    if (path / captions_name).is_file():
        return "csv", [path / captions_name], path
    if lang and lang != "en":
        raise DataError(f"{path}: no {captions_name} for language '{lang}'.")
    if (path / "Flickr8k.token.txt").is_file():
        return "token", [path / "Flickr8k.token.txt"], path
    karpathy = sorted(path.glob("dataset_*.json"))
    if karpathy:
        return "karpathy", karpathy[:1], path
    coco = sorted((path / "annotations").glob("captions_*.json"))
    if coco:
        return "coco", coco, path
    raise DataError(
        f"{path}: no captions found. Expected captions.txt (Kaggle Flickr8k), Flickr8k.token.txt, "
        f"dataset_*.json (Karpathy) or annotations/captions_*.json (COCO)."
    )


_ROW_READERS = {"csv": _read_csv_rows, "token": _read_token_rows,
                "karpathy": _karpathy_rows, "coco": _coco_rows}


def load_dataset(path: str | Path, images: str | Path | None = None, lang: str | None = None,
                 seed: int = 0) -> CaptionDataset:
    """Read a captioning dataset from a folder or captions file, detecting its layout.

    `images` overrides the folder holding the image files; `lang` picks captions_<lang>.txt in
    a Kaggle-style folder. Without split lists, images are split 80/10/10 with `seed`.
    """
    path = Path(path)
    kind, files, split_folder = _detect(path, lang)
    root = path if path.is_dir() else path.parent
    if kind == "coco":  # annotations/captions_train2014.json beside train2014/
        root = files[0].parent.parent if files[0].parent.name == "annotations" else files[0].parent
        images_dir = Path(images) if images else root
    else:
        images_dir = Path(images) if images else _find_images_dir(root)
    if not images_dir.is_dir():
        raise DataError(f"{images_dir}: images folder not found; pass --images to point at it.")
    problems: list[Problem] = []
    captions: dict[str, list[str]] = {}
    split_of: dict[str, str] = {}
    for file in files:
        file_captions, file_splits = _collect(
            _ROW_READERS[kind](file, problems), file.name, images_dir, problems)
        for image, texts in file_captions.items():
            captions.setdefault(image, []).extend(texts)
        split_of.update(file_splits)
    if not captions:
        details = "; ".join(str(p) for p in problems[:3])
        raise DataError(f"{path}: no usable captions{' (' + details + ')' if details else ''}.")
    splits = _read_split_lists(split_folder, captions)
    if not splits and split_of and len(set(split_of.values())) > 1:
        splits = {name: sorted(i for i, s in split_of.items() if s == name) for name in SPLITS}
    if not splits.get("train"):
        splits = seeded_split(captions, seed)
    return CaptionDataset(images_dir, captions, splits, problems, source=str(files[0]))
