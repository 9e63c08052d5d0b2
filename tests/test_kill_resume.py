"""A `captioner train` killed with SIGKILL mid-run resumes where its backup left off when re-run."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, make_shapes_dataset

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")

EPOCHS = 6


def _small_shapes(folder: Path) -> Path:
    """The synthetic shapes, cut to 16 train and 8 dev images: seconds per epoch on two CPU cores."""
    make_shapes_dataset(folder, per_combination=3, seed=1)
    with (folder / "captions.csv").open(newline="", encoding="utf-8") as handle:
        header, *rows = list(csv.reader(handle))
    keep = {"train": 16, "dev": 8, "test": 4}
    kept = []
    for row in rows:
        if keep[row[2]] > 0:
            keep[row[2]] -= 1
            kept.append(row)
    data = folder / "small.csv"
    with data.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, *kept])
    return data


def _rows(history: Path) -> list[dict[str, str]]:
    with history.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_killed_training_resumes_and_finishes(tmp_path, mobilenet_weights):
    data = _small_shapes(tmp_path)
    output = tmp_path / "run"
    command = [sys.executable, "-m", "captioner", "train", "--data", str(data), "--output", str(output),
               "--cache-dir", str(tmp_path / "cache"), "--encoder", "mobilenet_v2",
               "--encoder-weights", str(mobilenet_weights),
               "--min-count", "1", "--max-length", "8", "--embedding-dim", "16", "--units", "32",
               "--attention-units", "16", "--dropout", "0.0", "--batch-size", "8", "--epochs", str(EPOCHS),
               "--patience", str(EPOCHS), "--lr-schedule", "constant", "--learning-rate", "3e-3",
               "--monitor", "bleu4"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    history = output / "history.csv"

    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 150
    # Kill as soon as the second epoch's row is written: epoch 1 is backed up by then, and the kill lands
    # while epoch 2's best weights and backup are being written (the hardest moment to resume from).
    while first.poll() is None and time.monotonic() < deadline:
        if history.is_file() and len(history.read_bytes().splitlines()) >= 3:
            first.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    log = first.communicate(timeout=30)[0].decode(errors="replace")
    assert first.returncode == -signal.SIGKILL, f"the run was not killed mid-way:\n{log}"
    before = _rows(history)
    assert before and (output / "backup").is_dir() and not (output / "mymodel.h5").exists()

    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Traceback" not in second.stderr

    after = _rows(history)
    assert [int(row["epoch"]) for row in after] == list(range(EPOCHS))  # continued, not restarted or repeated
    assert after[0] == before[0]  # the first epoch is the killed run's, not trained again
    first_epoch = re.search(r"^Epoch (\d+)/", second.stdout, re.MULTILINE)
    assert first_epoch and int(first_epoch.group(1)) >= 2  # the re-run started past the backed-up epochs
    assert not (output / "backup").exists()  # finished runs leave no backup behind

    from captioner.artifacts.model_files import load_model

    model, vocab, info = load_model(output / "mymodel.h5", output / "tokenizer.pkl")
    assert info.vocab_size == len(vocab) and model.count_params() > 0
    # The saved weights are those of the best epoch of both runs (the killed one's included): the dev scores
    # the file records, measured on the weights it holds, are that epoch's row of history.csv.
    bleu = [float(row["val_bleu4"]) for row in after]
    best = bleu.index(max(bleu))  # the first epoch with the best monitored score, as the run keeps it
    recorded = info.extra["dev_greedy"]
    assert recorded["BLEU-4"] == pytest.approx(bleu[best], abs=1e-9)
    assert recorded["CIDEr"] == pytest.approx(float(after[best]["val_cider"]), abs=1e-9)
