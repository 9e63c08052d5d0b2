"""Decoding: turn encoder features into captions with a trained decoder, one word at a time.

The LSTM state and the projected attention keys are carried between steps, so no prefix is
ever run through the network again; the whole loop is one compiled tf.function.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from captioner.model import AttentionDecoder
from captioner.vocab import Vocabulary


@dataclass
class Caption:
    """One generated caption with its score and per-word attention over the feature grid."""

    text: str
    words: list[str]
    log_prob: float  # sum of log-probabilities of the words and <end>
    attention: np.ndarray  # (len(words), cells); each row sums to 1
    alternatives: list[Caption] = field(default_factory=list)

    @property
    def confidence(self) -> float:
        """Geometric-mean probability of the generated tokens (<end> included), in [0, 1]."""
        return float(np.exp(self.log_prob / (len(self.words) + 1)))

    def __str__(self) -> str:
        return self.text


class CaptionGenerator:
    """Greedy decoding for batches of feature grids with a trained AttentionDecoder."""

    def __init__(self, decoder: AttentionDecoder, vocab: Vocabulary, max_length: int | None = None):
        self.decoder = decoder
        self.vocab = vocab
        self.max_length = max_length or vocab.max_length + 2
        self._greedy = tf.function(self._greedy_graph, reduce_retracing=True)

    def _greedy_graph(self, features: tf.Tensor):
        decoder, vocab = self.decoder, self.vocab
        batch = tf.shape(features)[0]
        keys = decoder.attention.project_keys(features)  # (batch, 49, A)
        state = decoder.initial_state(features)  # [(batch, units)] * 2
        tokens = tf.fill([batch], vocab.start_id)  # (batch,)
        finished = tf.zeros([batch], tf.bool)
        out_tokens = tf.TensorArray(tf.int32, size=0, dynamic_size=True)
        out_logp = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        out_alpha = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        for t in tf.range(self.max_length):
            if tf.reduce_all(finished):
                break
            logits, alpha, state = decoder.step(tokens, state, features, keys)  # (batch, V)
            log_probs = tf.nn.log_softmax(logits)  # (batch, V)
            tokens = tf.argmax(log_probs, axis=-1, output_type=tf.int32)  # (batch,)
            tokens = tf.where(finished, vocab.pad_id, tokens)
            out_tokens = out_tokens.write(t, tokens)
            out_logp = out_logp.write(t, tf.where(finished, 0.0, tf.reduce_max(log_probs, -1)))
            out_alpha = out_alpha.write(t, alpha)
            finished = finished | tf.equal(tokens, vocab.end_id)
        # stack() gives time-major arrays; transpose to (batch, steps, ...)
        return (tf.transpose(out_tokens.stack()), tf.transpose(out_logp.stack()),
                tf.transpose(out_alpha.stack(), (1, 0, 2)))

    def _to_caption(self, tokens: np.ndarray, log_probs: np.ndarray, alpha: np.ndarray) -> Caption:
        words = self.vocab.words(tokens)
        n = len(words)
        ended = n < len(tokens) and tokens[n] == self.vocab.end_id
        log_prob = float(log_probs[: n + 1 if ended else n].sum())
        return Caption(self.vocab.decode(tokens), words, log_prob, alpha[:n])

    def greedy(self, features: np.ndarray) -> list[Caption]:
        """Most likely next word at every step, for a batch of (cells, channels) grids."""
        tokens, log_probs, alpha = (x.numpy() for x in self._greedy(tf.convert_to_tensor(features, tf.float32)))
        return [self._to_caption(*row) for row in zip(tokens, log_probs, alpha, strict=True)]
