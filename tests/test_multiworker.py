"""Multi-worker training for real: two `captioner train --strategy multiworker` processes on localhost
(TF_CONFIG, free ports) learn the synthetic shapes, the result loads with captioner.load, and Ray Train's
TensorflowTrainer launches the same run to the same numbers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_shapes_dataset

import captioner
from captioner.cli.main import main
from captioner.training.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
RECIPE = dict(encoder="mobilenet_v2", min_count=1, max_length=12, embedding_dim=64, units=128, attention_units=64,
              dropout=0.1, label_smoothing=0.0, batch_size=16, epochs=5, learning_rate=3e-3, lr_schedule="constant",
              monitor="bleu4", patience=25, seed=0)
RUN_FILES = {"mymodel.h5", "tokenizer.pkl", "history.csv", "history.png", "config.json", "best.weights.h5"}


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def shapes(tmp_path_factory, mobilenet_weights) -> dict:
    """Synthetic shapes (4 photos per combination: 72 train, 36 dev, 36 held out) and a shared feature cache."""
    folder = tmp_path_factory.mktemp("mw_shapes")
    held_out = make_shapes_dataset(folder, per_combination=4, seed=1)
    return {"folder": folder, "held_out": held_out, "weights": mobilenet_weights,
            "config": TrainConfig(data=str(folder / "captions.csv"), cache_dir=str(folder / "cache"),
                                  encoder_weights=str(mobilenet_weights), output=str(folder / "unused"), **RECIPE)}


@pytest.fixture(scope="module")
def two_workers(shapes) -> Path:
    """Train with two worker processes; returns the chief's output folder."""
    output = shapes["folder"] / "multiworker"
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    args = [sys.executable, "-m", "captioner", "train", "--strategy", "multiworker", "--output", str(output),
            "--data", shapes["config"].data, "--cache-dir", shapes["config"].cache_dir,
            "--encoder-weights", str(shapes["weights"])]
    for key, value in RECIPE.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    processes = []
    for index in (1, 0):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "CUDA_VISIBLE_DEVICES": ""}
        processes.append(subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True))
    logs = [p.communicate(timeout=400)[0] for p in processes]
    for process, log in zip(processes, logs, strict=True):
        assert process.returncode == 0, log[-3000:]
    return output


def check_learned(output: Path, shapes: dict) -> pd.DataFrame:
    """The run's files are those of single-machine training, the loss fell, and the model captions held-out shapes."""
    assert {p.name for p in output.iterdir()} == RUN_FILES  # no backup left, nothing from the other worker
    history = pd.read_csv(output / "history.csv")
    assert list(history.columns) == ["epoch", "loss", "val_bleu4", "val_cider", "val_loss"]
    assert len(history) == RECIPE["epochs"]
    assert history["loss"].iloc[-1] < 0.5 * history["loss"].iloc[0]
    assert history["val_bleu4"].iloc[-1] > 0.5
    model = captioner.load(output / "mymodel.h5", output / "tokenizer.pkl", shapes["weights"])
    names = sorted(shapes["held_out"])
    captions = model.caption_many([shapes["folder"] / "images" / n for n in names], captioner.GREEDY)
    right = sum(c.text == shapes["held_out"][n] for n, c in zip(names, captions, strict=True))
    assert right >= len(names) // 2, [c.text for c in captions]
    return history


@pytest.mark.slow
def test_two_workers_on_localhost_learn_and_the_model_loads(two_workers, shapes):
    check_learned(two_workers, shapes)


@pytest.mark.slow
def test_ray_train_launches_the_same_run(two_workers, shapes):
    import dataclasses

    from captioner.distributed.ray_train import train_on_ray

    output = shapes["folder"] / "ray"
    result = train_on_ray(dataclasses.replace(shapes["config"], output=str(output)), workers=2)
    assert result.model_path == output / "mymodel.h5"
    history = check_learned(output, shapes)
    by_hand = pd.read_csv(two_workers / "history.csv")
    assert history["loss"].tolist() == pytest.approx(by_hand["loss"].tolist(), rel=1e-4)


def test_multiworker_without_tf_config_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert main(["train", "--data", "x.csv", "--strategy", "multiworker"]) == 1
    assert "--strategy multiworker needs TF_CONFIG" in capsys.readouterr().err


def test_ray_engine_trains_multiworker_only(capsys):
    assert main(["train", "--data", "x.csv", "--engine", "ray", "--strategy", "mirrored"]) == 1
    assert "--engine ray trains with --strategy multiworker" in capsys.readouterr().err
