"""Batch captioning on Ray Data: a pool of actors, each loading the model once, captions image files
into the same CSV/JSONL rows as local batch mode, with the same resume rule and bad-file report.

Each dataset row is one batch of paths, cut exactly as local mode cuts them, so every actor call
encodes and decodes the same batches through the same compiled programs: the same photos get the
same captions and scores, byte for byte. The driver appends each block's rows as it arrives.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from captioner.data.images import Failure
from captioner.decoding.options import DEFAULT_DECODING, DecodeOptions
from captioner.distributed import chunks, ray_session
from captioner.serving.batch import BatchReport, caption_record, pending

MAX_BLOCKS = 20_000  # beyond this, several batches share a dataset block (written together)


class CaptionActor:
    """One Ray actor: loads the model once with `captioner.load(*load_args)`, then captions batches."""

    def __init__(self, load_args: tuple, options: DecodeOptions):
        import captioner

        self.model = captioner.load(*load_args)
        self.options = options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rows of path lists → one row per image: its path, its record as JSON ('' if unreadable), why not."""
        images, records, reasons = [], [], []
        for paths in batch["paths"]:
            paths = [str(p) for p in paths]
            for captioned, failures in self.model.caption_files(paths, self.options, len(paths)):
                for path, caption in captioned:
                    images.append(str(path))
                    records.append(json.dumps(caption_record(str(path), caption), ensure_ascii=False))
                    reasons.append("")
                for failure in failures:
                    images.append(str(failure.path))
                    records.append("")
                    reasons.append(failure.reason)
        return {"image": np.array(images, dtype=object), "record": np.array(records, dtype=object),
                "reason": np.array(reasons, dtype=object)}


def caption_to_file_ray(load_args: tuple, paths: Sequence[str | os.PathLike], output: str | os.PathLike,
                        options: DecodeOptions = DEFAULT_DECODING, batch_size: int = 32, workers: int = 2,
                        address: str | None = None, cpus_per_worker: float = 1.0,
                        progress: bool = True) -> BatchReport:
    """Caption image files into a CSV or JSONL file on Ray, `workers` actors each holding the model
    (`captioner.load(*load_args)`), skipping the images the file already holds.

    `address`: None starts a local cluster for the run; "auto" or "ray://host:10001" joins a running
    one (its nodes must see the image files and have captioner installed). Rows are written in the
    order batches finish; unreadable files are returned with the reason and tried again on a re-run.
    """
    out, todo, report = pending(paths, output)
    if not todo:
        return report
    batches = chunks([str(p) for p in todo], batch_size)
    per_block = -(-len(batches) // MAX_BLOCKS)
    with ray_session(address, num_cpus=max(os.cpu_count() or 1, int(workers * cpus_per_worker))) as ray:
        dataset = ray.data.from_items([{"paths": b} for b in batches],
                                      override_num_blocks=-(-len(batches) // per_block))
        captioned = dataset.map_batches(CaptionActor, batch_size=1, batch_format="numpy",
                                        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus_per_worker,
                                        fn_constructor_args=(tuple(load_args), options))
        with tqdm(total=len(todo), desc="Captioning on Ray", unit="img", disable=not progress) as bar:
            for block in captioned.iter_batches(batch_size=None, batch_format="numpy"):
                ok = block["reason"] == ""
                out.append([json.loads(record) for record in block["record"][ok]])
                report.captioned += int(ok.sum())
                report.failures.extend(Failure(Path(image), reason)
                                       for image, reason in zip(block["image"][~ok], block["reason"][~ok],
                                                                strict=True))
                bar.update(len(ok))
    return report
