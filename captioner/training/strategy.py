"""tf.distribute for training: the strategy from its name, this process's role in the run (settled once),
and the collectives that keep every worker's callbacks in step while only the chief scores and writes.

`mirrored` splits each batch across this machine's GPUs (one replica on a CPU-only machine);
`multiworker` runs one process per machine from TF_CONFIG (set by hand, or by Ray Train), each
taking its share of every global batch, with gradients all-reduced after each step.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from captioner.errors import CaptionerError
from captioner.training.callbacks import DevScores

STRATEGIES = ("none", "mirrored", "multiworker")


def make_strategy(name: str | None) -> tf.distribute.Strategy | None:
    """The named strategy (None for plain single-process training); create it before any other TF op."""
    if name in (None, "none"):
        return None
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise CaptionerError("--strategy multiworker needs TF_CONFIG on every worker (the cluster and this "
                                 "worker's task), or --engine ray, which sets it up for each worker.")
        try:
            json.loads(os.environ["TF_CONFIG"])["cluster"]
        except (ValueError, KeyError, TypeError) as error:
            raise CaptionerError(f"TF_CONFIG is not a JSON object with a 'cluster' ({error}).") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise CaptionerError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")


def is_chief(strategy: tf.distribute.Strategy | None) -> bool:
    """Whether this process scores the dev split and writes the run's files (always, without a strategy)."""
    return strategy is None or strategy.extended.should_checkpoint


def worker_index(strategy: tf.distribute.Strategy | None) -> int:
    """This process's task index in the cluster (0 without one)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    return int(resolver.task_id or 0) if resolver is not None and resolver.task_type else 0


def is_multi_worker(strategy: tf.distribute.Strategy | None) -> bool:
    """Whether replicas live in other processes too, so workers must meet in collectives."""
    return strategy is not None and strategy.num_replicas_in_sync > len(strategy.extended.worker_devices)


def broadcast_from_chief(strategy: tf.distribute.Strategy, values: Sequence[float]) -> np.ndarray:
    """The chief's `values` on every worker: an all-reduce sum to which only replica 0 (the chief's) adds.

    Every worker must call it at the same point; it doubles as a barrier."""
    def share(local: tf.Tensor) -> tf.Tensor:
        first = tf.equal(tf.distribute.get_replica_context().replica_id_in_sync_group, 0)
        return tf.where(first, local, tf.zeros_like(local))

    @tf.function
    def all_reduce(local: tf.Tensor) -> tf.Tensor:
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(share, args=(local,)), axis=None)

    return all_reduce(tf.constant(np.asarray(values, np.float64))).numpy()  # (n,)


@dataclass(frozen=True)
class Role:
    """This process's part in a training run, settled once from the strategy: whether it is the chief (scores
    dev, writes the run's files) and whether other processes train with it (so workers meet in collectives).

    `Role()` is plain single-process training; `Role.of(strategy)` under a tf.distribute strategy.
    """

    strategy: tf.distribute.Strategy | None = None
    chief: bool = True
    multi_worker: bool = False
    index: int = 0  # this worker's task index in the cluster

    @classmethod
    def of(cls, strategy: tf.distribute.Strategy | None) -> Role:
        return cls(strategy, is_chief(strategy), is_multi_worker(strategy), worker_index(strategy))

    @property
    def replicas(self) -> int:
        """Replicas each global batch is split across (1 without a strategy)."""
        return self.strategy.num_replicas_in_sync if self.strategy is not None else 1

    def scope(self) -> contextlib.AbstractContextManager:
        """Where variables and optimizer state are made: one copy per replica under a strategy."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def share(self, values: Sequence[float]) -> np.ndarray:
        """The chief's `values` on every worker (and a barrier: each worker waits for all); alone, `values`."""
        if self.multi_worker:
            return broadcast_from_chief(self.strategy, values)
        return np.asarray(values, np.float64)

    @contextlib.contextmanager
    def workspace(self, output: Path) -> Iterator[Path]:
        """The folder this process writes its run files to: `output` on the chief; on the other workers, whose
        identical copies only keep them in step, a temporary folder removed however the run ends."""
        if self.chief:
            yield output
            return
        with tempfile.TemporaryDirectory(prefix=f"captioner-worker{self.index}-") as scratch:
            yield Path(scratch)


SINGLE_PROCESS = Role()  # plain training: this process alone, the chief


def _for_replicas(dataset: tf.data.Dataset, replicas: int) -> tf.data.Dataset:
    """Batches of at least one row per replica (a bucket's last few captions may wait an epoch), split by
    tf.distribute across the workers (rows come from memory, not files)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.filter(lambda x, y: tf.shape(y)[0] >= replicas).with_options(options)


def fit_multi_worker(trainer: keras.Model, strategy: tf.distribute.Strategy, train: tf.data.Dataset,
                     dev: tf.data.Dataset | None, epochs: int, callbacks: list[keras.callbacks.Callback],
                     log: Callable[[str], None] = print) -> None:
    """fit() for several workers: each global batch split across the replicas, the trainer's own
    train_step/test_step in a replica function, the logs averaged over replicas, the usual callbacks.

    Keras 3's own fit() fails under MultiWorkerMirroredStrategy (it reduces scalar logs along axis 0 and
    all-reduces whole input batches: keras-team/keras#20585, ray-project/ray#47464), so the epochs run here.
    """
    train_batches = strategy.experimental_distribute_dataset(_for_replicas(train, strategy.num_replicas_in_sync))
    dev_batches = dev and strategy.experimental_distribute_dataset(_for_replicas(dev, strategy.num_replicas_in_sync))

    def distributed(step: Callable) -> Callable:
        @tf.function(reduce_retracing=True)
        def run(batch):
            logs = strategy.run(step, args=(batch,))
            return {name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
                    for name, value in logs.items()}
        return run

    train_step, test_step = distributed(trainer.train_step), distributed(trainer.test_step)
    hooks = keras.callbacks.CallbackList(callbacks, model=trainer, epochs=epochs)
    trainer.stop_training = False
    hooks.on_train_begin()
    logs: dict[str, float] = {}
    for epoch in range(trainer._initial_epoch or 0, epochs):  # BackupAndRestore sets where a resumed run starts
        trainer.reset_metrics()
        hooks.on_epoch_begin(epoch)
        for batch in train_batches:
            logs = train_step(batch)
        logs = {name: float(value) for name, value in logs.items()}
        if dev_batches is not None:
            trainer.reset_metrics()
            for batch in dev_batches:
                dev_logs = test_step(batch)
            logs.update({f"val_{name}": float(value) for name, value in dev_logs.items()})
        hooks.on_epoch_end(epoch, logs)
        if is_chief(strategy):
            log(f"epoch {epoch + 1}/{epochs}: " + ", ".join(f"{k} {v:.4f}" for k, v in logs.items()))
        if trainer.stop_training:
            break
    hooks.on_train_end(logs)


class ChiefDevScores(DevScores):
    """DevScores computed once, on the chief, and handed to every worker, whose early stopping and
    best-epoch choice then agree with the chief's."""

    def __init__(self, strategy: tf.distribute.Strategy, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.strategy = strategy

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        chief = is_chief(self.strategy)
        mine = self.scores() if chief else {"BLEU-4": 0.0, "CIDEr": 0.0}
        bleu4, cider = broadcast_from_chief(self.strategy, [mine["BLEU-4"], mine["CIDEr"]])
        if logs is not None:
            logs["val_bleu4"], logs["val_cider"] = float(bleu4), float(cider)
        if chief:
            print(f" — dev BLEU-4 {bleu4:.4f}, CIDEr {cider:.4f}")
