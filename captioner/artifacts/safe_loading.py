"""Refuse model files that could run code when loaded: only captioner's own layers may appear in them.

Keras model files name the classes to rebuild; a Lambda layer or an unknown class can carry
arbitrary Python (and Keras's safe mode has had bypasses), so before Keras reads a file its model
config is walked and every class must be one captioner registered or one of the few plain Keras
classes a captioner model is made of.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import keras

from captioner.errors import ArtifactError
from captioner.models.base import PACKAGE, registered_decoders

#: The Keras classes a saved captioner model is made of besides captioner's own layers.
KERAS_CLASSES = frozenset({"Functional", "InputLayer", "DTypePolicy", "__keras_tensor__"})


def _class_names(config: object) -> Iterator[str]:
    """Every class named anywhere in a Keras config: its registered name, else its class name."""
    if isinstance(config, dict):
        if "class_name" in config:
            yield config.get("registered_name") or config["class_name"]
        for value in config.values():
            yield from _class_names(value)
    elif isinstance(config, list):
        for value in config:
            yield from _class_names(value)


def check_model_classes(path: str | os.PathLike) -> None:
    """Raise ArtifactError unless every class in the model file is a captioner layer or a plain Keras one."""
    registered_decoders()  # registers the built-in layers, so their names resolve below
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except OSError as error:
        raise ArtifactError(f"{path}: not a readable HDF5 model file ({error}).") from None
    try:
        config = json.loads(raw)
    except (TypeError, ValueError):
        raise ArtifactError(f"{path}: has no readable Keras model config; it is not a captioner model file.") from None
    for name in _class_names(config):
        own = name.startswith(f"{PACKAGE}>") and keras.saving.get_registered_object(name) is not None
        if not own and name not in KERAS_CLASSES:
            raise ArtifactError(f"{Path(path)}: refusing to load a model that contains a {name!r} layer, which is "
                                f"not one of captioner's; only model files written by captioner are loaded, "
                                f"since other layers (Lambda above all) can run code.")
