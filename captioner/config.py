"""Training recipe: every setting a run depends on, readable from YAML/JSON (no TensorFlow import)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from captioner.errors import CaptionerError
from captioner.vocab import default_tokenization


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved with the model and loadable from YAML/JSON."""

    data: str
    output: str = "runs/latest"
    lang: str | None = None
    images: str | None = None
    limit: int | None = None
    cache_dir: str = "cache/features"
    encoder: str = "mobilenet_v2"
    encoder_weights: str | None = "imagenet"
    tokenization: str | None = None  # words | chars; default: chars for zh/ja, words otherwise
    min_count: int = 5
    max_length: int = 25
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
    patience: int = 3
    init_from: str | None = None  # start from a saved mymodel.h5 (fine-tuning)
    objective: str = "xent"  # xent (teacher forcing) | scst (self-critical, CIDEr-D reward; needs init_from)
    scst_samples: int = 5  # captions sampled per image for the self-critical baseline
    seed: int = 0

    def __post_init__(self) -> None:
        if self.tokenization is None:
            self.tokenization = default_tokenization(self.lang)

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides) -> TrainConfig:
        """Read a YAML or JSON recipe; keyword overrides (e.g. from the CLI) win."""
        import yaml

        try:
            values = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise CaptionerError(f"{path}: cannot read training config ({error}).") from None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise CaptionerError(f"{path}: unknown settings {sorted(unknown)}; known: {sorted(known)}.")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
