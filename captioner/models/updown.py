"""Up-Down (Anderson et al. 2018): a two-layer LSTM decoder, attention LSTM below, language LSTM above.

The attention LSTM reads the language LSTM's previous state, the mean image feature and the
previous word, and its state queries soft attention over the grid; the language LSTM reads the
attended context and the attention LSTM's state and predicts the word. The grid is first projected
(Dense + ReLU + dropout), as the strong captioning codebases do, so attention works on learned
features rather than the raw CNN channels.
"""

from __future__ import annotations

from typing import Any

from keras import layers, ops

from captioner.models.base import CaptionDecoder, Tensor, register_decoder
from captioner.models.sat import SoftAttention, per_row


@register_decoder("updown")
class UpDown(CaptionDecoder):
    """Top-down attention LSTM + language LSTM over a projected feature grid."""

    def __init__(self, vocab_size: int, embedding_dim: int = 256, units: int = 512,
                 attention_units: int = 256, dropout: float = 0.5, feature_units: int = 512, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.units = units
        self.attention_units = attention_units
        self.dropout_rate = dropout
        self.feature_units = feature_units
        self.project = layers.Dense(feature_units, activation="relu", name="project")
        self.embedding = layers.Embedding(vocab_size, embedding_dim, name="embedding")
        self.attention_lstm = layers.LSTMCell(units, name="attention_lstm")
        self.attention = SoftAttention(attention_units, name="attention")
        self.language_lstm = layers.LSTMCell(units, name="language_lstm")
        self.out_vocab = layers.Dense(vocab_size, name="out_vocab")
        self.dropout = layers.Dropout(dropout)

    def build(self, input_shape: tuple[Any, ...]) -> None:
        features_shape, _ = input_shape
        projected = (*features_shape[:-1], self.feature_units)
        self.project.build(features_shape)
        self.embedding.build((None,))
        self.attention_lstm.build((None, self.units + self.feature_units + self.embedding_dim))
        self.attention.build(projected, (None, self.units))
        self.language_lstm.build((None, self.feature_units + self.units))
        self.out_vocab.build((None, self.units))

    def _prepare(self, features: Tensor, training: bool | None = None) -> tuple[dict[str, Any], list[Any]]:
        grid = self.dropout(self.project(features), training=training)  # (batch, cells, D)
        memory = {"features": grid, "keys": self.attention.project_keys(grid),  # (batch, cells, A)
                  "mean": ops.mean(grid, axis=1)}  # (batch, D)
        zeros = ops.zeros((ops.shape(features)[0], self.units))  # (batch, units)
        return memory, [zeros, zeros, zeros, zeros]  # attention LSTM [h, c], language LSTM [h, c]

    def prepare(self, features: Tensor, training: bool = False) -> tuple[dict[str, Any], list[Any]]:
        """Memory: the projected grid, its attention keys and its mean; state: both LSTMs at zero."""
        return self._prepare(features, training)

    def _recur(self, embedded: Tensor, state: list[Any], memory: dict[str, Any]) -> Any:
        """One step of both LSTMs for rows of the memory's images: → language LSTM output (rows, units), α (rows,
        cells), new state."""
        att_h, att_c, lang_h, lang_c = state
        att_in = ops.concatenate([lang_h, per_row(memory["mean"], lang_h), embedded], axis=-1)  # (rows, units+D+E)
        att_h, (_, att_c) = self.attention_lstm(att_in, [att_h, att_c])
        context, alpha = self.attention(memory["features"], memory["keys"], att_h)  # (rows, D), (rows, cells)
        lang_h, (_, lang_c) = self.language_lstm(ops.concatenate([context, att_h], axis=-1), [lang_h, lang_c])
        return lang_h, alpha, [att_h, att_c, lang_h, lang_c]

    def step(self, tokens: Tensor, state: list[Any], memory: dict[str, Any], training: bool = False) -> Any:
        """Previous tokens (rows,) → logits (rows, V), α (rows, cells), new state, for rows of the memory's images."""
        lang_h, alpha, state = self._recur(self.embedding(tokens), state, memory)  # (rows, units)
        return self.out_vocab(self.dropout(lang_h, training=training)), alpha, state

    def call(self, inputs: Tensor, training: bool | None = None) -> Any:
        """Teacher forcing: features (batch, cells, C), tokens (batch, T) → logits (batch, T, V), α."""
        features, tokens = inputs
        memory, state = self._prepare(features, training)
        embedded = self.embedding(tokens)  # (batch, T, E)

        def body(carry: Tensor, embedded_t: Tensor) -> Any:
            # keras.ops.scan stacks outputs shaped like the carry, so the carry holds them too.
            _, alpha, new_state = self._recur(embedded_t, carry[:4], memory)
            outputs = [*new_state, alpha]
            return outputs, outputs

        first = [*state, ops.zeros((ops.shape(features)[0], features.shape[1]))]
        _, outputs = ops.scan(body, first, ops.transpose(embedded, (1, 0, 2)))  # (T, batch, ·) each
        lang_h, alpha = (ops.transpose(outputs[i], (1, 0, 2)) for i in (2, 4))  # (batch, T, ·)
        return self.out_vocab(self.dropout(lang_h, training=training)), alpha

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "vocab_size": self.vocab_size, "embedding_dim": self.embedding_dim,
                "units": self.units, "attention_units": self.attention_units, "dropout": self.dropout_rate,
                "feature_units": self.feature_units}
