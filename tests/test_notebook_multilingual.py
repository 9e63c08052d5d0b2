"""The notebook image-captioner-multilingual.ipynb: it trains a Chinese captioner end to end on a
tiny Flickr8k-CN subset, and the committed copy carries the outputs of a real run."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT
from notebook_helpers import (
    check_committed_run,
    images,
    output_text,
    parameters,
    parameters_index,
    read_notebook,
    run_with_parameters,
)

from captioner.artifacts.model_files import load_vocabulary

NOTEBOOK = ROOT / "image-captioner-multilingual.ipynb"
PARAMETERS = ("LANG", "DATA_DIR", "IMAGE_LIMIT", "EPOCHS", "OUTPUT_DIR", "CACHE_DIR", "ENCODER_WEIGHTS",
              "FAST_METRICS", "SHOWCASE_MODEL", "ENGLISH_MODEL")


def metric_headers(text: str) -> list[str]:
    return [line for line in text.splitlines() if "BLEU-1" in line]


def decoded_texts(text: str) -> list[str]:
    """Captions the model wrote, as the notebook prints them: `beam 3: '…'` and the most frequent dev
    captions (`  25 × …`)."""
    return re.findall(r"beam 3: '([^']*)'", text) + re.findall(r"^ +\d+ × (.*)$", text, re.MULTILINE)


def test_first_code_cell_is_the_tagged_parameters_cell():
    nb = read_notebook(NOTEBOOK)
    assert "parameters" in nb.cells[parameters_index(nb)].metadata.get("tags", [])
    values = parameters(nb)
    assert set(values) == set(PARAMETERS)
    assert values["LANG"] == "zh" and values["SHOWCASE_MODEL"] == "models/zh/mymodel.h5"
    assert values["DATA_DIR"] == "../shared/data/flickr8k" and values["ENCODER_WEIGHTS"] == "imagenet"


def test_committed_notebook_has_the_outputs_of_a_real_chinese_run():
    nb = read_notebook(NOTEBOOK)
    check_committed_run(nb)
    text = output_text(nb)
    assert "tokenization 'chars'" in text and "scored on characters" in text
    headers = metric_headers(text)
    assert headers and not any("METEOR" in line for line in headers)  # no METEOR for Chinese
    assert "beam 3" in text and "human (1 vs 4)" in text and "dev split, 1000 images" in text
    assert decoded_texts(text) and all(" " not in caption for caption in decoded_texts(text))
    assert len(images(nb)) >= 6
    assert NOTEBOOK.stat().st_size < 3_000_000, "keep the notebook small: modest figures, JPEG photos"


@pytest.mark.slow
def test_notebook_trains_chinese_end_to_end_on_a_tiny_subset(flickr8k, tmp_path):
    run = tmp_path / "run"
    english = ROOT / "mymodel.h5"  # the shipped English model, on the recipe's encoder: the side-by-side branch
    overrides = {
        "LANG": "zh", "DATA_DIR": str(flickr8k), "IMAGE_LIMIT": 20, "EPOCHS": 1, "OUTPUT_DIR": str(run),
        "CACHE_DIR": str(tmp_path / "cache"), "ENCODER_WEIGHTS": "imagenet", "FAST_METRICS": True,
        "SHOWCASE_MODEL": str(run / "mymodel.h5"),  # the notebook's own model takes the shipped model's place
        "ENGLISH_MODEL": str(english),
    }
    assert set(overrides) == set(PARAMETERS)
    nb = run_with_parameters(NOTEBOOK, overrides, tmp_path)

    text = output_text(nb)
    assert "captions_zh.txt: 40 images" in text  # the Chinese captions file, 20 photos per split
    assert "dev split, 20 images; scored on characters" in text
    for row in ("greedy", "beam 3", "human (1 vs 4)", f"greedy ({run})"):
        assert row in text
    headers = metric_headers(text)
    assert headers and all("CIDEr" in line and "METEOR" not in line for line in headers)
    assert f"using {run / 'mymodel.h5'}" in text
    assert f"English captions from {english}" in text and "one encoding of each photo serves both models" in text
    captions = decoded_texts(text)
    assert len(captions) >= 2 and all(" " not in caption for caption in captions)
    vocab = load_vocabulary(run / "tokenizer.pkl")
    assert (vocab.lang, vocab.tokenization) == ("zh", "chars")  # the choice travels with the model
    assert len(images(nb)) >= 6  # photos, tokens, curves, side by side, attention maps in two languages
    assert list((tmp_path / "cache").rglob("*.npy")), "features were cached where CACHE_DIR says"
