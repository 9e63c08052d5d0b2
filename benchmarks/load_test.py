"""Load test of the real app: N browser sessions at once, each uploading photos and waiting for captions.

    KERAS_HOME=$PWD/.keras python benchmarks/load_test.py                      # 2, 4 and 8 sessions, shipped model
    python benchmarks/load_test.py --sessions 2 4 8 --photos-per-session 3 --images ../shared/data/flickr8k/Images

For each N a fresh `streamlit run app.py` starts on 127.0.0.1 (a free port, loopback only) under a
hard lifetime, so it stops by itself even if this script is killed. One warm-up session captions a set
of photos first (the model load, the CNN build and XLA compilation are not what is measured; --no-warmup
keeps them in). Then N headless Chromium sessions (one browser, a context each: separate Streamlit
sessions) open the page, upload their own photos at the same moment and wait until every caption is
on the page. Reported per N: the time from upload to the last caption of each session (median, p95,
max), the sessions that failed (a timeout, an error box, a traceback on the page or in the server log),
and the server's resident memory: sampled VmRSS of the server process and its children before the
sessions (after warm-up) and at the peak, plus the kernel's VmHWM.

The memory check: peak RSS must not grow with N by more than the sessions' own images explain. Each
session keeps its uploads, the decoded full-size RGB images (4 bytes a pixel in Pillow) and what the page
shows of them (the previews and the Explain tab's attention overlay), so the allowance per extra session
is 2 × file bytes + 8 × pixels of its photos, plus a fixed 8 MiB for the session itself; the slope of a
least-squares line through (N, peak RSS) is compared with the largest allowance of any session.

The browser runs on the same machine as the server, so with few cores the times include Chromium's own
work. Output: a Markdown table with the CPU model and whether it has AVX-512 above it.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import appdriver  # noqa: E402  (scripts/appdriver.py)

SHARED = Path(os.environ.get("CAPTIONER_SHARED", ROOT.parent / "shared"))
MAX_SESSIONS = 16
SESSION_OVERHEAD_MIB = 8.0


def cpu_description() -> tuple[str, str]:
    """('Intel(R) Xeon(R) Processor, 2 cores', 'yes (avx512f, avx512bw, ...)') from /proc/cpuinfo."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    avx512 = sorted(f for f in flags if f.startswith("avx512"))
    has = f"yes ({', '.join(avx512)})" if "avx512f" in flags else "no"
    return f"{model}, {os.cpu_count()} cores", has


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def image_allowance_mib(files: list[Path]) -> float:
    """What holding one session's photos may cost: 2 × file bytes + 8 × pixels, plus a fixed overhead."""
    total = 0
    for path in files:
        with Image.open(path) as image:
            total += 2 * path.stat().st_size + 8 * image.width * image.height
    return total / 2**20 + SESSION_OVERHEAD_MIB


def pick_photos(folder: Path, sets: int, per_set: int, seed: int) -> list[list[Path]]:
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(photos) < sets * per_set:
        raise SystemExit(f"{folder}: needs {sets * per_set} photos, found {len(photos)}")
    chosen = random.Random(seed).sample(photos, sets * per_set)
    return [chosen[i * per_set:(i + 1) * per_set] for i in range(sets)]


def run_round(n: int, env: dict[str, str], photo_sets: list[list[Path]], warmup: list[Path] | None,
              timeout_s: float) -> dict:
    """A fresh server, an optional warm-up session, then n sessions at once; returns the numbers."""
    lifetime = 120 + (timeout_s if warmup else 0) + 2 * timeout_s + 60
    with appdriver.serve_app_for(lifetime, env, startup_timeout=120) as server, \
            appdriver.RssSampler(server.process.pid) as rss:
        warm = appdriver.caption_in_sessions(server.url, [warmup], timeout_s)[0] if warmup else None
        if warm and warm.error:
            raise SystemExit(f"warm-up session failed: {warm.error}\n{server.log()[-3000:]}")
        time.sleep(1.0)
        before = rss.mark()
        started = time.perf_counter()
        results = appdriver.caption_in_sessions(server.url, photo_sets[:n], timeout_s)
        wall = time.perf_counter() - started
        rss.sample()
        peak, hwm = rss.peak_mib, rss.hwm_mib()
        log = server.log()
    problems = [line for line in log.splitlines() if "Traceback" in line]
    times = [r.seconds for r in results if r.seconds is not None and not r.error]
    return {"n": n, "results": results, "times": times, "wall": wall, "before": before, "peak": peak, "hwm": hwm,
            "warmup_s": warm.seconds if warm else None, "log_problems": problems,
            "errors": [r for r in results if r.error], "samples": rss.samples}


