"""Self-critical sequence training (Rennie et al. 2017): fine-tune on CIDEr-D as a reward.

For each image the model samples several captions; each caption's reward is its CIDEr-D
against the image's references, its baseline the mean reward of the other samples (Luo 2020),
and the policy gradient raises the log-probability of captions that beat their siblings. Features
are cached, so this runs on a CPU.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from captioner.model import AttentionDecoder
from captioner.vocab import END, Vocabulary

NGRAMS = 4
SIGMA = 6.0


def _ngrams(words: Sequence[str]) -> Counter:
    return Counter(tuple(words[i:i + n]) for n in range(1, NGRAMS + 1) for i in range(len(words) - n + 1))


class CiderD:
    """CIDEr-D (Vedantam et al. 2015, as in pycocoevalcap) with document frequencies fixed on a
    reference corpus, so a batch of sampled captions is scored against training-set statistics.

    pycocoevalcap recomputes frequencies from whatever it is given, which for a batch of a few
    images would make every n-gram look rare; hence this scorer for rewards. Captions end with
    <end> (`mark_end`) so that captions cut off mid-phrase ("a dog in a") lose the final n-grams.
    """

    def __init__(self, corpus: Sequence[Sequence[Sequence[str]]], mark_end: bool = True):
        self.suffix = [END] if mark_end else []
        document_frequency: Counter = Counter()
        for refs in corpus:
            document_frequency.update({g for ref in refs for g in _ngrams([*ref, *self.suffix])})
        self.log_corpus = np.log(float(len(corpus)))
        self.document_frequency = document_frequency
        self._refs = [[self._vector(ref) for ref in refs] for refs in corpus]

    def _vector(self, words: Sequence[str]) -> tuple[list[dict], np.ndarray, int]:
        """tf-idf vectors per n-gram order, their norms and the caption length."""
        vectors: list[dict] = [{} for _ in range(NGRAMS)]
        for gram, count in _ngrams([*words, *self.suffix]).items():
            idf = self.log_corpus - np.log(max(1.0, self.document_frequency[gram]))
            vectors[len(gram) - 1][gram] = count * idf
        norms = np.array([np.sqrt(sum(v * v for v in vec.values())) for vec in vectors])
        return vectors, norms, len(words)

    def score(self, words: Sequence[str], corpus_index: int) -> float:
        """CIDEr-D of one caption against the references of corpus item `corpus_index`."""
        vec, norm, length = self._vector(words)
        total = np.zeros(NGRAMS)
        for ref_vec, ref_norm, ref_length in self._refs[corpus_index]:
            sims = np.array([sum(min(value, ref_vec[n].get(gram, 0.0)) * ref_vec[n].get(gram, 0.0)
                                 for gram, value in vec[n].items()) for n in range(NGRAMS)])
            denominator = norm * ref_norm
            sims = np.divide(sims, denominator, out=np.zeros(NGRAMS), where=denominator != 0)
            total += sims * np.exp(-((length - ref_length) ** 2) / (2 * SIGMA**2))
        return float(total.mean() / len(self._refs[corpus_index]) * 10.0)


class SelfCriticalTrainer(keras.Model):
    """Wraps a caption model for fit() on (features, image index) batches with a CIDEr-D reward."""

    def __init__(self, caption_model: keras.Model, vocab: Vocabulary, reward: CiderD, samples: int = 5,
                 max_length: int = 20, **kwargs):
        super().__init__(**kwargs)
        self.caption_model = caption_model
        self.decoder: AttentionDecoder = caption_model.get_layer("decoder")
        self.vocab = vocab
        self.reward = reward
        self.samples = samples
        self.max_length = max_length
        self.reward_tracker = keras.metrics.Mean(name="reward")
        self.built = caption_model.built
        blocked = np.zeros(len(vocab), np.float32)
        blocked[[vocab.pad_id, vocab.start_id, vocab.unk_id]] = -1e9
        self._blocked = tf.constant(blocked)
        self._sample = tf.function(self._sample_graph)  # autograph turns its loop into a while_loop

    @property
    def metrics(self) -> list:
        return [self.reward_tracker]

    def call(self, inputs, training=False):
        return self.caption_model(inputs, training=training)

    def _sample_graph(self, features: tf.Tensor) -> tf.Tensor:
        """Sample one caption per row from the model's distribution: (rows, steps) tokens."""
        rows = tf.shape(features)[0]
        keys = self.decoder.attention.project_keys(features)  # (rows, 49, A)
        state = self.decoder.initial_state(features)
        tokens = tf.fill([rows], self.vocab.start_id)
        finished = tf.zeros([rows], tf.bool)
        out = tf.TensorArray(tf.int32, size=0, dynamic_size=True)
        for t in tf.range(self.max_length):
            if tf.reduce_all(finished):
                break
            logits, _, state = self.decoder.step(tokens, state, features, keys)  # (rows, V)
            tokens = tf.random.categorical(logits + self._blocked, 1, dtype=tf.int32)[:, 0]  # (rows,)
            tokens = tf.where(finished, self.vocab.pad_id, tokens)
            out = out.write(t, tokens)
            finished = finished | tf.equal(tokens, self.vocab.end_id)
        return tf.transpose(out.stack())  # (rows, longest sample)

    def _rewards(self, samples: np.ndarray, image_index: np.ndarray) -> np.ndarray:
        return np.array([self.reward.score(self.vocab.words(row), int(i))
                         for row, i in zip(samples, image_index, strict=True)], np.float32)

    def train_step(self, data):
        features, image_index = data  # (batch, 49, C), (batch,)
        features = tf.repeat(features, self.samples, axis=0)  # (batch * samples, 49, C)
        image_index = tf.repeat(image_index, self.samples)
        samples = self._sample(features)  # (batch * samples, T)
        rewards = tf.numpy_function(self._rewards, [samples, image_index], tf.float32)
        rewards = tf.reshape(rewards, [-1, self.samples])  # (batch, samples)
        baseline = (tf.reduce_sum(rewards, 1, keepdims=True) - rewards) / (self.samples - 1)
        advantage = tf.reshape(rewards - baseline, [-1])  # (batch * samples,)
        inputs = tf.concat([tf.fill([tf.shape(samples)[0], 1], self.vocab.start_id), samples[:, :-1]], 1)
        mask = tf.cast(tf.not_equal(samples, self.vocab.pad_id), tf.float32)  # words and <end>
        with tf.GradientTape() as tape:
            logits, _ = self.caption_model([features, inputs], training=False)  # (rows, T, V)
            log_probs = ops.log_softmax(logits + self._blocked, axis=-1)
            chosen = tf.gather(log_probs, samples, batch_dims=2)  # (rows, T)
            loss = -tf.reduce_sum(advantage[:, None] * chosen * mask) / tf.reduce_sum(mask)
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        self.reward_tracker.update_state(rewards)
        return {"reward": self.reward_tracker.result()}

