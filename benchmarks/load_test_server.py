"""Load test of `captioner serve`: 1, 4 and 16 concurrent clients for a bounded time against one server on 127.0.0.1.

    python benchmarks/load_test_server.py --model exported/en --images ../shared/data/flickr8k/Images
    python benchmarks/load_test_server.py --model exported/en --clients 1 4 16 --seconds 20 --queue 8

One server starts (a free loopback port, killed at the end however the script ends) and is warmed up. For
each N, N client threads post photos to Ollama's /api/generate back to back for --seconds (and at most
--max-requests each). Reported per N: captions/s, p50/p95 latency of the answered requests, errors (any status
but 200 and 503, or a dropped connection), 503s (the queue was full: expected only when N > workers + queue),
and the server's resident memory (VmRSS) before and after, to show it stays flat. A Markdown table, with the CPU
model and its AVX-512/AVX2 flags above it.
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def cpu_line() -> str:
    """The CPU model and its vector flags, from lscpu."""
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in out.splitlines() if line.startswith("Flags")), [])
    vector = [f for f in ("avx512f", "avx2") if f in flags]
    return f"{model}, {os.cpu_count()} logical CPUs, {' '.join(vector) or 'no AVX2'}"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(model: str, workers: int, queue: int) -> tuple[str, subprocess.Popen]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "captioner", "serve", "--model", model, "--port", str(port),
                                "--workers", str(workers), "--queue", str(queue)],
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return url, process
        except httpx.TransportError:
            time.sleep(0.2)
        if process.poll() is not None:
            break
    process.kill()
    raise SystemExit("the server did not start")


def run_level(url: str, clients: int, images: list[str], seconds: float, max_requests: int) -> dict:
    """N clients posting back to back: latencies of the 200s, counts of 503s and errors."""
    latencies: list[float] = []
    busy = errors = 0
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(index: int) -> None:
        nonlocal busy, errors
        with httpx.Client(timeout=120) as http:
            for request in range(max_requests):
                if time.monotonic() > deadline:
                    return
                body = {"model": "captioner", "images": [images[(index * 7919 + request) % len(images)]],
                        "stream": False}
                start = time.perf_counter()
                try:
                    status = http.post(f"{url}/api/generate", json=body).status_code
                except httpx.TransportError:
                    status = -1
                with lock:
                    if status == 200:
                        latencies.append(time.perf_counter() - start)
                    elif status == 503:
                        busy += 1
                    else:
                        errors += 1

    began = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    ms = np.array(latencies) * 1000
    return {"clients": clients, "captions": len(latencies), "per_s": len(latencies) / elapsed,
            "p50": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
            "p95": float(np.percentile(ms, 95)) if len(ms) else float("nan"), "busy": busy, "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="an exported folder (or mymodel.h5) for `captioner serve`")
    parser.add_argument("--images", default=str(ROOT.parent / "shared/data/flickr8k/Images"))
    parser.add_argument("--photos", type=int, default=64, help="distinct photos the clients send")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=20, help="per level (default: %(default)s)")
    parser.add_argument("--max-requests", type=int, default=2000, help="per client per level")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--queue", type=int, default=8)
    args = parser.parse_args()

    files = sorted(Path(args.images).glob("*.jpg"))[: args.photos]
    if not files:
        raise SystemExit(f"{args.images}: no .jpg photos; give --images")
    images = [base64.b64encode(f.read_bytes()).decode() for f in files]
    url, process = start(args.model, args.workers, args.queue)
    try:
        run_level(url, 1, images, 3, 50)  # warm-up: sessions, allocator, page cache
        rows = []
        for clients in args.clients:
            before = rss_mib(process.pid)
            row = run_level(url, clients, images, args.seconds, args.max_requests)
            row.update(rss_before=before, rss_after=rss_mib(process.pid), alive=process.poll() is None)
            rows.append(row)
            print(row, file=sys.stderr)
    finally:
        process.kill()
    size_kb = np.mean([f.stat().st_size for f in files]) / 1024
    print(f"Machine: {cpu_line()}; server: --workers {args.workers} --queue {args.queue}, model {args.model}; "
          f"{args.seconds:g} s per level, {len(files)} Flickr8k photos (~{size_kb:.0f} KB), Ollama /api/generate, "
          f"clients on the same machine.\n")
    print("| clients | captions | captions/s | p50 ms | p95 ms | 503 (queue full) | errors "
          "| server RSS before → after (MiB) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['clients']} | {r['captions']} | {r['per_s']:.1f} | {r['p50']:.0f} | {r['p95']:.0f} "
              f"| {r['busy']} | {r['errors']}{'' if r['alive'] else ' (server died)'} "
              f"| {r['rss_before']:.0f} → {r['rss_after']:.0f} |")


if __name__ == "__main__":
    main()
