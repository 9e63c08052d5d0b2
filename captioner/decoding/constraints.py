"""What a search may not write: special tokens, <unk>, and repeated words or three-token phrases.

Each is an additive mask over the vocabulary (0 or NEG_INF) that a search adds to the next-word
log-probabilities, the same for greedy, beam search and sampling.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from captioner.text.vocabulary import Vocabulary

NEG_INF = -1e9


def blocked_tokens(vocab: Vocabulary, block_unk: bool) -> tf.Tensor:
    """(V,) mask of the tokens that are never generated: <pad>, <start> and, if asked, <unk>."""
    mask = np.zeros(len(vocab), np.float32)
    mask[[vocab.pad_id, vocab.start_id]] = NEG_INF
    if block_unk:
        mask[vocab.unk_id] = NEG_INF
    return tf.constant(mask)


def repeat_mask(history: tf.Tensor, t: tf.Tensor, vocab: Vocabulary) -> tf.Tensor:
    """(rows, V) mask of the tokens that would repeat a three-token phrase already written or, for
    word vocabularies, the previous word, given each row's tokens so far (rows, T) (positions from
    t on unused)."""
    rows, length = tf.shape(history)[0], history.shape[1]
    row_ids = tf.range(rows)
    prev = tf.gather(history, tf.maximum(t - 1, 0), axis=1)  # (rows,)
    before = tf.gather(history, tf.maximum(t - 2, 0), axis=1)  # (rows,)
    # Earlier trigrams (s, s+1, s+2) with s+2 < t that start with the last two words.
    starts = tf.range(length - 2)  # (T-2,)
    match = (tf.equal(history[:, :-2], before[:, None]) & tf.equal(history[:, 1:-1], prev[:, None])
             & (starts[None, :] + 2 < t) & (t >= 2))  # (rows, T-2)
    indices = tf.stack([tf.broadcast_to(row_ids[:, None], tf.shape(match)), history[:, 2:]], -1)  # (rows, T-2, 2)
    repeats = tf.scatter_nd(tf.reshape(indices, [-1, 2]), tf.reshape(tf.cast(match, tf.float32), [-1]),
                            [rows, len(vocab)])  # (rows, V): how often each token would repeat
    if vocab.tokenization == "words":
        repeats += tf.one_hot(prev, len(vocab)) * tf.cast(t >= 1, tf.float32)  # the same word twice
    return tf.where(repeats > 0, NEG_INF, 0.0)  # (rows, V)
