"""captioner: Show, Attend and Tell image captioning with Keras 3.

    import captioner
    print(captioner.load("mymodel.h5", "tokenizer.pkl").caption("photo.jpg"))  # beam 3, as the CLI and app
    print(captioner.load().caption("photo.jpg", captioner.GREEDY))  # greedy, one argument away

TensorFlow is imported on first use of `load`/`Captioner`, so light modules (data, vocab, images)
and `captioner --help` start fast; `captioner.load("exported/")` on a folder written by `captioner export`
never imports it (the portable runtime, captioner.portable).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info/warning lines

from captioner.errors import CaptionerError

__all__ = ["GREEDY", "Caption", "Captioner", "CaptionerError", "DecodeOptions", "ensemble", "load"]
__version__ = "0.1.0"

_LAZY = {"Captioner": "captioner.serving.api", "load": "captioner.serving.loading", "ensemble": "captioner.serving.api",
         "Caption": "captioner.decoding.options", "DecodeOptions": "captioner.decoding.options",
         "GREEDY": "captioner.decoding.options"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'captioner' has no attribute {name!r}")
