"""Decoding speed on real photos: single-image latency, batch throughput, and the seed app's loop.

Run by hand from the repository root (it is not part of the test suite):

    KERAS_HOME=$PWD/.keras python benchmarks/bench_decode.py      # the shipped mymodel.h5

It prints a Markdown table of medians and 95th percentiles over repeated runs, ready for the
README, and the machine it ran on with its load average, since other processes skew CPU timings.

The seed-style loop is the naive decoder the seed app used, re-implemented for the same trained
model: features from `model.predict` on the CNN, then for every word one `model.predict` over the
whole padded prefix, the argmax of the last real position, and the word found by scanning the
vocabulary.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

import captioner
from captioner.data.images import load_array
from captioner.decoding.options import GREEDY, DecodeOptions
from captioner.serving.api import Captioner
from captioner.text.vocabulary import END, START

BEAM3 = DecodeOptions(beam_size=3)


def seed_style_features(model: Captioner, path: Path) -> np.ndarray:
    """The CNN grid through `model.predict`, as the seed app computed it: (1, cells, 1280)."""
    encoder = model.encoder
    pixels = load_array(path, encoder.image_size)[None].astype("float32")  # (1, 224, 224, 3)
    outputs = encoder.model.predict(encoder.backbone.preprocess(pixels), verbose=0)
    grid = outputs[0] if encoder.classifier else outputs  # (1, 7, 7, 1280); the classifier's logits unused
    return grid.reshape(1, -1, grid.shape[-1])


def seed_style_decode(model: Captioner, features: np.ndarray) -> str:
    """Greedy decoding the naive way: re-run the whole padded prefix through the model for each word."""
    word_index = {token: i for i, token in enumerate(model.vocab.tokens)}  # like a Keras Tokenizer's
    max_length = model.search.max_length
    blocked = [model.vocab.pad_id, model.vocab.start_id, model.vocab.unk_id]
    text = START
    for _ in range(max_length):
        sequence = [word_index[w] for w in text.split() if w in word_index]
        padded = np.zeros((1, max_length), np.int32)
        padded[0, : len(sequence)] = sequence  # padded after the prefix, as the model was trained
        logits, _ = model.model.predict([features, padded], verbose=0)  # (1, T, V)
        last = logits[0, len(sequence) - 1]  # (V,)
        last[blocked] = -np.inf  # tokens the seed's vocabulary did not have (or ours never emits)
        best = int(np.argmax(last))
        word = next((w for w, i in word_index.items() if i == best), None)  # the lookup by scan
        if word is None or word == END:
            break
        text += " " + word
    return text.removeprefix(START).strip()


def timed(fn: Callable[[Path], object], paths: Sequence[Path], runs: int) -> list[float]:
    """Seconds per call of fn, each on the next image in turn."""
    seconds = []
    for i in range(runs):
        start = time.perf_counter()
        fn(paths[i % len(paths)])
        seconds.append(time.perf_counter() - start)
    return seconds


def p95(values: Sequence[float]) -> float:
    return float(np.percentile(values, 95))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mymodel.h5")
    parser.add_argument("--tokenizer", default="tokenizer.pkl")
    parser.add_argument("--images", default="../shared/data/flickr8k/Images", help="folder of real photos")
    parser.add_argument("--repeats", type=int, default=50, help="single-image runs per setting (default: 50)")
    parser.add_argument("--seed-repeats", type=int, default=15,
                        help="runs of the slow seed-style loop (default: 15)")
    parser.add_argument("--batch-images", type=int, default=256, help="images per throughput run (default: 256)")
    parser.add_argument("--batch-repeats", type=int, default=3, help="throughput runs (default: 3)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    paths = sorted(Path(args.images).glob("*.jpg"))
    if len(paths) < args.batch_images:
        raise SystemExit(f"need at least {args.batch_images} .jpg files in {args.images}, found {len(paths)}")
    load_before = os.getloadavg()
    model = captioner.load(args.model, args.tokenizer, runtime="tensorflow")  # the Keras path is what it measures

    start = time.perf_counter()
    model.caption(paths[0], BEAM3)  # builds the CNN, traces and XLA-compiles the searches
    first_call = time.perf_counter() - start
    model.caption(paths[1], GREEDY)
    singles = paths[2:2 + args.repeats]

    def encode(path: Path) -> np.ndarray:
        return model.encoder(load_array(path, model.encoder.image_size)[None])

    features = {p: encode(p) for p in singles[: args.seed_repeats]}
    feature_paths = list(features)
    rows: list[tuple[str, list[float]]] = [
        ("file → features (MobileNetV2 only)", timed(encode, singles, args.repeats)),
        ("file → caption, greedy", timed(lambda p: model.caption(p, GREEDY), singles, args.repeats)),
        ("file → caption, beam 3", timed(lambda p: model.caption(p, BEAM3), singles, args.repeats)),
        ("file → caption, seed-style loop",
         timed(lambda p: seed_style_decode(model, seed_style_features(model, p)), singles, args.seed_repeats)),
        ("features → caption, greedy",
         timed(lambda p: model.caption_features(features[p], GREEDY), feature_paths, args.repeats)),
        ("features → caption, beam 3",
         timed(lambda p: model.caption_features(features[p], BEAM3), feature_paths, args.repeats)),
        ("features → caption, seed-style loop",
         timed(lambda p: seed_style_decode(model, features[p]), feature_paths, args.seed_repeats)),
    ]
    plain = DecodeOptions(beam_size=1, block_repeats=False)  # the seed's loop blocks no repeats either
    agree = sum(seed_style_decode(model, features[p]) == model.caption_features(features[p], plain)[0].text
                for p in feature_paths)

    batch_paths = paths[-args.batch_images:]
    throughput: dict[str, list[float]] = {}
    for name, options in (("beam 3", BEAM3), ("greedy", GREEDY)):
        for _ in model.caption_files(batch_paths[: args.batch_size], options, args.batch_size):
            pass  # compile this batch shape first
        for _ in range(args.batch_repeats):
            start = time.perf_counter()
            for _ in model.caption_files(batch_paths, options, args.batch_size):
                pass
            throughput.setdefault(name, []).append(len(batch_paths) / (time.perf_counter() - start))
    load_after = os.getloadavg()

    decoder = model.decoder
    print(f"Model {args.model}: {len(model.vocab)}-word vocabulary, LSTM {decoder.units}, encoder {model.info.encoder}")
    print(f"Machine: {os.cpu_count()} × {cpu_name()}, TensorFlow {tf.__version__}, "
          f"load average {load_before[0]:.1f} before / {load_after[0]:.1f} after")
    print()
    print("| measurement | median | p95 | runs |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds in rows:
        print(f"| {name} | {statistics.median(seconds) * 1e3:.1f} ms | {p95(seconds) * 1e3:.1f} ms | {len(seconds)} |")
    for name, rates in throughput.items():
        # the 95th-percentile run time is the 5th-percentile rate
        print(f"| batch of {args.batch_size}, {name} (file → caption) | {statistics.median(rates):.1f} images/s | "
              f"{np.percentile(rates, 5):.1f} images/s | {len(rates)} × {len(batch_paths)} |")
    print(f"| first call in a fresh process (CNN build, trace, XLA compile) | {first_call:.2f} s | | 1 |")
    median = {name: statistics.median(seconds) for name, seconds in rows}
    print()
    for what in ("file", "features"):
        seed = median[f"{what} → caption, seed-style loop"]
        print(f"Speed-up over the seed-style loop ({what} → caption): "
              f"beam 3 {seed / median[f'{what} → caption, beam 3']:.1f}×, "
              f"greedy {seed / median[f'{what} → caption, greedy']:.1f}×")
    print(f"Seed-style loop and our greedy search (repeats allowed, as in the seed) agree on {agree} of "
          f"{len(feature_paths)} captions.")


if __name__ == "__main__":
    main()
