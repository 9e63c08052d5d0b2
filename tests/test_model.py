"""The attention decoder, its serialisation and the safe model/vocabulary files."""

from __future__ import annotations

import os
import pickle

import keras
import numpy as np
import pytest
from model_checks import check_caption
from test_decoders import DECODER_ARGS

from captioner.artifacts.model_files import ModelInfo, load_model, load_vocabulary, save_model, save_vocabulary
from captioner.decoding.tf_search import TFSearch
from captioner.errors import ArtifactError
from captioner.models import CLASS_READERS
from captioner.models.base import build_caption_model, get_decoder, registered_decoders
from captioner.models.sat import ShowAttendTell, SoftAttention
from captioner.text.vocabulary import Vocabulary

VOCAB = Vocabulary.build(["a red circle", "a blue square on grey", "two dogs"], min_count=1, max_length=6)


@pytest.fixture(scope="module")
def model():
    return build_caption_model(len(VOCAB), (9, 16), embedding_dim=8, units=12, attention_units=6)


def _inputs(batch=3, steps=5, seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(batch, 9, 16)).astype("float32")
    tokens = rng.integers(1, len(VOCAB), size=(batch, steps)).astype("int32")
    return features, tokens


@pytest.mark.parametrize("name", registered_decoders())
def test_shapes_and_attention_weighs_the_grid_cells(name):
    """Each step's attention is over the grid's own cells: shuffling the cells shuffles every weight with its
    cell and changes no logit (the context sums the same weighted cells), and it moves as the words do."""
    keras.utils.set_random_seed(0)
    model = build_caption_model(len(VOCAB), (9, 16), name, embedding_dim=8, units=12, attention_units=6,
                                **DECODER_ARGS.get(name, {}))
    features, tokens = _inputs()
    logits, alpha = model([features, tokens], training=False)
    assert logits.shape == (3, 5, len(VOCAB)) and alpha.shape == (3, 5, 9)
    cells = 9 - (name in CLASS_READERS)  # a grounded decoder: its last row is the class row, its last column the gate
    order = np.concatenate([np.random.default_rng(1).permutation(cells), np.arange(cells, 9)])
    shuffled_logits, shuffled_alpha = model([features[:, order], tokens], training=False)
    np.testing.assert_allclose(shuffled_alpha, np.asarray(alpha)[..., order], atol=1e-6)
    np.testing.assert_allclose(shuffled_logits, logits, atol=1e-5)
    assert np.abs(np.diff(np.asarray(alpha), axis=1)).max() > 1e-3  # a new query each word, not one fixed map


def test_dropout_only_in_training(model):
    features, tokens = _inputs()
    a, _ = model([features, tokens], training=False)
    b, _ = model([features, tokens], training=False)
    c, _ = model([features, tokens], training=True)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_layers_serialise_through_get_config():
    decoder = ShowAttendTell(50, embedding_dim=4, units=6, attention_units=3, dropout=0.2, name="d")
    clone = ShowAttendTell.from_config(decoder.get_config())
    assert (clone.vocab_size, clone.units, clone.attention_units, clone.dropout_rate) == (50, 6, 3, 0.2)
    assert SoftAttention.from_config(SoftAttention(7).get_config()).units == 7


def test_greedy_decoding_returns_consistent_captions(model):
    features, _ = _inputs(batch=4)
    captions = TFSearch(get_decoder(model), VOCAB, max_length=7).greedy(features)
    assert len(captions) == 4
    for grid, caption in zip(features, captions, strict=True):
        assert caption.text == " ".join(caption.words)
        assert len(caption.words) <= 7 and caption.attention.shape == (len(caption.words), 9)
        check_caption(caption, model, VOCAB, grid, max_length=7)  # log p, confidence, attention of the model


def test_h5_round_trip_preserves_outputs(model, tmp_path):
    info = ModelInfo("mobilenet_v2", 224, len(VOCAB), VOCAB.fingerprint)
    save_model(model, VOCAB, info, tmp_path / "mymodel.h5", tmp_path / "tokenizer.pkl")
    loaded, vocab, loaded_info = load_model(tmp_path / "mymodel.h5", tmp_path / "tokenizer.pkl")
    features, tokens = _inputs()
    original, restored = model([features, tokens])[0], loaded([features, tokens])[0]
    np.testing.assert_allclose(restored, original, atol=2e-2)  # weights are stored as float16
    np.testing.assert_array_equal(np.argmax(restored, -1), np.argmax(original, -1))
    assert vocab == VOCAB and loaded_info == info
    assert all(w.dtype == "float32" for w in loaded.weights)  # computed in float32 as trained


def test_mismatched_vocabulary_is_detected(model, tmp_path):
    info = ModelInfo("mobilenet_v2", 224, len(VOCAB), VOCAB.fingerprint)
    save_model(model, VOCAB, info, tmp_path / "mymodel.h5", tmp_path / "tokenizer.pkl")
    other = Vocabulary.build(["completely different words here"], min_count=1)
    save_vocabulary(other, tmp_path / "other.pkl")
    with pytest.raises(ArtifactError, match="does not belong"):
        load_model(tmp_path / "mymodel.h5", tmp_path / "other.pkl")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "tokenizer.pkl"
    path.write_bytes(pickle.dumps({"format": "captioner-vocabulary", "tokens": _Exploit(marker)}))
    with pytest.raises(ArtifactError, match=r"refusing to load (posix|os)\.system"):
        load_vocabulary(path)
    assert not marker.exists()


def test_old_keras_tokenizer_pickle_gets_a_hint(tmp_path):
    path = tmp_path / "tokenizer.pkl"
    # A pickled keras Tokenizer object: GLOBAL keras…Tokenizer, then NEWOBJ with no arguments.
    path.write_bytes(b"\x80\x02ckeras.src.legacy.preprocessing.text\nTokenizer\n)\x81.")
    with pytest.raises(ArtifactError, match="older tool"):
        load_vocabulary(path)


def test_missing_or_foreign_files(tmp_path):
    with pytest.raises(ArtifactError, match="model file not found"):
        load_model(tmp_path / "none.h5", tmp_path / "none.pkl")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ArtifactError, match="not a readable HDF5"):
        load_model(tmp_path / "junk.h5", tmp_path / "none.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ArtifactError, match=r"tokenizer\.pkl|vocabulary"):
        load_vocabulary(tmp_path / "junk.pkl")
