"""How to decode (DecodeOptions, with the one default every surface uses) and what comes out (Caption)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from captioner.features.tags import Tag


@dataclass
class Caption:
    """One generated caption with its score and per-word attention over the feature grid."""

    text: str
    words: list[str]
    log_prob: float  # sum of log-probabilities of the words and <end> (if it ended)
    attention: np.ndarray = field(repr=False)  # (len(words), cells); each row sums to 1
    alternatives: list[Caption] = field(default_factory=list, repr=False)  # the runners-up, best first
    score: float = 0.0  # log_prob / length**length_penalty, what the search ranks by
    ended: bool = True  # False for a caption cut at the maximum length: no <end> in log_prob
    tags: list[Tag] = field(default_factory=list)  # what the encoder's classifier sees; empty without one
    grounded_by: list[str] = field(default_factory=list)  # the tag words it names because of the tags
    # A grounded model's words copied from the photo's tags (1) or generated (0); None for other models.
    copied: np.ndarray | None = field(default=None, repr=False)  # (len(words),)

    @property
    def confidence(self) -> float:
        """Geometric-mean probability of the generated tokens (<end> included when written), in [0, 1]."""
        return float(np.exp(self.log_prob / (len(self.words) + self.ended)))

    @property
    def ranked(self) -> list[Caption]:
        """This caption and its alternatives: the n-best list (DecodeOptions.n_best long at most), best first."""
        return [self, *self.alternatives]

    def __str__(self) -> str:
        return self.text


GROUNDINGS = ("off", "tags", "constrained")  # how captions are grounded in the classifier's tags (docs/grounding.md)


@dataclass(frozen=True)
class DecodeOptions:
    """How to search: beam width (1 = greedy), n-best size, length normalisation, <unk> and repeat blocking,
    and grounding in the classifier's tags.

    `DecodeOptions()` is the default of every surface (library, CLI, app, batch, evaluation): beam 3,
    the decoding the shipped models score best with. `GREEDY` is the same with one beam.
    """

    beam_size: int = 3
    n_best: int = 1
    length_penalty: float = 0.7  # rank by log p / length**length_penalty; 0 = raw log-probability
    block_unk: bool = True
    # No word twice in a row and no three-word phrase twice ("on a bike on a bike"): the decoder's
    # commonest flaw, as in fairseq's no_repeat_ngram_size=3; and, for English, no noun phrase opened
    # twice ("a baby is holding a baby"). With character tokens only the three-character rule
    # applies: Chinese doubles characters in words (狗狗, 泡泡, 滑滑梯).
    block_repeats: bool = True
    max_length: int | None = None  # tokens per caption; default: the vocabulary's max_length + 2
    # "tags": a grounded model (decoder "grounded") reads the tags and may copy their words, and no caption
    # names an object that an ImageNet class names (people excepted) when none of its classes gets
    # grounding_veto. "constrained": as "tags", and the caption must name one of the tag objects the
    # classifier gives at least grounding_min_probability (summed over the classes naming that object),
    # if the vocabulary has a word for one: constrained beam search (Anderson et al. 2017). "off": the tags
    # change nothing. Models without a classifier (MobileNetV2) have no tags; the tags are English.
    grounding: str = "tags"
    grounding_min_probability: float = 0.5  # docs/grounding.md: fewer invented objects than 0.3, CIDEr still up
    grounding_veto: float = 0.01  # docs/grounding.md: 0 writes any object; higher also blocks ones in the photo

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {self.beam_size}")
        if self.n_best < 1:
            raise ValueError(f"n_best must be at least 1, got {self.n_best}")
        if self.grounding not in GROUNDINGS:
            raise ValueError(f"grounding must be one of {', '.join(GROUNDINGS)}, got {self.grounding!r}")
        if not 0.0 <= self.grounding_veto < 1.0:
            raise ValueError(f"grounding_veto must be in [0, 1), got {self.grounding_veto}")
        if not 0.0 < self.grounding_min_probability <= 1.0:
            raise ValueError(f"grounding_min_probability must be in (0, 1], got {self.grounding_min_probability}")


DEFAULT_DECODING = DecodeOptions()
GREEDY = DecodeOptions(beam_size=1)
