"""The models the repository ships (English at the root, models/zh, models/de, models/en-fast,
models/en-mobilenet): they load, their vocabulary says how to join tokens, they describe real dev photos in varied,
sensible captions, and they still score on 100 dev photos what they scored when the score was recorded.

Re-record tests/data/shipped_dev_cider.json after shipping a new model: `python tests/test_shipped_models.py`.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import FLICKR8K, MOBILENET_V2_WEIGHTS, ROOT, encoder_weights_of

import captioner
from captioner.data.datasets import load_dataset
from captioner.decoding.options import DEFAULT_DECODING, DecodeOptions
from captioner.evaluation.metrics import score_captions
from captioner.serving.shipped import SHIPPED_LANGUAGES, SHIPPED_MODELS, shipped_model_paths
from captioner.text.vocabulary import SPECIAL_TOKENS, join_tokens

PHOTOS = 24  # dev photos captioned per language: a few seconds on two cores
SCORED_PHOTOS = 100  # dev photos scored per language against the recorded CIDEr
RECORDED_CIDER = ROOT / "tests" / "data" / "shipped_dev_cider.json"


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_shipped_model_captions_dev_photos(name, flickr8k, mobilenet_weights):
    lang = SHIPPED_MODELS[name]
    model_path, vocab_path = shipped_model_paths(name, ROOT)
    assert model_path.stat().st_size < 30_000_000, "keep the shipped files small (float16 weights)"
    model = captioner.load(model_path, vocab_path, encoder_weights_of(model_path, mobilenet_weights), "tensorflow")
    assert model.vocab.lang == lang
    assert model.vocab.tokenization == ("chars" if lang == "zh" else "words")
    assert (model.info.encoder, model.grid_shape) in {("mobilenet_v2", (7, 7)), ("efficientnet_lite2", (9, 9))}

    references = load_dataset(flickr8k, lang=None if lang == "en" else lang).captions
    dev = (flickr8k / "Flickr_8k.devImages.txt").read_text().split()
    names = [name for name in dev if name in references][:PHOTOS]  # German covers 6,462 of the photos
    captions = model.caption_many([flickr8k / "Images" / name for name in names], DecodeOptions(beam_size=3))
    texts = [c.text for c in captions]
    assert all(texts) and len(set(texts)) >= 0.7 * len(texts), f"too few distinct captions: {Counter(texts)}"
    if lang == "zh":
        assert all(" " not in t and re.search(r"[\u4e00-\u9fff]", t) for t in texts)
    for caption in captions:  # whole captions of real words: no <unk>, <end> or padding, joined as the language is
        assert caption.words and not set(caption.words) & set(SPECIAL_TOKENS), caption.words
        assert caption.text == join_tokens(caption.words, model.vocab.tokenization)
    # The confidence the app shows is the geometric mean of the model's own probabilities of the words and <end>.
    vocab = model.vocab
    for grid, caption in zip(model.encode([flickr8k / "Images" / n for n in names[:3]]), captions, strict=False):
        ids = [vocab.tokens.index(w) for w in caption.words]
        logits = np.asarray(model.model([grid[None], np.array([[vocab.start_id, *ids]])], training=False)[0][0])
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs = (probs / probs.sum(-1, keepdims=True))[np.arange(len(ids) + 1), [*ids, vocab.end_id]]
        assert caption.confidence == pytest.approx(np.prod(probs) ** (1 / len(probs)), rel=2e-3), caption.text

    # Sensible: far closer to these photos' own references than to other photos' references.
    own = score_captions({n: references[n] for n in names}, dict(zip(names, texts, strict=True)), lang=lang,
                         tokenization=model.vocab.tokenization, meteor=False, ptb=False)
    shifted = dict(zip(names, texts[1:] + texts[:1], strict=True))  # each caption against the next photo's refs
    other = score_captions({n: references[n] for n in names}, shifted, lang=lang,
                           tokenization=model.vocab.tokenization, meteor=False, ptb=False)
    assert own["CIDEr"] > 0.25 and own["CIDEr"] > 2 * other["CIDEr"]


def scored_photos(flickr8k: Path) -> list[str]:
    """The first SCORED_PHOTOS dev photos that have references in every shipped language."""
    references = [load_dataset(flickr8k, lang=None if lang == "en" else lang).captions for lang in SHIPPED_LANGUAGES]
    dev = (flickr8k / "Flickr_8k.devImages.txt").read_text().split()
    return [name for name in dev if all(name in r for r in references)][:SCORED_PHOTOS]


def dev_cider(name: str, flickr8k: Path, names: list[str], mobilenet_weights: Path) -> float:
    """CIDEr of a shipped model's default (beam 3) captions of these photos, against their references."""
    lang = SHIPPED_MODELS[name]
    model_path, vocab_path = shipped_model_paths(name, ROOT)
    model = captioner.load(model_path, vocab_path, encoder_weights_of(model_path, mobilenet_weights), "tensorflow")
    references = load_dataset(flickr8k, lang=None if lang == "en" else lang).captions
    texts = [c.text for c in model.caption_many([flickr8k / "Images" / name for name in names], DEFAULT_DECODING)]
    return score_captions({n: references[n] for n in names}, dict(zip(names, texts, strict=True)), lang=lang,
                          tokenization=model.vocab.tokenization, meteor=False, ptb=False)["CIDEr"]


@pytest.fixture(scope="module")
def scored(flickr8k) -> list[str]:
    return scored_photos(flickr8k)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_shipped_model_scores_what_was_recorded(name, scored, flickr8k, mobilenet_weights):
    """Recomputed, not read back: the dev CIDEr of the shipped model's default captions of 100 dev photos is
    within 0.02 of the value this same code measured when it was recorded. (Not compared with the full-dev
    score in the model file: CIDEr's document frequencies, and so its scale, depend on the set of photos.)"""
    recorded = json.loads(RECORDED_CIDER.read_text())
    assert recorded["photos"] == scored, "the recorded score is for other photos"
    cider = dev_cider(name, flickr8k, scored, mobilenet_weights)
    assert cider == pytest.approx(recorded["CIDEr"][name], abs=0.02)


def record() -> None:
    """Measure and write tests/data/shipped_dev_cider.json (after shipping a new model)."""
    names = scored_photos(FLICKR8K)
    scores = {name: round(dev_cider(name, FLICKR8K, names, MOBILENET_V2_WEIGHTS), 4) for name in SHIPPED_MODELS}
    RECORDED_CIDER.write_text(json.dumps({"decoding": "beam 3", "CIDEr": scores, "photos": names}, indent=1) + "\n")
    print(scores, file=sys.stderr)


if __name__ == "__main__":
    record()
