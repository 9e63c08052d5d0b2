"""How the shipped model's dev captions use words about people and animals, next to the references.

The numbers behind MODEL_CARD.md's "Known limitations and biases":
    KERAS_HOME=$PWD/.keras python scripts/caption_bias.py [--model mymodel.h5] [--beam 3]
"""

from __future__ import annotations

import argparse
import re

import captioner
from captioner.artifacts.model_files import vocabulary_beside
from captioner.data.datasets import load_dataset
from captioner.decoding.options import DecodeOptions
from captioner.evaluation.evaluate import caption_split

WORDS = ("man", "woman", "boy", "girl", "person", "people", "dog", "cat")
FEMALE, MALE = r"\b(woman|women|girl|girls|lady)\b", r"\b(man|men|boy|boys|guy)\b"


def share(texts: list[str], pattern: str) -> float:
    return sum(bool(re.search(pattern, t)) for t in texts) / len(texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mymodel.h5")
    parser.add_argument("--data", default="../shared/data/flickr8k")
    parser.add_argument("--beam", type=int, default=DecodeOptions().beam_size)
    args = parser.parse_args()
    model = captioner.load(args.model, vocabulary_beside(args.model))
    dataset = load_dataset(args.data)
    captions = {n: c.text for n, c in caption_split(model, dataset, "dev", DecodeOptions(beam_size=args.beam)).items()}
    ours, refs = list(captions.values()), [r for n in captions for r in dataset.captions[n]]

    print(f"{len(ours)} dev photos, {len(set(ours))} distinct captions; mean length "
          f"{sum(len(t.split()) for t in ours) / len(ours):.1f} words (references "
          f"{sum(len(t.split()) for t in refs) / len(refs):.1f})")
    print("share of captions using a word:  ours   references")
    for word in WORDS:
        pattern = rf"\b{word}\b"
        print(f"  {word:8s}                        {share(ours, pattern):.3f}  {share(refs, pattern):.3f}")
    for label, pattern, other in (("women/girls", FEMALE, MALE), ("men/boys", MALE, FEMALE)):
        photos = [n for n in captions if sum(bool(re.search(pattern, r)) for r in dataset.captions[n]) >= 4]
        said = [captions[n] for n in photos]
        print(f"{len(photos)} photos whose references (4 or 5 of 5) say {label}: the caption says "
              f"{label} in {share(said, pattern):.0%}, the other gender in {share(said, other):.0%}")
    cats = [n for n in captions if sum("cat" in r.split() for r in dataset.captions[n]) >= 3]
    print(f"{len(cats)} photos of cats (3+ references say 'cat'): " + "; ".join(captions[n] for n in cats))


if __name__ == "__main__":
    main()
