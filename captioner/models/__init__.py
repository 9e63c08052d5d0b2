"""Models: the decoder contract, the name → class registry and the decoders behind it."""

import importlib

DEFAULT_DECODER = "sat"  # Show, Attend and Tell, the decoder of the shipped models
#: Decoders whose features carry the classifier's probabilities as one extra row (captioner.features.class_row).
CLASS_READERS = ("grounded",)
#: The modules of the built-in decoders; importing one registers its decoder (Keras loads on first use, not here).
BUILT_IN = ("captioner.models.sat", "captioner.models.updown", "captioner.models.grounded")


def register_built_in_decoders() -> None:
    """Import the built-in decoders, which registers them by name (for model files) and with Keras."""
    for module in BUILT_IN:
        importlib.import_module(module)
