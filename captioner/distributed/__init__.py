"""Scaling out on Ray: batch captioning and feature extraction on Ray Data, training on Ray Train workers
(each running the ordinary training run under tf.distribute, captioner.training.strategy).

Ray is an optional dependency (`pip install captioner[ray]`); it is imported only when a Ray
engine is asked for, so the local engines never need it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from captioner.errors import CaptionerError


def require_ray() -> ModuleType:
    """The ray module, or a one-line error saying how to install it."""
    try:
        import ray
        import ray.data  # the extra installs both
    except ImportError:
        raise CaptionerError("--engine ray needs Ray: pip install captioner[ray]") from None
    return ray


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[ModuleType]:
    """A quiet Ray session: an existing one is reused as is, otherwise one is started (a local cluster
    when `address` is None, `auto` or `ray://…` for a running cluster) and shut down afterwards."""
    ray = require_ray()
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, num_cpus=None if address else num_cpus, log_to_driver=False,
                     include_dashboard=False, logging_level=logging.WARNING)
        except ConnectionError as error:
            raise CaptionerError(f"cannot reach a Ray cluster at {address}: {error}; start one with "
                                 f"`ray start --head` or leave out --address for a local cluster.") from None
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def chunks(items: list, size: int) -> list[list]:
    """`items` cut into consecutive lists of `size` (the last one shorter): local mode's batches."""
    return [items[start:start + size] for start in range(0, len(items), size)]
