"""The three functions an export holds, traced from a Keras captioner: encoder, decoder prepare, decoder step.

Each takes and returns flat tuples of arrays (no dicts or lists), which every converter and runtime
handles; the manifest records how many memory and state arrays there are, and that is all a search
needs, since it never looks inside them.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import tensorflow as tf

from captioner.features.encoders import ImageEncoder
from captioner.models import CLASS_READERS
from captioner.models.base import get_decoder


@dataclass
class ExportGraphs:
    """tf.functions with fixed input signatures, and the arrays' counts for the manifest."""

    encode: tf.types.experimental.GenericFunction  # images (batch, size, size, 3) uint8 → grids[, probabilities]
    prepare: tf.types.experimental.GenericFunction  # features → memory arrays..., state arrays...
    step: tf.types.experimental.GenericFunction  # tokens (rows,), state..., memory... → logits, α, state...
    memory_arrays: int
    state_arrays: int
    tracked: list  # the Keras models whose variables the functions read


def export_graphs(model: keras.Model, encoder: ImageEncoder) -> ExportGraphs:
    """The encoder with its preprocessing inside the graph, and the decoder contract as flat functions."""
    decoder = get_decoder(model)
    cells, channels = encoder.feature_shape
    rows = cells + (decoder.registry_name in CLASS_READERS)  # a grounded decoder: the class row too
    size = encoder.backbone.image_size
    memory, state = decoder.prepare(tf.zeros([1, rows, channels]))
    memory_specs = [tf.TensorSpec([None, *x.shape[1:]], tf.float32, f"memory_{i}")
                    for i, x in enumerate(tf.nest.flatten(memory))]
    state_specs = [tf.TensorSpec([None, *x.shape[1:]], tf.float32, f"state_{i}")
                   for i, x in enumerate(tf.nest.flatten(state))]
    n_state = len(state_specs)

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, "images")])
    def encode(images):
        pixels = encoder.backbone.preprocess(tf.cast(images, tf.float32))  # (batch, size, size, 3)
        outputs = encoder.model(pixels, training=False)
        grid = outputs[0] if encoder.classifier else outputs  # (batch, rows, columns, channels)
        grid = tf.reshape(grid, [-1, cells, channels])  # (batch, cells, channels)
        if encoder.classifier:  # the ImageNet head, from the same pass: the tags
            return grid, tf.nn.softmax(outputs[1])  # (batch, cells, channels), (batch, 1000)
        return (grid,)

    @tf.function(input_signature=[tf.TensorSpec([None, rows, channels], tf.float32, "features")])
    def prepare(features):
        memory, state = decoder.prepare(features)
        return (*tf.nest.flatten(memory), *tf.nest.flatten(state))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, "tokens"), *state_specs, *memory_specs])
    def step(tokens, *arrays):
        rows_state = tf.nest.pack_sequence_as(state, list(arrays[:n_state]))
        rows_memory = tf.nest.pack_sequence_as(memory, list(arrays[n_state:]))
        logits, alpha, new_state = decoder.step(tokens, rows_state, rows_memory)  # (rows, V), (rows, cells)
        return (logits, alpha, *tf.nest.flatten(new_state))

    return ExportGraphs(encode, prepare, step, len(memory_specs), n_state, [encoder.model, model])
