"""The English words that open a noun phrase, and the modifiers that may repeat in a sound caption.

"a baby is holding a baby" and "a woman and woman" open the same noun phrase twice; "a black dog and
a black cat" does not (its heads differ). The repetition measure (captioner.evaluation.repetition) and
the decoding constraint that blocks such captions (captioner.decoding.constraints) share these lists.
"""

from __future__ import annotations

import numpy as np

DETERMINERS = frozenset({"a", "an", "the", "two", "three", "four", "several", "some", "his", "her", "their", "its"})
OPENERS = DETERMINERS | {"and"}
MODIFIERS = frozenset({"black", "white", "brown", "red", "blue", "green", "yellow", "pink", "orange", "purple",
                       "grey", "gray", "little", "small", "large", "big", "young", "old", "other", "same"})


def is_phrase_head(word: str) -> bool:
    """Whether a word after an opener heads the phrase (is not itself a determiner or a modifier)."""
    return word not in DETERMINERS and word not in MODIFIERS


def phrase_tables(tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(V,) 0/1 tables over a vocabulary's tokens: which open a noun phrase, which can head one.

    A vocabulary without these English words (German, Chinese) gets no openers, so nothing is blocked.
    """
    openers = np.array([token in OPENERS for token in tokens], np.float32)
    heads = np.array([is_phrase_head(token) and not token.startswith("<") for token in tokens], np.float32)
    return openers, heads
