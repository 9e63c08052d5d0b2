"""The flags the captioning commands share (model, data, search) and the DecodeOptions they make."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

from captioner.decoding.options import GROUNDINGS, DecodeOptions
from captioner.errors import CaptionerError
from captioner.serving.loading import DEFAULT_RUNTIME, RUNTIMES

if typing.TYPE_CHECKING:  # TensorFlow is imported only when a command needs it
    from captioner.serving.api import Captioner

DECODE_DEFAULTS = DecodeOptions()  # the library's default search, restated nowhere else


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append",
                        help="trained model file (default: the shipped model of --lang: mymodel.h5 for English, "
                             "models/<lang>/mymodel.h5 otherwise); repeat it to decode with an ensemble of models "
                             "that share one vocabulary")
    parser.add_argument("--tokenizer", help="vocabulary saved with the model (default: tokenizer.pkl beside it)")
    parser.add_argument("--encoder-weights", default="imagenet",
                        help="ImageNet weights .h5 for the encoder; default: Keras cache, then download")
    parser.add_argument("--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME,
                        help="auto (default): a model file runs from its export, made once on first use, without "
                             "TensorFlow; tensorflow: load it in Keras; portable: always the export")


def model_paths(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    """(model, vocabulary) of each --model, or of the model shipped for --lang; a vocabulary defaults to the
    model's sibling tokenizer.pkl, or --tokenizer when there is one model."""
    from captioner.artifacts.model_files import vocabulary_beside
    from captioner.serving.shipped import shipped_model_paths

    if not args.model:
        model, tokenizer = shipped_model_paths(args.lang or "en")
        return [(model, Path(args.tokenizer) if args.tokenizer else tokenizer)]
    if args.tokenizer and len(args.model) > 1:
        raise CaptionerError("--tokenizer names the vocabulary of one model; an ensemble reads each model's "
                             "tokenizer.pkl from beside it.")
    return [(Path(m), Path(args.tokenizer) if args.tokenizer else vocabulary_beside(m)) for m in args.model]


def load_captioner(args: argparse.Namespace) -> Captioner:
    """The model(s) the arguments name: one Captioner, an ensemble when --model is repeated."""
    import captioner

    paths = model_paths(args)
    runtime = args.runtime if len(paths) == 1 else "tensorflow"  # an ensemble decodes in one Keras search
    models = [captioner.load(model, vocab, args.encoder_weights, runtime) for model, vocab in paths]
    return models[0] if len(models) == 1 else captioner.ensemble(models)


def add_search_args(parser: argparse.ArgumentParser) -> None:
    """How captions are ranked and what they may not write, for the commands that caption (caption, evaluate)."""
    parser.add_argument("--length-penalty", type=float, default=DECODE_DEFAULTS.length_penalty,
                        help="rank beams by log p / length**this; 0 favours short captions (default: %(default)s)")
    parser.add_argument("--allow-repeats", action="store_true",
                        help="let captions repeat a word, a three-word phrase or a noun phrase (blocked by default)")
    _add_grounding_args(parser)


def _add_grounding_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grounding", choices=GROUNDINGS, default=DECODE_DEFAULTS.grounding,
                        help="tags: a grounded model reads the encoder's ImageNet tags and may copy their words, "
                             "and no caption names an object the classifier could see but does not; constrained: "
                             "also, each caption must name one of the things the classifier is sure of, if the "
                             "model knows the word (EfficientNet-Lite models, English; docs/grounding.md) "
                             "(default: %(default)s)")
    parser.add_argument("--grounding-min-probability", type=float, metavar="P",
                        default=DECODE_DEFAULTS.grounding_min_probability,
                        help="how sure the classifier must be of a word to require it (default: %(default)s)")
    parser.add_argument("--grounding-veto", type=float, metavar="P", default=DECODE_DEFAULTS.grounding_veto,
                        help="no caption names an object ImageNet has classes for (people excepted) that the "
                             "classifier gives less than this; 0: no veto (default: %(default)s)")


def add_data_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--data", required=required,
                        help="dataset folder or captions file (Kaggle/Flickr8k/Karpathy/COCO/CSV)")
    parser.add_argument("--images", help="folder with the image files, if not found beside the captions")
    parser.add_argument("--lang", help="caption language: picks captions_<lang>.txt in a Kaggle-style folder")
    parser.add_argument("--limit", type=int, help="use at most this many images per split (quick runs)")


def decode_options(args: argparse.Namespace, beam_size: int, n_best: int = DECODE_DEFAULTS.n_best) -> DecodeOptions:
    """The library's default search with the command's settings, or a one-line error for a bad value."""
    try:
        return dataclasses.replace(DECODE_DEFAULTS, beam_size=beam_size, n_best=n_best,
                                   length_penalty=args.length_penalty, block_repeats=not args.allow_repeats,
                                   grounding=args.grounding, grounding_min_probability=args.grounding_min_probability,
                                   grounding_veto=args.grounding_veto)
    except ValueError as error:
        raise CaptionerError(f"{error}; see --help.") from None
