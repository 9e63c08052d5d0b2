"""A captioner running from an exported folder: NumPy, Pillow and one runtime, never TensorFlow or Keras.

The exported encoder turns uint8 pixels into the feature grid (its preprocessing is in the graph);
ExportedDecoder keeps the decoder contract over the exported prepare and step, so the searches are
captioner.decoding.loops' own, the very code the Keras path compiles.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from captioner.artifacts.manifest import VOCABULARY_FILE, Manifest, read_manifest
from captioner.artifacts.model_files import ModelInfo
from captioner.decoding.captioning import ImageCaptioner
from captioner.decoding.search import Search
from captioner.errors import ArtifactError
from captioner.portable.runtimes import open_function
from captioner.text.vocabulary import Vocabulary


class ExportedDecoder:
    """The decoder contract (prepare, step) over an export's functions; memory and state are flat lists of arrays."""

    def __init__(self, prepare, step, memory_arrays: int, vocab_size: int):
        self._prepare = prepare
        self._step = step
        self.memory_arrays = memory_arrays
        self.vocab_size = vocab_size

    def prepare(self, features: np.ndarray, training: bool = False) -> tuple[list, list]:
        """Features (batch, cells, channels) → (memory arrays, initial state arrays)."""
        arrays = self._prepare(np.asarray(features, np.float32))
        return arrays[: self.memory_arrays], arrays[self.memory_arrays:]

    def step(self, tokens: np.ndarray, state: list, memory: list, training: bool = False):
        """Previous tokens (rows,) → logits (rows, V), attention (rows, cells), new state."""
        logits, alpha, *state = self._step(np.asarray(tokens, np.int32), *state, *memory)
        return logits, alpha, state


class ExportedEncoder:
    """The exported CNN as an image encoder: name, image_size and uint8 images (n, size, size, 3) → feature grids
    (n, cells, channels), the interface FeatureCache.extract uses, so evaluation can fill a feature cache with it."""

    def __init__(self, function, name: str, image_size: int, grid_shape: tuple[int, int], classifier: bool = False):
        self._function = function
        self.name = name
        self.image_size = (image_size, image_size)
        self.grid_shape = grid_shape
        self.classifier = classifier  # the export's encoder also returns ImageNet probabilities (the tags)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.encode_and_classify(images)[0]

    def encode_and_classify(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Grids (n, cells, channels) and, when the export holds the classifier, ImageNet probabilities (n, 1000)."""
        outputs = self._function(np.ascontiguousarray(images, np.uint8))
        return outputs[0], outputs[1] if len(outputs) > 1 else None


def _read_vocabulary(folder: Path, info: ModelInfo) -> Vocabulary:
    path = folder / VOCABULARY_FILE
    try:
        vocab = Vocabulary.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ArtifactError(f"{path}: unreadable vocabulary ({error}); export the model again.") from None
    except ArtifactError as error:
        raise ArtifactError(f"{path}: {error}") from None
    if vocab.fingerprint != info.vocab_fingerprint:
        raise ArtifactError(f"{path}: this vocabulary does not belong to the exported model; copy the folder again "
                            f"or export the model again.")
    return vocab


class PortableCaptioner(ImageCaptioner):
    """Encoder + decoder + vocabulary from an exported folder, with the methods of serving.api.Captioner."""

    def __init__(self, folder: str | os.PathLike, threads: int = 0):
        self.folder = Path(folder)
        self.manifest: Manifest = read_manifest(self.folder)
        try:
            self.info = ModelInfo(**self.manifest.info)
        except TypeError as error:
            raise ArtifactError(f"{self.folder}: its model metadata is not readable ({error}); export the model "
                                f"again.") from None
        self.vocab = _read_vocabulary(self.folder, self.info)
        runtime, files = self.manifest.runtime, self.manifest.files
        quantized = bool(self.manifest.extra.get("quantized"))
        functions = {name: open_function(runtime, self.folder / files[name], name, threads, quantized)
                     for name in ("encoder", "prepare", "step")}
        self._encoder = ExportedEncoder(functions["encoder"], self.info.encoder, self.manifest.image_size,
                                        self.manifest.grid_shape, bool(self.manifest.extra.get("classifier")))
        self.decoder = ExportedDecoder(functions["prepare"], functions["step"], self.manifest.memory_arrays,
                                       len(self.vocab))
        self.search = Search(self.decoder, self.vocab)

    @property
    def runtime(self) -> str:
        return self.manifest.runtime

    @property
    def encoder(self) -> ExportedEncoder:
        return self._encoder
