"""Seconds per training step and minutes per Flickr8k epoch for each registered decoder, in one run.

Every decoder trains the same compiled cross-entropy step on Flickr8k-shaped batches (64 captions of
16 tokens over a 7×7×1280 grid, a 2,540-word vocabulary), so the ratios compare the decoders on this
machine; the absolute numbers depend on the CPU (its flags are printed).

    python benchmarks/bench_train_step.py [--steps 20]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import keras
import numpy as np

from captioner.models.base import build_caption_model, registered_decoders
from captioner.training.xent import CaptionTrainer

BATCH, TOKENS, CELLS, CHANNELS, VOCAB = 64, 16, 49, 1280, 2540
STEPS_PER_EPOCH = 472  # Flickr8k: 30,000 training captions in batches of 64, bucketed by length


def cpu_flags() -> str:
    """The CPU model and whether it has AVX-512, which changes these numbers several-fold."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.processor())
    return f"{model}; AVX-512: {'yes' if 'avx512f' in info else 'no'}; AVX2: {'yes' if 'avx2' in info else 'no'}"


def step_seconds(decoder: str, steps: int) -> list[float]:
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(BATCH, CELLS, CHANNELS)).astype("float32")
    tokens = rng.integers(4, VOCAB, size=(BATCH, TOKENS + 1)).astype("int32")
    trainer = CaptionTrainer(build_caption_model(VOCAB, (CELLS, CHANNELS), decoder), label_smoothing=0.1)
    trainer.compile(optimizer=keras.optimizers.Adam(4e-4))
    x, y = (features, tokens[:, :-1]), tokens[:, 1:]
    trainer.train_on_batch(x, y)  # trace and compile
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print(f"CPU: {cpu_flags()}\n")
    rows = {name: statistics.median(step_seconds(name, args.steps)) for name in registered_decoders()}
    base = rows.get("sat") or next(iter(rows.values()))
    print("| decoder | s / step (median) | min / Flickr8k epoch | vs sat |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds in rows.items():
        print(f"| {name} | {seconds:.3f} | {seconds * STEPS_PER_EPOCH / 60:.1f} | {seconds / base:.2f}× |")


if __name__ == "__main__":
    main()
