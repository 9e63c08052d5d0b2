"""Datasets: captions files of the common layouts → images, captions and splits, with paths kept inside the dataset.

Supported: the Kaggle Flickr8k layout (Images/ + captions.txt), the original Flickr8k release
(Flickr8k.token.txt + split lists), Karpathy's dataset_*.json (Flickr8k/30k/COCO), COCO
captions_*.json and any CSV/TSV of image,caption. Bad rows are reported with file and line and
skipped; the rest is kept.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from captioner.data.readers import (
    CONTROL,
    MAX_CAPTION_CHARS,
    MAX_LINE_BYTES,
    NAME_CONTROL,
    Problem,
    clip,
    coco_rows,
    karpathy_rows,
    read_csv_rows,
    read_lines,
    read_text,
    read_token_rows,
)
from captioner.errors import DataError

SPLITS = ("train", "dev", "test")
_SPLIT_ALIASES = {"train": "train", "restval": "train", "val": "dev", "valid": "dev",
                  "validation": "dev", "dev": "dev", "test": "test"}
_IMAGE_FOLDERS = ("Images", "images", "Flicker8k_Dataset", "Flickr8k_Dataset", "flickr30k_images")


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
# Captions files are untrusted input: each reader yields (line number or None, image name, caption,
# split) and appends a Problem for every bad row, which is skipped; nothing in a row raises.

def _outside(images_dir: Path, image: str) -> bool:
    """Whether an image name points out of the images folder: `..` in it, or an absolute path elsewhere.

    Checked on the name, not by following links: symlinks the folder's owner put inside it are followed.
    """
    if ".." in Path(image).parts:
        return True
    folder = os.path.normpath(os.path.abspath(images_dir))
    target = os.path.normpath(os.path.join(folder, image))
    try:
        return os.path.commonpath([folder, target]) != folder
    except ValueError:  # another drive (Windows)
        return True


def _collect(rows: Iterable[tuple[int | None, str, str, str | None]], source: str,
             images_dir: Path, problems: list[Problem],
             missing: set[str] | None = None) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Group rows by image, dropping bad captions, image names outside `images_dir` and images missing
    on disk (whose names are added to `missing`)."""
    captions: dict[str, list[str]] = {}
    split_of: dict[str, str] = {}
    missing = set() if missing is None else missing
    exists: dict[str, bool] = {}
    for line, image, caption, split in rows:
        if not isinstance(image, str) or not isinstance(caption, str):
            problems.append(Problem(source, line, "image name and caption must be text"))
            continue
        caption = " ".join(caption.split())
        if not image:
            problems.append(Problem(source, line, "empty image name"))
            continue
        if not caption:
            problems.append(Problem(source, line, f"empty caption for {clip(image)}"))
            continue
        if NAME_CONTROL.search(image):
            problems.append(Problem(source, line, f"control characters in the image name {clip(repr(image))}"))
            continue
        if len(caption) > MAX_CAPTION_CHARS:
            problems.append(Problem(source, line, f"caption of {len(caption):,} characters for {clip(image)}, "
                                                  f"more than the {MAX_CAPTION_CHARS:,} a caption may have"))
            continue
        if CONTROL.search(caption):
            problems.append(Problem(source, line, f"control characters in the caption for {clip(image)}"))
            continue
        if image not in exists:
            if _outside(images_dir, image):
                exists[image] = False
                problems.append(Problem(source, line, f"image {clip(image)} is outside the images folder "
                                                      f"{images_dir}; refused (name images relative to it)"))
                missing.add(image)  # reported once, like a missing image
                continue
            try:
                exists[image] = (images_dir / image).is_file()
            except (OSError, ValueError):  # a name too long for the file system, or otherwise unusable
                exists[image] = False
        if not exists[image]:
            if image not in missing:
                missing.add(image)
                problems.append(Problem(source, line, f"image {clip(image)} not found in {images_dir}"))
            continue
        captions.setdefault(image, []).append(caption)
        if split:
            alias = _SPLIT_ALIASES.get(split.strip().lower())
            if alias is None:
                problems.append(Problem(source, line, f"unknown split {clip(repr(split))} (use train/dev/test)"))
            else:
                split_of[image] = alias
    return captions, split_of


def _read_split_lists(folder: Path, captions: dict[str, list[str]], problems: list[Problem]
                      ) -> dict[str, list[str]]:
    """Official Flickr8k split lists (Flickr_8k.{train,dev,test}Images.txt), where present."""
    splits = {}
    for name in SPLITS:
        path = folder / f"Flickr_8k.{name}Images.txt"
        if path.is_file():
            listed = [line.strip() for _, line in read_lines(path, problems) if line.strip()]
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
            kind = "karpathy" if "sentences" in read_text(path)[:100_000] else "coco"
            return kind, [path], path.parent
        with path.open(encoding="utf-8", errors="replace") as handle:
            head = handle.readline(MAX_LINE_BYTES)
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


_ROW_READERS = {"csv": read_csv_rows, "token": read_token_rows,
                "karpathy": karpathy_rows, "coco": coco_rows}


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
    missing: set[str] = set()
    for file in files:
        file_captions, file_splits = _collect(
            _ROW_READERS[kind](file, problems), file.name, images_dir, problems, missing)
        for image, texts in file_captions.items():
            captions.setdefault(image, []).extend(texts)
        split_of.update(file_splits)
    order = {file.name: number for number, file in enumerate(files)}
    problems.sort(key=lambda problem: (order.get(problem.source, 0), problem.line or 0))  # in file order
    if not captions and missing:
        raise DataError(f"{path}: no image to use: none of the {len(missing)} images its captions name is in "
                        f"{images_dir} (e.g. {clip(sorted(missing)[0])}); pass --images with the folder that "
                        f"holds them.")
    if not captions:
        details = "; ".join(str(p) for p in problems[:3])
        raise DataError(f"{path}: no usable captions{' (' + details + ')' if details else ''}.")
    splits = _read_split_lists(split_folder, captions, problems)
    if not splits and split_of and len(set(split_of.values())) > 1:
        splits = {name: sorted(i for i, s in split_of.items() if s == name) for name in SPLITS}
    if not splits.get("train"):
        splits = seeded_split(captions, seed)
    return CaptionDataset(images_dir, captions, splits, problems, source=str(files[0]))
