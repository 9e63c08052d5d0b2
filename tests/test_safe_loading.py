"""Model files that could run code are refused before Keras reads them: only captioner's layers load."""

from __future__ import annotations

import json

import h5py
import keras
import numpy as np
import pytest

from captioner.artifacts.model_files import METADATA_ATTR, ModelInfo, load_model, save_model, save_vocabulary
from captioner.errors import ArtifactError
from captioner.models.base import build_caption_model
from captioner.text.vocabulary import Vocabulary

VOCAB = Vocabulary.build(["a dog runs", "a cat sits"], min_count=1)
INFO = ModelInfo("mobilenet_v2", 224, len(VOCAB), VOCAB.fingerprint)


def _disguise(model: keras.Model, folder) -> tuple:
    """Save any Keras model as if captioner had written it: the metadata and a matching tokenizer."""
    path, vocab_path = folder / "mymodel.h5", folder / "tokenizer.pkl"
    model.save(path)
    with h5py.File(path, "r+") as f:
        f.attrs[METADATA_ATTR] = json.dumps(INFO.__dict__)
    save_vocabulary(VOCAB, vocab_path)
    return path, vocab_path


def test_a_model_with_a_lambda_layer_is_refused(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: x * 2, name="payload")(inputs)
    path, vocab_path = _disguise(keras.Model(inputs, outputs), tmp_path)
    with pytest.raises(ArtifactError, match="refusing to load a model that contains a 'Lambda' layer"):
        load_model(path, vocab_path)


@keras.saving.register_keras_serializable(package="elsewhere")
class Unknown(keras.layers.Layer):
    """A layer from another package: captioner never wrote it, so it is not loaded."""

    def call(self, x):
        return x


def test_a_model_with_a_foreign_layer_is_refused(tmp_path):
    inputs = keras.Input((4,))
    path, vocab_path = _disguise(keras.Model(inputs, Unknown()(inputs)), tmp_path)
    with pytest.raises(ArtifactError, match="'elsewhere>Unknown' layer"):
        load_model(path, vocab_path)


def test_captioner_models_still_load(tmp_path):
    model = build_caption_model(len(VOCAB), (4, 8), embedding_dim=8, units=8, attention_units=4)
    save_model(model, VOCAB, INFO, tmp_path / "mymodel.h5", tmp_path / "tokenizer.pkl")
    loaded, _, _ = load_model(tmp_path / "mymodel.h5", tmp_path / "tokenizer.pkl")
    features, tokens = np.zeros((1, 4, 8), "float32"), np.ones((1, 3), "int32")
    np.testing.assert_allclose(loaded([features, tokens])[0], model([features, tokens])[0], atol=1e-2)
