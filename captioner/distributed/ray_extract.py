"""Feature extraction on Ray Data: actors encode batches of images, the driver alone writes the cache.

Workers only return grids (and, for encoders with an ImageNet classifier, its probabilities); the
driver appends them to the job's shard with the same writer local extraction uses (rows flushed,
then the done mask replaced), so many workers never touch the cache files and an interrupted run
resumes at the rows not yet done.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from captioner.data.images import Failure
from captioner.distributed import chunks, ray_session
from captioner.features.cache import FeatureCache


class EncodeActor:
    """One Ray actor: builds the CNN once, then turns batches of (row, path) into feature grids."""

    def __init__(self, encoder: str, weights: str | None):
        from captioner.features.encoders import ImageEncoder

        self.encoder = ImageEncoder(encoder, weights)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rows of (shard rows, paths) → one row per image: its shard row, grid (zeros if unreadable), why not."""
        from captioner.data.images import load_batches

        rows: list[int] = []
        grids: list[np.ndarray] = []
        classes: list[np.ndarray] = []
        reasons: list[str] = []
        empty = np.zeros(self.encoder.feature_shape, np.float16)
        no_classes = np.zeros(1000 if self.encoder.classifier else 0, np.float16)
        for shard_rows, paths in zip(batch["rows"], batch["paths"], strict=True):
            for loaded, images, failures in load_batches([Path(p) for p in paths], self.encoder.image_size,
                                                         len(paths)):
                if images is not None:
                    rows.extend(shard_rows[loaded])
                    grid, probabilities = self.encoder.encode_and_classify(images)  # (batch, cells, channels)
                    grids.extend(grid.astype(np.float16))
                    classes.extend([no_classes] * len(loaded) if probabilities is None
                                   else probabilities.astype(np.float16))  # (batch, 1000)
                    reasons.extend([""] * len(loaded))
                position = {str(p): i for i, p in enumerate(paths)}
                for failure in failures:
                    rows.append(shard_rows[position[str(failure.path)]])
                    grids.append(empty)
                    classes.append(no_classes)
                    reasons.append(failure.reason)
        return {"row": np.array(rows, np.int64), "grid": np.stack(grids), "classes": np.stack(classes),
                "reason": np.array(reasons, dtype=object)}


def extract_ray(cache: FeatureCache, paths: Sequence[str | os.PathLike], encoder: str,
                weights: str | os.PathLike | None = "imagenet", batch_size: int = 32, workers: int = 2,
                address: str | None = None, cpus_per_worker: float = 1.0, progress: bool = True) -> list[Failure]:
    """Encode every image `cache` does not hold yet on `workers` Ray actors; returns the unreadable ones."""
    from captioner.features.cache import ShardWriter
    from captioner.features.encoders import get_backbone, resolve_weights

    backbone = get_backbone(encoder)
    resolved = resolve_weights(backbone, weights)  # a missing file fails here, not in every actor
    job = cache.shard(paths)
    if job is None:
        return []
    classes = ShardWriter(cache.class_cache(), job.todo) if backbone.classifier else None
    failures: list[Failure] = []
    work = [{"rows": rows, "paths": [str(job.todo[r]) for r in rows]}
            for rows in chunks(list(job.rows_left), batch_size)]
    with ray_session(address, num_cpus=max(os.cpu_count() or 1, int(workers * cpus_per_worker))) as ray:
        encoded = ray.data.from_items(work, override_num_blocks=len(work)).map_batches(
            EncodeActor, batch_size=1, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=cpus_per_worker, fn_constructor_args=(encoder, resolved))
        with tqdm(total=len(job.rows_left), desc=f"Extracting {encoder} features on Ray", unit="img",
                  disable=not progress) as bar:
            for block in encoded.iter_batches(batch_size=None, batch_format="numpy"):
                ok = block["reason"] == ""
                if ok.any():
                    if classes is not None:
                        classes.write(block["row"][ok], block["classes"][ok])
                    job.write(block["row"][ok], block["grid"][ok])
                failures.extend(Failure(job.todo[int(r)], reason)
                                for r, reason in zip(block["row"][~ok], block["reason"][~ok], strict=True))
                bar.update(len(ok))
    job.close()
    if classes is not None:
        classes.close()
    return failures
