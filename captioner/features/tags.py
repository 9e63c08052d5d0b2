"""Tags: what the encoder's ImageNet classifier sees in a photo, as plain names with probabilities."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from captioner.features.imagenet import caption_words, imagenet_classes
from captioner.text.objects import object_phrases

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


def _object_of(word: str) -> str:
    """The object a tag word names (canoe → boat, tabby's cat → cat), or the word itself when it names none."""
    return object_phrases().get((word,), word)


@cache
def class_objects() -> tuple[list[str], np.ndarray]:
    """The objects (or, outside captioner/text/objects.tsv, the words) the class table's caption words name, and a
    (1000, objects) 0/1 matrix: which class names which."""
    per_class = [_object_of(word) if word else None for word in caption_words()]
    words = sorted({word for word in per_class if word})
    column = {word: j for j, word in enumerate(words)}
    matrix = np.zeros((len(per_class), len(words)), np.float32)
    for i, word in enumerate(per_class):
        if word:
            matrix[i, column[word]] = 1.0
    return words, matrix


def confident_words(probabilities: np.ndarray, min_probability: float) -> list[dict[str, float]]:
    """Each photo's tag objects with at least `min_probability`, summed over the classes that name the same object
    (121 dog breeds are one dog; canoe, speedboat and schooner one boat), best first, each under the object's name
    (or the caption word of a class no object of captioner/text/objects.tsv covers): probabilities (photos, 1000)
    → {word: probability} a photo."""
    words, matrix = class_objects()
    by_word = np.asarray(probabilities, np.float32) @ matrix  # (photos, objects)
    return [{words[j]: float(row[j]) for j in np.argsort(-row) if row[j] >= min_probability} for row in by_word]
