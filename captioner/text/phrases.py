"""The English words that open a noun phrase, and the modifiers that may repeat in a sound caption.

"a baby is holding a baby" and "a woman and woman" open the same noun phrase twice; "a black dog and
a black cat" does not (its heads differ). The repetition measure (captioner.evaluation.repetition) and
the decoding constraint that blocks such captions (captioner.decoding.constraints) share these lists.
"""

from __future__ import annotations

import numpy as np

from captioner.text.vocabulary import SPECIAL_TOKENS, Vocabulary

DETERMINERS = frozenset({"a", "an", "the", "two", "three", "four", "several", "some", "his", "her", "their", "its"})
OPENERS = DETERMINERS | {"and"}
MODIFIERS = frozenset({"black", "white", "brown", "red", "blue", "green", "yellow", "pink", "orange", "purple",
                       "grey", "gray", "little", "small", "large", "big", "young", "old", "other", "same"})


def is_phrase_head(word: str) -> bool:
    """Whether a word after an opener heads the phrase (is not itself a determiner or a modifier)."""
    return word not in DETERMINERS and word not in MODIFIERS


def phrase_tables(vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """(V,) 0/1 tables over an English vocabulary: which tokens open a noun phrase, which can head one.

    Other languages get no openers, so nothing is blocked for them. Built from a few dictionary
    look-ups, once per search (decoding.constraints.RepeatBlocker).
    """
    openers = np.zeros(len(vocab), np.float32)
    heads = np.ones(len(vocab), np.float32)
    if vocab.lang.split("-")[0] == "en" and vocab.tokenization == "words":
        openers[vocab.ids(OPENERS)] = 1.0
        heads[vocab.ids(DETERMINERS | MODIFIERS | set(SPECIAL_TOKENS))] = 0.0
    return openers, heads
