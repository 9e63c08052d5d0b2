"""Read the tensors of a legacy (pre-zip) PyTorch checkpoint without PyTorch and without running its code.

A `.pth` file of that format is a series of pickles followed by the raw storages. Unpickling an
untrusted pickle can run any code, so the reader resolves only the four globals a state dict of
tensors needs (an OrderedDict, the tensor-rebuilding function and two storage types) to local
stand-ins, and refuses every other global with a one-line error before anything is executed.
"""

from __future__ import annotations

import os
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from captioner.errors import WeightsError

_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER of the legacy format
_STORAGE_DTYPES = {"FloatStorage": np.float32, "LongStorage": np.int64, "HalfStorage": np.float16,
                   "DoubleStorage": np.float64, "IntStorage": np.int32}


@dataclass
class _Storage:
    """A storage the main pickle refers to by key; its bytes come after the pickles."""

    dtype: type
    key: str
    size: int
    data: np.ndarray | None = None


@dataclass
class _TensorRef:
    """A tensor as the pickle describes it: a strided view into a storage."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def array(self) -> np.ndarray:
        base = self.storage.data
        assert base is not None  # filled in before any tensor is materialised
        if not self.shape:
            return base[self.offset].copy()
        itemsize = base.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(base[self.offset:], self.shape,
                                               [s * itemsize for s in self.stride], writeable=False)
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(storage: _Storage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...],
                       requires_grad: bool = False, hooks: Any = None, metadata: Any = None) -> _TensorRef:
    return _TensorRef(storage, offset, tuple(shape), tuple(stride))


class _StorageType:
    """Stand-in for torch.FloatStorage and friends: only its dtype matters."""

    def __init__(self, name: str):
        self.dtype = _STORAGE_DTYPES[name]


class _RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that knows only the globals of a tensor state dict."""

    def __init__(self, file: IO[bytes], source: Path):
        super().__init__(file)
        self.source = source
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise WeightsError(f"{self.source}: refusing to load a checkpoint that asks for {module}.{name}; only "
                           f"plain tensors are accepted. Use the file from the weights package it came with.")

    def persistent_load(self, pid: Any) -> _Storage:
        # ("storage", storage type, key, device, element count, view metadata: None unless a storage view)
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and pid[5] is None):
            raise WeightsError(f"{self.source}: unexpected persistent id in checkpoint; not a tensor state dict.")
        _, kind, key, _device, size, _view = pid
        return self.storages.setdefault(key, _Storage(kind.dtype, key, int(size)))


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a legacy-format PyTorch state dict as NumPy arrays, name → array."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            magic = pickle.load(handle)  # plain ints and dicts: no globals in these three
            if magic != _MAGIC:
                raise WeightsError(f"{path}: not a legacy PyTorch checkpoint (wrong magic number).")
            pickle.load(handle)  # protocol version
            pickle.load(handle)  # sys info
            unpickler = _RestrictedUnpickler(handle, path)
            state = unpickler.load()
            keys = _RestrictedUnpickler(handle, path).load()  # the storage keys, in the order they follow
            for key in keys:
                storage = unpickler.storages[key]
                (count,) = struct.unpack("<q", handle.read(8))
                raw = handle.read(count * np.dtype(storage.dtype).itemsize)
                if count != storage.size or len(raw) != count * np.dtype(storage.dtype).itemsize:
                    raise WeightsError(f"{path}: truncated checkpoint (storage {key}); reinstall its package.")
                storage.data = np.frombuffer(raw, storage.dtype)
    except WeightsError:
        raise
    except (OSError, EOFError, pickle.UnpicklingError, struct.error, KeyError, ValueError, TypeError) as error:
        raise WeightsError(f"{path}: cannot read PyTorch checkpoint ({type(error).__name__}: {error}); "
                           f"reinstall the package that ships it.") from None
    if not isinstance(state, dict) or not all(isinstance(v, _TensorRef) for v in state.values()):
        raise WeightsError(f"{path}: not a state dict of tensors.")
    return {name: ref.array() for name, ref in state.items()}
