"""The search operations of captioner.decoding.arrays in TensorFlow, traced into the Keras path's graphs."""

from __future__ import annotations

from typing import Any

import tensorflow as tf


class TensorFlowOps:
    """The search operations (arrays.ArrayOps) on tensors; loops over `steps` become graph while-loops."""

    @staticmethod
    def constant(value: Any, dtype: str = "float32") -> tf.Tensor:
        return tf.constant(value, dtype)

    @staticmethod
    def zeros(shape: list[Any], dtype: str = "float32") -> tf.Tensor:
        return tf.zeros(shape, dtype)

    @staticmethod
    def fill(shape: list[Any], value: Any, dtype: str = "float32") -> tf.Tensor:
        return tf.fill(shape, tf.constant(value, dtype))

    @staticmethod
    def rows(x: tf.Tensor) -> tf.Tensor:
        """The length of the first (batch) axis, known only when the graph runs."""
        return tf.shape(x)[0]

    @staticmethod
    def steps(n: int) -> tf.Tensor:
        return tf.range(n)

    @staticmethod
    def cast(x: Any, dtype: str) -> tf.Tensor:
        return tf.cast(x, dtype)

    @staticmethod
    def all(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_all(x)

    @staticmethod
    def any(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_any(x)

    @staticmethod
    def reduce_max(x: tf.Tensor, axis: int) -> tf.Tensor:
        return tf.reduce_max(x, axis)

    @staticmethod
    def where(condition: tf.Tensor, x: Any, y: Any) -> tf.Tensor:
        return tf.where(condition, x, y)

    @staticmethod
    def reshape(x: tf.Tensor, shape: list[Any]) -> tf.Tensor:
        return tf.reshape(x, shape)

    @staticmethod
    def concat(arrays: list[Any], axis: int) -> tf.Tensor:
        return tf.concat(arrays, axis)

    @staticmethod
    def tile(x: tf.Tensor, multiples: list[Any]) -> tf.Tensor:
        return tf.tile(x, multiples)

    @staticmethod
    def repeat(x: tf.Tensor, copies: int) -> tf.Tensor:
        return tf.repeat(x, copies, axis=0)  # (rows * copies, ...)

    @staticmethod
    def arange(n: Any) -> tf.Tensor:
        return tf.range(n)

    @staticmethod
    def write(x: tf.Tensor, t: Any, values: tf.Tensor, axis: int = 1) -> tf.Tensor:
        """x with `values` written at index t of `axis`, where x is still zero (a one-hot product: static shapes)."""
        at_t = tf.reshape(tf.one_hot(t, x.shape[axis], dtype=x.dtype), [-1] + [1] * (x.shape.rank - axis - 1))
        return x + tf.expand_dims(values, axis) * at_t  # at_t (T, 1, ...) broadcasts over the axes after `axis`

    @staticmethod
    def log_softmax(logits: tf.Tensor) -> tf.Tensor:
        return tf.nn.log_softmax(logits)

    @staticmethod
    def argmax(x: tf.Tensor) -> tf.Tensor:
        return tf.argmax(x, axis=-1, output_type=tf.int32)

    @staticmethod
    def categorical(log_probs: tf.Tensor) -> tf.Tensor:
        return tf.random.categorical(log_probs, 1, dtype=tf.int32)[:, 0]  # (rows,)

    @staticmethod
    def pick(x: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
        """x (rows, n) at index (rows,) → (rows,)."""
        return tf.gather(x, index, batch_dims=1)

    @staticmethod
    def take_column(x: tf.Tensor, column: Any) -> tf.Tensor:
        return tf.gather(x, column, axis=1)

    @staticmethod
    def gather_beams(x: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
        """x (batch, beams, ...) indexed by index (batch, k) → (batch, k, ...)."""
        return tf.gather(x, index, batch_dims=1)

    @staticmethod
    def take_rows(x: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
        return tf.ensure_shape(tf.gather(x, rows), x.shape)  # a graph loop variable keeps its static shape

    @staticmethod
    def lookup(table: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
        """A (V,) table's entries for a tensor of token ids, in the ids' shape."""
        return tf.gather(table, ids)

    @staticmethod
    def top_k(x: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
        values, indices = tf.math.top_k(x, k)
        return values, indices

    @staticmethod
    def lower_at(x: tf.Tensor, tokens: tf.Tensor, hits: tf.Tensor, value: float) -> tf.Tensor:
        """x (rows, depth) with x[row, tokens[row, j]] lowered to at most `value` wherever hits[row, j]."""
        row_ids = tf.broadcast_to(tf.range(tf.shape(tokens)[0])[:, None], tf.shape(tokens))  # tokens, hits (rows, n)
        indices = tf.stack([row_ids, tokens], -1)  # (rows, n, 2)
        return tf.tensor_scatter_nd_min(x, indices, tf.where(hits, value, float("inf")))


TF = TensorFlowOps()
