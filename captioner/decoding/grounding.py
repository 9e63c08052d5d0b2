"""Grounding captions in the classifier's tags: the words a constrained search must write one of, the objects no
caption may name because the classifier does not see them, and which tag words a caption names.

A photo's constraint is its confident tag objects (docs/grounding.md): the objects of captioner/text/objects.tsv
the EfficientNet-Lite classifier gives at least DecodeOptions.grounding_min_probability, summed over the classes
that name the same object (canoe and speedboat are both a boat), each written by any one-token word that names it
("dog" by dog, dogs, puppy …) and that the model's vocabulary has: a plain model cannot be made to write a word
it does not know.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

from captioner.decoding.options import Caption, DecodeOptions
from captioner.features.tags import class_objects, confident_words, top_tags
from captioner.text.objects import naming_words, object_names
from captioner.text.vocabulary import Vocabulary

Constraint = dict[str, frozenset[str]]  # tag word → the vocabulary's words that name it
#: Objects the classifier cannot see: ImageNet-1k has no class for people (its groom, scuba diver and ballplayer
#: name roles), so its probabilities say nothing about whether a photo shows a man or a child.
UNSEEABLE = frozenset({"person"})
#: At most this many confident objects a caption must name: a search keeps k beams for each subset of them met.
MAX_REQUIRED = 2


@cache
def _seeable_objects() -> tuple[list[str], np.ndarray]:
    """The objects some ImageNet class names (people excepted) and the (classes, objects) 0/1 matrix of which
    classes name each object: the object columns of the tags' class_objects()."""
    names, matrix = class_objects()
    seeable = set(object_names()) - UNSEEABLE
    keep = [j for j, name in enumerate(names) if name in seeable]
    return [names[j] for j in keep], matrix[:, keep]  # (classes, objects)


def _english_words(vocab: Vocabulary) -> bool:
    return (vocab.lang, vocab.tokenization) == ("en", "words")


def unseen_objects(probabilities: np.ndarray | None, options: DecodeOptions, vocab: Vocabulary,
                   ) -> list[frozenset[str]] | None:
    """Per photo, the vocabulary's words for the objects the classifier could see but does not: an ImageNet class
    names them and none of their classes gets options.grounding_veto. None when no veto applies (grounding off,
    veto 0, no classifier, not English words). The most probable class, not the classes' sum, decides: summed
    over the 121 dog classes, a photo of coffee gets 0.02 of "dog" from noise alone (docs/grounding.md)."""
    if options.grounding == "off" or not options.grounding_veto or probabilities is None or not _english_words(vocab):
        return None
    names, matrix = _seeable_objects()
    seen = (np.asarray(probabilities, np.float32)[:, :, None] * matrix).max(axis=1)  # (photos, objects)
    known = set(vocab.tokens)
    return [frozenset().union(*(naming_words(names[j]) & known for j in np.flatnonzero(row < options.grounding_veto)))
            for row in seen]


def tag_constraints(probabilities: np.ndarray | None, options: DecodeOptions, vocab: Vocabulary,
                    ) -> list[Constraint] | None:
    """Each photo's constraint from the classifier's probabilities (photos, 1000), or None when none applies: grounding
    off, no classifier (e.g. MobileNetV2), or a vocabulary that is not English words (the tag words are English).

    Only objects of captioner/text/objects.tsv are required: ImageNet's scenes (lakeside), garments (abaya) and rare
    artefacts (sawmill) are mostly wrong on everyday photos. A grounded model is required to write only the objects
    it learnt from the tags alone (its vocabulary's tag words): those its captions named it writes from the tags it
    reads, unasked (docs/grounding.md)."""
    if options.grounding != "constrained" or probabilities is None or not _english_words(vocab):
        return None
    known = set(vocab.tokens[len(vocab) - vocab.tag_words:]) if vocab.tag_words else vocab.caption_words
    objects = set(object_names())
    return [{word: names for word in words if word in objects and (names := naming_words(word) & known)}
            for words in confident_words(probabilities, options.grounding_min_probability)]


def search_constraints(constraints: Sequence[Constraint]) -> list[list[frozenset[str]]]:
    """What Search takes: per photo, the word sets of its MAX_REQUIRED most probable confident objects, of each of
    which the caption must write one word."""
    return [list(constraint.values())[:MAX_REQUIRED] for constraint in constraints]


def mark_copied(captions: list[Caption], probabilities: np.ndarray | None) -> list[Caption]:
    """A grounded model's captions, each (and its alternatives) with its attention cut to the grid's cells (the
    extra column, the copy gate, dropped), `copied` 1 for each word copied from the photo's tags (a grounded
    model writes the words of its tags only by copying them) and `grounded_by` extended with those words."""
    tag_words = ([{t.word for t in tags} for tags in top_tags(probabilities, min_probability=0.0)]  # the K it read
                 if probabilities is not None else [set()] * len(captions))
    for row, caption in enumerate(captions):
        for hypothesis in caption.ranked:
            hypothesis.attention = hypothesis.attention[:, :-1]
            hypothesis.copied = np.array([word in tag_words[row] for word in hypothesis.words], np.float32)
            for word in hypothesis.words:
                if word in tag_words[row] and word not in hypothesis.grounded_by:
                    hypothesis.grounded_by.append(word)
    return captions


def mark_grounded(captions: list[Caption], constraints: Sequence[Constraint]) -> list[Caption]:
    """The captions, each (and its alternatives) with `grounded_by` set to the words it writes that meet its
    constraint ("canoe" for the boat tags)."""
    for caption, constraint in zip(captions, constraints, strict=True):
        meeting = frozenset().union(*constraint.values())
        for hypothesis in caption.ranked:
            hypothesis.grounded_by = list(dict.fromkeys(word for word in hypothesis.words if word in meeting))
    return captions
