"""Decoding on the Keras path: the searches of captioner.decoding.loops, each compiled into one tf.function.

Greedy decoding and sampling (self-critical training) are one loop with two ways of picking the
word; beam search decodes the greedy caption as one more row of its own loop. The loops are the
ones the portable runtime runs in NumPy; here autograph traces them into graph while-loops over a
batch, so a caption costs one call into TensorFlow, not one per word.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from captioner.decoding.loops import SearchSettings, beam_loop, greedy_loop
from captioner.decoding.search import Search
from captioner.decoding.tf_arrays import TF
from captioner.models.base import StepDecoder
from captioner.text.vocabulary import Vocabulary


def _bucketed(features: np.ndarray) -> tf.Tensor:
    """The batch padded to the next power of two with copies of its last grid.

    XLA compiles one program per input shape, which takes seconds; buckets keep that to a handful
    however batch sizes vary (e.g. when unreadable files drop out of a batch). Copies of a real
    grid end their search with it, so they never keep the loop running.
    """
    features = np.asarray(features, np.float32)  # (n, cells, channels); cached features are float16
    n = len(features)
    padding = np.repeat(features[-1:], (1 << (n - 1).bit_length()) - n, axis=0)
    return tf.constant(np.concatenate([features, padding]))  # (bucket, cells, channels)


class TFSearch(Search):
    """Greedy decoding, beam search and sampling for batches of feature grids, with any StepDecoder, each search
    compiled by TensorFlow."""

    def __init__(self, decoder: StepDecoder, vocab: Vocabulary, max_length: int | None = None):
        super().__init__(decoder, vocab, max_length, TF)
        # No XLA: on a 2-core AVX2 CPU its matrix products for a few rows ran beam search 1.5x slower, and since
        # decoders map the grid once per image in `prepare` (a 49-row product), greedy decoding 1.8x slower too.
        self._greedy = self._sample = tf.function(self._greedy_graph, reduce_retracing=True)  # type: ignore[method-assign]
        self._beam = tf.function(self._beam_graph, reduce_retracing=True)  # type: ignore[method-assign]

    def _inputs(self, features: np.ndarray) -> tf.Tensor:
        return _bucketed(features)

    def _greedy_graph(self, features: tf.Tensor, settings: SearchSettings, sample: bool = False,
                      training: bool = False, copies: int = 1, vetoed: tf.Tensor | None = None) -> tuple[Any, ...]:
        return greedy_loop(TF, self.decoder, self.vocab, features, settings, sample, training, copies, vetoed)

    def _beam_graph(self, features: tf.Tensor, settings: SearchSettings, forced: tf.Tensor | None = None,
                    vetoed: tf.Tensor | None = None) -> tuple[Any, ...]:
        return beam_loop(TF, self.decoder, self.vocab, features, settings, forced, vetoed)

    def sample(self, features: tf.Tensor, max_length: int | None = None, training: bool = False,
               copies: int = 1, temperature: float = 1.0) -> tuple[tf.Tensor, tf.Tensor]:
        """`copies` captions per row drawn from the model's distribution (<unk> never, repeats allowed), or at a
        `temperature` from softmax(logits / temperature), whose log-probabilities are then the ones returned.

        Returns the tokens (rows*copies, longest sample), each row's copies together, <pad> after <end>, and
        each token's log-probability under the distribution it was drawn from, renormalised over the tokens a
        sample may hold (rows*copies, longest sample), 0 after <end>. Each image is prepared
        once. Under a GradientTape with training=True the log-probabilities carry the gradient of the very
        pass that drew the words, dropout masks included (self-critical training needs no second pass).
        """
        settings = SearchSettings(1, 0.0, True, False, max_length or self.max_length, 1,  # <unk> blocked, repeats not
                                  temperature=float(temperature))
        tokens, log_probs, _ = self._sample(features, settings, True, training, copies)  # (rows*copies, T) each
        longest = tf.reduce_max(tf.reduce_sum(tf.cast(tokens != self.vocab.pad_id, tf.int32), axis=1))
        return tokens[:, :longest], log_probs[:, :longest]  # (rows*copies, longest) each
