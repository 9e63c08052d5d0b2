"""Cross-entropy training with teacher forcing, the first stage of every recipe."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops


class CaptionTrainer(keras.Model):
    """Wraps the caption model for fit(): masked, label-smoothed cross-entropy plus the doubly
    stochastic attention penalty λ·mean_i(1 - Σ_t α_ti)² that makes every cell get attention."""

    def __init__(self, caption_model: keras.Model, label_smoothing: float = 0.0,
                 attention_reg: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.caption_model = caption_model
        self.label_smoothing = label_smoothing
        self.attention_reg = attention_reg
        self.built = caption_model.built  # all variables live in the (already built) caption model

    def call(self, inputs, training=False):
        return self.caption_model(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        logits, alpha = y_pred  # (batch, T, V), (batch, T, cells)
        mask = ops.cast(ops.not_equal(y, 0), "float32")  # (batch, T)
        log_probs = ops.log_softmax(logits, axis=-1)
        nll = -ops.squeeze(ops.take_along_axis(log_probs, ops.expand_dims(y, -1), axis=-1), -1)  # (batch, T)
        smooth = -ops.mean(log_probs, axis=-1)  # cross-entropy with the uniform distribution
        per_token = (1.0 - self.label_smoothing) * nll + self.label_smoothing * smooth  # (batch, T)
        loss = ops.sum(per_token * mask) / ops.maximum(ops.sum(mask), 1.0)
        coverage = ops.sum(alpha * ops.expand_dims(mask, -1), axis=1)  # (batch, cells)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync  # tf.distribute sums the replicas' gradients
        return (loss + self.attention_reg * ops.mean(ops.square(1.0 - coverage))) / replicas
