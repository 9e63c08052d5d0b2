"""Scoring a model on a dataset split: caption it from the feature cache, then the COCO metrics."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from captioner.data.datasets import CaptionDataset
from captioner.decoding.captioning import ImageCaptioner
from captioner.decoding.options import DEFAULT_DECODING, GREEDY, Caption, DecodeOptions
from captioner.errors import CaptionerError
from captioner.evaluation.metrics import score_captions
from captioner.features import DEFAULT_CACHE_DIR
from captioner.features.cache import FeatureCache, FeatureTable


def caption_split(captioner: ImageCaptioner, dataset: CaptionDataset, split: str,
                  options: DecodeOptions = DEFAULT_DECODING, cache_dir: str | os.PathLike = DEFAULT_CACHE_DIR,
                  batch_size: int = 100) -> dict[str, Caption]:
    """Caption every image of a split (beam 3 unless `options` says otherwise), reusing (and filling) the
    feature cache."""
    names = dataset.split(split)
    if not names:
        raise CaptionerError(f"{dataset.source}: the {split} split is empty.")
    cache = FeatureCache(cache_dir, captioner.info.encoder, captioner.info.image_size)
    failures = cache.extract([dataset.path(n) for n in names], captioner.encoder)
    bad = {str(f.path) for f in failures}
    names = [n for n in names if str(dataset.path(n)) not in bad]
    classes = class_probabilities(cache, [dataset.path(n) for n in names]) if options.grounding != "off" else None
    captions: dict[str, Caption] = {}
    for start in tqdm(range(0, len(names), batch_size), desc=f"Captioning {split}", unit="batch"):
        batch = names[start:start + batch_size]
        features = cache.load([dataset.path(n) for n in batch]).astype(np.float32)
        probabilities = None if classes is None else classes[start:start + batch_size].astype(np.float32)
        captions.update(zip(batch, captioner.caption_features(features, options, probabilities), strict=True))
    return captions


def class_probabilities(cache: FeatureCache, paths: Sequence[str | os.PathLike]) -> FeatureTable | None:
    """The cached ImageNet probabilities (a table of (1000,) rows) of the photos, or None for an encoder without a
    classifier (its cache has no companion); an error if the companion lacks some photos."""
    classes = cache.class_cache()
    missing = classes.missing(paths)
    if len(missing) == len(paths) and not classes.dir.is_dir():
        return None
    if missing:
        raise CaptionerError(f"{classes.dir}: no class probabilities for {len(missing)} of the photos (e.g. "
                             f"{missing[0]}); delete {cache.dir} and its companion and evaluate again to re-extract.")
    return classes.table(paths)


def decoding_name(options: DecodeOptions) -> str:
    """Row label of a decoding setting, e.g. 'greedy', 'beam 3' or 'beam 3 constrained'."""
    name = "greedy" if options.beam_size == 1 else f"beam {options.beam_size}"
    return name if options.grounding == DEFAULT_DECODING.grounding else f"{name} {options.grounding}"


def evaluate_model(captioner: ImageCaptioner, dataset: CaptionDataset, split: str = "dev",
                   decodings: Sequence[DecodeOptions] = (GREEDY, DEFAULT_DECODING),
                   cache_dir: str | os.PathLike = DEFAULT_CACHE_DIR, fast: bool = False,
                   ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, Caption]]]:
    """COCO metrics of a model's captions on a split for each decoding (default: greedy and beam 3), and the
    captions themselves."""
    vocab = captioner.vocab
    scores, captions = {}, {}
    for options in decodings:
        name = decoding_name(options)
        captions[name] = caption_split(captioner, dataset, split, options, cache_dir)
        scores[name] = score_captions({n: dataset.captions[n] for n in captions[name]},
                                      {n: c.text for n, c in captions[name].items()}, lang=vocab.lang,
                                      tokenization=vocab.tokenization, meteor=not fast, ptb=not fast)
    return scores, captions
