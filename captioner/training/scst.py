"""Self-critical sequence training (Rennie et al. 2017): fine-tune on CIDEr-D as a reward.

For each image the model samples several captions; each caption's reward is its CIDEr-D
against the image's references, its baseline the mean reward of the other samples (Luo 2020),
and the policy gradient raises the log-probability of captions that beat their siblings. Samples
are drawn by the same decoding loop as greedy captions (TFSearch.sample) under the gradient
tape: the log-probabilities of the drawing pass are the ones differentiated, so no second pass runs,
and with dropout on (`dropout=True`) the masks that drew a caption are the ones its gradient sees.
Features are cached, so this runs on a CPU.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from captioner.decoding.tf_search import TFSearch
from captioner.models.base import get_decoder
from captioner.text.vocabulary import Vocabulary
from captioner.training.rewards import CiderD


def leave_one_out_advantage(rewards: tf.Tensor) -> tf.Tensor:
    """Each sample's reward minus the mean reward of its image's other samples: (batch, samples)."""
    samples = tf.cast(tf.shape(rewards)[1], rewards.dtype)
    baseline = (tf.reduce_sum(rewards, 1, keepdims=True) - rewards) / (samples - 1)
    return rewards - baseline


class SelfCriticalTrainer(keras.Model):
    """Wraps a caption model for fit() on (features, image index) batches with a CIDEr-D reward."""

    def __init__(self, caption_model: keras.Model, vocab: Vocabulary, reward: CiderD, samples: int = 5,
                 max_length: int | None = None, dropout: bool = False, temperature: float = 1.0, **kwargs):
        """`max_length`: tokens per sampled caption, <end> included (default: the vocabulary's limit);
        `dropout`: sample with dropout on (the mask of each draw is the one differentiated); `temperature`: sample
        from softmax(logits / temperature), the policy whose gradient is then followed."""
        super().__init__(**kwargs)
        if samples < 2:
            raise ValueError(f"self-critical training needs at least 2 samples per image, got {samples}")
        self.caption_model = caption_model
        self.generator = TFSearch(get_decoder(caption_model), vocab, max_length)
        self.max_length = max_length
        self.dropout = dropout
        self.temperature = temperature
        self.vocab = vocab
        self.reward = reward
        self.samples = samples
        self.reward_tracker = keras.metrics.Mean(name="reward")
        self.built = caption_model.built

    @property
    def metrics(self) -> list:
        return [self.reward_tracker]

    def call(self, inputs, training=False):
        return self.caption_model(inputs, training=training)

    def _rewards(self, samples: np.ndarray, image_index: np.ndarray) -> np.ndarray:
        return np.array([self.reward.score(self.vocab.words(row), int(i))
                         for row, i in zip(samples, image_index, strict=True)], np.float32)

    def train_step(self, data):
        features, image_index = data  # (batch, cells, channels), (batch,)
        image_index = tf.repeat(image_index, self.samples)  # (batch * samples,)
        with tf.GradientTape() as tape:
            samples, log_probs = self.generator.sample(features, self.max_length, self.dropout, self.samples,
                                                       self.temperature)  # (batch * samples, T) each
            rewards = tf.numpy_function(self._rewards, [samples, image_index], tf.float32)
            rewards = tf.reshape(rewards, [-1, self.samples])  # (batch, samples)
            advantage = tf.stop_gradient(tf.reshape(leave_one_out_advantage(rewards), [-1]))  # (rows,)
            mask = tf.cast(tf.not_equal(samples, self.vocab.pad_id), tf.float32)  # words and <end>
            loss = -tf.reduce_sum(advantage[:, None] * log_probs * mask) / tf.reduce_sum(mask)
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        self.reward_tracker.update_state(rewards)
        return {"reward": self.reward_tracker.result()}
