"""The command line's engine flags (--engine, --workers, --address, --strategy) and what they run."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from captioner.errors import CaptionerError

if TYPE_CHECKING:
    from captioner.data.images import Failure
    from captioner.decoding.options import DecodeOptions
    from captioner.features.cache import FeatureCache
    from captioner.serving.batch import BatchReport
    from captioner.training.config import TrainConfig
    from captioner.training.run import TrainResult


def add_engine_args(parser: argparse.ArgumentParser, training: bool = False) -> None:
    """--engine local|ray, --workers, --address (and --strategy for training)."""
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: this process (default); ray: a Ray cluster (pip install captioner[ray])")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers (default: %(default)s)")
    parser.add_argument("--address", help="Ray cluster to join ('auto' on a cluster node, ray://host:10001); "
                                          "default: start a local one for this run")
    if training:
        parser.add_argument("--strategy", choices=("none", "mirrored", "multiworker"), default="none",
                            help="tf.distribute strategy: mirrored (this machine's GPUs), multiworker (one "
                                 "process per machine, from TF_CONFIG); --engine ray implies multiworker")


def _check(args: argparse.Namespace) -> None:
    if args.workers < 1:
        raise CaptionerError("--workers must be at least 1.")


def caption_on_ray(args: argparse.Namespace, paths: Sequence[Path], options: DecodeOptions,
                   load_args: tuple) -> BatchReport:
    """`captioner caption --engine ray --output FILE`: the actors load the model, this process writes rows."""
    from captioner.distributed.ray_batch import caption_to_file_ray

    _check(args)
    return caption_to_file_ray(load_args, paths, args.output, options, args.batch_size, args.workers, args.address)


def extract(args: argparse.Namespace, cache: FeatureCache, paths: Sequence[Path]) -> list[Failure]:
    """`captioner extract`: encode into the cache here, or on Ray actors with this process as the one writer."""
    if args.engine == "ray":
        from captioner.distributed.ray_extract import extract_ray

        _check(args)
        return extract_ray(cache, paths, args.encoder, args.encoder_weights, args.batch_size, args.workers,
                           args.address)
    from captioner.features.encoders import ImageEncoder

    return cache.extract(paths, ImageEncoder(args.encoder, args.encoder_weights), args.batch_size)


def train(args: argparse.Namespace, config: TrainConfig) -> TrainResult:
    """`captioner train`: single process, under a tf.distribute strategy, or on Ray Train workers."""
    if args.engine == "ray":
        from captioner.distributed.ray_train import train_on_ray

        _check(args)
        if args.strategy not in ("none", "multiworker"):
            raise CaptionerError("--engine ray trains with --strategy multiworker (one Ray worker per replica).")
        return train_on_ray(config, args.workers, args.address)
    from captioner.training.run import train as train_here
    from captioner.training.strategy import Role, make_strategy

    return train_here(config, role=Role.of(make_strategy(args.strategy)))
