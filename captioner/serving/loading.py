"""`captioner.load`: a saved model on TensorFlow, or an exported folder on the portable runtime.

This module imports neither: an exported folder is opened without TensorFlow or Keras ever loading.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from captioner.artifacts.model_files import MODEL_FILE, VOCAB_FILE

if TYPE_CHECKING:
    from captioner.portable.model import PortableCaptioner
    from captioner.serving.api import Captioner


def load(model_path: str | os.PathLike = MODEL_FILE, vocab_path: str | os.PathLike = VOCAB_FILE,
         encoder_weights: str | os.PathLike | None = "imagenet") -> Captioner | PortableCaptioner:
    """Load `mymodel.h5` + `tokenizer.pkl` (Keras), or a folder written by `captioner export` (no TensorFlow):
    `captioner.load().caption("photo.jpg")`, `captioner.load("exported/").caption("photo.jpg")`."""
    if Path(model_path).is_dir():
        from captioner.portable.model import PortableCaptioner

        return PortableCaptioner(model_path)
    from captioner.serving.api import load_keras

    return load_keras(model_path, vocab_path, encoder_weights)
