"""Horizontal-flip augmentation of captions: a mirrored photo's caption says "right" where it said "left".

The photos themselves are mirrored before the CNN (FeatureCache(mirrored=True)): a mirrored 7x7 grid
is not the grid of a mirrored photo, so mirrored features are extracted once, like the originals.
"""

from __future__ import annotations

import re

#: Words that swap meaning in a mirror image, per caption language (both directions are listed).
MIRRORED_WORDS: dict[str, dict[str, str]] = {
    "en": {"left": "right"},
    "de": {"links": "rechts", "linke": "rechte", "linken": "rechten", "linker": "rechter", "linkes": "rechtes",
           "linkem": "rechtem"},
    "fr": {"gauche": "droite", "gauches": "droites"},
    "id": {"kiri": "kanan"},
    "tr": {"sol": "sağ", "solda": "sağda", "sola": "sağa", "soldan": "sağdan"},
    "zh": {"左": "右"},
}


def _swaps(lang: str) -> dict[str, str]:
    pairs = MIRRORED_WORDS.get(lang, {})
    return {**pairs, **{b: a for a, b in pairs.items()}}


def mirror_caption(caption: str, lang: str = "en", tokenization: str = "words") -> str:
    """The caption of the mirrored photo: left and right swapped, whole words only (characters for zh/ja)."""
    swaps = _swaps(lang)
    if not swaps:
        return caption
    if tokenization == "chars":
        table: dict[str, str | int | None] = {a: b for a, b in swaps.items() if len(a) == 1 == len(b)}
        return caption.translate(str.maketrans(table))
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(swaps, key=len, reverse=True))) + r")\b",
                         re.IGNORECASE)

    def swap(match: re.Match[str]) -> str:
        word = match.group(0)
        other = swaps[word.lower()]
        return other.capitalize() if word[0].isupper() else other

    return pattern.sub(swap, caption)
