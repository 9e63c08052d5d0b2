"""Training recipe: every setting a run depends on, readable from YAML/JSON (no TensorFlow import)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from captioner.errors import CaptionerError
from captioner.features import DEFAULT_CACHE_DIR, DEFAULT_ENCODER
from captioner.models import CLASS_READERS, DEFAULT_DECODER
from captioner.text.objects import parse_concepts
from captioner.text.vocabulary import MAX_CAPTION_LENGTH, TOKENIZATIONS, default_tokenization

MONITORS = {"cider": "val_cider", "bleu4": "val_bleu4", "loss": "val_loss"}  # recipe name → Keras log key
LR_SCHEDULES = ("constant", "plateau", "cosine")
OBJECTIVES = ("xent", "scst")


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved with the model and loadable from YAML/JSON."""

    data: str
    output: str = "runs/latest"
    lang: str | None = None
    images: str | None = None
    limit: int | None = None
    cache_dir: str = DEFAULT_CACHE_DIR
    encoder: str = DEFAULT_ENCODER
    encoder_weights: str | None = "imagenet"
    decoder: str = DEFAULT_DECODER  # a name in captioner.models.base.DECODERS, recorded in the model file
    tokenization: str | None = None  # words | chars; default: chars for zh/ja, words otherwise
    min_count: int = 5
    max_length: int = MAX_CAPTION_LENGTH
    embedding_dim: int = 256
    units: int = 512
    attention_units: int = 256
    dropout: float = 0.5
    attention_reg: float = 1.0
    label_smoothing: float = 0.0
    batch_size: int = 64
    epochs: int = 20
    learning_rate: float = 4e-4
    lr_schedule: str = "plateau"  # constant | plateau | cosine
    clipnorm: float = 5.0
    monitor: str = "cider"  # cider | bleu4 | loss
    select_beam: int = 1  # beam width of the dev decoding that picks the best epoch (1 = greedy, the fastest)
    eval_every: int | None = None  # training steps between dev scorings ("epochs"); default: one pass over the data
    patience: int = 3
    hflip: bool = False  # also train on mirrored photos (features extracted once), "left" and "right" swapped
    init_from: str | None = None  # start from a saved mymodel.h5 (fine-tuning)
    objective: str = "xent"  # xent (teacher forcing) | scst (self-critical, CIDEr-D reward; needs init_from)
    scst_samples: int = 5  # captions sampled per image for the self-critical baseline
    scst_max_length: int = 20  # tokens per sampled caption, <end> included (the usual cap)
    scst_dropout: bool = False  # sample (and differentiate) with dropout on, as in training mode
    scst_temperature: float = 1.0  # sample from softmax(logits / temperature): below 1, closer to greedy captions
    seed: int = 0
    held_out_concepts: str | None = None  # e.g. "bicycle, boat": train captions naming these are dropped (DCC)

    def __post_init__(self) -> None:
        if self.tokenization is None:
            self.tokenization = default_tokenization(self.lang)
        if self.held_out_concepts is not None:  # a YAML list or "a, b"; recorded in the model file as "a, b"
            self.held_out_concepts = ", ".join(parse_concepts(self.held_out_concepts)) or None
        for name, choices in (("lr_schedule", LR_SCHEDULES), ("monitor", tuple(MONITORS)),
                              ("objective", OBJECTIVES), ("tokenization", TOKENIZATIONS)):
            if getattr(self, name) not in choices:
                raise CaptionerError(f"{name} must be one of {', '.join(choices)}, not {getattr(self, name)!r}.")
        for name in ("select_beam", "eval_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise CaptionerError(f"{name} must be at least 1, not {getattr(self, name)}.")
        if self.decoder in CLASS_READERS:
            if (self.lang or "en", self.tokenization) != ("en", "words"):
                raise CaptionerError(f"decoder {self.decoder!r} copies the English words of ImageNet tags: train it "
                                     f"on English captions with word tokens (other languages: decoder sat).")
            from captioner.features.encoders import get_backbone  # TensorFlow: only for this recipe

            if not get_backbone(self.encoder).classifier:
                raise CaptionerError(f"decoder {self.decoder!r} reads the encoder's ImageNet classifier, which "
                                     f"{self.encoder} lacks: use encoder efficientnet_lite2 or efficientnet_lite0.")
        if self.objective == "scst":
            if not self.init_from:
                raise CaptionerError("self-critical training fine-tunes a trained model: set init_from.")
            if self.monitor == "loss":
                raise CaptionerError("objective scst has no dev loss to monitor: use monitor cider or bleu4.")
            if self.scst_max_length < 2:
                raise CaptionerError(f"scst_max_length must leave room for a word and <end>, "
                                     f"not {self.scst_max_length}.")
            if not self.scst_temperature > 0:
                raise CaptionerError(f"scst_temperature must be above 0, not {self.scst_temperature}.")
            if self.scst_samples < 2:
                raise CaptionerError(f"scst_samples must be at least 2 (each sample's baseline is the mean of "
                                     f"the others), not {self.scst_samples}.")

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides) -> TrainConfig:
        """Read a YAML or JSON recipe; keyword overrides (e.g. from the CLI) win.

        A recipe may start from another with `base: other.yaml` (relative to the recipe): its
        settings apply unless this recipe sets them.
        """
        values = _read_recipe(Path(path), set())
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise CaptionerError(f"{path}: unknown settings {sorted(unknown)}; known: {sorted(known)}.")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _read_recipe(path: Path, seen: set[Path]) -> dict:
    """A recipe's settings merged over those of its `base:` chain."""
    import yaml

    if path.resolve() in seen:
        raise CaptionerError(f"{path}: recipes name each other as base in a loop.")
    seen.add(path.resolve())
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise CaptionerError(f"{path}: cannot read training config ({error}).") from None
    if not isinstance(values, dict):
        raise CaptionerError(f"{path}: a training config is a mapping of settings, not {type(values).__name__}.")
    base = values.pop("base", None)
    return {**_read_recipe(path.parent / base, seen), **values} if base else values
