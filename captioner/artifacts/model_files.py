"""Saving and loading a trained model: `mymodel.h5` (Keras HDF5) + `tokenizer.pkl` (plain data).

The .h5 file holds the decoder and, as a JSON attribute, which encoder and image size it was
trained on and the fingerprint of its vocabulary. `tokenizer.pkl` holds only dicts, lists,
strings and numbers, and is read with an unpickler that refuses every class and function, so a
tampered file cannot run code.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from captioner.artifacts.scores import without_scores
from captioner.atomic import atomic_path, partial_path, write_bytes
from captioner.errors import ArtifactError
from captioner.models import CLASS_READERS, DEFAULT_DECODER
from captioner.text.vocabulary import Vocabulary

if TYPE_CHECKING:  # h5py, Keras and TensorFlow load when a model file is read or written, not on import
    import h5py
    import keras

    from captioner.features.encoders import ImageEncoder

METADATA_ATTR = "captioner_metadata"
MODEL_FILE, VOCAB_FILE = "mymodel.h5", "tokenizer.pkl"


def vocabulary_beside(model_path: str | os.PathLike) -> Path:
    """The tokenizer.pkl saved in the same folder as a model file."""
    return Path(model_path).with_name(VOCAB_FILE)


@dataclass(frozen=True)
class ModelInfo:
    """What a saved model needs besides its weights to caption a raw image."""

    encoder: str
    image_size: int
    vocab_size: int
    vocab_fingerprint: str
    lang: str = "en"
    decoder: str = DEFAULT_DECODER  # registry name of the decoder class; files from before the registry are "sat"
    extra: dict | None = None  # free-form facts: dev scores, training recipe…


class SafeUnpickler(pickle.Unpickler):
    """Unpickler for plain data only: any class or function reference is an error."""

    def find_class(self, module: str, name: str):
        hint = (" It looks like a pickled Keras Tokenizer from an older tool; retrain, or rebuild "
                "the vocabulary with this version." if module.startswith(("keras", "tensorflow")) else "")
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}.{hint}")


def _vocabulary_bytes(vocab: Vocabulary) -> bytes:
    return pickle.dumps(vocab.to_dict(), protocol=4)


def save_vocabulary(vocab: Vocabulary, path: str | os.PathLike) -> None:
    """Write tokenizer.pkl atomically: a temporary file beside it, renamed into place once complete."""
    write_bytes(path, _vocabulary_bytes(vocab))


def load_vocabulary(path: str | os.PathLike) -> Vocabulary:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: vocabulary file not found; pass --tokenizer with the "
                            f"tokenizer.pkl saved beside the model.")
    try:
        data = SafeUnpickler(io.BytesIO(path.read_bytes())).load()
    except pickle.UnpicklingError as error:
        raise ArtifactError(f"{path}: unsafe or invalid vocabulary file ({error})") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError) as error:
        raise ArtifactError(f"{path}: not a readable tokenizer.pkl ({error}).") from None
    return Vocabulary.from_dict(data)


def save_model(model: keras.Model, vocab: Vocabulary, info: ModelInfo, model_path: str | os.PathLike,
               vocab_path: str | os.PathLike) -> None:
    """Write the decoder (HDF5, with metadata naming its registered class) and its vocabulary side by side.

    Both are written to temporary files beside their targets and renamed into place once complete, so a
    crash, a kill or a full disk leaves the previous files (or none), never a truncated one; temporary files
    are removed on failure, and those of a killed save by the next save.
    """
    import h5py

    from captioner.models.base import get_decoder

    info = dataclasses.replace(info, decoder=get_decoder(model).registry_name)
    absl = logging.getLogger("absl")
    level = absl.level
    with atomic_path(model_path, ".h5") as half, atomic_path(vocab_path) as words:  # replaced once both are complete
        full = partial_path(Path(model_path), ".float32.h5")  # Keras's own save, before the float16 copy
        try:
            absl.setLevel(logging.ERROR)  # HDF5 is the format users of this project expect; skip Keras's nudge
            try:
                model.save(full, include_optimizer=False)
            finally:
                absl.setLevel(level)
            with h5py.File(full, "r") as source, h5py.File(half, "w") as target:
                _copy_as_float16(source, target)
                target.attrs[METADATA_ATTR] = json.dumps(info.__dict__)
        finally:
            full.unlink(missing_ok=True)
        words.write_bytes(_vocabulary_bytes(vocab))


def _copy_as_float16(source: h5py.Group, target: h5py.Group) -> None:
    """Copy an HDF5 tree, storing float32 weights as float16: half the file, and Keras casts them
    back to float32 on load (tests/test_model.py checks the outputs stay the same)."""
    import h5py

    target.attrs.update(source.attrs)
    for name, item in source.items():
        if isinstance(item, h5py.Group):
            _copy_as_float16(item, target.create_group(name))
        else:
            data = item[()]
            target.create_dataset(name, data=data.astype("float16") if item.dtype == "float32" else data)
            target[name].attrs.update(item.attrs)


def read_model_info(model_path: str | os.PathLike) -> ModelInfo:
    import h5py

    from captioner.models.base import registered_decoders

    path = Path(model_path)
    if not path.is_file():
        raise ArtifactError(f"{path}: model file not found; train one with `captioner train` or "
                            f"pass --model with the path to mymodel.h5.")
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get(METADATA_ATTR)
    except OSError as error:
        raise ArtifactError(f"{path}: not a readable HDF5 model file ({error}).") from None
    if raw is None:
        raise ArtifactError(f"{path}: not a captioner model (no {METADATA_ATTR}); "
                            f"it may come from another tool; retrain with `captioner train`.")
    try:
        info = ModelInfo(**json.loads(raw))
    except (TypeError, ValueError) as error:
        raise ArtifactError(f"{path}: its captioner metadata is not readable by this version ({error}).") from None
    if info.decoder not in registered_decoders():
        raise ArtifactError(f"{path}: made with decoder {info.decoder!r}, which this version of captioner does "
                            f"not have (it has {', '.join(registered_decoders())}); upgrade captioner.")
    return info


def record_scores(model_path: str | os.PathLike, scores: dict[str, dict[str, float]]) -> None:
    """Store score tables (e.g. {"dev beam 3": {"BLEU-4": 0.21, …}}) in a saved model's metadata, where
    the app's model panel reads them, in place of the quick ones training stored; weights are untouched."""
    import h5py

    info = read_model_info(model_path)
    extra = {**without_scores(info.extra), **scores}
    with h5py.File(model_path, "r+") as f:
        f.attrs[METADATA_ATTR] = json.dumps({**info.__dict__, "extra": extra})


