"""On-disk feature cache: each image is encoded once, into memory-mapped float16 shards.

Layout under <root>/<encoder>-<size>/ (<encoder>-<size>-mirrored/ for the features of the photos
mirrored left to right, for flip augmentation; a `-classes` suffix for the ImageNet probabilities of
encoders with a classifier): one shard per extraction job, `<id>.npy` (rows of
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
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from captioner.atomic import atomic_path
from captioner.data.images import Failure, load_batches
from captioner.errors import CaptionerError


class PixelEncoder(Protocol):
    """An image encoder as the cache and the captioners use it: a Keras CNN (features.encoders.ImageEncoder) or an
    exported one (portable.model.ExportedEncoder)."""

    name: str

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) the encoder takes, e.g. (224, 224)."""

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Rows and columns of the feature grid, e.g. (7, 7)."""

    classifier: bool  # whether encode_and_classify gives ImageNet probabilities

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (n, height, width, 3) → feature grids (n, cells, channels)."""

    def encode_and_classify(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Feature grids and, from the same pass, ImageNet probabilities (n, 1000), or None without a classifier."""


def image_key(path: str | os.PathLike) -> str:
    """Cache key of an image file: its absolute path."""
    return str(Path(path).resolve())


def _atomic_save(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, ".npy") as partial:  # np.save adds .npy to a name without it
        np.save(partial, array)


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
    """Encoder features for image files, extracted once and read back by image path.

    mirrored=True: the features of each photo mirrored left to right, kept apart from the originals.
    """

    def __init__(self, root: str | os.PathLike, encoder_name: str, image_size: int, mirrored: bool = False,
                 classes: bool = False):
        self.mirrored = mirrored
        self.root, self.encoder_name, self.image_size = Path(root), encoder_name, image_size
        suffix = ("-mirrored" if mirrored else "") + ("-classes" if classes else "")
        self.dir = self.root / f"{encoder_name}-{image_size}{suffix}"
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

    def shard(self, paths: Sequence[str | os.PathLike]) -> ShardWriter | None:
        """The extraction job for the images not cached yet (resumed if it was interrupted), or None."""
        todo = self.missing(paths)
        return ShardWriter(self, todo) if todo else None

    def extract(self, paths: Sequence[str | os.PathLike], encoder: PixelEncoder,
                batch_size: int = 32, progress: bool = True) -> list[Failure]:
        """Encode every image not cached yet; returns the images that could not be read."""
        job = self.shard(paths)
        if job is None:
            return []
        failures: list[Failure] = []
        # The classifier's probabilities, from the same pass, go to a companion cache with the same shards.
        classes = ShardWriter(self.class_cache(), job.todo) if encoder.classifier else None
        bar = tqdm(total=len(job.rows_left), desc=f"Extracting {encoder.name} features",
                   unit="img", disable=not progress)
        for rows, images, failed in load_batches([job.todo[r] for r in job.rows_left], encoder.image_size,
                                                 batch_size):
            failures.extend(failed)
            if images is not None:
                if self.mirrored:
                    images = images[:, :, ::-1]  # (batch, height, width, 3), columns reversed
                grids, probabilities = encoder.encode_and_classify(images)  # (batch, cells, channels), (batch, 1000)
                if classes is not None and probabilities is not None:
                    classes.write(job.rows_left[rows], probabilities)
                job.write(job.rows_left[rows], grids)
            bar.update(len(rows) + len(failed))
        bar.close()
        job.close()
        if classes is not None:
            classes.close()
        return failures

    def class_cache(self) -> FeatureCache:
        """The cache of the ImageNet class probabilities (1000 a photo) of this cache's photos."""
        return FeatureCache(self.root, self.encoder_name, self.image_size, self.mirrored, classes=True)

    def locations(self, paths: Sequence[str | os.PathLike]) -> list[tuple[Path, int]]:
        """(shard file, row) of each image's features, in the order given."""
        index = self.index()
        keys = [image_key(p) for p in paths]
        absent = [k for k in keys if k not in index]
        if absent:
            raise CaptionerError(f"{len(absent)} images have no cached features (e.g. {absent[0]}); "
                                 f"run `captioner extract` first.")
        return [(self.dir / f"{index[k][0]}.npy", index[k][1]) for k in keys]

    def table(self, paths: Sequence[str | os.PathLike]) -> FeatureTable:
        """The given images' features as a FeatureTable (rows in the order given), read on demand."""
        return FeatureTable(self.locations(paths))

    def load(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        """Features for the given images, (n, cells, channels) float16, in the order given."""
        table = self.table(paths)
        return table[:] if len(table) else np.zeros((0, 0, 0), np.float16)


class ShardWriter:
    """One extraction job: the shard of `todo`'s rows, written by this process alone.

    Rows are flushed before the done mask is replaced, so however many workers encode the images,
    one writer keeps the shard consistent, and an interrupted job resumes at `rows_left`.
    """

    def __init__(self, cache: FeatureCache, todo: list[Path]):
        self.cache, self.todo = cache, todo
        keys = [image_key(p) for p in todo]
        shard = hashlib.sha1("\n".join(keys).encode()).hexdigest()[:12]
        cache.dir.mkdir(parents=True, exist_ok=True)
        self.data_path, self.done_path = cache.dir / f"{shard}.npy", cache.dir / f"{shard}.done.npy"
        self.features: np.memmap | None = None  # created by the first write, which knows the grid's shape
        if self.data_path.is_file() and self.done_path.is_file():  # resume an interrupted job
            self.features = np.lib.format.open_memmap(self.data_path, mode="r+")
            self.done = np.load(self.done_path)
        else:
            self.done = np.zeros(len(keys), bool)
            _atomic_save(self.done_path, self.done)
            (cache.dir / f"{shard}.json").write_text(json.dumps({"keys": keys}))
        self.rows_left = np.flatnonzero(~self.done)

    def write(self, rows: np.ndarray, features: np.ndarray) -> None:
        """Store the grids of these rows of `todo` (n, cells, channels) and mark them done."""
        if self.features is None:
            self.features = np.lib.format.open_memmap(self.data_path, mode="w+", dtype=np.float16,
                                                      shape=(len(self.todo), *features.shape[1:]))
        self.features[rows] = features.astype(np.float16)
        self.features.flush()
        self.done[rows] = True
        _atomic_save(self.done_path, self.done)

    def close(self) -> None:
        """Release the memory map; the cache's index is read again on next use."""
        self.features = None
        self.cache._index = None
