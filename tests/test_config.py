"""Training recipes: `base:` inheritance, and settings checked when the recipe is read, not mid-run."""

from __future__ import annotations

import pytest

from captioner.errors import CaptionerError
from captioner.training.config import TrainConfig


def test_a_recipe_inherits_its_base_and_overrides_it(tmp_path):
    (tmp_path / "base.yaml").write_text("data: d\nunits: 128\nepochs: 5\nlearning_rate: 0.001\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\nepochs: 9\n")
    (tmp_path / "grandchild.yaml").write_text("base: child.yaml\nunits: 64\n")
    config = TrainConfig.from_file(tmp_path / "grandchild.yaml", learning_rate=0.01)
    assert (config.data, config.units, config.epochs, config.learning_rate) == ("d", 64, 9, 0.01)


def test_recipes_that_name_each_other_as_base_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\ndata: d\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(CaptionerError, match="loop"):
        TrainConfig.from_file(tmp_path / "a.yaml")


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("lr_schedule", "cosin", "lr_schedule must be one of constant, plateau, cosine"),
    ("monitor", "bleu", "monitor must be one of cider, bleu4, loss"),
    ("objective", "rl", "objective must be one of xent, scst"),
    ("tokenization", "bpe", "tokenization must be one of words, chars"),
])
def test_a_typo_in_a_setting_names_the_choices(setting, value, message):
    with pytest.raises(CaptionerError, match=message):
        TrainConfig(data="d", **{setting: value})


def test_self_critical_recipes_are_checked():
    with pytest.raises(CaptionerError, match="set init_from"):
        TrainConfig(data="d", objective="scst")
    with pytest.raises(CaptionerError, match="no dev loss"):
        TrainConfig(data="d", objective="scst", init_from="m.h5", monitor="loss")
    with pytest.raises(CaptionerError, match="scst_samples must be at least 2"):
        TrainConfig(data="d", objective="scst", init_from="m.h5", scst_samples=1)
    assert TrainConfig(data="d", objective="scst", init_from="m.h5").scst_samples == 5


@pytest.mark.parametrize("settings, message", [
    ({"select_beam": 0}, "select_beam must be at least 1"),
    ({"eval_every": 0}, "eval_every must be at least 1"),
    ({"objective": "scst", "init_from": "m.h5", "scst_max_length": 1}, "scst_max_length must leave room"),
])
def test_selection_and_sampling_settings_are_checked(settings, message):
    with pytest.raises(CaptionerError, match=message):
        TrainConfig(data="d", **settings)


def test_dev_scores_decode_with_the_selection_search():
    """select_beam reaches the dev scoring: the captions scored are the beam search's, not greedy ones."""
    import keras
    import numpy as np

    from captioner.decoding.options import GREEDY, DecodeOptions
    from captioner.decoding.tf_search import TFSearch
    from captioner.models.base import build_caption_model, get_decoder
    from captioner.text.vocabulary import Vocabulary
    from captioner.training.callbacks import DevScores

    keras.utils.set_random_seed(0)
    vocab = Vocabulary.build(["a dog runs on the grass", "a cat sleeps on a red sofa"], min_count=1)
    model = build_caption_model(len(vocab), (4, 8), embedding_dim=8, units=16, attention_units=8)
    out_vocab = get_decoder(model).out_vocab
    out_vocab.bias.assign(out_vocab.bias - 5 * keras.ops.one_hot(vocab.end_id, len(vocab)))  # no empty captions
    features = np.random.default_rng(0).normal(size=(24, 4, 8)).astype("float32")
    generator = TFSearch(get_decoder(model), vocab, max_length=6)
    names = [str(i) for i in range(len(features))]
    beam = DecodeOptions(beam_size=4)
    captions = {search: [c.text for c in generator.generate(features, search)] for search in (GREEDY, beam)}
    assert captions[GREEDY] != captions[beam], "a model where the two searches differ"
    for search in (GREEDY, beam):
        references = {n: [caption] for n, caption in zip(names, captions[search], strict=True)}
        scores = DevScores(generator, features, references, names, options=search).scores()
        assert scores["BLEU-1"] > 0.99, search  # it scored exactly the captions of that search
