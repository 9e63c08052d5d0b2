"""The models the repository ships (English at the root, models/zh, models/de): they load, their
vocabulary says how to join tokens, and they describe real dev photos in varied, sensible captions."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from conftest import ROOT

import captioner
from captioner.data.datasets import load_dataset
from captioner.decoding.options import DecodeOptions
from captioner.evaluation.metrics import score_captions
from captioner.serving.artifacts import read_model_info
from captioner.serving.shipped import SHIPPED_LANGUAGES, shipped_model_paths

PHOTOS = 24  # dev photos captioned per language: a few seconds on two cores


@pytest.mark.parametrize("lang", SHIPPED_LANGUAGES)
def test_shipped_model_captions_dev_photos(lang, flickr8k, mobilenet_weights):
    model_path, vocab_path = shipped_model_paths(lang, ROOT)
    assert model_path.stat().st_size < 30_000_000, "keep the shipped files small (float16 weights)"
    model = captioner.load(model_path, vocab_path, encoder_weights=mobilenet_weights)
    assert model.vocab.lang == lang
    assert model.vocab.tokenization == ("chars" if lang == "zh" else "words")
    assert model.info.encoder == "mobilenet_v2" and model.grid_shape == (7, 7)

    references = load_dataset(flickr8k, lang=None if lang == "en" else lang).captions
    dev = (flickr8k / "Flickr_8k.devImages.txt").read_text().split()
    names = [name for name in dev if name in references][:PHOTOS]  # German covers 6,462 of the photos
    captions = model.caption_many([flickr8k / "Images" / name for name in names], DecodeOptions(beam_size=3))
    texts = [c.text for c in captions]
    assert all(texts) and len(set(texts)) >= 0.7 * len(texts), f"too few distinct captions: {Counter(texts)}"
    assert all(0 < c.confidence <= 1 for c in captions)
    if lang == "zh":
        assert all(" " not in t and re.search(r"[\u4e00-\u9fff]", t) for t in texts)
    else:
        assert all(set(c.words) <= set(model.vocab.tokens) for c in captions)

    # Sensible: far closer to these photos' own references than to other photos' references.
    own = score_captions({n: references[n] for n in names}, dict(zip(names, texts, strict=True)), lang=lang,
                         tokenization=model.vocab.tokenization, meteor=False, ptb=False)
    shifted = dict(zip(names, texts[1:] + texts[:1], strict=True))  # each caption against the next photo's refs
    other = score_captions({n: references[n] for n in names}, shifted, lang=lang,
                           tokenization=model.vocab.tokenization, meteor=False, ptb=False)
    assert own["CIDEr"] > 0.25 and own["CIDEr"] > 2 * other["CIDEr"]


@pytest.mark.parametrize("lang", SHIPPED_LANGUAGES)
def test_shipped_model_records_its_dev_scores(lang):
    """The scores `captioner evaluate --record` stored, which the app's model panel shows."""
    info = read_model_info(shipped_model_paths(lang, ROOT)[0])
    assert {"dev greedy", "dev beam 3"} <= set(info.extra)
    assert info.extra["dev beam 3"]["CIDEr"] > 0.4
    assert ("METEOR" in info.extra["dev beam 3"]) == (lang != "zh")
