"""Training runs survive interruption: the best epoch is saved and the same command resumes."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import captioner
from captioner.artifacts.model_files import load_model, read_model_info
from captioner.data.datasets import load_dataset
from captioner.errors import CaptionerError
from captioner.features.cache import FeatureCache
from captioner.training.callbacks import DevScores
from captioner.training.config import TrainConfig
from captioner.training.pipelines import caption_dataset, encode_split
from captioner.training.run import train
from captioner.training.xent import CaptionTrainer
from tests.conftest import make_shapes_dataset


@pytest.fixture
def small_config(tmp_path, mobilenet_weights):
    make_shapes_dataset(tmp_path, per_combination=3, seed=2)
    return TrainConfig(data=str(tmp_path / "captions.csv"), output=str(tmp_path / "run"),
                       cache_dir=str(tmp_path / "cache"), encoder="mobilenet_v2",
                       encoder_weights=str(mobilenet_weights), min_count=1,
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


TRAIN_IMAGES, DEV_IMAGES = 15, 8  # one caption each: two steps of 8 a epoch, seconds on two cores


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory, mobilenet_weights) -> TrainConfig:
    """A recipe over 15 train and 8 dev synthetic images, its feature cache shared by the runs below."""
    folder = tmp_path_factory.mktemp("tiny")
    make_shapes_dataset(folder, per_combination=3, seed=1)
    with (folder / "captions.csv").open(newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))
    keep = {"train": TRAIN_IMAGES, "dev": DEV_IMAGES, "test": 0}
    kept = []
    for row in rows:
        if keep[row[2]] > 0:
            keep[row[2]] -= 1
            kept.append(row)
    with (folder / "tiny.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, *kept])
    return TrainConfig(data=str(folder / "tiny.csv"), output=str(folder / "run"), cache_dir=str(folder / "cache"),
                       encoder="mobilenet_v2", encoder_weights=str(mobilenet_weights), min_count=1, max_length=8,
                       embedding_dim=16,
                       units=32, attention_units=16, dropout=0.0, batch_size=8, learning_rate=1e-2,
                       monitor="cider", seed=0)


def _train_watching_the_rate(config: TrainConfig, monkeypatch) -> tuple[pd.DataFrame, list[tuple[int, float]]]:
    """Run train(); return history.csv and, per epoch, (optimizer steps so far, learning rate of that epoch),
    read from the real optimizer at the end of each epoch, before any plateau callback changes it."""
    seen: list[tuple[int, float]] = []
    score = DevScores.on_epoch_end

    def watching(self, epoch, logs=None):
        score(self, epoch, logs)
        optimizer = self.model.optimizer
        seen.append((int(optimizer.iterations.numpy()), float(np.asarray(optimizer.learning_rate))))

    monkeypatch.setattr(DevScores, "on_epoch_end", watching)
    train(config, log=lambda message: None)
    monkeypatch.undo()
    return pd.read_csv(Path(config.output) / "history.csv"), seen


@pytest.fixture(scope="module")
def plateau_run(tiny_config):
    """A run with the plateau schedule that early stopping ends: patience 2 on the dev loss, at most 12 epochs.

    A high rate (0.1) makes the dev loss fall for some epochs, then rise: on two cores it stops after 9."""
    config = dataclasses.replace(tiny_config, output=str(Path(tiny_config.output).with_name("plateau")),
                                 lr_schedule="plateau", monitor="loss", learning_rate=0.1, patience=2, epochs=12)
    with pytest.MonkeyPatch.context() as monkeypatch:
        history, rates = _train_watching_the_rate(config, monkeypatch)
    return config, history, rates


def _dev_loss(config: TrainConfig) -> float:
    """The dev cross-entropy of the saved mymodel.h5, computed as fit() computes val_loss."""
    output = Path(config.output)
    model, vocab, info = load_model(output / "mymodel.h5", output / "tokenizer.pkl")
    dataset = load_dataset(config.data, config.images, config.lang, config.seed)
    names = dataset.split("dev")
    features = FeatureCache(config.cache_dir, config.encoder, info.image_size).table([dataset.path(n) for n in names])
    trainer = CaptionTrainer(model, config.label_smoothing, config.attention_reg)
    trainer.compile(optimizer="adam")
    data = caption_dataset(features, *encode_split(dataset, names, vocab), config.batch_size, shuffle=False)
    return float(trainer.evaluate(data, verbose=0))


@pytest.mark.slow
def test_early_stopping_saves_the_best_epoch_not_the_last(plateau_run):
    config, history, _ = plateau_run
    assert len(history) < config.epochs, "the run should stop early: the dev loss stops improving on this data"
    dev_loss = history["val_loss"].to_numpy()
    best = int(np.argmin(dev_loss))  # the first epoch with the lowest dev loss
    assert best > 0, "the check needs a best epoch that is neither the first nor the last"
    assert best == len(history) - 1 - config.patience  # it stopped `patience` epochs after the best
    # The file records the dev scores of the weights it holds, and they are the best epoch's ...
    info = read_model_info(Path(config.output) / "mymodel.h5")
    assert info.extra["dev_greedy"]["CIDEr"] == pytest.approx(history["val_cider"][best], abs=1e-9)
    # ... and the weights really are: their dev loss, recomputed from the saved file, is that epoch's and
    # no other's (float16 weights in the file move it slightly).
    loss = _dev_loss(config)
    assert loss == pytest.approx(dev_loss[best], rel=2e-3)
    assert np.abs(np.delete(dev_loss, best) - loss).min() > 10 * abs(dev_loss[best] - loss)


@pytest.mark.slow
def test_plateau_schedule_halves_the_rate_after_an_epoch_without_improvement(plateau_run):
    """ReduceLROnPlateau with patience 1: an epoch whose dev loss does not beat the best by more than 1e-4
    (Keras's min_delta) halves the rate of the next epoch; an improving one keeps it."""
    config, history, rates = plateau_run
    rate = [r for _, r in rates]
    assert len(rate) == len(history) and rate[0] == pytest.approx(config.learning_rate)
    best = math.inf
    for epoch, loss in enumerate(history["val_loss"].tolist()[:-1]):
        improved = loss + 1e-4 < best
        best = loss if improved else best
        expected = rate[epoch] if improved else max(rate[epoch] * 0.5, 1e-5)
        assert rate[epoch + 1] == pytest.approx(expected, rel=1e-6), (epoch, rate, history["val_loss"].tolist())
    assert min(rate) < config.learning_rate, "the schedule never acted"


@pytest.mark.slow
def test_cosine_schedule_warms_up_then_decays_to_nearly_zero(tiny_config, monkeypatch):
    """Linear warm-up to the recipe's rate over half an epoch, then a half cosine down to 0 at the last step."""
    config = dataclasses.replace(tiny_config, output=str(Path(tiny_config.output).with_name("cosine")),
                                 lr_schedule="cosine", patience=5, epochs=3)
    _, rates = _train_watching_the_rate(config, monkeypatch)
    assert len(rates) == config.epochs
    steps = rates[0][0]  # optimizer steps in an epoch
    assert steps == math.ceil(TRAIN_IMAGES / config.batch_size) and [s for s, _ in rates] == [
        steps * (e + 1) for e in range(config.epochs)]
    warmup, total = steps // 2, steps * config.epochs
    for step, rate in rates:
        expected = config.learning_rate * (step / warmup if step < warmup else
                                           0.5 * (1 + math.cos(math.pi * (step - warmup) / total)))
        assert rate == pytest.approx(expected, rel=1e-5), (step, rates)
    assert rates[-1][1] < 0.1 * config.learning_rate < rates[0][1]
