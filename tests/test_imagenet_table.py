"""The ImageNet class table: standard class order, readable names and the caption words grounding relies on."""

from __future__ import annotations

import pytest

from captioner.features.imagenet import caption_words, imagenet_classes


def test_thousand_classes_in_standard_wnid_order():
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert [cls.index for cls in classes] == list(range(1000))
    wnids = [cls.wnid for cls in classes]
    assert wnids == sorted(wnids)  # the standard index order is the sorted WordNet ids
    assert wnids[0] == "n01440764" and wnids[-1] == "n15075141"
    assert len({cls.name for cls in classes}) == 1000  # every tag name tells its class apart


@pytest.mark.parametrize(("index", "wnid", "name"), [
    (281, "n02123045", "tabby"), (285, "n02124075", "Egyptian cat"), (937, "n07714990", "broccoli"),
    (340, "n02391049", "zebra"), (547, "n03272562", "electric locomotive"), (717, "n03930630", "pickup"),
])
def test_known_classes_at_known_indices(index, wnid, name):
    cls = imagenet_classes()[index]
    assert (cls.wnid, cls.name) == (wnid, name)


@pytest.mark.parametrize(("name", "word"), [
    ("tabby", "cat"), ("Egyptian cat", "cat"), ("four-poster", "bed"), ("electric locomotive", "train"),
    ("pickup", "truck"), ("Indian elephant", "elephant"), ("broccoli", "broccoli"), ("zebra", "zebra"),
    ("golden retriever", "dog"), ("mountain bike", "bicycle"), ("canoe", "canoe"), ("washbasin", "sink"),
    ("Granny Smith", "apple"), ("Dutch oven", "pot"), ("freight car", "train"), ("park bench", "bench"),
])
def test_caption_words(name, word):
    by_name = {cls.name: cls for cls in imagenet_classes()}
    assert by_name[name].caption_word == word


def test_some_classes_have_no_caption_word():
    by_name = {cls.name: cls for cls in imagenet_classes()}
    assert by_name["carpenter's plane"].caption_word is None  # not an aeroplane: no caption word at all
    assert by_name["guitar pick"].caption_word is None
    assert 0 < caption_words().count(None) < 100


def test_caption_words_are_single_lower_case_tokens():
    words = {word for word in caption_words() if word is not None}
    assert all(word.isalpha() and word.islower() for word in words), sorted(w for w in words if not w.isalpha())
