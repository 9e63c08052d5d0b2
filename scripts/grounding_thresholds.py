"""How often a photo's confident tag words are right, by threshold: the numbers behind grounding_min_probability.

For each dev photo, the caption words the EfficientNet-Lite classifier gives at least P (summed over the classes
naming the same object, as constrained search sums them) that the training captions' vocabulary has; one is right when
one of the photo's five references names it (any word of the same object in captioner/text/objects.tsv).
Reads the feature cache's class probabilities; no model is needed.

    python scripts/grounding_thresholds.py --data ../shared/data/flickr8k --cache-dir cache/features
"""

from __future__ import annotations

import argparse

from captioner.data.datasets import load_dataset
from captioner.features.cache import FeatureCache
from captioner.features.tags import confident_words
from captioner.text.objects import naming_words, tokens
from captioner.text.vocabulary import Vocabulary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--encoder", default="efficientnet_lite2")
    parser.add_argument("--image-size", type=int, default=260)
    parser.add_argument("--split", default="dev", choices=("train", "dev"))
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.7])
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    vocab = Vocabulary.build(c for n in dataset.split("train") for c in dataset.captions[n])  # min_count 5
    known = set(vocab.tokens)
    names = dataset.split(args.split)
    cache = FeatureCache(args.cache_dir, args.encoder, args.image_size).class_cache()
    probabilities = cache.table([dataset.path(n) for n in names])[:].astype("float32")  # (photos, 1000)
    print(f"{args.split}: {len(names)} photos")
    print("threshold  photos with a word  words  right  (references name it)")
    for threshold in args.thresholds:
        photos = words = right = 0
        for name, confident in zip(names, confident_words(probabilities, threshold), strict=True):
            usable = [w for w in confident if naming_words(w) & known]
            said = {t for caption in dataset.captions[name] for t in tokens(caption)}
            photos += bool(usable)
            words += len(usable)
            right += sum(bool(naming_words(w) & said) for w in usable)
        print(f"{threshold:9.2f}  {photos:5d} ({photos / len(names):4.0%})  {words:5d}  {right / max(words, 1):5.0%}")


if __name__ == "__main__":
    main()
