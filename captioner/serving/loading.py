"""`captioner.load`: a saved model on the portable runtime whenever it can, on TensorFlow when asked or needed.

Importing TensorFlow and building a model takes seconds; an exported folder opens in a fraction of one.
So a model file is exported once, on first use, into a cache keyed by the bytes of the model and its
vocabulary, and later loads caption from that export with the same searches (identical captions, see
benchmarks/export_parity.py). This module imports neither TensorFlow nor Keras itself.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

from captioner.artifacts.manifest import EXPORT_VERSION, MANIFEST_FILE
from captioner.artifacts.model_files import MODEL_FILE, VOCAB_FILE
from captioner.errors import CaptionerError, WeightsError

if TYPE_CHECKING:
    from captioner.portable.model import PortableCaptioner
    from captioner.serving.api import Captioner

RUNTIMES = ("auto", "portable", "tensorflow")  # auto: portable when it can, else TensorFlow
DEFAULT_RUNTIME = "auto"
CACHE_ENV = "CAPTIONER_CACHE"  # where exports made on first use live; default: the user's cache folder


def export_cache_dir() -> Path:
    """The folder of exports made on first use: $CAPTIONER_CACHE, else the platform's user cache folder."""
    return Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("captioner")) / "exports"


def model_fingerprint(model_path: str | os.PathLike, vocab_path: str | os.PathLike) -> str:
    """A short hash of the model file and its vocabulary (and the export format), naming the model's export."""
    digest = hashlib.sha256(f"export v{EXPORT_VERSION}\n".encode())
    for path in (model_path, vocab_path):
        with open(path, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()[:20]


def cached_export(model_path: str | os.PathLike, vocab_path: str | os.PathLike) -> Path:
    """The model's ONNX export in the cache, written now (with TensorFlow, once) if it is not there yet."""
    folder = export_cache_dir() / model_fingerprint(model_path, vocab_path)
    if not (folder / MANIFEST_FILE).is_file():
        from captioner.export import export_model

        print(f"captioner: exporting {model_path} once for fast loading (into {folder})", file=sys.stderr)
        folder.parent.mkdir(parents=True, exist_ok=True)
        export_model(model_path, vocab_path, "onnx", folder)
    return folder


def load(model_path: str | os.PathLike = MODEL_FILE, vocab_path: str | os.PathLike = VOCAB_FILE,
         encoder_weights: str | os.PathLike | None = "imagenet",
         runtime: str = DEFAULT_RUNTIME) -> Captioner | PortableCaptioner:
    """Load `mymodel.h5` + `tokenizer.pkl`, or a folder written by `captioner export`:
    `captioner.load().caption("photo.jpg")`, `captioner.load("exported/").caption("photo.jpg")`.

    runtime "auto" (default) and "portable" caption a model file through its cached export, made on first
    use; "tensorflow" loads it in Keras (also what "auto" does with encoder weights other than ImageNet's).
    """
    if runtime not in RUNTIMES:
        raise CaptionerError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}.")
    if Path(model_path).is_dir():
        from captioner.portable.model import PortableCaptioner

        return PortableCaptioner(model_path)
    files_exist = Path(model_path).is_file() and Path(vocab_path).is_file()  # else Keras's loader says what is wrong
    if runtime == "portable" or (runtime == "auto" and encoder_weights == "imagenet" and files_exist):
        from captioner.portable.model import PortableCaptioner

        try:
            return PortableCaptioner(cached_export(model_path, vocab_path))
        except WeightsError:
            raise  # TensorFlow would need the same weights: say so once
        except (CaptionerError, ImportError, OSError) as error:  # OSError: e.g. a cache folder we cannot write
            if runtime == "portable":
                raise CaptionerError(f"cannot export {model_path} into {export_cache_dir()} ({error}); set "
                                     f"{CACHE_ENV} to a writable folder, or use --runtime tensorflow.") from None
            print(f"captioner: captioning on TensorFlow, as the model could not be exported ({error})",
                  file=sys.stderr)
    from captioner.serving.api import load_keras

    return load_keras(model_path, vocab_path, encoder_weights)
