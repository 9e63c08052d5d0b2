"""captioner: Show, Attend and Tell image captioning with Keras 3.

    import captioner
    print(captioner.load("mymodel.h5", "tokenizer.pkl").caption("photo.jpg"))

TensorFlow is imported on first use of `load`/`Captioner`, so light modules (data, vocab, images)
and `captioner --help` start fast.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info/warning lines

from captioner.errors import CaptionerError

__all__ = ["Caption", "Captioner", "CaptionerError", "load"]
__version__ = "0.1.0"

_LAZY = {"Captioner": "captioner.api", "load": "captioner.api", "Caption": "captioner.decode"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'captioner' has no attribute {name!r}")