def memory_check(rounds: list[dict], photo_sets: list[list[Path]]) -> tuple[bool, str]:
    """Does the RSS the sessions add (peak − RSS before them, on the round's own server) grow with N by
    more than each session's own images allow? The slope of a least-squares line through (N, growth)."""
    if len(rounds) < 2:
        return True, "memory check: needs two or more session counts"
    ns = np.array([r["n"] for r in rounds], dtype=float)
    growth = np.array([r["peak"] - r["before"] for r in rounds])
    allowance = max(image_allowance_mib(files) for files in photo_sets)
    slope, intercept = np.polyfit(ns, growth, 1)
    ok = slope <= allowance
    return ok, (f"memory check: the sessions added {' / '.join(f'{g:.0f}' for g in growth)} MiB of RSS at "
                f"{' / '.join(str(int(n)) for n in ns)} sessions: {slope:.1f} MiB per extra session (least squares, "
                f"{intercept:.0f} + {slope:.1f}·N MiB); allowed: {allowance:.1f} MiB per session for its own "
                f"uploads, decoded images and page ({int(ns[-1] - ns[0])} more sessions: "
                f"{allowance * (ns[-1] - ns[0]):.0f} MiB): {'PASS' if ok else 'FAIL'}")


def table(rounds: list[dict], per_session: int) -> str:
    lines = ["| sessions | photos | captioned | errors | time to caption median | p95 | max | wall | "
             "RSS before | peak RSS | VmHWM |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rounds:
        t = r["times"]
        captioned = sum(len(x.captions) for x in r["results"] if not x.error)
        errors = len(r["errors"]) + len(r["log_problems"])
        lines.append(f"| {r['n']} | {r['n'] * per_session} | {captioned} | {errors} | "
                     f"{statistics.median(t) if t else float('nan'):.2f} s | {percentile(t, 95):.2f} s | "
                     f"{max(t) if t else float('nan'):.2f} s | {r['wall']:.1f} s | {r['before']:.0f} MiB | "
                     f"{r['peak']:.0f} MiB | {r['hwm']:.0f} MiB |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[2, 4, 8],
                        help=f"session counts to run, each on a fresh server (1..{MAX_SESSIONS}; default 2 4 8)")
    parser.add_argument("--photos-per-session", type=int, default=3, choices=range(1, 11), metavar="K")
    parser.add_argument("--images", type=Path, default=SHARED / "data" / "flickr8k" / "Images",
                        help="folder of photos to upload (default: ../shared/data/flickr8k/Images)")
    parser.add_argument("--model", default=str(ROOT / "mymodel.h5"))
    parser.add_argument("--tokenizer", default=str(ROOT / "tokenizer.pkl"))
    parser.add_argument("--encoder-weights", default=os.environ.get("CAPTIONER_ENCODER_WEIGHTS", "imagenet"))
    parser.add_argument("--timeout", type=float, default=300, help="seconds a session may wait for its captions")
    parser.add_argument("--no-warmup", action="store_true", help="measure the first session's model load too")
    parser.add_argument("--server-env", nargs="*", default=[], metavar="NAME=VALUE",
                        help="extra environment for the server, e.g. MALLOC_ARENA_MAX=2")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not all(1 <= n <= MAX_SESSIONS for n in args.sessions):
        parser.error(f"--sessions: each count must be 1..{MAX_SESSIONS}")
    sessions = sorted(set(args.sessions))
    env = {"KERAS_HOME": os.environ.get("KERAS_HOME", str(ROOT / ".keras"))}
    k = args.photos_per_session
    sets = pick_photos(args.images, max(sessions) + 1, k, args.seed)
    warmup, photo_sets = (None if args.no_warmup else sets[-1]), sets[:-1]

    cpu, avx512 = cpu_description()
    load_before = os.getloadavg()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="captioner-load-") as absent:
        env.update(appdriver.single_language_env(Path(args.model).resolve(), Path(args.tokenizer).resolve(),
                                                 args.encoder_weights, Path(absent)))
        env.update(dict(item.split("=", 1) for item in args.server_env))
        for n in sessions:
            print(f"… {n} sessions", file=sys.stderr, flush=True)
            rounds.append(run_round(n, env, photo_sets, warmup, args.timeout))
            for r in rounds[-1]["errors"]:
                print(f"  session {r.index} ({', '.join(f.name for f in r.files)}): {r.error}", file=sys.stderr)
            for line in rounds[-1]["log_problems"][:5]:
                print(f"  server log: {line}", file=sys.stderr)
    load_after = os.getloadavg()

    ok, check = memory_check(rounds, photo_sets)
    print(f"CPU: {cpu}; AVX-512: {avx512}")
    warm = [f"{r['warmup_s']:.1f} s" for r in rounds if r["warmup_s"] is not None]
    print(f"Model: {Path(args.model).name} + {Path(args.tokenizer).name}, encoder weights {args.encoder_weights}; "
          f"{k} photos per session from {args.images}; "
          f"warm-up session (one, before each round): {', '.join(warm) if warm else 'none'}; "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
          + (f"; server env {' '.join(args.server_env)}" if args.server_env else ""))
    print()
    print(table(rounds, k))
    print()
    print("Time to caption: from the upload to the session's last caption on the page. RSS: server process "
          "and its children (sampled every 0.1 s); VmHWM: the kernel's peak over the server's whole life.")
    print(check)
    failed = sum(len(r["errors"]) + len(r["log_problems"]) for r in rounds)
    print(f"errors: {failed}")
    return 0 if failed == 0 and ok else 1


if __name__ == "__main__":
    sys.exit(main())
