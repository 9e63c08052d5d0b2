"""The shipped models caption 50 dev photos exactly as recorded in tests/data/shipped_captions.json. The Chinese
entries were written by the code before the decoder contract and the package layout were introduced; the English
and German ones when those models moved to EfficientNet-Lite2 (English grounded in its tags, as every surface
captions). Re-record a language after shipping a new model: `python tests/test_shipped_captions_unchanged.py en`."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from conftest import FLICKR8K, MOBILENET_V2_WEIGHTS, ROOT, encoder_weights_of

import captioner
from captioner.decoding.options import DecodeOptions
from captioner.serving.shipped import SHIPPED_LANGUAGES, shipped_model_paths

RECORDED_FILE = ROOT / "tests" / "data" / "shipped_captions.json"
RECORDED = json.loads(RECORDED_FILE.read_text())
SEARCHES = {"greedy": DecodeOptions(beam_size=1), "beam 3": DecodeOptions(beam_size=3, n_best=3)}


@pytest.mark.parametrize("lang", SHIPPED_LANGUAGES)
def test_shipped_model_captions_are_unchanged(lang, flickr8k, mobilenet_weights):
    for search, captions in shipped_captions(lang, flickr8k, mobilenet_weights).items():
        recorded = RECORDED["captions"][f"{lang} {search}"]
        assert [c.text for c in captions] == [r["text"] for r in recorded], search
        assert [[a.text for a in c.ranked] for c in captions] == [r["n_best"] for r in recorded], search
        np.testing.assert_allclose([c.log_prob for c in captions], [r["log_prob"] for r in recorded], atol=2e-3)


def shipped_captions(lang: str, flickr8k, mobilenet_weights) -> dict[str, list[captioner.Caption]]:
    """A shipped model's greedy and beam-3 captions of the recorded photos, with its tags as `caption` uses them."""
    model_path, vocab_path = shipped_model_paths(lang, ROOT)
    model = captioner.load(model_path, vocab_path, encoder_weights_of(model_path, mobilenet_weights), "tensorflow")
    features, probabilities = model.encode_and_classify([flickr8k / "Images" / name for name in RECORDED["photos"]])
    return {search: model.caption_features(features, options, probabilities) for search, options in SEARCHES.items()}


def test_the_readme_example_and_the_cli_give_the_same_caption(flickr8k, mobilenet_weights, capsys):
    """`captioner.load(...).caption(photo)` (the README's Python example) decodes as `captioner caption` does:
    on photos where greedy and beam 3 disagree, both give the beam-3 caption."""
    from captioner.cli.main import main

    model_path, vocab_path = shipped_model_paths("en", ROOT)
    beam = RECORDED["captions"]["en beam 3"]
    greedy = RECORDED["captions"]["en greedy"]
    differ = [i for i, (g, b) in enumerate(zip(greedy, beam, strict=True)) if g["text"] != b["text"]][:3]
    assert differ, "the check needs photos on which the two searches disagree"
    photos = [flickr8k / "Images" / RECORDED["photos"][i] for i in differ]
    weights = encoder_weights_of(model_path, mobilenet_weights)
    model = captioner.load(model_path, vocab_path, weights, "tensorflow")
    from_python = [model.caption(photo).text for photo in photos]
    assert main(["caption", *map(str, photos), "--model", str(model_path), "--encoder-weights", weights]) == 0
    from_cli = [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()]
    assert from_python == from_cli == [beam[i]["text"] for i in differ]


def record(langs: list[str]) -> None:
    """Rewrite these languages' entries of tests/data/shipped_captions.json (after shipping a new model)."""
    for lang in langs:
        for search, captions in shipped_captions(lang, FLICKR8K, MOBILENET_V2_WEIGHTS).items():
            RECORDED["captions"][f"{lang} {search}"] = [
                {"text": c.text, "log_prob": round(float(c.log_prob), 4), "n_best": [a.text for a in c.ranked]}
                for c in captions]
    RECORDED_FILE.write_text(json.dumps(RECORDED, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    record(sys.argv[1:])
