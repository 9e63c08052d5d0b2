"""Weight averaging ("model soup") of a model and its fine-tunes, and scores recorded in a model file."""

from __future__ import annotations

import numpy as np
import pytest

from captioner.artifacts.model_files import (
    ModelInfo,
    load_model,
    read_model_info,
    record_scores,
    save_model,
)
from captioner.artifacts.scores import score_tables
from captioner.cli.main import main
from captioner.errors import CaptionerError
from captioner.models.base import build_caption_model
from captioner.text.vocabulary import Vocabulary
from captioner.training.soup import average_models

VOCAB = Vocabulary.build(["a red circle", "a blue square on grey"], min_count=1, max_length=6)
SIZES = {"embedding_dim": 8, "units": 12, "attention_units": 6}


def saved(folder, vocab=VOCAB, seed=0, units=12, extra=None):
    """A tiny randomly initialised model saved as folder/mymodel.h5 + tokenizer.pkl."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build_caption_model(len(vocab), (9, 16), **{**SIZES, "units": units})
    info = ModelInfo("mobilenet_v2", 224, len(vocab), vocab.fingerprint,
                     extra=extra or {"config": {"epochs": 3}, "dev_greedy": {"BLEU-4": 0.2}})
    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, vocab, info, folder / "mymodel.h5", folder / "tokenizer.pkl")
    return folder / "mymodel.h5", folder / "tokenizer.pkl"


def weights_of(paths):
    return load_model(*paths)[0].get_weights()


def test_average_is_the_weighted_mean_of_the_parents(tmp_path):
    a, b = saved(tmp_path / "a", seed=1), saved(tmp_path / "b", seed=2)
    out = tmp_path / "soup"
    average_models([a, b], [3, 1], out / "mymodel.h5", out / "tokenizer.pkl")  # normalised to 0.75 / 0.25
    mixed = weights_of((out / "mymodel.h5", out / "tokenizer.pkl"))
    for m, x, y in zip(mixed, weights_of(a), weights_of(b), strict=True):
        np.testing.assert_allclose(m, 0.75 * x + 0.25 * y, atol=2e-3)  # float16 storage
    assert any(not np.allclose(x, y) for x, y in zip(weights_of(a), weights_of(b), strict=True))

    info = read_model_info(out / "mymodel.h5")
    assert info.extra["averaged_from"] == [{"model": str(a[0]), "weight": 0.75}, {"model": str(b[0]), "weight": 0.25}]
    assert info.extra["config"] == {"epochs": 3} and "dev_greedy" not in info.extra  # parents' scores dropped


def test_models_that_do_not_belong_together_are_refused(tmp_path):
    a = saved(tmp_path / "a")
    other_vocab = saved(tmp_path / "v", vocab=Vocabulary.build(["two dogs run"], min_count=1, max_length=6))
    wider = saved(tmp_path / "w", units=16)
    out = tmp_path / "soup"
    with pytest.raises(CaptionerError, match="another vocabulary"):
        average_models([a, other_vocab], [1, 1], out / "mymodel.h5", out / "tokenizer.pkl")
    with pytest.raises(CaptionerError, match="layer sizes differ"):
        average_models([a, wider], [1, 1], out / "mymodel.h5", out / "tokenizer.pkl")
    with pytest.raises(CaptionerError, match="non-negative"):
        average_models([a, a], [1, -1], out / "mymodel.h5", out / "tokenizer.pkl")
    assert not out.exists()


def test_average_command(tmp_path, capsys):
    a, b = saved(tmp_path / "a", seed=1), saved(tmp_path / "b", seed=2)
    assert main(["average", str(a[0]), str(b[0]), "--output", str(tmp_path / "soup")]) == 0
    assert "saved" in capsys.readouterr().out
    weights = [w["weight"] for w in read_model_info(tmp_path / "soup" / "mymodel.h5").extra["averaged_from"]]
    assert weights == [0.5, 0.5]


def test_recorded_scores_replace_the_quick_training_scores(tmp_path):
    model_path, vocab_path = saved(tmp_path / "a")
    before = weights_of((model_path, vocab_path))
    record_scores(model_path, {"dev beam 3": {"BLEU-4": 0.21, "CIDEr": 0.5}})
    extra = read_model_info(model_path).extra
    assert extra == {"config": {"epochs": 3}, "dev beam 3": {"BLEU-4": 0.21, "CIDEr": 0.5}}
    for x, y in zip(before, weights_of((model_path, vocab_path)), strict=True):
        np.testing.assert_array_equal(x, y)


def test_score_tables_keeps_only_tables_of_metrics():
    extra = {"dev_greedy": {"BLEU-4": 0.21, "CIDEr": 0.5}, "config": {"data": "x", "epochs": 3}, "lr": {"epochs": 3},
             "test": {"BLEU-4": 1}, "note": "hello", "empty": {}}
    assert score_tables(extra) == {"dev_greedy": {"BLEU-4": 0.21, "CIDEr": 0.5}, "test": {"BLEU-4": 1.0}}
    assert score_tables(None) == {}
