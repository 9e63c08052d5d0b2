"""The objects an English caption names (captioner/text/objects.tsv), and training data with chosen objects removed.

Shared by the hallucination measure and held-out-concept F1 (captioner.evaluation.grounding) and by training, which
drops every training photo a caption of which names a held-out concept (the DCC protocol; docs/grounding.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

from captioner.data.datasets import CaptionDataset
from captioner.errors import CaptionerError

TABLE = Path(__file__).with_name("objects.tsv")
_TOKEN = re.compile(r"[a-z]+")


@cache
def object_phrases() -> dict[tuple[str, ...], str]:
    """Every word or phrase of the object table (as a tuple of tokens) → its object's canonical name."""
    phrases: dict[tuple[str, ...], str] = {}
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, words = line.split("\t")
            for phrase in words.split(","):
                key = tuple(_TOKEN.findall(phrase.lower()))
                if key in phrases:
                    raise ValueError(f"{TABLE}: {' '.join(key)!r} names both {phrases[key]} and {name}")
                phrases[key] = name
    return phrases


def object_names() -> list[str]:
    """The canonical object names, in table order."""
    return list(dict.fromkeys(object_phrases().values()))


@cache
def naming_words(word: str) -> frozenset[str]:
    """The one-token words that name the object `word` names (dog → dog, dogs, puppy, …, lab; hot dog → hotdog,
    hotdogs), or just the word when it names none of the table's objects: what a caption may write for a tag word."""
    name = object_phrases().get(tuple(_TOKEN.findall(word.lower())))
    if name is None:
        return frozenset([word])
    return frozenset(key[0] for key, other in object_phrases().items() if other == name and len(key) == 1)


def tokens(caption: str | Sequence[str]) -> list[str]:
    """Lower-case word tokens of a caption given as text or as its words."""
    text = caption if isinstance(caption, str) else " ".join(caption)
    return _TOKEN.findall(text.lower())


def mentioned_objects(caption: str | Sequence[str]) -> set[str]:
    """The objects a caption names, matching the longest phrase at each word ("hot dog" is food, not a dog)."""
    phrases = object_phrases()
    longest = max(len(key) for key in phrases)
    words, found, i = tokens(caption), set(), 0
    while i < len(words):
        for size in range(min(longest, len(words) - i), 0, -1):
            name = phrases.get(tuple(words[i:i + size]))
            if name is not None:
                found.add(name)
                i += size
                break
        else:
            i += 1
    return found


def parse_concepts(concepts: str | Iterable[str] | None) -> list[str]:
    """Held-out concepts from a recipe ("bicycle, boat" or a list) as a list of known object names, else a one-line
    error naming the known ones."""
    if concepts is None:
        return []
    if isinstance(concepts, str):
        concepts = concepts.split(",")
    concepts, known = [c.strip() for c in concepts if c.strip()], object_names()
    unknown = [c for c in concepts if c not in known]
    if unknown:
        raise CaptionerError(f"unknown held-out concepts {unknown}: use object names from {TABLE.name} "
                             f"({', '.join(known)}).")
    return concepts


def without_concepts(dataset: CaptionDataset, concepts: str | Iterable[str], split: str = "train") -> CaptionDataset:
    """The dataset with every photo of `split` that any caption says shows one of `concepts` removed, all its
    captions with it (synonyms and plurals count), as the DCC split does: a photo kept with its other captions
    would still show the object, and a grounded model would learn to pass over its tag. Other splits keep all."""
    held_out = set(parse_concepts(concepts))
    if not held_out:
        return dataset
    captions = dict(dataset.captions)
    kept_images = []
    for image in dataset.split(split):
        if any(mentioned_objects(c) & held_out for c in captions[image]):
            del captions[image]
        else:
            kept_images.append(image)
    splits = {**dataset.splits, split: kept_images}
    return CaptionDataset(dataset.images_dir, captions, splits, dataset.problems, dataset.source)
