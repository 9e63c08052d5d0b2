"""Flaws the n-gram metrics barely see: a noun phrase said twice ("a baby is holding a baby"), and how
varied a model's captions are (distinct captions, distinct words)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise

from captioner.text.phrases import OPENERS, is_phrase_head


def repeated_noun_phrases(words: Sequence[str]) -> list[str]:
    """The words that open a noun phrase twice in one caption (after a determiner, or a bare "and"):
    ["baby"] for "a baby is holding a baby", ["woman"] for "a woman and woman are sitting"."""
    heads = [word for opener, word in pairwise(words) if opener in OPENERS and is_phrase_head(word)]
    return [word for word, count in Counter(heads).items() if count > 1]


def repetition_stats(captions: Iterable[Sequence[str]]) -> dict[str, int]:
    """For a set of captions (each a list of words): how many repeat a noun phrase, how many are distinct,
    how many different words they use, and how many there are."""
    captions = [tuple(words) for words in captions]
    return {"repeat a noun phrase": sum(bool(repeated_noun_phrases(words)) for words in captions),
            "distinct captions": len(set(captions)),
            "distinct words": len({word for words in captions for word in words}),
            "captions": len(captions)}


def format_repetition(rows: Mapping[str, Mapping[str, int]]) -> str:
    """A plain-text table, one row per decoding: captions repeating a noun phrase, distinct captions and words."""
    width = max([len(name) for name in rows] + [8])
    columns = ("repeat a noun phrase", "distinct captions", "distinct words")
    lines = ["".ljust(width) + "".join(c.rjust(22) for c in columns)]
    for name, row in rows.items():
        cells = [f"{row[columns[0]]} of {row['captions']}", str(row[columns[1]]), str(row[columns[2]])]
        lines.append(name.ljust(width) + "".join(cell.rjust(22) for cell in cells))
    return "\n".join(lines)
