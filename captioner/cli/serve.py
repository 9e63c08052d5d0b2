"""`captioner serve`: load every configured model once and answer captions over HTTP (captioner.serving.server)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from pathlib import Path

from captioner.errors import CaptionerError
from captioner.serving.loading import DEFAULT_RUNTIME, RUNTIMES


def add_serve_command(commands) -> None:
    serve = commands.add_parser(
        "serve", help="answer captions over HTTP (captioner, Ollama and OpenAI APIs)",
        description="Serve captions over HTTP: POST /v1/captions, Ollama's /api/generate, /api/chat and /api/tags, "
                    "OpenAI's /v1/chat/completions and /v1/models; OpenAPI docs at /docs. Exported folders run "
                    "without TensorFlow (captioner export MODEL --output DIR).")
    serve.add_argument("--model", action="append", metavar="[NAME=]PATH",
                       help="a folder written by `captioner export` (fastest start, no TensorFlow) or a mymodel.h5 "
                            "(tokenizer.pkl beside it); repeat for more languages; clients pick one by NAME "
                            "(default: its language) as captioner:NAME. Default: the shipped models of --lang")
    serve.add_argument("--lang", action="extend", type=lambda s: s.split(","), metavar="en,de,zh",
                       help="shipped models to serve when no --model is given (default: en)")
    serve.add_argument("--encoder-weights", default="imagenet",
                       help="ImageNet weights .h5 for an .h5 model's encoder; default: Keras cache")
    serve.add_argument("--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME,
                       help="auto (default): an .h5 model is served from its export, made once on first use; "
                            "tensorflow: served in Keras")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: %(default)s, this machine only); 0.0.0.0 for the "
                            "network, with --token")
    serve.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; Ollama's is 11434)")
    serve.add_argument("--token", default=os.environ.get("CAPTIONER_TOKEN"),
                       help="require 'Authorization: Bearer TOKEN' (default: $CAPTIONER_TOKEN; none)")
    serve.add_argument("--max-body-mb", type=float, default=20, help="largest request body (default: %(default)s)")
    serve.add_argument("--max-pixels", type=int, default=50_000_000, help="largest image (default: %(default)s)")
    serve.add_argument("--workers", type=int, default=1, help="captions computed at once (default: %(default)s)")
    serve.add_argument("--queue", type=int, default=16,
                       help="requests that may wait for a worker; more get 503 (default: %(default)s)")
    serve.add_argument("--timeout", type=float, default=60, help="seconds per request before 504 (default: 60)")


def _model_specs(args: argparse.Namespace) -> list[tuple[str | None, Path]]:
    """(name or None, path) of each --model, or of the shipped models of --lang."""
    from captioner.serving.shipped import shipped_model_paths

    if not args.model:
        return [(name, shipped_model_paths(name)[0]) for name in dict.fromkeys(args.lang or ["en"])]
    specs = []
    for spec in args.model:
        name, _, path = spec.rpartition("=")
        specs.append((name or None, Path(path)))
    return specs


def load_models(args: argparse.Namespace) -> list:
    """Every model, loaded once and warmed up (the first caption builds the runtime's sessions)."""
    from PIL import Image

    import captioner
    from captioner.artifacts.model_files import vocabulary_beside
    from captioner.serving.server import ServedModel

    served: list[ServedModel] = []
    for name, path in _model_specs(args):
        if not path.exists():
            raise CaptionerError(f"{path}: no such model; give an exported folder or a mymodel.h5 with --model.")
        model = captioner.load(path, vocabulary_beside(path), args.encoder_weights, args.runtime) if path.is_file() \
            else captioner.load(path)
        name = f"captioner:{name or model.vocab.lang}"
        if any(s.name == name for s in served):
            name = f"captioner:{path.stem if path.is_dir() else path.parent.name}"
        model.caption(Image.new("RGB", (32, 32), "grey"))  # warm-up: the first request is not the slow one
        kind = "portable, " + model.runtime if hasattr(model, "runtime") else "TensorFlow"
        print(f"loaded {name} from {path} ({kind})", file=sys.stderr)
        served.append(ServedModel(name, model))
    return served


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from captioner.serving.server import ServerConfig, create_app

    if min(args.workers, args.port) < 1 or args.queue < 0 or args.timeout <= 0 or args.max_body_mb <= 0:
        raise CaptionerError("--port, --workers, --max-body-mb and --timeout must be positive, --queue at least 0.")
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback and not args.token:
        print(f"warning: serving on {args.host} without --token: anyone who can reach this port can use it.",
              file=sys.stderr)
    config = ServerConfig(args.token, int(args.max_body_mb * 2**20), args.max_pixels, args.workers, args.queue,
                          args.timeout)
    app = create_app(load_models(args), config)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    print(f"serving on http://{args.host}:{args.port} (API docs: /docs)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning")
