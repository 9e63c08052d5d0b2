"""Ray batch captioning at 1 and 2 workers against local batch mode, on the same folder of photos.

Start-up (model load, Ray cluster and actors, first batch with its tracing and compiling) is
reported apart from the steady rate after it: the rows each run appends to its output file are
timestamped, the first append ends the start-up, and the images after it over the time after it
give images/s. Every run writes the same rows, which the script checks.

    KERAS_HOME=$PWD/.keras python benchmarks/bench_ray.py --images 320
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import captioner
from captioner.serving import batch

ROOT = Path(__file__).resolve().parent.parent
FLICKR8K = ROOT.parent / "shared" / "data" / "flickr8k" / "Images"


def cpu_flags() -> str:
    """The CPU's name and the vector extensions TensorFlow's kernels care about."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                "unknown CPU")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
    have = " ".join(f for f in wanted if f in flags) or "none of " + " ".join(wanted)
    return f"{name}; AVX-512 {'yes' if 'avx512f' in flags else 'no'} ({have})"


def timed(run: Callable[[Path], object], output: Path) -> tuple[float, float, int]:
    """(start-up seconds, steady images/s, images after start-up) of one run writing `output`."""
    stamps: list[tuple[float, int]] = []
    append = batch.CaptionFile.append

    def stamped(self, records):
        append(self, records)
        stamps.append((time.perf_counter(), len(records)))

    batch.CaptionFile.append = stamped
    try:
        start = time.perf_counter()
        run(output)
    finally:
        batch.CaptionFile.append = append
    first = stamps[0][0] - start
    after = sum(n for _, n in stamps[1:])
    return first, after / (stamps[-1][0] - stamps[0][0]), after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=FLICKR8K, help="photos (default: Flickr8k in ../shared)")
    parser.add_argument("--images", type=int, default=320, help="how many photos of the folder (default: 320)")
    parser.add_argument("--model", default=str(ROOT / "mymodel.h5"))
    parser.add_argument("--tokenizer", default=str(ROOT / "tokenizer.pkl"))
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    from captioner.distributed.ray_batch import caption_to_file_ray

    paths = sorted(args.folder.glob("*.jpg"))[: args.images]
    load_args = (args.model, args.tokenizer)
    runs: dict[str, Callable[[Path], object]] = {
        "local": lambda out: batch.caption_to_file(captioner.load(*load_args), paths, out,
                                                   batch_size=args.batch_size, progress=False),
        **{f"ray, {n} worker{'s' if n > 1 else ''}": (
            lambda out, n=n: caption_to_file_ray(load_args, paths, out, batch_size=args.batch_size, workers=n,
                                                 progress=False)) for n in (1, 2)},
    }
    results, rows = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in runs.items():
            output = Path(tmp) / f"{name.replace(' ', '_').replace(',', '')}.jsonl"
            results[name] = timed(run, output)
            rows[name] = sorted(output.read_text(encoding="utf-8").splitlines())
    local_rate = results["local"][1]
    print(f"CPU: {cpu_flags()}; {len(paths)} photos, batches of {args.batch_size}, beam 3")
    print("| engine | start-up (load, first batch) | images/s after start-up | ms per image | × local per image |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, (startup, rate, _) in results.items():
        print(f"| {name} | {startup:.1f} s | {rate:.1f} | {1000 / rate:.1f} | {local_rate / rate:.2f} |")
    same = all(r == rows["local"] for r in rows.values())
    print(f"rows identical to local mode: {'yes' if same else 'NO'} ({len(rows['local'])} rows each)")


if __name__ == "__main__":
    main()
