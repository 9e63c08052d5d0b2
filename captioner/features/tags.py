"""Tags: what the encoder's ImageNet classifier sees in a photo, as plain names with probabilities."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from captioner.features.imagenet import imagenet_classes

TAGS_TOP_K = 5  # at most this many tags a photo
TAGS_MIN_PROBABILITY = 0.05  # and only classes the classifier gives at least this probability


@dataclass(frozen=True)
class Tag:
    """One ImageNet class the classifier sees: its readable name, probability and the word a caption would use."""

    name: str  # e.g. "Egyptian cat"
    probability: float
    word: str | None  # e.g. "cat"; None for classes no caption word fits
    index: int  # the ImageNet class index

    def __str__(self) -> str:
        return f"{self.name} {self.probability:.2f}"


def top_tags(probabilities: np.ndarray, k: int = TAGS_TOP_K,
             min_probability: float = TAGS_MIN_PROBABILITY) -> list[list[Tag]]:
    """Each photo's most probable classes, best first: probabilities (photos, 1000) → a list of Tags a photo."""
    classes = imagenet_classes()
    best = np.argsort(-probabilities, axis=1)[:, :k]  # (photos, k)
    return [[Tag(classes[i].name, float(row[i]), classes[i].caption_word, int(i))
             for i in indices if row[i] >= min_probability]
            for row, indices in zip(probabilities, best, strict=True)]
