"""Models: the decoder contract, the name → class registry and the decoders behind it."""

DEFAULT_DECODER = "sat"  # Show, Attend and Tell, the decoder of the shipped models
