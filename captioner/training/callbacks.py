"""Per-epoch dev scoring for model selection, and the training-curve figure."""

from __future__ import annotations

from pathlib import Path

import keras
from matplotlib.figure import Figure

from captioner.decoding.options import GREEDY, DecodeOptions
from captioner.decoding.tf_search import TFSearch
from captioner.evaluation.metrics import score_captions
from captioner.training.pipelines import Features


class DevScores(keras.callbacks.Callback):
    """Decodes the dev images after each epoch (greedy unless `options` says otherwise, e.g. the beam
    search the model ships with) and logs val_bleu4 and val_cider."""

    def __init__(self, generator: TFSearch, features: Features,
                 references: dict[str, list[str]], names: list[str], batch_size: int = 250,
                 options: DecodeOptions = GREEDY):
        super().__init__()
        self.generator = generator
        self.options = options
        self.features = features
        self.references = references
        self.names = names
        self.batch_size = batch_size

    def captions(self) -> list[str]:
        """The dev images' captions, in the order of `names`."""
        captions: list[str] = []
        for start in range(0, len(self.features), self.batch_size):
            batch = self.features[start:start + self.batch_size]  # (batch, cells, channels)
            captions.extend(c.text for c in self.generator.generate(batch, self.options))
        return captions

    def scores(self) -> dict[str, float]:
        """BLEU and CIDEr (our tokenizer, no METEOR: quick enough for every epoch) of the dev captions."""
        captions = self.captions()
        vocab = self.generator.vocab
        return score_captions(self.references, dict(zip(self.names, captions, strict=True)), lang=vocab.lang,
                              tokenization=vocab.tokenization, meteor=False, ptb=False)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        scores = self.scores()
        if logs is not None:
            logs["val_bleu4"] = scores["BLEU-4"]
            logs["val_cider"] = scores["CIDEr"]
        search = "greedy" if self.options.beam_size == 1 else f"beam {self.options.beam_size}"
        print(f" — dev {search} BLEU-4 {scores['BLEU-4']:.4f}, CIDEr {scores['CIDEr']:.4f}")


def plot_history(history: dict[str, list[float]], path: Path) -> None:
    """Loss and dev scores per epoch, as a PNG (no pyplot: no global matplotlib state)."""
    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    for key in ("loss", "val_loss", "reward"):
        if key in history:
            left.plot(range(1, len(history[key]) + 1), history[key], marker="o", label=key)
    left.set(xlabel="epoch", title="Training objective and dev loss")
    left.legend()
    for key, label in (("val_bleu4", "dev BLEU-4"), ("val_cider", "dev CIDEr")):
        if key in history:
            right.plot(range(1, len(history[key]) + 1), history[key], marker="o", label=label)
    right.set(xlabel="epoch", title="Dev scores")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
