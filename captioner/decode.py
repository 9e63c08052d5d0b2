"""Decoding: turn encoder features into captions with a trained decoder, one word at a time.

The LSTM state and the projected attention keys are carried between steps, so no prefix is
ever run through the network again; each search is one compiled tf.function over a batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from captioner.model import AttentionDecoder
from captioner.vocab import Vocabulary

NEG_INF = -1e9


@dataclass
class Caption:
    """One generated caption with its score and per-word attention over the feature grid."""

    text: str
    words: list[str]
    log_prob: float  # sum of log-probabilities of the words and <end>
    attention: np.ndarray = field(repr=False)  # (len(words), cells); each row sums to 1
    alternatives: list[Caption] = field(default_factory=list, repr=False)  # n-best list, best first
    score: float = 0.0  # log_prob / length**length_penalty, what the search ranks by

    @property
    def confidence(self) -> float:
        """Geometric-mean probability of the generated tokens (<end> included), in [0, 1]."""
        return float(np.exp(self.log_prob / (len(self.words) + 1)))

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class DecodeOptions:
    """How to search: beam width (1 = greedy), n-best size, length normalisation, <unk> blocking."""

    beam_size: int = 3
    n_best: int = 1
    length_penalty: float = 0.7  # rank by log p / length**length_penalty; 0 = raw log-probability
    block_unk: bool = True
    max_length: int | None = None


GREEDY = DecodeOptions(beam_size=1)


def _gather_beams(tensor: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """tensor (batch, beams, ...) indexed by index (batch, k) → (batch, k, ...)."""
    return tf.gather(tensor, index, batch_dims=1)


class CaptionGenerator:
    """Greedy and beam-search decoding for batches of feature grids with a trained AttentionDecoder."""

    def __init__(self, decoder: AttentionDecoder, vocab: Vocabulary, max_length: int | None = None):
        self.decoder = decoder
        self.vocab = vocab
        self.max_length = max_length or vocab.max_length + 2
        self._greedy = tf.function(self._greedy_graph, reduce_retracing=True)
        self._beam = tf.function(self._beam_graph, reduce_retracing=True)

    def _blocked(self, block_unk: bool) -> tf.Tensor:
        """Additive mask over the vocabulary: tokens that may never be generated."""
        mask = np.zeros(len(self.vocab), np.float32)
        mask[[self.vocab.pad_id, self.vocab.start_id]] = NEG_INF
        if block_unk:
            mask[self.vocab.unk_id] = NEG_INF
        return tf.constant(mask)

    def _start(self, features: tf.Tensor, copies: int):
        """Projected keys, initial state and features, each repeated `copies` times per image."""
        features = tf.repeat(features, copies, axis=0)  # (batch * copies, 49, C)
        return features, self.decoder.attention.project_keys(features), self.decoder.initial_state(features)

    def _greedy_graph(self, features: tf.Tensor, block_unk: bool, max_length: int):
        vocab, blocked = self.vocab, self._blocked(block_unk)
        batch = tf.shape(features)[0]
        features, keys, state = self._start(features, 1)
        tokens = tf.fill([batch], vocab.start_id)  # (batch,)
        finished = tf.zeros([batch], tf.bool)
        out_tokens = tf.TensorArray(tf.int32, size=0, dynamic_size=True)
        out_logp = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        out_alpha = tf.TensorArray(tf.float32, size=0, dynamic_size=True)
        for t in tf.range(max_length):
            if tf.reduce_all(finished):
                break
            logits, alpha, state = self.decoder.step(tokens, state, features, keys)  # (batch, V)
            log_probs = tf.nn.log_softmax(logits) + blocked  # (batch, V)
            tokens = tf.argmax(log_probs, axis=-1, output_type=tf.int32)  # (batch,)
            tokens = tf.where(finished, vocab.pad_id, tokens)
            out_tokens = out_tokens.write(t, tokens)
            out_logp = out_logp.write(t, tf.where(finished, 0.0, tf.reduce_max(log_probs, -1)))
            out_alpha = out_alpha.write(t, alpha)
            finished = finished | tf.equal(tokens, vocab.end_id)
        # stack() gives time-major arrays; transpose to (batch, steps, ...)
        return (tf.transpose(out_tokens.stack()), tf.transpose(out_logp.stack()),
                tf.transpose(out_alpha.stack(), (1, 0, 2)))

    def _beam_graph(self, features: tf.Tensor, beam_size: int, length_penalty: float, block_unk: bool,
                    max_length: int):
        """Beam search keeping `beam_size` live hypotheses and the `beam_size` best finished ones.

        Each step expands every live beam, sends candidates ending in <end> to the finished pool
        (ranked by log p / length**length_penalty) and keeps the best others alive; it stops when
        no live beam can still beat the worst finished one.
        """
        vocab, blocked, k = self.vocab, self._blocked(block_unk), beam_size
        batch = tf.shape(features)[0]
        cells = features.shape[1]
        vocab_size = len(vocab)
        features, keys, state = self._start(features, k)  # (batch * k, 49, C)
        # Only the first beam is live at the start, so the first expansion is not k copies of one.
        alive_score = tf.tile(tf.constant([[0.0] + [NEG_INF] * (k - 1)]), [batch, 1])  # (batch, k)
        alive_seq = tf.zeros([batch, k, max_length], tf.int32)
        alive_alpha = tf.zeros([batch, k, max_length, cells])
        done_norm = tf.fill([batch, k], NEG_INF)  # normalised scores of finished hypotheses
        done_score = tf.fill([batch, k], NEG_INF)
        done_seq = tf.zeros([batch, k, max_length], tf.int32)
        done_alpha = tf.zeros([batch, k, max_length, cells])
        tokens = tf.fill([batch * k], vocab.start_id)
        for t in tf.range(max_length):
            logits, alpha, state = self.decoder.step(tokens, state, features, keys)  # (batch*k, V)
            log_probs = tf.reshape(tf.nn.log_softmax(logits) + blocked, [batch, k, vocab_size])
            candidates = tf.reshape(alive_score[:, :, None] + log_probs, [batch, k * vocab_size])
            score, flat = tf.math.top_k(candidates, 2 * k)  # (batch, 2k)
            origin, token = flat // vocab_size, flat % vocab_size  # beam each candidate extends, its word
            at_t = tf.one_hot(t, max_length, dtype=tf.int32)  # (max_length,)
            seq = _gather_beams(alive_seq, origin) * (1 - at_t) + token[:, :, None] * at_t  # (batch, 2k, T)
            step_alpha = _gather_beams(tf.reshape(alpha, [batch, k, cells]), origin)  # (batch, 2k, 49)
            seq_alpha = _gather_beams(alive_alpha, origin) + step_alpha[:, :, None, :] * tf.cast(
                at_t, tf.float32)[None, None, :, None]  # (batch, 2k, T, 49)
            ends = tf.equal(token, vocab.end_id)
            length = tf.cast(t + 1, tf.float32)
            # finished pool: best k of the old pool and the candidates that just ended
            norm = tf.where(ends, score / length ** length_penalty, NEG_INF)
            pool_norm = tf.concat([done_norm, norm], 1)  # (batch, 3k)
            done_norm, best = tf.math.top_k(pool_norm, k)
            done_score = _gather_beams(tf.concat([done_score, tf.where(ends, score, NEG_INF)], 1), best)
            done_seq = _gather_beams(tf.concat([done_seq, seq], 1), best)
            done_alpha = _gather_beams(tf.concat([done_alpha, seq_alpha], 1), best)
            # live beams: best k candidates that did not end
            alive_score, keep = tf.math.top_k(tf.where(ends, NEG_INF, score), k)  # (batch, k)
            alive_seq = _gather_beams(seq, keep)
            alive_alpha = _gather_beams(seq_alpha, keep)
            parent = _gather_beams(origin, keep)  # (batch, k)
            rows = tf.reshape(parent + tf.range(batch)[:, None] * k, [-1])  # (batch*k,)
            state = [tf.gather(s, rows) for s in state]
            tokens = tf.reshape(_gather_beams(token, keep), [-1])
            # log p only falls as a caption grows, so a live beam's best possible normalised score is
            # its current log p over the longest allowed length.
            best_alive = alive_score[:, 0] / tf.cast(max_length, tf.float32) ** length_penalty
            if tf.reduce_all(done_norm[:, -1] > best_alive):
                break
        # Unfinished hypotheses compete too, in case the pool is not full at max_length.
        alive_norm = alive_score / tf.cast(max_length, tf.float32) ** length_penalty
        return (tf.concat([done_seq, alive_seq], 1), tf.concat([done_score, alive_score], 1),
                tf.concat([done_norm, alive_norm], 1), tf.concat([done_alpha, alive_alpha], 1))

    def _to_caption(self, tokens: np.ndarray, log_prob: float, alpha: np.ndarray, penalty: float) -> Caption:
        words = self.vocab.words(tokens)
        length = len(words) + 1
        return Caption(self.vocab.decode(tokens), words, float(log_prob), alpha[: len(words)],
                       score=float(log_prob) / length**penalty)

    def greedy(self, features: np.ndarray, options: DecodeOptions = GREEDY) -> list[Caption]:
        """Most likely next word at every step, for a batch of (cells, channels) grids."""
        tokens, log_probs, alpha = (x.numpy() for x in self._greedy(
            tf.convert_to_tensor(features, tf.float32), options.block_unk, options.max_length or self.max_length))
        captions = [self._to_caption(row_tokens, row_logp.sum(), row_alpha, options.length_penalty)
                    for row_tokens, row_logp, row_alpha in zip(tokens, log_probs, alpha, strict=True)]
        for caption in captions:
            caption.alternatives = [caption]
        return captions

    def beam(self, features: np.ndarray, options: DecodeOptions) -> list[Caption]:
        """Beam search; each caption's `alternatives` is its n-best list (distinct, best first).

        The greedy caption is always a candidate, so a wider beam never returns a caption that
        scores lower than greedy decoding under the same length normalisation.
        """
        greedy = self.greedy(features, options)
        if options.beam_size == 1:
            return greedy
        max_length = options.max_length or self.max_length
        seqs, scores, norms, alphas = (x.numpy() for x in self._beam(
            tf.convert_to_tensor(features, tf.float32), options.beam_size, float(options.length_penalty),
            options.block_unk, max_length))
        results = []
        for i, fallback in enumerate(greedy):
            pool = {fallback.text: fallback}
            for j in np.argsort(-norms[i]):
                if norms[i, j] <= NEG_INF / 2:
                    continue
                caption = self._to_caption(seqs[i, j], scores[i, j], alphas[i, j], options.length_penalty)
                if caption.text not in pool or pool[caption.text].score < caption.score:
                    pool[caption.text] = caption
            ranked = sorted(pool.values(), key=lambda c: -c.score)[: max(options.n_best, 1)]
            best = ranked[0]
            best.alternatives = ranked
            results.append(best)
        return results

    def generate(self, features: np.ndarray, options: DecodeOptions = GREEDY) -> list[Caption]:
        """Captions for a batch of feature grids with the given search."""
        if options.beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {options.beam_size}")
        return self.greedy(features, options) if options.beam_size == 1 else self.beam(features, options)
