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
