"""The grounding table of MODEL_CARD.md and docs/grounding.md, and its figure: models × grounding modes on the dev
split (beam 3): COCO metrics, invented objects (CHAIR) and, for held-out models, the F1 of naming the held-out
concepts; plus a few captions where grounding changed the caption, right and wrong.

    python scripts/grounding_table.py --data ../shared/data/flickr8k --cache-dir cache/features \\
        --model plain=runs/flickr8k-heldout/mymodel.h5 --model grounded=runs/flickr8k-heldout-grounded/mymodel.h5 \\
        --output logs/grounding_heldout.json --figure resource/grounding_heldout.png

Dev only: the official test split is kept for independent evaluation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import captioner
from captioner.data.datasets import load_dataset
from captioner.decoding.options import DecodeOptions
from captioner.evaluation.evaluate import evaluate_model
from captioner.evaluation.grounding import concept_f1, hallucination


def modes(grounded: bool, thresholds: list[float]) -> dict[str, DecodeOptions]:
    """The decodings to compare (beam 3): off, tags without the veto (grounded models only), tags and constrained at
    each threshold."""
    chosen = {"off": DecodeOptions(grounding="off")}
    if grounded:
        chosen["tags, no veto"] = DecodeOptions(grounding_veto=0.0)
    chosen["tags"] = DecodeOptions()
    default = DecodeOptions().grounding_min_probability
    return chosen | {"constrained" + ("" if t == default else f" {t}"):
                     DecodeOptions(grounding="constrained", grounding_min_probability=t) for t in thresholds}


def measure(name: str, path: str, dataset, cache_dir: str, fast: bool, thresholds: list[float],
            ) -> tuple[list[dict], dict]:
    """One row per grounding mode, and the captions of each."""
    model = captioner.load(path, Path(path).with_name("tokenizer.pkl"), runtime="tensorflow")
    held_out = (model.info.extra or {}).get("config", {}).get("held_out_concepts")
    rows, captions = [], {}
    for mode, options in modes(model.info.decoder == "grounded", thresholds).items():
        scores, by_decoding = evaluate_model(model, dataset, "dev", [options], cache_dir, fast)
        (row_scores,), (by_image,) = scores.values(), by_decoding.values()
        texts = {image: caption.text for image, caption in by_image.items()}
        row = {"model": name, "grounding": mode, **row_scores, **hallucination(texts, dataset.captions),
               "grounded captions": sum(bool(c.grounded_by) for c in by_image.values())}
        if held_out:
            row["held-out F1"] = concept_f1(texts, dataset.captions, held_out)
        rows.append(row)
        captions[mode] = texts
        print(json.dumps(row), flush=True)
    return rows, captions


def markdown(rows: list[dict]) -> str:
    """The table as Markdown."""
    held_out = any("held-out F1" in row for row in rows)
    head = "| model | grounding | BLEU-4 | CIDEr | CHAIR_s | CHAIR_i | captions grounded |" + (
        " held-out F1 (mean) |" if held_out else "")
    lines = [head, "|" + " --- |" * 2 + " ---: |" * (5 + held_out)]
    for row in rows:
        f1 = f" {row['held-out F1']['mean']:.3f} |" if "held-out F1" in row else (" — |" if held_out else "")
        lines.append(f"| {row['model']} | {row['grounding']} | {row['BLEU-4']:.4f} | {row['CIDEr']:.4f} | "
                     f"{row['CHAIR_s']:.3f} | {row['CHAIR_i']:.3f} | {row['grounded captions']} |{f1}")
    return "\n".join(lines)


def figure(rows: list[dict], path: Path) -> None:
    """CIDEr against CHAIR_s per model and mode, and each held-out concept's F1 for the modes that name any."""
    from matplotlib.figure import Figure

    naming = [row for row in rows if row.get("held-out F1", {}).get("mean", 0) > 0]
    fig = Figure(figsize=(12 if naming else 6, 4.5))
    axes = fig.subplots(1, 2 if naming else 1, squeeze=False)[0]
    models = list(dict.fromkeys(row["model"] for row in rows))
    modes = list(dict.fromkeys(row["grounding"] for row in rows))
    for row in rows:  # one marker per model, one colour per mode
        axes[0].scatter(row["CHAIR_s"], row["CIDEr"], s=40, marker="osD^v*"[models.index(row["model"]) % 6],
                        color=f"C{modes.index(row['grounding']) % 10}", label=f"{row['model']}, {row['grounding']}")
    axes[0].set(xlabel="CHAIR_s (captions inventing an object)", ylabel="CIDEr", title="Dev, beam 3")
    axes[0].legend(fontsize=7)
    if naming:
        concepts = [c for c in naming[0]["held-out F1"] if c != "mean"] + ["mean"]
        width = 0.8 / len(naming)
        for i, row in enumerate(naming):
            xs = [j + i * width for j in range(len(concepts))]
            axes[1].bar(xs, [row["held-out F1"][c] for c in concepts], width,
                        color=f"C{modes.index(row['grounding']) % 10}", label=f"{row['model']}, {row['grounding']}")
        axes[1].set_xticks([j + 0.4 - width / 2 for j in range(len(concepts))], concepts, fontsize=8)
        axes[1].set(ylabel="F1 of naming it", ylim=(0, 1),
                    title="Held-out concepts, dev (models without grounding: 0)")
        axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def examples(captions: dict[str, dict[str, dict[str, str]]], references, limit: int = 12) -> list[dict]:
    """Dev photos whose caption changed between grounding off and the model's default, with their references."""
    found = []
    for name, by_mode in captions.items():
        mode = "tags"
        for image, text in by_mode[mode].items():
            if text != by_mode["off"][image] and len(found) < limit * len(captions):
                found.append({"model": name, "image": image, "off": by_mode["off"][image], mode: text,
                              "references": references[image][:2]})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--cache-dir", default="cache/features")
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--output", required=True, help="JSON: rows, example captions, every caption")
    parser.add_argument("--figure", help="PNG of CIDEr against CHAIR_s (and held-out F1)")
    parser.add_argument("--fast", action="store_true", help="skip Java (PTB tokenizer, METEOR)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[DecodeOptions().grounding_min_probability],
                        help="grounding_min_probability values of the constrained rows")
    parser.add_argument("--replot", action="store_true", help="redraw --figure from the rows in --output")
    args = parser.parse_args()
    if args.replot:
        figure(json.loads(Path(args.output).read_text())["rows"], Path(args.figure))
        return
    dataset = load_dataset(args.data)
    rows, captions = [], {}
    for spec in args.model:
        name, path = spec.split("=", 1)
        model_rows, captions[name] = measure(name, path, dataset, args.cache_dir, args.fast, args.thresholds)
        rows += model_rows
    Path(args.output).write_text(json.dumps({"rows": rows, "examples": examples(captions, dataset.captions),
                                             "captions": captions}, indent=2))
    print(markdown(rows))
    if args.figure:
        figure(rows, Path(args.figure))


if __name__ == "__main__":
    main()
