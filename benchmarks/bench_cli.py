"""What a user waits for: `captioner caption photo.jpg` (first run and later runs) and the light app's start.

Run by hand from the repository root (not part of the test suite):

    KERAS_HOME=$PWD/.keras python benchmarks/bench_cli.py                 # the shipped English model
    KERAS_HOME=$PWD/.keras python benchmarks/bench_cli.py --model runs/x/mymodel.h5 --tokenizer runs/x/tokenizer.pkl

Every timing is wall-clock of a fresh process, as a shell user sees it:
- the first `captioner caption` of a model file, with an empty export cache: it imports TensorFlow once,
  exports the model to ONNX into the cache and captions from the export;
- later runs (median of --runs): the export is found by the model's hash, and TensorFlow is never imported;
- `--runtime tensorflow`, the Keras path, for comparison;
- the light app's server: `streamlit run app.py` on the export until `/_stcore/health` answers, and a
  first caption through `captioner.load(export)` in a fresh process (what the app does for its first visitor).
The machine (CPU, AVX-512 or not) and the load average are printed with the table.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench_portable import cpu_features, cpu_name

ROOT = Path(__file__).resolve().parents[1]


def wall(command: list[str], env: dict[str, str]) -> float:
    """Seconds one command takes, start to exit; it must succeed."""
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def app_start(export: Path, env: dict[str, str], timeout: float = 120.0) -> float:
    """Seconds from `streamlit run app.py` on an exported model until its health endpoint answers."""
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
    start = time.perf_counter()
    server = subprocess.Popen(command, env={**env, "CAPTIONER_MODEL": str(export)}, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - start < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as answer:
                    if answer.read() == b"ok":
                        return time.perf_counter() - start
            except OSError:
                time.sleep(0.05)
        raise SystemExit(f"the app did not answer on port {port} within {timeout:.0f} s")
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "mymodel.h5"))
    parser.add_argument("--tokenizer", default=str(ROOT / "tokenizer.pkl"))
    parser.add_argument("--photo", default=None, help="default: the last photo of ../shared/data/flickr8k/Images")
    parser.add_argument("--runs", type=int, default=5, help="repeats of each warm measurement (default: 5)")
    args = parser.parse_args()
    photo = args.photo or str(sorted((ROOT.parent / "shared/data/flickr8k/Images").glob("*.jpg"))[-1])
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="captioner-bench-cache-") as cache:
        env = {**os.environ, "CAPTIONER_CACHE": cache}
        caption = [sys.executable, "-m", "captioner", "caption", photo, "--model", args.model,
                   "--tokenizer", args.tokenizer]
        first = wall(caption, env)
        later = [wall(caption, env) for _ in range(args.runs)]
        keras = [wall([*caption, "--runtime", "tensorflow"], env) for _ in range(max(1, args.runs // 2))]
        export = next(Path(cache, "exports").iterdir())
        first_caption = [wall([sys.executable, "-c", f"import captioner; captioner.load({str(export)!r})"
                               f".caption({photo!r})"], env) for _ in range(args.runs)]
        app = [app_start(export, env) for _ in range(args.runs)]
    load_after = os.getloadavg()
    print(f"Model {args.model}; {os.cpu_count()} × {cpu_name()}, {cpu_features()}; "
          f"load average {load_before[0]:.1f} before / {load_after[0]:.1f} after; medians of {args.runs} runs\n")
    print("| measurement (wall, fresh process) | seconds | target |")
    print("| --- | ---: | ---: |")
    print(f"| `captioner caption photo.jpg`, first run (imports TensorFlow, exports once, captions) | {first:.1f} | |")
    print(f"| `captioner caption photo.jpg`, second run onward | {statistics.median(later):.2f} | ≤ 2 |")
    print(f"| `captioner caption photo.jpg --runtime tensorflow` | {statistics.median(keras):.1f} | |")
    print(f"| light app: `streamlit run app.py` on the export until it answers | {statistics.median(app):.2f} | ≤ 2 |")
    print(f"| import captioner + load the export + first caption | {statistics.median(first_caption):.2f} | |")


if __name__ == "__main__":
    main()
