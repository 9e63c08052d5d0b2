"""Training runs survive interruption: the best epoch is saved and the same command resumes."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

import captioner
from captioner.errors import CaptionerError
from captioner.training.callbacks import DevScores
from captioner.training.config import TrainConfig
from captioner.training.run import train
from tests.conftest import make_shapes_dataset


@pytest.fixture
def small_config(tmp_path, mobilenet_weights):
    make_shapes_dataset(tmp_path, per_combination=3, seed=2)
    return TrainConfig(data=str(tmp_path / "captions.csv"), output=str(tmp_path / "run"),
                       cache_dir=str(tmp_path / "cache"), encoder_weights=str(mobilenet_weights), min_count=1,
                       embedding_dim=32, units=64, attention_units=32, batch_size=16, epochs=3, patience=5,
                       learning_rate=3e-3, lr_schedule="constant")


def test_interrupt_saves_best_epoch_and_rerun_resumes(small_config, monkeypatch, mobilenet_weights):
    def ctrl_c_in_third_epoch(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(DevScores, "on_epoch_begin", ctrl_c_in_third_epoch, raising=False)
    result = train(small_config, log=lambda message: None)
    assert len(result.history["loss"]) == 2
    model = captioner.load(result.model_path, result.vocab_path, encoder_weights=mobilenet_weights)
    assert len(model.vocab) > 10

    monkeypatch.undo()
    resumed = train(small_config, log=lambda message: None)
    epochs = pd.read_csv(resumed.model_path.parent / "history.csv")["epoch"].tolist()
    assert epochs == [0, 1, 2]  # the third epoch only: the first two were not trained again


def test_scst_needs_a_model_to_start_from(small_config):
    with pytest.raises(CaptionerError, match="init_from"):
        dataclasses.replace(small_config, objective="scst")  # refused with the recipe, before any work
