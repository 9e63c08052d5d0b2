"""The `captioner` command: extract, train, average, caption, evaluate. A thin layer over the library."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing
from pathlib import Path

from captioner.cli.engines import add_engine_args
from captioner.cli.evaluate import add_evaluate_command, cmd_evaluate
from captioner.cli.options import (
    DECODE_DEFAULTS,
    add_data_args,
    add_model_args,
    add_search_args,
    decode_options,
    load_captioner,
    model_paths,
)
from captioner.cli.serve import add_serve_command, cmd_serve
from captioner.cli.write import add_write_args, add_write_command, caption_and_write, check_write_args, cmd_write
from captioner.errors import CaptionerError
from captioner.features import DEFAULT_CACHE_DIR, DEFAULT_ENCODER

if typing.TYPE_CHECKING:  # TensorFlow is imported only when a command needs it
    from captioner.decoding.options import Caption
    from captioner.serving.api import Captioner


def _config_field_type(field: dataclasses.Field) -> type:
    hint = typing.get_type_hints(_train_config())[field.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _train_config():
    from captioner.training.config import TrainConfig

    return TrainConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captioner", description="Show, Attend and Tell image captioning: train, caption and evaluate.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    extract = commands.add_parser("extract", help="cache encoder features for a dataset",
                                  description="Encode every train/dev/test image once and cache the "
                                              "feature grids on disk (resumable).")
    add_data_args(extract)
    extract.add_argument("--encoder", default=DEFAULT_ENCODER, help="backbone (default: %(default)s)")
    extract.add_argument("--encoder-weights", default="imagenet", help="weights file or 'imagenet'")
    extract.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help="feature cache (default: %(default)s)")
    extract.add_argument("--batch-size", type=int, default=32)
    add_engine_args(extract)

    train = commands.add_parser("train", help="train a model on a dataset",
                                description="Train the attention decoder on cached features, pick the "
                                            "best epoch on the dev split and save mymodel.h5 + "
                                            "tokenizer.pkl in --output.")
    add_data_args(train, required=False)
    train.add_argument("--config", help="YAML/JSON training recipe (e.g. configs/flickr8k.yaml)")
    add_engine_args(train, training=True)
    for field in dataclasses.fields(_train_config()):
        if field.name not in ("data", "images", "lang", "limit"):
            train.add_argument(f"--{field.name.replace('_', '-')}", type=_config_field_type(field),
                               help=f"default: {field.default}")

    average = commands.add_parser("average", help="average the weights of a model and its fine-tunes",
                                  description="Save the weighted average of models that share a vocabulary "
                                              "and architecture, e.g. a cross-entropy model and its SCST "
                                              "fine-tune (a 'model soup').")
    average.add_argument("models", nargs="+", help="mymodel.h5 files; each tokenizer.pkl is read from beside it")
    average.add_argument("--weights", type=float, nargs="+", metavar="W",
                         help="one weight per model, normalised to sum to 1 (default: equal)")
    average.add_argument("--output", required=True, help="folder for the averaged mymodel.h5 + tokenizer.pkl")

    caption = commands.add_parser("caption", help="caption image files, folders or globs",
                                  description="Print a caption for each image, or write them all to a CSV "
                                              "or JSONL file with --output (resumable).")
    caption.add_argument("images", nargs="+", help="image files, folders or glob patterns")
    add_model_args(caption)
    caption.add_argument("--lang", help="caption language of the shipped model to use: en (default), zh, de")
    caption.add_argument("--beam", type=int, default=DECODE_DEFAULTS.beam_size, metavar="K",
                         help="beam width; 1 = greedy (default: %(default)s)")
    caption.add_argument("--n-best", type=int, default=DECODE_DEFAULTS.n_best, metavar="N",
                         help="give the N best captions, at most --beam (default: %(default)s)")
    add_search_args(caption)
    caption.add_argument("--json", action="store_true",
                         help="print JSON lines with scores, the n-best list and the tags")
    caption.add_argument("--tags", action="store_true",
                         help="also print what the encoder's ImageNet classifier sees, with probabilities")
    caption.add_argument("--attention", metavar="OUT.png",
                         help="also draw where the model looked for each word (one image only)")
    caption.add_argument("--output", metavar="FILE.csv|FILE.jsonl",
                         help="write the captions to this file instead of printing them; a re-run skips "
                              "the images already in it")
    caption.add_argument("--batch-size", type=int, default=32, help="images per batch (default: %(default)s)")
    add_engine_args(caption)
    add_write_args(caption)  # --write xmp|embed|txt, --min-confidence (captioner/cli/write.py)
    add_write_command(commands)
    add_serve_command(commands)  # captioner/cli/serve.py
    add_evaluate_command(commands)  # captioner/cli/evaluate.py

    export = commands.add_parser("export", help="export a model for the portable runtime (no TensorFlow)",
                                 description="Write the encoder (preprocessing included), the decoder's prepare "
                                             "and step and the vocabulary to one folder that `captioner caption "
                                             "--model FOLDER`, captioner.load(FOLDER) and the app run without "
                                             "TensorFlow (onnx, litert) or on TF Serving (savedmodel).")
    export.add_argument("model", help="trained model file (mymodel.h5)")
    export.add_argument("--tokenizer", help="vocabulary saved with the model (default: tokenizer.pkl beside it)")
    export.add_argument("--format", default="onnx", help="onnx (default, fastest on CPU), litert or savedmodel")
    export.add_argument("--output", required=True, help="folder to write (replaced if it holds an earlier export)")
    export.add_argument("--quantize", metavar="int8",
                        help="int8: store the decoder's weights as int8 (onnx only): decoding about twice as fast "
                             "on CPU; about 1 caption in 6 changes, at about the same dev scores (README, Speed)")
    export.add_argument("--encoder-weights", default="imagenet",
                        help="ImageNet weights .h5 for the encoder; default: Keras cache, then download")
    return parser


def cmd_extract(args: argparse.Namespace) -> None:
    from captioner.cli.engines import extract
    from captioner.data.datasets import load_dataset
    from captioner.features.cache import FeatureCache
    from captioner.features.encoders import get_backbone

    dataset = load_dataset(args.data, args.images, args.lang).limit(args.limit)
    for problem in dataset.problems[:10]:
        print(f"skipped {problem}", file=sys.stderr)
    if len(dataset.problems) > 10:
        print(f"skipped {len(dataset.problems) - 10} more bad rows or files", file=sys.stderr)
    print(dataset.summary())
    cache = FeatureCache(args.cache_dir, args.encoder, get_backbone(args.encoder).image_size)
    names = [n for split in ("train", "dev", "test") for n in dataset.split(split)]
    if not names:
        raise CaptionerError(f"{args.data}: no image to encode in its train, dev or test splits; check the "
                             f"captions file and --images.")
    failures = extract(args, cache, [dataset.path(n) for n in names])
    for failure in failures:
        print(f"skipped {failure.reason}", file=sys.stderr)
    if len(failures) >= len(names):
        raise CaptionerError(f"{args.data}: none of its {len(names)} images could be read, so no features were "
                             f"cached (see the skipped files above); replace or re-download the images.")
    print(f"{len(names) - len(failures)} images cached in {cache.dir}")


def cmd_train(args: argparse.Namespace) -> None:
    from captioner.cli.engines import train
    from captioner.training.config import TrainConfig

    overrides = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(TrainConfig)}
    if args.config:
        config = TrainConfig.from_file(args.config, **overrides)
    elif args.data:
        config = TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
    else:
        raise CaptionerError("give --data (a dataset) or --config (a training recipe).")
    result = train(args, config)
    print(f"caption with: captioner caption --model {result.model_path} --tokenizer {result.vocab_path} IMAGE")


def cmd_average(args: argparse.Namespace) -> None:
    from captioner.artifacts.model_files import MODEL_FILE, VOCAB_FILE, vocabulary_beside
    from captioner.training.soup import average_models

    weights = args.weights or [1.0] * len(args.models)
    output = Path(args.output)
    average_models([(m, vocabulary_beside(m)) for m in args.models], weights, output / MODEL_FILE, output / VOCAB_FILE)
    print(f"saved {output / MODEL_FILE} and {output / VOCAB_FILE}")


def _check_caption_args(args: argparse.Namespace) -> None:
    if args.beam < 1 or args.batch_size < 1:
        raise CaptionerError("--beam and --batch-size must be at least 1.")
    if not 1 <= args.n_best <= args.beam:
        raise CaptionerError(f"--n-best must be between 1 and --beam ({args.beam}), got {args.n_best}.")
    if args.attention and args.output:
        raise CaptionerError("--attention draws one image; it cannot be combined with --output.")
    if args.engine == "ray" and not args.output:
        raise CaptionerError("--engine ray writes its captions to a file: add --output captions.jsonl.")
    check_write_args(args)


def _print_caption(path: Path, caption: Caption, args: argparse.Namespace, with_path: bool) -> None:
    from captioner.serving.batch import caption_record

    if args.json:
        print(json.dumps(caption_record(str(path), caption), ensure_ascii=False))
        return
    lead = f"{path}\t" if with_path else ""
    if args.n_best == 1:
        print(f"{lead}{caption.text}")
    else:
        for rank, alternative in enumerate(caption.ranked, 1):
            print(f"{lead}{rank}. {alternative.text} ({alternative.confidence:.2f})")
    if (args.grounding == "constrained" or caption.grounded_by) and not args.json:
        grounded = ", ".join(caption.grounded_by) or "nothing (no object it must name is clear enough)"
        print(f"{lead}grounded by: {grounded}")
    if args.tags:
        seen = ", ".join(f"{tag.name} ({tag.probability:.2f})" for tag in caption.tags)
        print(f"{lead}tags: {seen or 'none (this model has no ImageNet classifier, or nothing is clear enough)'}")


def _save_attention(model: Captioner, path: Path, caption: Caption, out: str) -> None:
    from captioner.data.images import load_image
    from captioner.serving.attention_maps import save_attention_figure

    image = load_image(path)
    image.thumbnail((512, 512))  # the panels are small; full-size photos only slow the overlays down
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_attention_figure(image, caption, model.grid_shape, out)
    print(f"attention maps written to {out}", file=sys.stderr)


def cmd_caption(args: argparse.Namespace) -> None:
    from captioner.data.images import find_images
    from captioner.serving.batch import caption_to_file

    _check_caption_args(args)
    paths = find_images(args.images)  # a folder or pattern without images is an error naming it
    if not paths:
        raise CaptionerError(f"no image found in {' '.join(args.images)}; give image files, folders or patterns.")
    if args.attention and len(paths) != 1:
        raise CaptionerError(f"--attention draws one image, but {len(paths)} were given.")
    options = decode_options(args, beam_size=args.beam, n_best=args.n_best)
    if args.engine == "ray" and len(model_paths(args)) > 1:
        raise CaptionerError("--engine ray captions with one model; drop the extra --model, or use --engine local.")
    load_args = (*model_paths(args)[0], args.encoder_weights)
    model = None if args.engine == "ray" else load_captioner(args)  # on Ray, each actor loads it
    if args.write:
        if model is None:
            raise CaptionerError("--write changes files on this machine: drop --engine ray.")
        failures = caption_and_write(args, model, paths, options)
    elif args.output:
        if model is None:
            from captioner.cli.engines import caption_on_ray

            report = caption_on_ray(args, paths, options, load_args)
        else:
            report = caption_to_file(model, paths, args.output, options, args.batch_size)
        failures = report.failures
        for failure in failures:
            print(f"skipped {failure.reason}", file=sys.stderr)
        print(f"{report.captioned} images captioned into {report.output}"
              + (f" ({report.already_done} were already there)" if report.already_done else ""))
    else:
        assert model is not None  # _check_caption_args: --engine ray needs --output
        failures = []
        for captioned, failed in model.caption_files(paths, options, args.batch_size):
            for failure in failed:
                print(f"error: {failure.reason}", file=sys.stderr)
            failures.extend(failed)
            for path, caption in captioned:
                _print_caption(path, caption, args, with_path=len(paths) > 1)
                if args.attention:
                    _save_attention(model, path, caption, args.attention)
    if failures:
        raise CaptionerError(f"{len(failures)} of {len(paths)} images could not be captioned (see above).")


def cmd_export(args: argparse.Namespace) -> None:
    from captioner.artifacts.model_files import vocabulary_beside
    from captioner.export import check_format, check_quantize, export_model

    check_quantize(check_format(args.format), args.quantize)  # before TensorFlow loads: a typo fails at once
    folder = export_model(args.model, args.tokenizer or vocabulary_beside(args.model), args.format, args.output,
                          args.encoder_weights, args.quantize)
    print(f"exported to {folder}; caption with: captioner caption --model {folder} IMAGE")


COMMANDS = {"extract": cmd_extract, "train": cmd_train, "average": cmd_average, "caption": cmd_caption,
            "evaluate": cmd_evaluate, "export": cmd_export, "write": cmd_write,
            "serve": cmd_serve}


def _silence_native_logs() -> None:
    """Send TensorFlow's C++ log lines (fd 2) to /dev/null; Python's stderr keeps the terminal.

    Set CAPTIONER_DEBUG=1 to see them.
    """
    if os.environ.get("CAPTIONER_DEBUG"):
        return
    sys.stderr.flush()
    terminal = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if argv is None:  # a real command-line run, not a call from Python
        _silence_native_logs()
    try:
        COMMANDS[args.command](args)
    except CaptionerError as error:
        print(f"captioner: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("captioner: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
