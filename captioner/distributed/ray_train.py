"""Multi-worker training launched by Ray Train: TensorflowTrainer starts the workers and sets their
TF_CONFIG; each runs the ordinary training run under MultiWorkerMirroredStrategy."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

from captioner.distributed import ray_session
from captioner.errors import CaptionerError
from captioner.training.config import TrainConfig
from captioner.training.run import TrainResult, read_history


def _worker_loop(config: dict) -> None:
    """One Ray Train worker: the strategy first (before any other TF op), then the usual run."""
    import tensorflow as tf

    from captioner.training.run import train
    from captioner.training.strategy import Role

    role = Role.of(tf.distribute.MultiWorkerMirroredStrategy())
    train(TrainConfig(**config), log=print, role=role)


def train_on_ray(config: TrainConfig, workers: int = 2, address: str | None = None,
                 cpus_per_worker: float = 1.0) -> TrainResult:
    """Train as `config` says on `workers` Ray Train workers; the chief writes mymodel.h5 + tokenizer.pkl
    into config.output, which every worker must see (shared storage on a real cluster)."""
    output = Path(config.output).resolve()
    config = dataclasses.replace(config, output=str(output), cache_dir=str(Path(config.cache_dir).resolve()),
                                 data=str(Path(config.data).resolve()) if config.data else config.data)
    storage = Path(tempfile.mkdtemp(prefix="captioner-ray-train-"))  # Ray Train's run metadata; no checkpoints
    with ray_session(address, num_cpus=max(2, int(workers * cpus_per_worker))):
        from ray.train import RunConfig, ScalingConfig
        from ray.train.tensorflow import TensorflowTrainer

        trainer = TensorflowTrainer(
            _worker_loop, train_loop_config=dataclasses.asdict(config),
            scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": cpus_per_worker}),
            run_config=RunConfig(name="captioner", storage_path=str(storage)))
        try:
            trainer.fit()
        except Exception as error:  # Ray wraps the worker's error; its first line says what went wrong
            raise CaptionerError(f"training on Ray failed: {str(error).strip().splitlines()[-1]}") from None
        finally:
            shutil.rmtree(storage, ignore_errors=True)
    history = read_history(output / "history.csv")
    return TrainResult(output / "mymodel.h5", output / "tokenizer.pkl", history)
