"""`captioner evaluate`: caption a dataset split and score it (COCO metrics, repetition, grounding)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from captioner.cli.options import (
    DECODE_DEFAULTS,
    add_data_args,
    add_model_args,
    add_search_args,
    decode_options,
    load_captioner,
    model_paths,
)
from captioner.errors import CaptionerError
from captioner.features import DEFAULT_CACHE_DIR


def add_evaluate_command(commands: argparse._SubParsersAction) -> None:
    """The `evaluate` sub-command and its flags."""
    evaluate = commands.add_parser("evaluate", help="COCO caption metrics on a dataset split",
                                   description="Caption a split and score it with BLEU-1..4, METEOR, "
                                               "ROUGE-L and CIDEr (pycocoevalcap).")
    add_data_args(evaluate, required=False)
    add_model_args(evaluate)
    evaluate.add_argument("--split", default="dev", choices=("train", "dev", "test"))
    evaluate.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help="feature cache (default: %(default)s)")
    evaluate.add_argument("--output", help="write the scores as JSON here")
    evaluate.add_argument("--record", action="store_true",
                          help="also store the scores in the model file, for the app's model panel")
    evaluate.add_argument("--fast", action="store_true", help="skip Java (PTB tokenizer, METEOR)")
    evaluate.add_argument("--beams", type=int, nargs="+", default=[1, DECODE_DEFAULTS.beam_size], metavar="K",
                          help="beam widths to score, 1 = greedy (default: %(default)s)")
    add_search_args(evaluate)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from captioner.data.datasets import load_dataset
    from captioner.evaluation.evaluate import evaluate_model
    from captioner.evaluation.grounding import grounding_report
    from captioner.evaluation.metrics import format_table, scoring_note
    from captioner.evaluation.repetition import format_repetition, repetition_stats

    paths = model_paths(args)
    if args.record and len(paths) > 1:
        raise CaptionerError("--record stores scores in one model file; an ensemble has no file of its own.")
    model = load_captioner(args)
    trained_on = (model.info.extra or {}).get("config", {})
    data = args.data or trained_on.get("data")
    if not data or not Path(data).exists():
        raise CaptionerError("no dataset to evaluate on: pass --data (the model does not record "
                             "a training dataset that exists here).")
    lang = args.lang or trained_on.get("lang")
    dataset = load_dataset(data, args.images or trained_on.get("images"), lang).limit(args.limit)
    decodings = [decode_options(args, beam_size=k) for k in args.beams]
    scores, captions = evaluate_model(model, dataset, args.split, decodings, args.cache_dir, fast=args.fast)
    rows = {f"{args.split} {name}": row for name, row in scores.items()}
    print(format_table(rows))
    print(scoring_note(model.vocab.lang, model.vocab.tokenization, args.fast))
    if model.vocab.lang == "en":  # the noun-phrase rule knows English determiners only
        print(format_repetition({f"{args.split} {name}": repetition_stats(c.words for c in by_image.values())
                                 for name, by_image in captions.items()}))
        print(grounding_report({f"{args.split} {name}": {n: c.text for n, c in by_image.items()}
                                for name, by_image in captions.items()}, dataset.captions,
                               trained_on.get("held_out_concepts")))
    for name, by_image in captions.items():
        grounded = sum(bool(c.grounded_by) for c in by_image.values())
        if args.grounding == "constrained":
            print(f"{args.split} {name}: {grounded} of {len(by_image)} captions write a word of their tags "
                  f"(required: the objects the classifier gives at least {args.grounding_min_probability}; "
                  f"docs/grounding.md says which)")
        elif grounded:  # a grounded model's copies
            print(f"{args.split} {name}: {grounded} of {len(by_image)} captions copy a word of their photo's tags")
    print("SPICE is not reported: it needs Stanford CoreNLP models downloaded at run time.")
    if args.output:
        Path(args.output).write_text(json.dumps(rows, indent=2))
    if args.record:
        from captioner.artifacts.model_files import record_scores

        record_scores(paths[0][0], rows)
