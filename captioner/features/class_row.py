"""The inputs of a decoder that reads the classifier (captioner.models.grounded): the feature grid with the
photo's ImageNet probabilities as one extra row, and a vocabulary that has every tag's caption word.

One array carries both, so the searches, ensembles, training pipelines and exports pass a grounded model's
inputs exactly as they pass a plain model's grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from captioner.errors import CaptionerError
from captioner.features.imagenet import caption_words
from captioner.text.vocabulary import Vocabulary


def with_class_row(grids: np.ndarray, probabilities: np.ndarray | None) -> np.ndarray:
    """Grids (n, cells, channels) and probabilities (n, classes) → (n, cells + 1, channels) float32, the last
    row the probabilities followed by zeros; None (no tags, grounding off) gives an all-zero row."""
    n, _, channels = grids.shape
    row = np.zeros((n, 1, channels), np.float32)  # (n, 1, channels)
    if probabilities is not None:
        if probabilities.shape[-1] > channels:
            raise CaptionerError(f"{probabilities.shape[-1]} class probabilities do not fit a row of {channels} "
                                 f"channels.")
        row[:, 0, : probabilities.shape[-1]] = probabilities
    return np.concatenate([np.asarray(grids, np.float32), row], axis=1)


class ClassRowTable:
    """A feature table whose rows carry their photo's class probabilities: table[rows] is with_class_row of
    the grids and probabilities of those rows (the two tables list the same photos in the same order)."""

    def __init__(self, grids, classes) -> None:
        if len(grids) != len(classes):
            raise CaptionerError(f"{len(grids)} feature grids but {len(classes)} rows of class probabilities.")
        self.grids, self.classes = grids, classes
        rows, cells, channels = grids.shape
        self.shape = (rows, cells + 1, channels)

    def __len__(self) -> int:
        return len(self.grids)

    def __getitem__(self, rows) -> np.ndarray:
        return with_class_row(self.grids[rows], np.asarray(self.classes[rows], np.float32))


def grounding_vocabulary(vocab: Vocabulary, words: Sequence[str | None] | None = None) -> Vocabulary:
    """The vocabulary with every tag caption word it lacks appended (sorted), so a copied tag can be written;
    `words`: each class's caption word (default: the ImageNet table's)."""
    known = set(vocab.tokens)
    extra = sorted({word for word in (words or caption_words()) if word and word not in known})
    return Vocabulary([*vocab.tokens, *extra], vocab.tokenization, vocab.max_length, vocab.lang,
                      vocab.tag_words + len(extra))


def class_word_ids(vocab: Vocabulary, words: Sequence[str | None] | None = None) -> list[int]:
    """Each class's caption-word id in `vocab` (-1: the class has no word or `vocab` lacks it); `words` as above."""
    index = {token: i for i, token in enumerate(vocab.tokens)}
    return [index.get(word, -1) if word else -1 for word in (words or caption_words())]
