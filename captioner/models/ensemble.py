"""Ensembles: several decoders of one vocabulary decoding together as one StepDecoder.

Each step averages the members' next-word log-probabilities (a product of experts) and their
attention, so greedy, beam search and every other search run an ensemble unchanged. The members
must read the same encoder features: the CNN runs once for all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keras import ops

from captioner.errors import CaptionerError
from captioner.models.base import Nest, StepDecoder, Tensor


class Ensemble:
    """Decoders of one vocabulary as one: prepare and step each member, average log-probabilities."""

    def __init__(self, members: Sequence[StepDecoder]) -> None:
        if not members:
            raise CaptionerError("an ensemble needs at least one model.")
        sizes = {member.vocab_size for member in members}
        if len(sizes) != 1:
            raise CaptionerError(f"ensemble members must share one vocabulary, got sizes {sorted(sizes)}.")
        self.members = list(members)
        self.vocab_size = sizes.pop()

    def prepare(self, features: Tensor, training: bool = False) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """Each member's (memory, state), as a tuple of memories and a tuple of states."""
        prepared = [member.prepare(features, training) for member in self.members]
        return tuple(memory for memory, _ in prepared), tuple(state for _, state in prepared)

    def step(self, tokens: Tensor, state: Nest, memory: Nest, training: bool = False) -> Any:
        """Mean log-probabilities (rows, V) and mean attention (rows, cells) of the members' steps."""
        outputs = [member.step(tokens, member_state, member_memory, training)
                   for member, member_state, member_memory in zip(self.members, state, memory, strict=True)]
        log_probs = ops.mean(ops.stack([ops.log_softmax(logits, axis=-1) for logits, _, _ in outputs]), axis=0)
        alpha = ops.mean(ops.stack([alpha for _, alpha, _ in outputs]), axis=0)  # (rows, cells)
        return log_probs, alpha, tuple(new_state for _, _, new_state in outputs)
