"""Show, Attend and Tell (Xu et al. 2015): a soft-attention LSTM decoder over a CNN feature grid."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

from captioner.models.base import PACKAGE, CaptionDecoder, Tensor, register_decoder


def weighted_sum(alpha: Tensor, values: Tensor) -> Tensor:
    """Σ_i α_i v_i per row: α (rows, cells), values (batch, cells, D) → (rows, D), where rows = batch × copies
    with each image's rows together; one matrix product per image, over values never copied per row."""
    batch, cells, depth = ops.shape(values)
    grouped = ops.reshape(alpha, (batch, -1, cells))  # (batch, copies, cells)
    return ops.reshape(ops.matmul(grouped, values), (-1, depth))  # (batch, copies, D) → (rows, D)


def per_row(x: Tensor, rows: Tensor) -> Tensor:
    """An image-level array (batch, D) repeated for each of its rows: (rows, D), rows = batch × copies."""
    return ops.repeat(x, ops.shape(rows)[0] // ops.shape(x)[0], axis=0)  # (rows, D)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SoftAttention(layers.Layer):
    """Additive (Bahdanau) attention over grid cells: e = w·tanh(W_a a_i + W_h h), α = softmax(e)."""

    def __init__(self, units: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = units
        self.key = layers.Dense(units, name="key")
        self.query = layers.Dense(units, use_bias=False, name="query")
        self.score = layers.Dense(1, name="score")

    def build(self, features_shape: tuple[Any, ...], query_shape: tuple[Any, ...]) -> None:
        self.key.build(features_shape)
        self.query.build(query_shape)
        self.score.build((*features_shape[:-1], self.units))

    def project_keys(self, features: Tensor) -> Tensor:
        """W_a a_i, computed once per image instead of once per word."""
        return self.key(features)  # (batch, cells, units)

    def scores(self, keys: Tensor, query: Tensor) -> Tensor:
        """The scores e (rows, cells) of queries (rows, units) over projected keys (batch, cells, A).

        rows = batch × copies, each image's rows together: beams attend over one copy of their image's keys.
        """
        batch, cells = ops.shape(keys)[0], ops.shape(keys)[1]
        query = ops.reshape(self.query(query), (batch, -1, 1, self.units))  # (batch, copies, 1, A)
        hidden = ops.tanh(ops.expand_dims(keys, 1) + query)  # (batch, copies, cells, A)
        return ops.reshape(ops.squeeze(self.score(hidden), -1), (-1, cells))  # (rows, cells)

    def attend(self, keys: Tensor, query: Tensor) -> Tensor:
        """The weights α = softmax(e) (rows, cells) of queries (rows, units) over projected keys (batch, cells, A)."""
        return ops.softmax(self.scores(keys, query), axis=-1)  # (rows, cells)

    def call(self, features: Tensor, keys: Tensor, query: Tensor) -> Any:
        """Return the context vector Σ α_i a_i (rows, channels) and the weights α (rows, cells) for the queries."""
        alpha = self.attend(keys, query)  # (rows, cells)
        return weighted_sum(alpha, features), alpha

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units}


# Saved under its first class name, AttentionDecoder, so model files written before the registry load.
@register_decoder("sat", keras_name="AttentionDecoder")
class ShowAttendTell(CaptionDecoder):
    """LSTM decoder that attends over image features before each word.

    Initial state from the mean feature, gated soft attention, deep output
    p(y_t) ∝ exp(L_o(E y_{t-1} + L_h h_t + L_z z_t)) and dropout on the deep output.
    """

    def __init__(self, vocab_size: int, embedding_dim: int = 256, units: int = 512,
                 attention_units: int = 256, dropout: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.units = units
        self.attention_units = attention_units
        self.dropout_rate = dropout
        self.embedding = layers.Embedding(vocab_size, embedding_dim, name="embedding")
        self.init_h = layers.Dense(units, activation="tanh", name="init_h")
        self.init_c = layers.Dense(units, activation="tanh", name="init_c")
        self.attention = SoftAttention(attention_units, name="attention")
        self.gate = layers.Dense(1, activation="sigmoid", name="gate")
        self.cell = layers.LSTMCell(units, name="lstm")
        self.out_h = layers.Dense(embedding_dim, name="out_h")
        self.out_z = layers.Dense(embedding_dim, use_bias=False, name="out_z")
        self.out_vocab = layers.Dense(vocab_size, name="out_vocab")
        self.dropout = layers.Dropout(dropout)

    def build(self, input_shape: tuple[Any, ...]) -> None:
        # Sub-layers are built here, not inside the time loop, where variables cannot be created.
        features_shape, _ = input_shape
        channels = features_shape[-1]
        self.embedding.build((None,))
        self.init_h.build((None, channels))
        self.init_c.build((None, channels))
        self.attention.build(features_shape, (None, self.units))
        self.gate.build((None, self.units))
        self.cell.build((None, self.embedding_dim + channels))
        self.out_h.build((None, self.units))
        self.out_z.build((None, channels))
        self.out_vocab.build((None, self.embedding_dim))

    def prepare(self, features: Tensor, training: bool = False) -> tuple[dict[str, Any], list[Any]]:
        """Memory: the projected attention keys and the grid's context maps; state: [h0, c0] from the mean feature.

        The context z_t = Σ α_i a_i is linear in the grid, so the two maps that read it, the LSTM
        kernel's context block and L_z, are applied to the cells here, once per image: a step then
        takes a weighted sum of 49 rows instead of streaming those (channels × 4·units + E) weights.
        No dropout acts here, so `training` changes nothing."""
        maps = [ops.matmul(features, self.cell.kernel[self.embedding_dim:]), self.out_z(features)]  # W a_i, L_z a_i
        memory = {"keys": self.attention.project_keys(features),  # (batch, cells, A)
                  "context_maps": ops.concatenate(maps, axis=-1)}  # (batch, cells, 4·units + E)
        return memory, self._initial_state(features)

    def _initial_state(self, features: Tensor) -> list[Any]:
        """[h0, c0] from the mean feature: 2 × (batch, units)."""
        mean = ops.mean(features, axis=1)  # (batch, channels)
        return [self.init_h(mean), self.init_c(mean)]

    def _recur(self, embedded: Tensor, state: list[Any], features: Tensor, keys: Tensor) -> Any:
        """One LSTM step: attend with h_{t-1}, gate the context, feed [E y_{t-1}, z_t]."""
        context, alpha = self.attention(features, keys, state[0])  # (batch, C), (batch, cells)
        context = self.gate(state[0]) * context  # β_t z_t
        h, state = self.cell(ops.concatenate([embedded, context], axis=-1), state)  # (batch, units)
        return h, context, alpha, state

    def _readout(self, embedded: Tensor, h: Tensor, context_out: Tensor, training: bool | None = None) -> Any:
        """Deep output L_o(E y_{t-1} + L_h h_t + L_z z_t), given L_z z_t."""
        deep = embedded + self.out_h(self.dropout(h, training=training)) + context_out
        return self.out_vocab(self.dropout(deep, training=training))  # (..., V)

    def step(self, tokens: Tensor, state: list[Any], memory: dict[str, Any], training: bool = False) -> Any:
        """Decode one word for each row: previous tokens (rows,) → logits (rows, V), α, new state.

        The same maths as `call`, evaluated through the context maps of `prepare`."""
        embedded = self.dropout(self.embedding(tokens), training=training)  # (rows, E)
        h, c = state
        alpha = self.attention.attend(memory["keys"], h)  # (rows, cells)
        mapped = self.gate(h) * weighted_sum(alpha, memory["context_maps"])  # (rows, 4·units + E): β_t W z_t
        width, cell = 4 * self.units, self.cell
        z = (mapped[:, :width] + ops.matmul(embedded, cell.kernel[: self.embedding_dim])
             + ops.matmul(h, cell.recurrent_kernel) + cell.bias)  # (rows, 4·units): LSTMCell's pre-activations
        i, f, g, o = ops.split(z, 4, axis=-1)  # LSTMCell's gate order
        c = cell.recurrent_activation(f) * c + cell.recurrent_activation(i) * cell.activation(g)  # (rows, units)
        h = cell.recurrent_activation(o) * cell.activation(c)  # (rows, units)
        return self._readout(embedded, h, mapped[:, width:], training), alpha, [h, c]

    def call(self, inputs: Tensor, training: bool | None = None) -> Any:
        """Teacher forcing: features (batch, cells, C), tokens (batch, T) → logits (batch, T, V), α."""
        features, tokens = inputs
        embedded = self.dropout(self.embedding(tokens), training=training)  # (batch, T, E)
        keys = self.attention.project_keys(features)  # (batch, cells, A)
        state = self._initial_state(features)

        def body(carry: Tensor, embedded_t: Tensor) -> Any:
            # keras.ops.scan stacks outputs shaped like the carry, so the carry holds them too.
            h, context, alpha, (_, c) = self._recur(embedded_t, carry[:2], features, keys)
            outputs = [h, c, context, alpha]
            return outputs, outputs

        batch = ops.shape(features)[0]
        first = [*state, ops.zeros((batch, features.shape[-1])), ops.zeros((batch, features.shape[1]))]
        time_major = ops.transpose(embedded, (1, 0, 2))  # (T, batch, E)
        _, (h, _, context, alpha) = ops.scan(body, first, time_major)  # (T, batch, ·) each
        h, context, alpha = (ops.transpose(x, (1, 0, 2)) for x in (h, context, alpha))  # (batch, T, ·)
        return self._readout(embedded, h, self.out_z(context), training), alpha

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "embedding_dim": self.embedding_dim, "units": self.units,
                "attention_units": self.attention_units, "dropout": self.dropout_rate}
