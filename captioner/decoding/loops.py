"""The searches, written once: greedy decoding (and sampling) and beam search over the decoder contract.

Every search drives a decoder through `prepare` once per image and `step` once per word, so the
decoder's state and the projected attention keys are carried between steps and no prefix is ever
run through the network again. The loops use only the operations of captioner.decoding.arrays: the
Keras path traces them into one compiled TensorFlow graph per search (captioner.decoding.tf_search),
the portable path runs them in NumPy over an exported decoder (captioner.portable), with no
TensorFlow. captioner.decoding.search turns their arrays into Captions, the same for both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from captioner.decoding.arrays import Array, ArrayOps, nest_map
from captioner.decoding.constraints import NEG_INF, RepeatBlocker, blocked_tokens
from captioner.decoding.options import DecodeOptions
from captioner.text.vocabulary import Vocabulary

if TYPE_CHECKING:  # the decoder contract's module imports Keras; the searches run without it
    from captioner.models.base import StepDecoder


class SearchSettings(NamedTuple):
    """A DecodeOptions resolved for one search: a tuple of plain values, which tf.function traces by value (it
    would trace a new graph for every DecodeOptions object, equal or not)."""

    beam_size: int
    length_penalty: float
    block_unk: bool
    block_repeats: bool
    max_length: int  # tokens per caption
    keep: int  # how many finished captions are wanted (the n-best list): beam search stops once they are settled
    constraints: int = 0  # how many word sets each caption must write one word of (constrained beam search)
    temperature: float = 1.0  # logits / temperature before the softmax: below 1, samples keep to the likeliest words

    @classmethod
    def of(cls, options: DecodeOptions, max_length: int, constraints: int = 0) -> SearchSettings:
        """`options` with its max_length, if None, set to `max_length` (the vocabulary's default)."""
        return cls(options.beam_size, float(options.length_penalty), options.block_unk, options.block_repeats,
                   options.max_length or max_length, min(options.n_best, options.beam_size), constraints)


class Scoring(NamedTuple):
    """How a search turns a step's logits into next-word log-probabilities, fixed for the whole search."""

    vocab: Vocabulary
    blocked: Array  # (V,) or (rows, V): NEG_INF for the tokens never written, 0 for the others
    repeat_blocker: RepeatBlocker | None
    length_penalty: float
    temperature: float = 1.0

    @classmethod
    def of(cls, ops: ArrayOps, vocab: Vocabulary, settings: SearchSettings, vetoed: Array | None = None,
           copies: int = 1) -> Scoring:
        """The scoring of a search; `vetoed` (batch, V), NEG_INF for the words an image's captions may not write
        (0 elsewhere), is blocked in each of its `copies` rows too."""
        blocked = ops.constant(blocked_tokens(vocab, settings.block_unk))  # (V,)
        if vetoed is not None:
            blocked = ops.repeat(vetoed, copies) + blocked  # (rows, V)
        return cls(vocab, blocked, RepeatBlocker(vocab) if settings.block_repeats else None, settings.length_penalty,
                   settings.temperature)

    def log_probs(self, ops: ArrayOps, logits: Array, history: Array | None, t: Any, policy: bool = False) -> Array:
        """Logits (rows, V) → log-probabilities (rows, V) with the blocked tokens at NEG_INF, given each row's
        tokens so far (rows, T; needed only with a repeat blocker).

        policy=True (sampling) renormalises them over the tokens that may be written: the distribution a sample
        is drawn from. A policy gradient on the unrenormalised ones would raise the blocked tokens, which are never
        drawn to be corrected: self-critical training collapsed onto <unk> that way."""
        if self.temperature != 1.0:
            logits = logits / self.temperature
        if not policy:
            log_probs = ops.log_softmax(logits) + self.blocked  # (rows, V)
            return log_probs if self.repeat_blocker is None else self.repeat_blocker(log_probs, history, t)
        scores = logits + self.blocked  # lowered before the softmax: no probability and no gradient for them
        if self.repeat_blocker is not None:
            scores = self.repeat_blocker(scores, history, t)
        return ops.log_softmax(scores)  # (rows, V)


def start(ops: ArrayOps, decoder: StepDecoder, features: Array, copies: int, training: bool = False) -> tuple[Any, Any]:
    """The decoder's memory, computed once per image and shared by its rows, and the initial state of each of
    its `copies` rows (rows = batch × copies, each image's rows together)."""
    memory, state = decoder.prepare(features, training=training)  # (batch, ...) each
    return memory, state if copies == 1 else nest_map(lambda x: ops.repeat(x, copies), state)


def greedy_outputs(ops: ArrayOps, batch: Any, cells: int, max_length: int) -> tuple[Any, ...]:
    """Empty (tokens, log p, α) outputs for greedy_pick: (batch, T), (batch, T), (batch, T, cells)."""
    return (ops.zeros([batch, max_length], "int32"), ops.zeros([batch, max_length]),
            ops.zeros([batch, max_length, cells]))


def greedy_pick(ops: ArrayOps, vocab: Vocabulary, log_probs: Array, alpha: Array, t: Any, finished: Array,
                outputs: tuple[Any, ...], sample: bool = False) -> tuple[Any, ...]:
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


def greedy_loop(ops: ArrayOps, decoder: StepDecoder, vocab: Vocabulary, features: Array, settings: SearchSettings,
                sample: bool = False, training: bool = False, copies: int = 1, vetoed: Array | None = None,
                ) -> tuple[Any, ...]:
    """Greedy decoding (or sampling) of a batch, `copies` rows per image (for several samples of each, the
    decoder prepares each image once): tokens (batch*copies, T), log p (batch*copies, T), α (batch*copies, T, cells).
    `vetoed` (batch, V): NEG_INF for the words an image's captions may not write."""
    scoring = Scoring.of(ops, vocab, settings, vetoed, copies)
    batch = ops.rows(features) * copies
    outputs = greedy_outputs(ops, batch, features.shape[1], settings.max_length)
    memory, state = start(ops, decoder, features, copies, training)
    tokens = ops.fill([batch], vocab.start_id, "int32")  # (batch,)
    finished = ops.zeros([batch], "bool")
    for t in ops.steps(settings.max_length):
        if ops.all(finished):
            break
        logits, alpha, state = decoder.step(tokens, state, memory, training)  # (batch, V)
        log_probs = scoring.log_probs(ops, logits, outputs[0], t, policy=sample)  # (batch, V)
        tokens, finished, outputs = greedy_pick(ops, vocab, log_probs, alpha, t, finished, outputs, sample)
    return outputs


class Beams(NamedTuple):
    """What beam search carries from step to step for a batch of images: k beams per constraint state each
    (width = k for a plain search; 2**m k for one with m constraints, the k beams that met them all first), the
    finished pool laid out the same way."""

    greedy: tuple[Any, ...]  # the greedy row's (tokens, log p, α) outputs, as greedy_outputs
    greedy_finished: Array  # (batch,)
    alive_score: Array  # (batch, width): log p of the live hypotheses, each state's best first
    alive_seq: Array  # (batch, width, T)
    alive_alpha: Array  # (batch, width, T, cells)
    done_norm: Array  # (batch, width): normalised scores of the finished hypotheses, each state's best first
    done_score: Array  # (batch, width)
    done_seq: Array  # (batch, width, T)
    done_alpha: Array  # (batch, width, T, cells)


def extend(ops: ArrayOps, beams: Beams, alpha: Array, origin: Array, token: Array, t: Any) -> tuple[Array, Array]:
    """Hypotheses that extend live beams `origin` (batch, n) by `token` (batch, n) at step t: their tokens
    (batch, n, T) and attention maps (batch, n, T, cells), given this step's α (batch, width, cells)."""
    seq = ops.write(ops.gather_beams(beams.alive_seq, origin), t, token, axis=2)  # (batch, n, T)
    seq_alpha = ops.write(ops.gather_beams(beams.alive_alpha, origin), t, ops.gather_beams(alpha, origin),
                          axis=2)  # (batch, n, T, cells)
    return seq, seq_alpha


def finish(ops: ArrayOps, length_penalty: float, t: Any, score: Array, ends: Array, seq: Array, seq_alpha: Array,
           done: tuple[Any, ...]) -> tuple[Any, ...]:
    """A finished pool (norm, score, seq, alpha), k each, after step t: the best k of the old pool and of the
    candidates (batch, 2k) that just ended, ranked by log p / length**length_penalty."""
    done_norm, done_score, done_seq, done_alpha = done
    k = done_norm.shape[1]
    norm = ops.where(ends, score / ops.cast(t + 1, "float32") ** length_penalty, NEG_INF)  # (batch, 2k)
    done_norm, best = ops.top_k(ops.concat([done_norm, norm], 1), k)  # (batch, k) of 3k
    done_score = ops.gather_beams(ops.concat([done_score, ops.where(ends, score, NEG_INF)], 1), best)
    done_seq = ops.gather_beams(ops.concat([done_seq, seq], 1), best)  # (batch, k, T)
    done_alpha = ops.gather_beams(ops.concat([done_alpha, seq_alpha], 1), best)  # (batch, k, T, cells)
    return done_norm, done_score, done_seq, done_alpha


def constraint_states(groups: int) -> list[list[int]]:
    """Which of `groups` constraints each search state has met, state 0 (all met) first: 2**groups states."""
    return [[(~state >> j) & 1 for j in range(groups)] for state in range(2 ** groups)]


def state_candidates(ops: ArrayOps, totals: Array, forced: Array | None, states: list[list[int]]) -> list[Array]:
    """Each constraint state's candidates (batch, width*V) from the live beams' scores of every next word (batch,
    width, V): candidate i extends beam i // V by word i % V.

    Plain search: one state. Constrained (forced (batch, m, V): 1 for the words of constraint j, of each of which
    the caption must write one): a state per subset of constraints met, k beams each (Anderson et al.'s
    finite-state machine, 2**m states), state 0 all met. A beam's candidate with word w goes to the state of the
    constraints it had met plus those w meets; every other state gets NEG_INF for it.
    """
    batch, width, vocab_size = ops.rows(totals), totals.shape[1], totals.shape[2]
    if forced is None:
        return [ops.reshape(totals, [batch, width * vocab_size])]
    k = width // len(states)
    met_after = []  # per constraint: (batch, width, V), 1 where a beam's candidate has met it
    for j in range(len(states[0])):
        had = ops.constant([float(state[j]) for state in states for _ in range(k)])[None, :, None]  # (1, width, 1)
        meets = forced[:, j][:, None, :]  # (batch, 1, V)
        met_after.append(had + meets - had * meets)  # (batch, width, V)
    groups = []
    for target in states:  # met beams first, so that ties keep a plain search's order
        mismatch = sum((1.0 - now if wanted else now) for wanted, now in zip(target, met_after, strict=True))
        groups.append(ops.reshape(totals + mismatch * NEG_INF, [batch, width * vocab_size]))  # (batch, width*V)
    return groups


def beam_select(ops: ArrayOps, scoring: Scoring, t: Any, logits: Array, alpha: Array, state: Any, beams: Beams,
                forced: Array | None, states: list[list[int]]) -> tuple[Any, ...]:
    """One step of beam search after the decoder's: pick the survivors, the finished and the greedy word.

    Expands every live beam and, per constraint state, sends candidates ending in <end> to that state's
    finished pool (on the few steps where one ends; the pool is unchanged otherwise) and keeps the best
    others alive, then reorders the decoder state to match. Returns the next tokens (batch*(width+1),),
    that state and the new Beams. `forced` and `states` as beam_loop has them (None and [[]]: a plain search).
    """
    batch, width, max_length = ops.rows(beams.alive_seq), beams.alive_seq.shape[1], beams.alive_seq.shape[2]
    vocab = scoring.vocab
    cells, vocab_size = beams.alive_alpha.shape[3], len(vocab)
    history = None  # only the repeat rules read the rows' tokens so far
    if scoring.repeat_blocker is not None:
        history = ops.reshape(ops.concat([beams.alive_seq, beams.greedy[0][:, None]], 1), [-1, max_length])
    log_probs = scoring.log_probs(ops, logits, history, t)  # (batch*(width+1), V)
    log_probs = ops.reshape(log_probs, [batch, width + 1, vocab_size])
    alpha = ops.reshape(alpha, [batch, width + 1, cells])
    greedy_tokens, greedy_finished, greedy = greedy_pick(
        ops, vocab, log_probs[:, width], alpha[:, width], t, beams.greedy_finished, beams.greedy)
    log_probs, alpha = log_probs[:, :width], alpha[:, :width]  # (batch, width, V), (batch, width, cells)
    groups = state_candidates(ops, beams.alive_score[:, :, None] + log_probs, forced, states)
    k = width // len(groups)
    pools, alive, origins, tokens = [], [], [], []
    for g, candidates in enumerate(groups):
        score, flat = ops.top_k(candidates, 2 * k)  # (batch, 2k)
        origin, token = flat // vocab_size, flat % vocab_size  # beam each candidate extends, its word
        ends = token == vocab.end_id
        done = tuple(x[:, g * k:(g + 1) * k]  # this state's finished pool
                     for x in (beams.done_norm, beams.done_score, beams.done_seq, beams.done_alpha))
        if ops.any(ends):
            done = finish(ops, scoring.length_penalty, t, score, ends, *extend(ops, beams, alpha, origin, token, t),
                          done)
        # live beams: best k candidates that did not end
        alive_score, survivors = ops.top_k(ops.where(ends, NEG_INF, score), k)  # (batch, k)
        origins.append(ops.gather_beams(origin, survivors))  # (batch, k)
        tokens.append(ops.gather_beams(token, survivors))  # (batch, k)
        alive.append((alive_score, *extend(ops, beams, alpha, origins[-1], tokens[-1], t)))
        pools.append(done)
    # each beam row takes its parent's state; the greedy row (index width) keeps its own
    parent = ops.concat([*origins, ops.fill([batch, 1], width, "int32")], 1)  # (batch, width+1)
    rows = ops.reshape(parent + ops.arange(batch)[:, None] * (width + 1), [-1])  # (batch*(width+1),)
    state = nest_map(lambda s: ops.take_rows(s, rows), state)
    tokens = ops.reshape(ops.concat([*tokens, greedy_tokens[:, None]], 1), [-1])  # (batch*(width+1),)
    joined = [ops.concat(list(parts), 1) for parts in (*zip(*alive, strict=True), *zip(*pools, strict=True))]
    return tokens, state, Beams(greedy, greedy_finished, *joined)


def initial_scores(ops: ArrayOps, batch: Any, k: int, forced: Array | None, states: list[list[int]]) -> Array:
    """Live scores (batch, width) before the first step: only the first beam of the start state is live, so the
    first expansion is not k copies of one. A constrained search starts with its empty constraints met."""
    first = ops.tile(ops.constant([[0.0] + [NEG_INF] * (k - 1)]), [batch, 1])  # (batch, k)
    if forced is None:
        return first
    nothing = ops.fill([batch, k], NEG_INF)
    empty = [1.0 - ops.reduce_max(forced[:, j], 1) for j in range(len(states[0]))]  # (batch,) each: 1 if met
    scores = []
    for state in states:
        starts = ops.fill([batch], 1.0)  # (batch,)
        for j, met in enumerate(state):
            starts = starts * (empty[j] if met else 1.0 - empty[j])
        scores.append(ops.where((starts > 0.5)[:, None], first, nothing))
    return ops.concat(scores, 1)


def beam_loop(ops: ArrayOps, decoder: StepDecoder, vocab: Vocabulary, features: Array, settings: SearchSettings,
              forced: Array | None = None, vetoed: Array | None = None) -> tuple[Any, ...]:
    """Beam search keeping `beam_size` live hypotheses and the `beam_size` best finished ones, or with `forced` (batch,
    m, V) (1 for the words of constraint j, of each of which the caption must write one; all 0 for no constraint) as
    many per constraint state: constrained beam search. `vetoed` (batch, V): NEG_INF for the words an image's
    captions may not write (0 elsewhere), in every one of its rows.

    Each step runs the decoder, then beam_select; the search stops once the best live beam, were it to end at the
    next step (one with constraints unmet: after one more word each), would not beat the `keep`-th best finished one
    that met every constraint, as only the best `keep` are wanted: the usual length-normalised stopping rule.
    (Waiting until no live beam could beat it at any length changed 3 of the shipped model's 1,000 dev captions, at
    13.9 steps a caption instead of 10.7; greedy takes 10.0.) The greedy caption is decoded in the same steps, as
    one more row per image, so the fallback costs no second pass over the weights.
    """
    k, keep, max_length, length_penalty = settings.beam_size, settings.keep, settings.max_length, \
        settings.length_penalty
    states: list[list[int]] = [[]] if forced is None else constraint_states(settings.constraints)
    width = k * len(states)
    scoring = Scoring.of(ops, vocab, settings, vetoed, width + 1)
    batch, cells = ops.rows(features), features.shape[1]
    memory, state = start(ops, decoder, features, width + 1)  # state (batch * (width+1), ...): beams, then greedy
    beams = Beams(greedy_outputs(ops, batch, cells, max_length), ops.zeros([batch], "bool"),
                  initial_scores(ops, batch, k, forced, states),
                  ops.zeros([batch, width, max_length], "int32"), ops.zeros([batch, width, max_length, cells]),
                  ops.fill([batch, width], NEG_INF), ops.fill([batch, width], NEG_INF),
                  ops.zeros([batch, width, max_length], "int32"), ops.zeros([batch, width, max_length, cells]))
    tokens = ops.fill([batch * (width + 1)], vocab.start_id, "int32")
    longest = float(max_length) ** length_penalty

    for t in ops.steps(max_length):
        logits, alpha, state = decoder.step(tokens, state, memory, False)  # (batch*(w+1), V), (batch*(w+1), cells)
        tokens, state, beams = beam_select(ops, scoring, t, logits, alpha, state, beams, forced, states)
        # the best live beam's normalised score if <end> came next with probability 1 (length t+2), one more
        # word first for each constraint a beam has not met
        ending_next = beams.alive_score[:, 0] / ops.cast(t + 2, "float32") ** length_penalty
        for i, met in enumerate(states[1:], 1):
            unmet_next = beams.alive_score[:, i * k] / ops.cast(t + 2 + len(met) - sum(met), "float32") \
                ** length_penalty
            ending_next = ops.where(unmet_next > ending_next, unmet_next, ending_next)
        if ops.all(beams.greedy_finished) & ops.all(beams.done_norm[:, keep - 1] > ending_next):
            break
    # Unfinished hypotheses compete too, in case the pool is not full at max_length.
    return (ops.concat([beams.done_seq, beams.alive_seq], 1), ops.concat([beams.done_score, beams.alive_score], 1),
            ops.concat([beams.done_norm, beams.alive_score / longest], 1),
            ops.concat([beams.done_alpha, beams.alive_alpha], 1), beams.greedy)
