"""Where a portable beam-3 caption's time goes, as shares of the encoder's file → features, in one process.

Run by hand from the repository root on an exported folder (it is not part of the test suite):

    KERAS_HOME=$PWD/.keras captioner export mymodel.h5 --output runs/bench/export_onnx
    python benchmarks/decode_breakdown.py runs/bench/export_onnx --photos 30 --passes 3

The decoder's `prepare` and `step` are timed inside the search itself (wrapped, not re-run), so the rest of a
caption's decode is the search's own NumPy work. Each pass takes, photo by photo, the encoder's file → features and
then the decode from those features; the table gives each part's median over photos, per pass, as a share of the
encoder's median, and the Done-when ratio (file → caption beam 3) / (file → features), with the CPU's features and
the load average, since other processes skew CPU timings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from bench_portable import cpu_features, cpu_name

import captioner
from captioner.decoding.options import DecodeOptions

PARTS = ("file → features (the encoder)", "decoder `prepare`", "decoder steps", "the search's own NumPy work",
         "the whole beam-3 decode")


class Timed:
    """The exported decoder with its `prepare` and `step` calls timed: seconds and calls of each since `reset`."""

    METHODS = ("prepare", "step")

    def __init__(self, decoder) -> None:
        self.reset()
        for name in self.METHODS:
            setattr(decoder, name, self._timed(name, getattr(decoder, name)))

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.METHODS, 0.0)
        self.calls = dict.fromkeys(self.METHODS, 0)

    def _timed(self, name: str, method):
        """`method` with each call's seconds added to self.seconds[name] and counted in self.calls[name]."""
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start
                self.calls[name] += 1
        return call


def one_pass(model, timed: Timed, photos: list[Path], options: DecodeOptions) -> tuple[dict[str, float], float]:
    """Per part, the median seconds over photos; and the median number of steps a caption."""
    seconds: dict[str, list[float]] = {part: [] for part in PARTS}
    steps = []
    for photo in photos:
        start = time.perf_counter()
        features, probabilities = model.encode_and_classify([photo])
        seconds[PARTS[0]].append(time.perf_counter() - start)
        timed.reset()
        start = time.perf_counter()
        model.caption_features(features, options, probabilities)
        total = time.perf_counter() - start
        seconds[PARTS[1]].append(timed.seconds["prepare"])
        seconds[PARTS[2]].append(timed.seconds["step"])
        seconds[PARTS[3]].append(total - timed.seconds["prepare"] - timed.seconds["step"])
        seconds[PARTS[4]].append(total)
        steps.append(timed.calls["step"])
    return {part: statistics.median(values) for part, values in seconds.items()}, statistics.median(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", help="an exported folder (captioner export)")
    parser.add_argument("--images", default="../shared/data/flickr8k/Images", help="folder of real photos")
    parser.add_argument("--photos", type=int, default=30, help="photos a pass (default: %(default)s)")
    parser.add_argument("--passes", type=int, default=3, help="passes over the photos (default: %(default)s)")
    args = parser.parse_args()

    model = captioner.load(args.export)
    if model.runtime == "tensorflow":
        raise SystemExit(f"{args.export}: give an exported folder; this breakdown is of the portable path.")
    photos = sorted(Path(args.images).glob("*.jpg"))[: args.photos + 1]
    if len(photos) <= args.photos:
        raise SystemExit(f"{args.images}: needs {args.photos + 1} .jpg photos, found {len(photos)}.")
    options = DecodeOptions()  # beam 3, grounded in the tags: what every surface decodes with
    timed = Timed(model.decoder)
    model.caption(photos[0], options)  # sessions warm, first allocations done
    passes = [one_pass(model, timed, photos[1:], options) for _ in range(args.passes)]

    print(f"{args.export}: {args.photos} Flickr8k photos, {args.passes} passes; {cpu_name()}, {os.cpu_count()} "
          f"cores, {cpu_features()}; load average {os.getloadavg()[0]:.1f}")
    print(f"steps a caption (median): {', '.join(f'{steps:g}' for _, steps in passes)}\n")
    print("| part | ms (median of the passes) | share of the encoder's time, per pass |")
    print("| --- | ---: | --- |")
    for part in PARTS:
        ms = statistics.median(medians[part] for medians, _ in passes) * 1e3
        shares = ", ".join(f"{medians[part] / medians[PARTS[0]]:.2f}" for medians, _ in passes)
        print(f"| {part} | {ms:.2f} | {shares} |")
    ratios = ", ".join(f"{1 + medians[PARTS[4]] / medians[PARTS[0]]:.2f}" for medians, _ in passes)
    print(f"| file → caption beam 3 / file → features (target ≤ 1.5) | | {ratios} |")


if __name__ == "__main__":
    main()
