"""The decoder contract: every registered decoder steps word by word exactly as it teacher-forces, the
registry is what model files record, and an ensemble is just another decoder for the searches."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import captioner
from captioner.artifacts.model_files import METADATA_ATTR, ModelInfo, read_model_info, save_model
from captioner.decoding.options import GREEDY, DecodeOptions
from captioner.decoding.tf_search import TFSearch
from captioner.errors import ArtifactError, CaptionerError
from captioner.models import CLASS_READERS
from captioner.models.base import build_caption_model, decoder_class, get_decoder, registered_decoders
from captioner.models.ensemble import Ensemble
from captioner.serving.api import Captioner, ensemble
from captioner.text.vocabulary import Vocabulary

VOCAB = Vocabulary.build(["a red circle on grey", "two dogs run on the beach", "a man rides a blue bike"],
                         min_count=1)
CELLS, CHANNELS = 6, 10
SIZES = {"embedding_dim": 12, "units": 16, "attention_units": 8, "dropout": 0.0}


#: What a decoder needs beyond the sizes: the grounded one, a (tiny) class → word table and its tag count. Its
#: features' last row is then read as the classifier's probabilities (random here: only the contract is checked).
DECODER_ARGS = {"grounded": {"class_words": [4, -1, 7, 9], "class_dim": 3, "tags": 2}}


def _model(seed: int, decoder: str = "sat") -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = build_caption_model(len(VOCAB), (CELLS, CHANNELS), decoder, **SIZES, **DECODER_ARGS.get(decoder, {}))
    if decoder in CLASS_READERS:
        get_decoder(model).set_class_vectors(np.random.default_rng(seed).normal(size=(3, 4)))
    return model


def _features(n: int = 5) -> np.ndarray:
    return np.random.default_rng(3).normal(size=(n, CELLS, CHANNELS)).astype("float32")


@pytest.mark.parametrize("name", registered_decoders())
def test_stepping_gives_the_teacher_forced_logits(name):
    """prepare + step, word by word, reproduce call()'s logits and attention for the same tokens."""
    model = _model(0, name)
    decoder = get_decoder(model)
    assert decoder.registry_name == name and decoder_class(name) is type(decoder)
    features = _features()
    tokens = np.random.default_rng(4).integers(1, len(VOCAB), size=(len(features), 7)).astype("int32")
    logits, alpha = model([features, tokens], training=False)  # (batch, T, V), (batch, T, cells)
    memory, state = decoder.prepare(tf.constant(features))
    for t in range(tokens.shape[1]):
        step_logits, step_alpha, state = decoder.step(tf.constant(tokens[:, t]), state, memory)
        np.testing.assert_allclose(step_logits, logits[:, t], atol=1e-4)
        np.testing.assert_allclose(step_alpha, alpha[:, t], atol=1e-5)


@pytest.mark.parametrize("name", registered_decoders())
def test_rows_of_one_image_share_its_memory(name):
    """Three rows per image over one memory per image step exactly as three images, each row its own memory copy:
    the rows stay with their own image (a mix-up of images or of rows within one would not match)."""
    decoder = get_decoder(_model(1, name))
    features = _features(2)
    copies = 3
    tokens = np.random.default_rng(5).integers(1, len(VOCAB), size=(len(features) * copies, 4)).astype("int32")
    memory, state = decoder.prepare(tf.constant(features))  # memory: 2 images
    state = tf.nest.map_structure(lambda s: tf.repeat(s, copies, axis=0), state)  # 6 rows
    own_memory, own_state = decoder.prepare(tf.constant(np.repeat(features, copies, axis=0)))  # 6 images
    for t in range(tokens.shape[1]):
        logits, alpha, state = decoder.step(tf.constant(tokens[:, t]), state, memory)
        own_logits, own_alpha, own_state = decoder.step(tf.constant(tokens[:, t]), own_state, own_memory)
        np.testing.assert_allclose(logits, own_logits, atol=1e-5)
        np.testing.assert_allclose(alpha, own_alpha, atol=1e-6)


def test_model_files_record_the_decoder_and_old_files_load_as_sat(tmp_path):
    model = _model(0)
    save_model(model, VOCAB, ModelInfo("mobilenet_v2", 224, len(VOCAB), VOCAB.fingerprint), tmp_path / "m.h5",
               tmp_path / "t.pkl")
    assert read_model_info(tmp_path / "m.h5").decoder == "sat"

    import json

    import h5py

    with h5py.File(tmp_path / "m.h5", "r+") as f:  # as written before the registry: no decoder recorded
        meta = json.loads(f.attrs[METADATA_ATTR])
        del meta["decoder"]
        f.attrs[METADATA_ATTR] = json.dumps(meta)
    assert read_model_info(tmp_path / "m.h5").decoder == "sat"
    with h5py.File(tmp_path / "m.h5", "r+") as f:  # from a newer version with a decoder we lack
        f.attrs[METADATA_ATTR] = json.dumps({**meta, "decoder": "transformer-xl"})
    with pytest.raises(ArtifactError, match="transformer-xl"):
        read_model_info(tmp_path / "m.h5")


def test_unknown_decoder_names_the_choices():
    with pytest.raises(CaptionerError, match=r"unknown decoder 'lstm9'.*sat"):
        build_caption_model(len(VOCAB), (CELLS, CHANNELS), "lstm9")


def test_an_ensemble_of_a_model_with_itself_gives_its_captions():
    model = _model(1)
    single = TFSearch(get_decoder(model), VOCAB, max_length=8)
    doubled = TFSearch(Ensemble([get_decoder(model), get_decoder(model)]), VOCAB, max_length=8)
    features = _features(6)
    for options in (GREEDY, DecodeOptions(beam_size=3, n_best=3)):
        expected, got = single.generate(features, options), doubled.generate(features, options)
        assert [[c.text for c in e.ranked] for e in expected] == [[c.text for c in g.ranked] for g in got]
        np.testing.assert_allclose([c.log_prob for c in got], [c.log_prob for c in expected], atol=1e-4)


def test_an_ensemble_averages_the_members_log_probabilities():
    first, second = get_decoder(_model(1)), get_decoder(_model(2))
    features = tf.constant(_features(3))
    tokens = tf.constant([VOCAB.start_id] * 3)
    memory, state = Ensemble([first, second]).prepare(features)
    log_probs, _, _ = Ensemble([first, second]).step(tokens, state, memory)
    members = [d.step(tokens, d.prepare(features)[1], d.prepare(features)[0])[0] for d in (first, second)]
    expected = np.mean([tf.nn.log_softmax(m).numpy() for m in members], axis=0)
    np.testing.assert_allclose(log_probs, expected, atol=1e-5)


def test_ensemble_api_checks_its_members():
    info = ModelInfo("mobilenet_v2", 224, len(VOCAB), VOCAB.fingerprint)
    a, b = Captioner(_model(1), VOCAB, info), Captioner(_model(2), VOCAB, info)
    both = captioner.ensemble([a, b])
    assert isinstance(both.decoder, Ensemble) and both.vocab is VOCAB
    other_vocab = Vocabulary.build(["a cat"], min_count=1)
    stranger = Captioner(build_caption_model(len(other_vocab), (CELLS, CHANNELS), **SIZES), other_vocab,
                         ModelInfo("mobilenet_v2", 224, len(other_vocab), other_vocab.fingerprint))
    with pytest.raises(CaptionerError, match="share one vocabulary"):
        ensemble([a, stranger])
