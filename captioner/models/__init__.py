"""Models: the decoder contract, the name → class registry and the decoders behind it."""

import importlib

DEFAULT_DECODER = "sat"  # Show, Attend and Tell, the decoder of the shipped models
#: The modules of the built-in decoders; importing one registers its decoder (Keras loads on first use, not here).
BUILT_IN = ("captioner.models.sat", "captioner.models.updown")


def register_built_in_decoders() -> None:
    """Import the built-in decoders, which registers them by name (for model files) and with Keras."""
    for module in BUILT_IN:
        importlib.import_module(module)
