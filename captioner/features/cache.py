"""On-disk feature cache: each image is encoded once, into memory-mapped float16 shards.

Layout under <root>/<encoder>-<size>/: one shard per extraction job, `<id>.npy` (rows of
(cells, channels) features), `<id>.json` (the image keys of its rows) and `<id>.done.npy` (which
rows are written). The done mask is replaced atomically after the rows are flushed, so an
interrupted run resumes where it stopped and never trusts a half-written row.

Training reads the rows it needs batch by batch (`FeatureCache.table`), so a dataset of any size
trains in the memory of one batch: no grid is held in memory longer than its batch.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from captioner.data.images import Failure, load_batches
from captioner.errors import CaptionerError

if TYPE_CHECKING:  # the cache itself needs no TensorFlow
    from captioner.features.encoders import ImageEncoder


def image_key(path: str | os.PathLike) -> str:
    """Cache key of an image file: its absolute path."""
    return str(Path(path).resolve())


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


class FeatureTable:
    """The cached grids of a list of images, read from disk on demand: table[rows] is
    (len(rows), cells, channels) float16, for an int array, a slice or a list of rows.

    Rows are read with pread from the shard files, which keeps the data in the kernel's page cache
    rather than in the process: memory does not grow with the dataset, only with the batch.
    """

    def __init__(self, locations: list[tuple[Path, int]]):
        self._files: dict[Path, tuple[int, int]] = {}  # shard → (file descriptor, offset of row 0)
        self._rows = []
        for shard, row in locations:
            if shard not in self._files:
                self._files[shard] = self._open(shard)
            self._rows.append((self._files[shard][0], self._files[shard][1], row))
        self.dtype = np.dtype(np.float16)
        self.row_shape: tuple[int, ...] = self._row_shape if locations else (0, 0)
        self._row_bytes = int(np.prod(self.row_shape)) * self.dtype.itemsize

    def _open(self, shard: Path) -> tuple[int, int]:
        with shard.open("rb") as handle:
            major, _ = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(handle)
            offset = handle.tell()
        if fortran or dtype != np.float16:
            raise CaptionerError(f"{shard}: not a feature shard written by this version; delete the cache.")
        self._row_shape = tuple(shape[1:])
        return os.open(shard, os.O_RDONLY), offset

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self._rows), *self.row_shape)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, rows) -> np.ndarray:
        index = np.arange(len(self))[rows] if isinstance(rows, slice) else np.asarray(rows).reshape(-1)
        out = np.empty((len(index), *self.row_shape), self.dtype)
        for i, row in enumerate(index):
            fd, offset, position = self._rows[int(row)]
            out[i] = np.frombuffer(os.pread(fd, self._row_bytes, offset + position * self._row_bytes),
                                   self.dtype).reshape(self.row_shape)
        return out

    def __del__(self) -> None:
        for fd, _ in getattr(self, "_files", {}).values():
            os.close(fd)


class FeatureCache:
    """Encoder features for image files, extracted once and read back by image path."""

    def __init__(self, root: str | os.PathLike, encoder_name: str, image_size: int):
        self.dir = Path(root) / f"{encoder_name}-{image_size}"
        self._index: dict[str, tuple[str, int]] | None = None

    def _shard_ids(self) -> list[str]:
        return sorted(p.stem for p in self.dir.glob("*.json")) if self.dir.is_dir() else []

    def index(self) -> dict[str, tuple[str, int]]:
        """Image key → (shard, row) for every row that is completely written."""
        if self._index is None:
            self._index = {}
            for shard in self._shard_ids():
                keys = json.loads((self.dir / f"{shard}.json").read_text())["keys"]
                done_path = self.dir / f"{shard}.done.npy"
                done = np.load(done_path) if done_path.is_file() else np.zeros(len(keys), bool)
                for row in np.flatnonzero(done):
                    self._index.setdefault(keys[row], (shard, int(row)))
        return self._index

    def missing(self, paths: Sequence[str | os.PathLike]) -> list[Path]:
        index = self.index()
        return [Path(p) for p in dict.fromkeys(paths) if image_key(p) not in index]

    def extract(self, paths: Sequence[str | os.PathLike], encoder: ImageEncoder,
                batch_size: int = 32, progress: bool = True) -> list[Failure]:
        """Encode every image not cached yet; returns the images that could not be read."""
        todo = self.missing(paths)
        if not todo:
            return []
        keys = [image_key(p) for p in todo]
        shard = hashlib.sha1("\n".join(keys).encode()).hexdigest()[:12]
        self.dir.mkdir(parents=True, exist_ok=True)
        data_path, done_path = self.dir / f"{shard}.npy", self.dir / f"{shard}.done.npy"
        shape = (len(keys), *encoder.feature_shape)
        if data_path.is_file() and done_path.is_file():  # resume an interrupted job
            features = np.lib.format.open_memmap(data_path, mode="r+")
            done = np.load(done_path)
        else:
            features = np.lib.format.open_memmap(data_path, mode="w+", dtype=np.float16, shape=shape)
            done = np.zeros(len(keys), bool)
            _atomic_save(done_path, done)
            (self.dir / f"{shard}.json").write_text(json.dumps({"keys": keys}))
        rows_left = np.flatnonzero(~done)
        failures: list[Failure] = []
        bar = tqdm(total=len(rows_left), desc=f"Extracting {encoder.name} features",
                   unit="img", disable=not progress)
        for rows, images, failed in load_batches([todo[r] for r in rows_left], encoder.image_size,
                                                 batch_size):
            failures.extend(failed)
            if images is not None:
                target = rows_left[rows]
                features[target] = encoder(images).astype(np.float16)  # (batch, cells, channels)
                features.flush()
                done[target] = True
                _atomic_save(done_path, done)
            bar.update(len(rows) + len(failed))
        bar.close()
        del features
        self._index = None
        return failures

    def table(self, paths: Sequence[str | os.PathLike]) -> FeatureTable:
        """The given images' features as a FeatureTable (rows in the order given), read on demand."""
        index = self.index()
        keys = [image_key(p) for p in paths]
        absent = [k for k in keys if k not in index]
        if absent:
            raise CaptionerError(f"{len(absent)} images have no cached features (e.g. {absent[0]}); "
                                 f"run `captioner extract` first.")
        return FeatureTable([(self.dir / f"{index[k][0]}.npy", index[k][1]) for k in keys])

    def load(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        """Features for the given images, (n, cells, channels) float16, in the order given."""
        table = self.table(paths)
        return table[:] if len(table) else np.zeros((0, 0, 0), np.float16)
