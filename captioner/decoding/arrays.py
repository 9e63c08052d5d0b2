"""The array operations a search needs, for NumPy and for TensorFlow: one search written once runs on both.

The searches in captioner.decoding.loops call only the methods of `ArrayOps` (and Python operators), so the
same code is traced into one compiled TensorFlow graph for a Keras decoder and runs eagerly in NumPy
for an exported decoder, where TensorFlow is never imported. `for t in ops.steps(n)` is a Python
loop in NumPy and, under autograph, a graph while-loop in TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

import numpy as np

Array = Any  # np.ndarray or tf.Tensor


def nest_map(fn: Callable[[Array], Array], nest: Any) -> Any:
    """fn applied to every array of a nest of dicts, lists and tuples, keeping its structure."""
    if isinstance(nest, dict):
        return {key: nest_map(fn, value) for key, value in nest.items()}
    if isinstance(nest, (list, tuple)):
        return type(nest)([nest_map(fn, value) for value in nest])
    return fn(nest)


class ArrayOps(Protocol):
    """The operations a search may use, whichever library runs it: NumpyOps below, TensorFlowOps (tf_arrays)."""

    def constant(self, value: Any, dtype: str = "float32") -> Array: ...
    def zeros(self, shape: list[Any], dtype: str = "float32") -> Array: ...
    def fill(self, shape: list[Any], value: Any, dtype: str = "float32") -> Array: ...
    def rows(self, x: Array) -> Any:
        """The length of the first (batch) axis: an int in NumPy, a scalar tensor in a graph."""
    def steps(self, n: int) -> Iterable[Any]:
        """0…n-1: a Python range in NumPy, a graph while-loop under autograph."""
    def cast(self, x: Any, dtype: str) -> Array: ...
    def all(self, x: Array) -> Any: ...
    def any(self, x: Array) -> Any: ...
    def reduce_max(self, x: Array, axis: int) -> Array: ...
    def where(self, condition: Array, x: Any, y: Any) -> Array: ...
    def reshape(self, x: Array, shape: list[Any]) -> Array: ...
    def concat(self, arrays: list[Any], axis: int) -> Array: ...
    def tile(self, x: Array, multiples: list[Any]) -> Array: ...
    def repeat(self, x: Array, copies: int) -> Array: ...
    def arange(self, n: Any) -> Array: ...
    def write(self, x: Array, t: Any, values: Array, axis: int = 1) -> Array: ...
    def log_softmax(self, logits: Array) -> Array: ...
    def argmax(self, x: Array) -> Array: ...
    def categorical(self, log_probs: Array) -> Array: ...
    def pick(self, x: Array, index: Array) -> Array: ...
    def take_column(self, x: Array, column: Any) -> Array: ...
    def gather_beams(self, x: Array, index: Array) -> Array: ...
    def take_rows(self, x: Array, rows: Array) -> Array: ...
    def lookup(self, table: Array, ids: Array) -> Array: ...
    def top_k(self, x: Array, k: int) -> tuple[Array, Array]: ...
    def lower_at(self, x: Array, tokens: Array, hits: Array, value: float) -> Array: ...


class NumpyOps:
    """The search operations (ArrayOps) in NumPy, float32 throughout: the portable runtime's."""

    def __init__(self, seed: int | None = None):
        self.rng = np.random.default_rng(seed)

    @staticmethod
    def constant(value: Any, dtype: str = "float32") -> np.ndarray:
        return np.asarray(value, dtype)

    @staticmethod
    def zeros(shape: list[Any], dtype: str = "float32") -> np.ndarray:
        return np.zeros(shape, dtype)

    @staticmethod
    def fill(shape: list[Any], value: Any, dtype: str = "float32") -> np.ndarray:
        return np.full(shape, value, dtype)

    @staticmethod
    def rows(x: np.ndarray) -> int:
        """The length of the first (batch) axis."""
        return int(x.shape[0])

    @staticmethod
    def steps(n: int) -> range:
        return range(n)

    @staticmethod
    def cast(x: Any, dtype: str) -> np.ndarray:
        return np.asarray(x, dtype)

    @staticmethod
    def all(x: np.ndarray) -> bool:
        return bool(x.all())

    @staticmethod
    def any(x: np.ndarray) -> bool:
        return bool(x.any())

    @staticmethod
    def reduce_max(x: np.ndarray, axis: int) -> Array:
        return x.max(axis)

    @staticmethod
    def where(condition: np.ndarray, x: Any, y: Any) -> Array:
        return np.where(condition, x, y)  # Python scalars take the array's dtype (NumPy 2)

    @staticmethod
    def reshape(x: np.ndarray, shape: list[Any]) -> np.ndarray:
        return np.reshape(x, shape)

    @staticmethod
    def concat(arrays: list[Any], axis: int) -> np.ndarray:
        return np.concatenate(arrays, axis)

    @staticmethod
    def tile(x: np.ndarray, multiples: list[Any]) -> np.ndarray:
        return np.tile(x, multiples)

    @staticmethod
    def repeat(x: np.ndarray, copies: int) -> np.ndarray:
        return np.repeat(x, copies, axis=0)  # (rows * copies, ...)

    @staticmethod
    def arange(n: int) -> np.ndarray:
        return np.arange(n, dtype=np.int32)

    @staticmethod
    def write(x: np.ndarray, t: int, values: np.ndarray, axis: int = 1) -> np.ndarray:
        """x with `values` written at index t of `axis`, where x is still zero. In place: x must be the search's own
        array (fresh, or written only by the search), which saves the one-hot products TensorFlow needs."""
        x[(slice(None),) * axis + (t,)] = values
        return x

    @staticmethod
    def log_softmax(logits: np.ndarray) -> Array:
        shifted = logits - logits.max(-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))

    @staticmethod
    def argmax(x: np.ndarray) -> Array:
        return np.argmax(x, -1).astype(np.int32)

    def categorical(self, log_probs: np.ndarray) -> Array:
        """One token per row drawn from the distribution exp(log_probs) (the Gumbel-max trick)."""
        return np.argmax(log_probs + self.rng.gumbel(size=log_probs.shape), -1).astype(np.int32)

    @staticmethod
    def pick(x: np.ndarray, index: np.ndarray) -> Array:
        """x (rows, n) at index (rows,) → (rows,)."""
        return x[np.arange(len(x)), index]

    @staticmethod
    def take_column(x: np.ndarray, column: int) -> np.ndarray:
        return x[:, column]

    @staticmethod
    def gather_beams(x: np.ndarray, index: np.ndarray) -> Array:
        """x (batch, beams, ...) indexed by index (batch, k) → (batch, k, ...)."""
        return x[np.arange(len(x))[:, None], index]

    @staticmethod
    def take_rows(x: np.ndarray, rows: np.ndarray) -> Array:
        return x[rows]

    @staticmethod
    def lookup(table: np.ndarray, ids: np.ndarray) -> Array:
        """A (V,) table's entries for an array of token ids, in the ids' shape."""
        return table[ids]

    @staticmethod
    def top_k(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k largest of (batch, n), largest first, ties to the lower index (as tf.math.top_k)."""
        rows = np.arange(len(x))
        if x.shape[-1] <= 4 * k:  # a short row: sort it
            index = np.argsort(-x, -1, kind="stable")[:, :k].astype(np.int32)  # (batch, k), best first
            return x[rows[:, None], index], index
        # A long row (k beams × V words): k argmax passes, each taking the first of equal values, beat a
        # partition of the row for the few k a beam search asks for (2.5x at k=6 over 3 × 2,540 words).
        work, index = x.copy(), np.empty((len(x), k), np.int32)
        for j in range(k):
            index[:, j] = work.argmax(-1)
            work[rows, index[:, j]] = -np.inf
        return x[rows[:, None], index], index

    @staticmethod
    def lower_at(x: np.ndarray, tokens: np.ndarray, hits: np.ndarray, value: float) -> np.ndarray:
        """x (rows, depth) with x[row, tokens[row, j]] lowered to at most `value` wherever hits[row, j]."""
        rows, columns = np.nonzero(hits)  # tokens, hits (rows, n)
        cells = rows, tokens[rows, columns]
        out = x.copy()
        out[cells] = np.minimum(out[cells], np.float32(value))  # repeated cells get the same value
        return out


NUMPY = NumpyOps()


def ops_for(array: Array) -> ArrayOps:
    """The operations for an array's library: NUMPY, or TensorFlow's for a tf.Tensor (imported only then)."""
    if type(array).__module__.startswith("tensorflow"):
        from captioner.decoding.tf_arrays import TF

        return TF
    return NUMPY
