"""The 1,000 ImageNet classes as data: WordNet id, a readable tag name and the word a caption would use."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from pathlib import Path

TABLE = Path(__file__).with_name("imagenet_classes.tsv")  # scripts/build_imagenet_table.py; docs/grounding.md
NUM_CLASSES = 1000


@dataclass(frozen=True)
class ImageNetClass:
    """One ImageNet class: its index in the standard (sorted-wnid) order, WordNet id, tag name and caption word."""

    index: int
    wnid: str
    name: str  # shown as a tag, e.g. "Egyptian cat", "electric locomotive"
    caption_word: str | None  # the one-token word a caption says, e.g. "cat", "train"; None where none fits


@cache
def imagenet_classes() -> tuple[ImageNetClass, ...]:
    """All 1,000 classes in class-index order (read once; the table ships inside the package)."""
    with TABLE.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    classes = tuple(ImageNetClass(int(row["index"]), row["wnid"], row["name"], row["caption_word"] or None)
                    for row in rows)
    if len(classes) != NUM_CLASSES or any(cls.index != i for i, cls in enumerate(classes)):
        raise ValueError(f"{TABLE} is damaged: expected classes 0..{NUM_CLASSES - 1} in order; "
                         f"rebuild it with scripts/build_imagenet_table.py")
    return classes


def caption_words() -> tuple[str | None, ...]:
    """The caption word of each class index (None where the class has none), for mapping logits to words."""
    return tuple(cls.caption_word for cls in imagenet_classes())
