"""The TensorFlow path against the portable path (ONNX exports on ONNX Runtime, float32 and int8), in one run.

Run by hand from the repository root (it is not part of the test suite); it exports the model first
(float32 to --export, int8 weights to --export-int8) unless those folders hold exports already:

    KERAS_HOME=$PWD/.keras python benchmarks/bench_portable.py          # the shipped mymodel.h5

Each path runs in a fresh process of its own, so import time, the first caption (model load, graph
building, compilation) and peak RSS are what a user of that path sees. Per-caption latencies are
medians over photos, every setting timed on a photo before the next photo. The seed-style loop
(benchmarks/bench_decode.py) runs in the TensorFlow process after its peak RSS is read; its median
over photos is compared with each path's file → caption, beam 3. The table is Markdown, with the
machine, its CPU features (AVX-512 or not) and the load average, since other processes skew CPU timings.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROWS = ("import captioner + load + first caption (s)", "peak RSS (MB)", "file → features (ms)",
        "file → caption, greedy (ms)", "file → caption, beam 3 (ms)", "features → caption, greedy (ms)",
        "features → caption, beam 3 (ms)", "features → decoder alone, no search (ms)",
        "file → caption, beam 3, batches of 32 (images/s)")


def timed(fn, item) -> float:
    start = time.perf_counter()
    fn(item)
    return time.perf_counter() - start


def decoder_alone(loaded, path: str):
    """A function (features, steps) → tokens that runs the decoder's `prepare` and `steps` steps over four rows
    (3 beams and the greedy row) with no search around them: the least any beam-3 search of this decoder costs."""
    from captioner.decoding.loops import start

    generator = loaded.search
    ops, decoder, start_id = generator.ops, generator.decoder, generator.vocab.start_id

    def run(features, steps):
        memory, state = start(ops, decoder, features, 4)
        tokens = ops.fill([ops.rows(features) * 4], start_id, "int32")
        for _ in ops.steps(steps):
            logits, _, state = decoder.step(tokens, state, memory, False)
            tokens = ops.argmax(logits)  # uses the logits, or TensorFlow would prune the output layer
        return tokens

    if path == "tensorflow":  # one graph, as the Keras path's searches
        import tensorflow as tf

        run = tf.function(run)
    return lambda features, steps: run(generator._inputs(features), ops.constant(steps, "int32"))


def worker(path: str, model: str, tokenizer: str, photos: list[str], runs: int, seed_runs: int) -> dict:
    """Measure one path in this fresh process; `path` is "tensorflow" or "portable".

    The latencies are taken in turn on each photo (features, greedy, beam 3, …, then the next photo), so
    that a burst of load from other processes skews every setting alike and the ratios stay fair.
    """
    start = time.perf_counter()
    import captioner
    from captioner.decoding.options import GREEDY, DecodeOptions

    loaded = captioner.load(model, tokenizer, runtime="tensorflow" if path == "tensorflow" else "auto")
    loaded.caption(photos[0])  # the default search: beam 3
    first = time.perf_counter() - start
    beam3 = DecodeOptions(beam_size=3)
    loaded.caption(photos[1], GREEDY)
    paths = [Path(p) for p in photos[2:2 + runs]]
    features = {p: loaded.encode([p]) for p in paths}
    # one step per word of the beam-3 caption and one for <end>: fewer than the search takes (it stops later)
    steps = {p: len(loaded.caption_features(features[p], beam3)[0].words) + 1 for p in paths}
    alone = decoder_alone(loaded, path)
    alone(features[paths[0]], steps[paths[0]])  # built (and on TensorFlow traced) before timing
    settings = {ROWS[2]: lambda p: loaded.encode([p]), ROWS[3]: lambda p: loaded.caption(p, GREEDY),
                ROWS[4]: lambda p: loaded.caption(p, beam3),
                ROWS[5]: lambda p: loaded.caption_features(features[p], GREEDY),
                ROWS[6]: lambda p: loaded.caption_features(features[p], beam3),
                ROWS[7]: lambda p: alone(features[p], steps[p])}
    seconds: dict[str, list[float]] = {row: [] for row in settings}
    for photo in paths:
        for row, fn in settings.items():
            seconds[row].append(timed(fn, photo))
    result = {row: statistics.median(values) * 1e3 for row, values in seconds.items()}
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before batches of 32 raise it
    batch = [Path(p) for p in photos[2:34]]

    def run_batch(files: list[Path]) -> list:
        return [captioned for captioned, _ in loaded.caption_files(files, beam3, 32)]

    run_batch(batch)  # the batch's shapes run once first (TensorFlow traces them)
    result[ROWS[8]] = len(batch) / timed(run_batch, batch)
    result[ROWS[0]] = first
    result[ROWS[1]] = peak_rss
    result["tensorflow imported"] = "tensorflow" in sys.modules
    if path == "tensorflow" and seed_runs:
        from bench_decode import seed_style_decode, seed_style_features

        seed = [timed(lambda p: seed_style_decode(loaded, seed_style_features(loaded, p)), photo)
                for photo in paths[:seed_runs]]
        result["seed-style loop (ms)"] = statistics.median(seed) * 1e3
    return result


def cpu_features() -> str:
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    avx512 = sorted(f for f in flags if f.startswith("avx512"))
    return ("AVX-512 (" + ", ".join(avx512) + ")" if avx512 else "no AVX-512") + (", AVX2" if "avx2" in flags else "")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def run_path(path: str, model: str, tokenizer: str, photos: list[str], args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", path, "--model", model, "--tokenizer", tokenizer,
               "--runs", str(args.runs), "--seed-runs", str(args.seed_runs), "--photos", *photos]
    root = str(Path(__file__).resolve().parents[1])  # this checkout's captioner, not another installed copy
    checkout = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    run = subprocess.run(command, capture_output=True, text=True, check=False, env=checkout)
    if run.returncode:
        raise SystemExit(f"the {path} run failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mymodel.h5")
    parser.add_argument("--tokenizer", default="tokenizer.pkl")
    parser.add_argument("--export", default="runs/bench/export_onnx", help="ONNX export folder (made if missing)")
    parser.add_argument("--export-int8", default="runs/bench/export_onnx_int8",
                        help="ONNX export with int8 decoder weights (made if missing)")
    parser.add_argument("--images", default="../shared/data/flickr8k/Images", help="folder of real photos")
    parser.add_argument("--runs", type=int, default=30, help="calls per latency (default: %(default)s)")
    parser.add_argument("--seed-runs", type=int, default=5, help="runs of the slow seed-style loop")
    parser.add_argument("--repeat", type=int, default=3,
                        help="measure all paths this many times in turn and report medians (default: %(default)s): "
                             "a shared host's speed drifts by minutes")
    parser.add_argument("--worker", choices=("tensorflow", "portable"), help=argparse.SUPPRESS)
    parser.add_argument("--photos", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.tokenizer, args.photos, args.runs, args.seed_runs)))
        return
    for folder, quantize in ((args.export, []), (args.export_int8, ["--quantize", "int8"])):
        if not Path(folder, "manifest.json").is_file():
            subprocess.run([sys.executable, "-m", "captioner.cli.main", "export", args.model, "--tokenizer",
                            args.tokenizer, "--format", "onnx", "--output", folder, *quantize], check=True)
    photos = [str(p) for p in sorted(Path(args.images).glob("*.jpg"))[-max(args.runs + 2, 34):]]
    folders = {"TensorFlow path": ("tensorflow", args.model), "portable (ONNX Runtime)": ("portable", args.export),
               "portable, int8 decoder": ("portable", args.export_int8)}  # name: (worker, model)
    load_before = os.getloadavg()
    runs = [{name: run_path(path, model, args.tokenizer, photos, args) for name, (path, model) in folders.items()}
            for _ in range(args.repeat)]
    load_after = os.getloadavg()
    names = list(folders)
    print(f"Model {args.model} (ONNX exports {args.export}, {args.export_int8}); {os.cpu_count()} × {cpu_name()}, "
          f"{cpu_features()}; load average {load_before[0]:.1f} before / {load_after[0]:.1f} after")
    print("The portable processes imported TensorFlow: "
          f"{any(run[name]['tensorflow imported'] for run in runs for name in names[1:])}")
    print(f"Medians over {args.repeat} runs, the paths measured in turn in each run; ratios are medians of each run's "
          "ratio, every run's in brackets.")
    print()

    def median(fn) -> str:
        values = [fn(run) for run in runs]
        spread = f" ({', '.join(f'{v:.2f}' for v in values)})" if len(values) > 1 else ""
        return f"{statistics.median(values):.2f}{spread}"

    print(f"| measurement | {' | '.join(names)} | {' | '.join(f'{n} / TensorFlow' for n in names[1:])} |")
    print("| --- |" + " ---: |" * (2 * len(names) - 1))
    for row in ROWS:
        values = [statistics.median(run[name][row] for run in runs) for name in names]
        print(f"| {row} | {' | '.join(f'{v:.1f}' for v in values)} | "
              f"{' | '.join(median(lambda r, n=n, row=row: r[n][row] / r[names[0]][row]) for n in names[1:])} |")
    print()
    print(f"| ratio | {' | '.join(names)} | target |")
    print("| --- |" + " ---: |" * (len(names) + 1))
    for label, top, bottom, target in (("beam 3 / greedy, from features", ROWS[6], ROWS[5], "≤ 1.5"),
                                       ("file → caption beam 3 / file → features", ROWS[4], ROWS[2], "≤ 1.6")):
        cells = [median(lambda r, n=n, top=top, bottom=bottom: r[n][top] / r[n][bottom]) for n in names]
        print(f"| {label} | {' | '.join(cells)} | {target} |")
    # what the previous ratio would be if the search itself cost nothing: the decoder alone after the CNN
    cells = [median(lambda r, n=n: (r[n][ROWS[2]] + r[n][ROWS[7]]) / r[n][ROWS[2]]) for n in names]
    print(f"| (file → features + decoder alone) / file → features: the least for any search | {' | '.join(cells)} | |")
    if args.seed_runs:  # the seed-style loop's median (TensorFlow process) over each path's, file → caption beam 3
        seed = statistics.median(run[names[0]]["seed-style loop (ms)"] for run in runs)
        cells = [median(lambda r, n=n: r[names[0]]["seed-style loop (ms)"] / r[n][ROWS[4]]) for n in names]
        print(f"| seed-style loop ({seed:.0f} ms) / ours, file → caption beam 3 | {' | '.join(cells)} | ≥ 30 |")


if __name__ == "__main__":
    main()