def load_model(model_path: str | os.PathLike, vocab_path: str | os.PathLike,
               ) -> tuple[keras.Model, Vocabulary, ModelInfo]:
    """Load a model and its vocabulary, checking that they belong together."""
    info = read_model_info(model_path)
    vocab = load_vocabulary(vocab_path)
    if info.vocab_fingerprint != vocab.fingerprint or info.vocab_size != len(vocab):
        raise ArtifactError(
            f"{vocab_path} does not belong to {model_path}: the model was trained with a "
            f"{info.vocab_size}-word vocabulary ({info.vocab_fingerprint}), the file has "
            f"{len(vocab)} words ({vocab.fingerprint}). Use the tokenizer.pkl saved with the model.")
    import keras

    from captioner.artifacts.safe_loading import check_model_classes

    check_model_classes(model_path)  # no Lambda or foreign class reaches Keras's deserialiser
    try:
        model = keras.models.load_model(model_path, compile=False, safe_mode=True)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ArtifactError(f"{model_path}: cannot load the model ({error}).") from None
    return model, vocab, info



def matching_encoder(model: keras.Model, info: ModelInfo, weights: str | os.PathLike | None = "imagenet",
                     ) -> ImageEncoder:
    """The image encoder a saved model reads (one per process, shared), checked to give the feature grids the
    model was trained on."""
    from captioner.features.encoders import shared_encoder

    encoder = shared_encoder(info.encoder, weights)
    cells, channels = model.inputs[0].shape[1:]
    expected = (cells - (info.decoder in CLASS_READERS), channels)  # a grounded model: the grid, less the class row
    if encoder.feature_shape != expected:
        raise ArtifactError(f"encoder {info.encoder} gives {encoder.feature_shape} features but the model expects "
                            f"{expected}.")
    return encoder
