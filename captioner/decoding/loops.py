"""The searches, written once: greedy decoding (and sampling) and beam search over the decoder contract.

Every search drives a decoder through `prepare` once per image and `step` once per word, so the
decoder's state and the projected attention keys are carried between steps and no prefix is ever
run through the network again. The loops use only the operations of captioner.decoding.arrays: the
Keras path traces them into one compiled TensorFlow graph per search (captioner.decoding.tf_search),
the portable path runs them in NumPy over an exported decoder (captioner.portable), with no
TensorFlow. `Search` turns their arrays into Captions, the same for both.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from captioner.decoding.arrays import NUMPY, Array, nest_map
from captioner.decoding.constraints import NEG_INF, RepeatBlocker, blocked_tokens
from captioner.decoding.options import DEFAULT_DECODING, GREEDY, Caption, DecodeOptions
from captioner.text.vocabulary import Vocabulary


def start(ops, decoder, features: Array, copies: int, training: bool = False) -> tuple[Any, Any]:
    """The decoder's memory, computed once per image and shared by its rows, and the initial state of each of
    its `copies` rows (rows = batch × copies, each image's rows together)."""
    memory, state = decoder.prepare(features, training=training)  # (batch, ...) each
    return memory, state if copies == 1 else nest_map(lambda x: ops.repeat(x, copies), state)


def greedy_outputs(ops, batch: Any, cells: int, max_length: int) -> tuple:
    """Empty (tokens, log p, α) outputs for greedy_pick: (batch, T), (batch, T), (batch, T, cells)."""
    return (ops.zeros([batch, max_length], "int32"), ops.zeros([batch, max_length]),
            ops.zeros([batch, max_length, cells]))


def greedy_pick(ops, vocab: Vocabulary, log_probs: Array, alpha: Array, t: Any, finished: Array, outputs: tuple,
                sample: bool = False) -> tuple:
    """One step of greedy decoding (the most likely word per row) or of sampling (a word drawn from the
    distribution), written into fixed-size (batch, T, ...) outputs.

    Rows that have ended get <pad> with log p 0.
    """
    out_tokens, out_logp, out_alpha = outputs  # (batch, T), (batch, T), (batch, T, cells)
    tokens = ops.categorical(log_probs) if sample else ops.argmax(log_probs)  # (batch,)
    chosen = ops.pick(log_probs, tokens)  # (batch,)
    tokens = ops.where(finished, vocab.pad_id, tokens)
    outputs = (ops.write(out_tokens, t, tokens), ops.write(out_logp, t, ops.where(finished, 0.0, chosen)),
               ops.write(out_alpha, t, alpha))
    return tokens, finished | (tokens == vocab.end_id), outputs


def greedy_loop(ops, decoder, vocab: Vocabulary, features: Array, block_unk: bool, block_repeats: bool,
                max_length: int, sample: bool = False, training: bool = False, copies: int = 1) -> tuple:
    """Greedy decoding (or sampling) of a batch, `copies` rows per image (for several samples of each, the
    decoder prepares each image once): tokens (batch*copies, T), log p (batch*copies, T), α (batch*copies, T, cells)."""
    blocked = ops.constant(blocked_tokens(vocab, block_unk))  # (V,)
    repeat_mask = RepeatBlocker(vocab) if block_repeats else None
    batch = ops.rows(features) * copies
    outputs = greedy_outputs(ops, batch, features.shape[1], max_length)
    memory, state = start(ops, decoder, features, copies, training)
    tokens = ops.fill([batch], vocab.start_id, "int32")  # (batch,)
    finished = ops.zeros([batch], "bool")
    for t in ops.steps(max_length):
        if ops.all(finished):
            break
        logits, alpha, state = decoder.step(tokens, state, memory, training)  # (batch, V)
        log_probs = ops.log_softmax(logits) + blocked  # (batch, V)
        if repeat_mask is not None:
            log_probs = repeat_mask(log_probs, outputs[0], t)
        tokens, finished, outputs = greedy_pick(ops, vocab, log_probs, alpha, t, finished, outputs, sample)
    return outputs


class Beams(NamedTuple):
    """What beam search carries from step to step for a batch of images, k beams each."""

    greedy: tuple  # the greedy row's (tokens, log p, α) outputs, as greedy_outputs
    greedy_finished: Array  # (batch,)
    alive_score: Array  # (batch, k): log p of the live hypotheses, best first
    alive_seq: Array  # (batch, k, T)
    alive_alpha: Array  # (batch, k, T, cells)
    done_norm: Array  # (batch, k): normalised scores of the finished hypotheses, best first
    done_score: Array  # (batch, k)
    done_seq: Array  # (batch, k, T)
    done_alpha: Array  # (batch, k, T, cells)


def extend(ops, beams: Beams, alpha: Array, origin: Array, token: Array, t: Any) -> tuple:
    """Hypotheses that extend live beams `origin` (batch, n) by `token` (batch, n) at step t: their tokens
    (batch, n, T) and attention maps (batch, n, T, cells), given this step's α (batch, k, cells)."""
    seq = ops.write(ops.gather_beams(beams.alive_seq, origin), t, token, axis=2)  # (batch, n, T)
    seq_alpha = ops.write(ops.gather_beams(beams.alive_alpha, origin), t, ops.gather_beams(alpha, origin),
                          axis=2)  # (batch, n, T, cells)
    return seq, seq_alpha


def finish(ops, length_penalty: float, t: Any, score: Array, ends: Array, seq: Array, seq_alpha: Array,
           beams: Beams) -> tuple:
    """The finished pool after step t: the best k of the old pool and of the candidates (batch, 2k) that just
    ended, ranked by log p / length**length_penalty; returns its (norm, score, seq, alpha)."""
    k = beams.done_norm.shape[1]
    norm = ops.where(ends, score / ops.cast(t + 1, "float32") ** length_penalty, NEG_INF)  # (batch, 2k)
    done_norm, best = ops.top_k(ops.concat([beams.done_norm, norm], 1), k)  # (batch, k) of 3k
    done_score = ops.gather_beams(ops.concat([beams.done_score, ops.where(ends, score, NEG_INF)], 1), best)
    done_seq = ops.gather_beams(ops.concat([beams.done_seq, seq], 1), best)  # (batch, k, T)
    done_alpha = ops.gather_beams(ops.concat([beams.done_alpha, seq_alpha], 1), best)  # (batch, k, T, cells)
    return done_norm, done_score, done_seq, done_alpha


def beam_select(ops, vocab: Vocabulary, length_penalty: float, repeat_mask: RepeatBlocker | None, blocked: Array,
                t: Any, logits: Array, alpha: Array, state: Any, beams: Beams) -> tuple:
    """One step of beam search after the decoder's: pick the survivors, the finished and the greedy word.

    Expands every live beam, sends candidates ending in <end> to the finished pool (on the few steps
    where one ends; the pool is unchanged otherwise), keeps the best others alive and reorders the
    decoder state to match. Returns the next tokens (batch*(k+1),), that state and the new Beams.
    """
    batch, k, max_length = ops.rows(beams.alive_seq), beams.alive_seq.shape[1], beams.alive_seq.shape[2]
    cells, vocab_size = beams.alive_alpha.shape[3], len(vocab)
    log_probs = ops.log_softmax(logits) + blocked  # (batch*(k+1), V)
    if repeat_mask is not None:
        history = ops.concat([beams.alive_seq, beams.greedy[0][:, None]], 1)  # (batch, k+1, T)
        log_probs = repeat_mask(log_probs, ops.reshape(history, [-1, max_length]), t)
    log_probs = ops.reshape(log_probs, [batch, k + 1, vocab_size])
    alpha = ops.reshape(alpha, [batch, k + 1, cells])
    greedy_tokens, greedy_finished, greedy = greedy_pick(
        ops, vocab, log_probs[:, k], alpha[:, k], t, beams.greedy_finished, beams.greedy)
    log_probs, alpha = log_probs[:, :k], alpha[:, :k]  # (batch, k, V), (batch, k, cells)
    candidates = ops.reshape(beams.alive_score[:, :, None] + log_probs, [batch, k * vocab_size])
    score, flat = ops.top_k(candidates, 2 * k)  # (batch, 2k)
    origin, token = flat // vocab_size, flat % vocab_size  # beam each candidate extends, its word
    ends = token == vocab.end_id
    done = (beams.done_norm, beams.done_score, beams.done_seq, beams.done_alpha)
    if ops.any(ends):
        done = finish(ops, length_penalty, t, score, ends, *extend(ops, beams, alpha, origin, token, t), beams)
    # live beams: best k candidates that did not end
    alive_score, survivors = ops.top_k(ops.where(ends, NEG_INF, score), k)  # (batch, k)
    origin, token = ops.gather_beams(origin, survivors), ops.gather_beams(token, survivors)  # (batch, k) each
    alive_seq, alive_alpha = extend(ops, beams, alpha, origin, token, t)
    # each beam row takes its parent's state; the greedy row (index k) keeps its own
    parent = ops.concat([origin, ops.fill([batch, 1], k, "int32")], 1)  # (batch, k+1)
    rows = ops.reshape(parent + ops.arange(batch)[:, None] * (k + 1), [-1])  # (batch*(k+1),)
    state = nest_map(lambda s: ops.take_rows(s, rows), state)
    tokens = ops.reshape(ops.concat([token, greedy_tokens[:, None]], 1), [-1])  # (batch*(k+1),)
    return tokens, state, Beams(greedy, greedy_finished, alive_score, alive_seq, alive_alpha, *done)


def beam_loop(ops, decoder, vocab: Vocabulary, features: Array, beam_size: int, length_penalty: float,
              block_unk: bool, block_repeats: bool, max_length: int, keep: int | None = None) -> tuple:
    """Beam search keeping `beam_size` live hypotheses and the `beam_size` best finished ones.

    Each step runs the decoder, then beam_select; the search stops once the best live beam, were it to
    end at the next step, would not beat the `keep`-th best finished one (default: the worst), as only
    the best `keep` are wanted: the usual length-normalised stopping rule. (Waiting until no live beam
    could beat it at any length changed 3 of the shipped model's 1,000 dev captions, at 13.9 steps a
    caption instead of 10.7; greedy takes 10.0.) The greedy caption is decoded in the same steps, as
    one more row per image, so the fallback costs no second pass over the weights.
    """
    k = beam_size
    keep = min(keep or k, k)
    blocked = ops.constant(blocked_tokens(vocab, block_unk))  # (V,)
    repeat_mask = RepeatBlocker(vocab) if block_repeats else None
    batch, cells = ops.rows(features), features.shape[1]
    memory, state = start(ops, decoder, features, k + 1)  # state (batch * (k+1), ...): k beams, then greedy
    # Only the first beam is live at the start, so the first expansion is not k copies of one.
    beams = Beams(greedy_outputs(ops, batch, cells, max_length), ops.zeros([batch], "bool"),
                  ops.tile(ops.constant([[0.0] + [NEG_INF] * (k - 1)]), [batch, 1]),
                  ops.zeros([batch, k, max_length], "int32"), ops.zeros([batch, k, max_length, cells]),
                  ops.fill([batch, k], NEG_INF), ops.fill([batch, k], NEG_INF),
                  ops.zeros([batch, k, max_length], "int32"), ops.zeros([batch, k, max_length, cells]))
    tokens = ops.fill([batch * (k + 1)], vocab.start_id, "int32")
    longest = float(max_length) ** length_penalty

    for t in ops.steps(max_length):
        logits, alpha, state = decoder.step(tokens, state, memory, False)  # (batch*(k+1), V), (batch*(k+1), cells)
        tokens, state, beams = beam_select(ops, vocab, length_penalty, repeat_mask, blocked, t, logits, alpha,
                                           state, beams)
        # the best live beam's normalised score if <end> came next with probability 1 (length t+2)
        ending_next = beams.alive_score[:, 0] / ops.cast(t + 2, "float32") ** length_penalty
        if ops.all(beams.greedy_finished) & ops.all(beams.done_norm[:, keep - 1] > ending_next):
            break
    # Unfinished hypotheses compete too, in case the pool is not full at max_length.
    return (ops.concat([beams.done_seq, beams.alive_seq], 1), ops.concat([beams.done_score, beams.alive_score], 1),
            ops.concat([beams.done_norm, beams.alive_score / longest], 1),
            ops.concat([beams.done_alpha, beams.alive_alpha], 1), beams.greedy)


class Search:
    """Greedy decoding and beam search for batches of feature grids with any StepDecoder, in NumPy.

    The Keras path (search.CaptionGenerator) runs the same loops compiled by TensorFlow; both turn
    the loops' arrays into the same Captions here.
    """

    def __init__(self, decoder, vocab: Vocabulary, max_length: int | None = None, ops=NUMPY):
        self.decoder = decoder
        self.vocab = vocab
        self.max_length = max_length or vocab.max_length + 2
        self.ops = ops

    def _inputs(self, features: np.ndarray) -> Array:
        """The batch as the loops take it."""
        return np.asarray(features, np.float32)  # (n, cells, channels); cached features are float16

    def _greedy(self, features: Array, block_unk: bool, block_repeats: bool, max_length: int) -> tuple:
        return greedy_loop(self.ops, self.decoder, self.vocab, features, block_unk, block_repeats, max_length)

    def _beam(self, features: Array, beam_size: int, length_penalty: float, block_unk: bool, block_repeats: bool,
              max_length: int, keep: int | None = None) -> tuple:
        return beam_loop(self.ops, self.decoder, self.vocab, features, beam_size, length_penalty, block_unk,
                         block_repeats, max_length, keep)

    def _to_caption(self, tokens: np.ndarray, log_prob: float, alpha: np.ndarray, penalty: float) -> Caption:
        ids = np.asarray(tokens).tolist()  # Python ints: the vocabulary reads them one by one
        words = self.vocab.words(ids)
        ended = self.vocab.end_id in ids  # False: cut at max_length
        length = len(words) + ended
        return Caption(self.vocab.join(words), words, float(log_prob), alpha[: len(words)],
                       score=float(log_prob) / length**penalty, ended=ended)

    def _greedy_captions(self, outputs: tuple, penalty: float, n: int) -> list[Caption]:
        """Captions from the greedy (tokens, log p, α) outputs of the first n rows."""
        tokens, log_probs, alpha = (np.asarray(x)[:n] for x in outputs)
        return [self._to_caption(row_tokens, row_logp.sum(), row_alpha, penalty)
                for row_tokens, row_logp, row_alpha in zip(tokens, log_probs, alpha, strict=True)]

    def greedy(self, features: np.ndarray, options: DecodeOptions = GREEDY) -> list[Caption]:
        """Most likely next word at every step, for a batch of (cells, channels) grids (beam_size is ignored)."""
        if len(features) == 0:
            return []
        outputs = self._greedy(self._inputs(features), options.block_unk, options.block_repeats,
                               options.max_length or self.max_length)
        return self._greedy_captions(outputs, options.length_penalty, len(features))

    def beam(self, features: np.ndarray, options: DecodeOptions = DEFAULT_DECODING) -> list[Caption]:
        """Beam search; each caption's `n_best` is its n-best list (distinct, best first).

        The greedy caption is always a candidate, so a wider beam never returns a caption that
        scores lower than greedy decoding under the same length normalisation.
        """
        if options.beam_size == 1 or len(features) == 0:
            return self.greedy(features, options)
        *outputs, greedy = self._beam(self._inputs(features), options.beam_size, float(options.length_penalty),
                                      options.block_unk, options.block_repeats, options.max_length or self.max_length,
                                      options.n_best)
        seqs, scores, norms, alphas = (np.asarray(x) for x in outputs)
        results = []
        for i, fallback in enumerate(self._greedy_captions(greedy, options.length_penalty, len(features))):
            pool = {fallback.text: fallback}
            for j in np.argsort(-norms[i]):
                if scores[i, j] <= NEG_INF / 2:  # an empty slot, or a hypothesis through a blocked token
                    continue
                caption = self._to_caption(seqs[i, j], scores[i, j], alphas[i, j], options.length_penalty)
                if caption.text not in pool or pool[caption.text].score < caption.score:
                    pool[caption.text] = caption
            ranked = sorted(pool.values(), key=lambda c: -c.score)[: max(options.n_best, 1)]
            best = ranked[0]
            best.alternatives = ranked[1:]
            results.append(best)
        return results

    def generate(self, features: np.ndarray, options: DecodeOptions = DEFAULT_DECODING) -> list[Caption]:
        """Captions for a batch of feature grids; by default beam 3 (DecodeOptions()), GREEDY for greedy."""
        return self.greedy(features, options) if options.beam_size == 1 else self.beam(features, options)
