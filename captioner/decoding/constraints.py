"""What a search may not write: special tokens, <unk>, repeated words or three-token phrases, and the same
noun phrase opened twice ("a baby is holding a baby").

Each lowers the next-word log-probabilities of the tokens it forbids to NEG_INF (or adds NEG_INF to
them), the same for greedy, beam search and sampling, in NumPy or TensorFlow alike
(captioner.decoding.arrays).
"""

from __future__ import annotations

import numpy as np

from captioner.decoding.arrays import Array, ArrayOps, ops_for
from captioner.text.phrases import phrase_tables
from captioner.text.vocabulary import Vocabulary

NEG_INF = -1e9


def blocked_tokens(vocab: Vocabulary, block_unk: bool) -> np.ndarray:
    """(V,) mask of the tokens that are never generated: <pad>, <start> and, if asked, <unk>."""
    mask = np.zeros(len(vocab), np.float32)
    mask[[vocab.pad_id, vocab.start_id]] = NEG_INF
    if block_unk:
        mask[vocab.unk_id] = NEG_INF
    return mask


class RepeatBlocker:
    """The repeat rules of one vocabulary, its tables built once per search.

    Called with the next-word log-probabilities (rows, V) and each row's tokens so far (rows, T)
    (positions from t on unused), it returns the log-probabilities with those of the tokens that
    would repeat a three-token phrase already written or, for word vocabularies, the previous
    word or (English) the head of a noun phrase already opened ("a baby is holding a baby", "a woman
    and woman") lowered to NEG_INF. The offending tokens are scattered into the rows directly, a few per
    row, rather than built up as a dense (rows, V) mask. NumPy in, NumPy out; tensors in, a tensor out.
    """

    def __init__(self, vocab: Vocabulary):
        self.words = vocab.tokenization == "words"
        self.openers, self.heads = phrase_tables(vocab)  # (V,) each
        self.phrases = bool(self.openers.any())  # English words: without openers the rule has nothing to block

    def __call__(self, log_probs: Array, history: Array, t: Array) -> Array:
        ops = ops_for(history)
        length = history.shape[1]
        prev = ops.take_column(history, ops.where(t >= 1, t - 1, 0))  # (rows,)
        before = ops.take_column(history, ops.where(t >= 2, t - 2, 0))  # (rows,)
        # Earlier trigrams (s, s+1, s+2) with s+2 < t that start with the last two words: their third word.
        starts = ops.arange(length - 2)  # (T-2,)
        tokens = [history[:, 2:]]  # (rows, T-2)
        hits = [(history[:, :-2] == before[:, None]) & (history[:, 1:-1] == prev[:, None])
                & (starts[None, :] + 2 < t) & (t >= 2)]  # (rows, T-2)
        if self.words:  # the same word twice
            tokens.append(prev[:, None])  # (rows, 1)
            hits.append((prev[:, None] >= 0) & (t >= 1))  # (rows, 1)
        if self.phrases:  # after an opener, a word that already headed a noun phrase
            openers = ops.constant(self.openers)  # (V,)
            tokens.append(history[:, 1:])  # (rows, T-1)
            hits.append(self._phrase_heads(ops, history, t, openers) * ops.lookup(openers, prev)[:, None] > 0)
        return ops.lower_at(log_probs, ops.concat(tokens, 1), ops.concat(hits, 1), NEG_INF)  # (rows, V)

    def _phrase_heads(self, ops: ArrayOps, history: Array, t: Array, openers: Array) -> Array:
        """(rows, T-1): 1 where history[:, 1:] headed a noun phrase (followed an opener) before position t."""
        positions = ops.arange(history.shape[1] - 1) + 1  # (T-1,): positions 1.. of history[:, 1:]
        return (ops.lookup(openers, history[:, :-1]) * ops.lookup(ops.constant(self.heads), history[:, 1:])
                * ops.cast(positions[None, :] < t, "float32"))  # (rows, T-1)
