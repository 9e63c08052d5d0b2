"""The decoder contract every caption decoder keeps, and the name → class registry.

Greedy and beam search, sampling for self-critical training, ensembles and export drive a decoder
only through `prepare` and `step`, so a new architecture needs no decoding code of its own. The
registry name is recorded in the model file, so every surface loads any decoder without a setting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Protocol

import keras
from keras import layers

from captioner.errors import ArtifactError, CaptionerError
from captioner.models import DEFAULT_DECODER, register_built_in_decoders

PACKAGE = "captioner"

#: A Keras, TensorFlow or NumPy array (Keras ships no type information for its tensors).
Tensor = Any
#: Nested tensors (dicts, lists, tuples) whose first axis is the batch: what `prepare` and `step` carry.
Nest = Any


class StepDecoder(Protocol):
    """What a search needs of a decoder: a vocabulary size, `prepare` and `step`."""

    vocab_size: int

    def prepare(self, features: Tensor, training: bool = False) -> tuple[Nest, Nest]:
        """Features (batch, cells, channels) → (memory, state); `training` turns dropout on (self-critical sampling).

        `memory` is computed once per image and stays fixed while decoding (e.g. projected attention
        keys); `state` is the initial recurrent state. A search repeats the state once per hypothesis
        row; the memory stays one per image, shared by that image's rows.
        """

    def step(self, tokens: Tensor, state: Nest, memory: Nest, training: bool = False) -> tuple[Any, Any, Nest]:
        """Previous tokens (rows,) → next-word logits (rows, V), attention (rows, cells), new state.

        rows = batch × copies, each image's rows together, over the memory of its batch images: beam
        search reads one memory for an image's beams instead of a copy per beam. Beam search reorders
        the rows of `state` between steps, only ever among the rows of one image.
        """


DECODERS: dict[str, type[CaptionDecoder]] = {}


def register_decoder(name: str, keras_name: str | None = None,
                     ) -> Callable[[type[CaptionDecoder]], type[CaptionDecoder]]:
    """Class decorator: register a CaptionDecoder under `name` (recorded in model files) and for Keras saving.

    `keras_name` keeps the name older model files were saved under, if it differs from the class name.
    """

    def register(cls: type[CaptionDecoder]) -> type[CaptionDecoder]:
        cls.registry_name = name
        DECODERS[name] = keras.saving.register_keras_serializable(PACKAGE, keras_name)(cls)
        return cls

    return register


def registered_decoders() -> list[str]:
    """Names of every decoder that can be built or loaded: the built-in ones and any registered since."""
    register_built_in_decoders()
    return sorted(DECODERS)


def decoder_class(name: str) -> type[CaptionDecoder]:
    """The decoder class registered under `name`."""
    registered_decoders()
    try:
        return DECODERS[name]
    except KeyError:
        raise CaptionerError(f"unknown decoder {name!r}; choose one of {', '.join(sorted(DECODERS))}.") from None


class CaptionDecoder(layers.Layer):
    """Base of the trainable decoders: teacher forcing in `call`, word-by-word decoding in `prepare`/`step`.

    `call((features, tokens))` maps (batch, cells, channels) features and (batch, T) input tokens to
    next-word logits (batch, T, V) and attention (batch, T, cells); `prepare` and `step` must give
    the same logits one word at a time (tests/test_decoders.py checks every registered decoder).
    """

    registry_name: ClassVar[str]
    vocab_size: int

    def prepare(self, features: Tensor, training: bool = False) -> tuple[Nest, Nest]:
        raise NotImplementedError

    def step(self, tokens: Tensor, state: Nest, memory: Nest, training: bool = False) -> Any:
        raise NotImplementedError

    def compute_output_spec(self, inputs: Tensor, training: bool | None = None) -> Any:
        features, tokens = inputs
        batch, steps = tokens.shape
        return (keras.KerasTensor((batch, steps, self.vocab_size)),
                keras.KerasTensor((batch, steps, features.shape[1])))


def build_caption_model(vocab_size: int, feature_shape: tuple[int, ...], decoder: str = DEFAULT_DECODER,
                        **decoder_args: Any) -> keras.Model:
    """The saved model: (features, input tokens) → (next-word logits, attention weights)."""
    features = keras.Input(feature_shape, name="features")  # (batch, cells, channels)
    tokens = keras.Input((None,), dtype="int32", name="tokens")  # (batch, T)
    layer = decoder_class(decoder)(vocab_size, name="decoder", **decoder_args)
    logits, alpha = layer([features, tokens])  # (batch, T, V), (batch, T, cells)
    return keras.Model([features, tokens], [logits, alpha], name=f"captioner_{decoder}")


def get_decoder(model: keras.Model) -> CaptionDecoder:
    """The decoder layer of a caption model."""
    layer = model.get_layer("decoder")
    if not isinstance(layer, CaptionDecoder):
        raise ArtifactError(f"model {model.name}: its 'decoder' layer is a {type(layer).__name__}, not a "
                            f"captioner decoder.")
    return layer
