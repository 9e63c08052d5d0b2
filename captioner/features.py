"""On-disk feature cache: each image is encoded once, into memory-mapped float16 shards.

Layout under <root>/<encoder>-<size>/: one shard per extraction job, `<id>.npy` (rows of
(cells, channels) features), `<id>.json` (the image keys of its rows) and `<id>.done.npy` (which
rows are written). The done mask is replaced atomically after the rows are flushed, so an
interrupted run resumes where it stopped and never trusts a half-written row.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from captioner.encoders import ImageEncoder
from captioner.errors import CaptionerError
from captioner.images import Failure, load_batches


def image_key(path: str | os.PathLike) -> str:
    """Cache key of an image file: its absolute path."""
    return str(Path(path).resolve())


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


class FeatureCache:
    """Encoder features for image files, extracted once and read back by image path."""

    def __init__(self, root: str | os.PathLike, encoder_name: str, image_size: int):
        self.dir = Path(root) / f"{encoder_name}-{image_size}"
        self._index: dict[str, tuple[str, int]] | None = None
        self._shards: dict[str, np.ndarray] = {}

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
                features[target] = encoder(images).astype(np.float16)  # (batch, 49, 1280)
                features.flush()
                done[target] = True
                _atomic_save(done_path, done)
            bar.update(len(rows) + len(failed))
        bar.close()
        del features
        self._index = None
        self._shards.pop(shard, None)
        return failures

    def load(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        """Features for the given images, (n, cells, channels) float16, in the order given."""
        index = self.index()
        keys = [image_key(p) for p in paths]
        absent = [k for k in keys if k not in index]
        if absent:
            raise CaptionerError(f"{len(absent)} images have no cached features (e.g. {absent[0]}); "
                                 f"run `captioner extract` first.")
        rows = []
        for key in keys:
            shard, row = index[key]
            if shard not in self._shards:
                self._shards[shard] = np.load(self.dir / f"{shard}.npy", mmap_mode="r")
            rows.append(self._shards[shard][row])
        return np.stack(rows) if rows else np.zeros((0, 0, 0), np.float16)
