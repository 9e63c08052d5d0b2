"""Parity of exported models with their Keras originals on dev photos: captions, n-best lists, confidences.

Run by hand from the repository root (it is not part of the test suite); it exports each shipped model
to ONNX first unless runs/bench/export_<name> already holds an export:

    KERAS_HOME=$PWD/.keras python benchmarks/export_parity.py   # en, zh, de, en-fast, en-mobilenet; 100 dev photos
    KERAS_HOME=$PWD/.keras python benchmarks/export_parity.py --quantize int8 --exports runs/bench/int8

Both sides decode the same feature grids and classifier probabilities (the Keras encoder's), grounded in those
tags as the default decoding is, so that the decoders are compared; and the exported encoder is compared with the
Keras one on the pixels. Prints a Markdown table and every caption
that differs, with both confidences: float round-off can flip a near-tie between two words.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

import captioner
from captioner.artifacts.model_files import vocabulary_beside
from captioner.decoding.options import DecodeOptions
from captioner.serving.shipped import SHIPPED_MODELS, shipped_model_paths

SEARCHES = {"greedy": DecodeOptions(beam_size=1), "beam 3": DecodeOptions(beam_size=3)}


def dev_photos(images: Path, count: int) -> list[Path]:
    names = (images.parent / "Flickr_8k.devImages.txt").read_text().split()
    return [images / name for name in sorted(names)[:count]]


def encode(model, photos: list[Path]) -> tuple[np.ndarray, np.ndarray | None]:
    """Feature grids and classifier probabilities (None without a classifier) of the photos, 25 at a time."""
    batches = [model.encode_and_classify(photos[i:i + 25]) for i in range(0, len(photos), 25)]
    probabilities = [p for _, p in batches]
    return (np.concatenate([f for f, _ in batches]),
            None if probabilities[0] is None else np.concatenate(probabilities))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(SHIPPED_MODELS), choices=list(SHIPPED_MODELS))
    parser.add_argument("--images", default="../shared/data/flickr8k/Images")
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--exports", default="runs/bench", help="folder of export_<name> folders (made if missing)")
    parser.add_argument("--quantize", choices=["int8"], help="make missing exports with int8 decoder weights")
    parser.add_argument("--model-file", action="append", default=[], metavar="MYMODEL.h5",
                        help="also check this model file (tokenizer.pkl beside it), named by its folder")
    args = parser.parse_args()
    photos = dev_photos(Path(args.images), args.photos)
    rows, differences = [], []
    models = [(name, *shipped_model_paths(name)) for name in args.models]
    models += [(Path(file).parent.name, Path(file), vocabulary_beside(file)) for file in args.model_file]
    for name, model_path, vocab_path in models:
        folder = Path(args.exports) / f"export_{name}"
        if not (folder / "manifest.json").is_file():
            quantize = ["--quantize", args.quantize] if args.quantize else []
            subprocess.run([sys.executable, "-m", "captioner.cli.main", "export", str(model_path), "--tokenizer",
                            str(vocab_path), "--output", str(folder), *quantize], check=True)
        keras_model = captioner.load(model_path, vocab_path, runtime="tensorflow")
        portable = captioner.load(folder)
        features, probabilities = encode(keras_model, photos)
        exported_features, exported_probabilities = encode(portable, photos)
        feature_error = float(np.abs(features - exported_features).max())
        for search, options in SEARCHES.items():
            theirs = keras_model.caption_features(features, options, probabilities)
            ours = portable.caption_features(features, options, probabilities)
            end_to_end = portable.caption_features(exported_features, options, exported_probabilities)
            differ = [(photo.name, t, o) for photo, t, o in zip(photos, theirs, ours, strict=True) if t.text != o.text]
            same = [(t, o) for t, o in zip(theirs, ours, strict=True) if t.text == o.text]
            confidence = max((abs(t.confidence - o.confidence) for t, o in same), default=0.0)
            pixels = sum(t.text != e.text for t, e in zip(theirs, end_to_end, strict=True))
            rows.append(f"| {name} | {search} | {len(photos) - len(differ)} / {len(photos)} | {confidence:.1e} | "
                        f"{len(photos) - pixels} / {len(photos)} | {feature_error:.1e} |")
            differences += [f"- {name} {search}, {photo}: Keras “{t.text}” ({t.confidence:.4f}), exported "
                            f"“{o.text}” ({o.confidence:.4f})" for photo, t, o in differ]
    print("| model | search | same caption (same features) | max Δ confidence | same caption (exported encoder) "
          "| max Δ feature |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))
    print("\n".join(["", "Differences:", *differences] if differences else ["", "No caption differs."]))


if __name__ == "__main__":
    main()
