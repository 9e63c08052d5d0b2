"""Weight averaging of models fine-tuned from one another (a "model soup", Wortsman et al. 2022).

Self-critical fine-tuning sharpens the greedy caption but gains little under beam search; the
average of the cross-entropy model and its SCST fine-tune keeps the beam-friendly distribution of
the first and the CIDEr gains of the second. It only makes sense for models that share a vocabulary
and an architecture, and one was trained starting from the other, so both are checked.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from captioner.artifacts.model_files import load_model, save_model
from captioner.artifacts.scores import without_scores
from captioner.errors import CaptionerError


def average_models(models: Sequence[tuple[str | os.PathLike, str | os.PathLike]], weights: Sequence[float],
                   model_path: str | os.PathLike, vocab_path: str | os.PathLike) -> None:
    """Save Σ weight_i · model_i as a new mymodel.h5 + tokenizer.pkl.

    `models` holds (mymodel.h5, tokenizer.pkl) pairs; `weights` are non-negative and are normalised
    to sum to 1. The result keeps the first model's recipe and records what it was averaged from.
    """
    if len(models) < 2 or len(models) != len(weights):
        raise CaptionerError("give at least two models and one weight per model.")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise CaptionerError(f"weights must be non-negative with a positive sum, not {list(weights)}.")
    total = sum(weights)
    weights = [w / total for w in weights]

    first, vocab, info = load_model(*models[0])
    mixed = [weights[0] * array for array in first.get_weights()]
    for (path, vocab_file), weight in zip(models[1:], weights[1:], strict=True):
        other, other_vocab, other_info = load_model(path, vocab_file)
        if other_vocab.fingerprint != vocab.fingerprint or (other_info.encoder, other_info.image_size) != (
                info.encoder, info.image_size):
            raise CaptionerError(f"{path} cannot be averaged with {models[0][0]}: they were trained with "
                                 "another vocabulary or encoder; average only a model and its fine-tunes.")
        arrays = other.get_weights()
        if [a.shape for a in arrays] != [m.shape for m in mixed]:
            raise CaptionerError(f"{path} cannot be averaged with {models[0][0]}: the layer sizes differ.")
        mixed = [m + weight * a for m, a in zip(mixed, arrays, strict=True)]
    first.set_weights(mixed)

    parents = [{"model": str(Path(p)), "weight": round(w, 6)} for (p, _), w in zip(models, weights, strict=True)]
    extra = {**without_scores(info.extra), "averaged_from": parents}  # the parents' scores do not apply
    save_model(first, vocab, replace(info, extra=extra), model_path, vocab_path)
