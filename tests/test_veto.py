"""The veto: no caption names an object the classifier could see but does not. Vetoed words are never written,
in any search, on both runtimes; an image with nothing vetoed gets exactly its plain captions; which words are
vetoed follows the classifier's probabilities, people never."""

from __future__ import annotations

from dataclasses import replace

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_constrained_search import VOCAB, WORDS, AsArrays, TinyDecoder, _assert_same, _features, _probabilities

from captioner.decoding.grounding import unseen_objects
from captioner.decoding.options import DecodeOptions
from captioner.decoding.search import Search
from captioner.decoding.tf_search import TFSearch
from captioner.features.imagenet import caption_words
from captioner.models.base import build_caption_model, get_decoder
from captioner.text.vocabulary import SPECIAL_TOKENS, Vocabulary

veto_sets = st.lists(st.sets(st.sampled_from(WORDS), max_size=3), min_size=1, max_size=4)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), vetoes=veto_sets, beam=st.integers(1, 4), n_best=st.integers(1, 4),
       repeats=st.booleans(), constrained=st.booleans())
def test_no_caption_writes_a_vetoed_word(seed, vetoes, beam, n_best, repeats, constrained):
    """Greedy, beam and constrained search, any n-best size: no caption of an image writes a word vetoed for it;
    an image with no veto gets the captions it gets when no image has one."""
    search = Search(TinyDecoder(seed), VOCAB, max_length=6)
    options = DecodeOptions(beam_size=beam, n_best=min(n_best, beam), block_repeats=repeats)
    features = _features(seed, len(vetoes))
    constraints = [{"runs"} if constrained and "runs" not in v else set() for v in vetoes]
    captions = search.generate(features, options, constraints, vetoes)
    for caption, vetoed in zip(captions, vetoes, strict=True):
        for hypothesis in caption.ranked:
            assert not vetoed & set(hypothesis.words), (vetoed, hypothesis.text)
    plain = search.generate(features, options, constraints)
    free = [i for i, v in enumerate(vetoes) if not v]
    _assert_same([captions[i] for i in free], [plain[i] for i in free])


@pytest.fixture(scope="module")
def keras_decoder():
    keras.utils.set_random_seed(5)
    model = build_caption_model(len(VOCAB), (4, 5), embedding_dim=8, units=16, attention_units=8, dropout=0.0)
    decoder = get_decoder(model)
    decoder.out_vocab.kernel.assign(decoder.out_vocab.kernel * 3.0)
    return decoder


def test_tensorflow_and_numpy_vetoes_agree(keras_decoder):
    """The compiled searches veto as the NumPy ones do, greedy and beam, with and without a constraint."""
    features = _features(7, 3)
    vetoes = [{"dog", "a"}, set(), {"cat", "runs", "grass"}]
    for options in (DecodeOptions(beam_size=3, n_best=2, max_length=7), DecodeOptions(beam_size=1, max_length=7)):
        for constraints in (None, [set(), {"cat"}, {"dog"}]):
            compiled = TFSearch(keras_decoder, VOCAB).generate(features, options, constraints, vetoes)
            eager = Search(AsArrays(keras_decoder), VOCAB).generate(features, options, constraints, vetoes)
            assert [[c.text for c in a.ranked] for a in compiled] == [[c.text for c in a.ranked] for a in eager]
            for caption, vetoed in zip(compiled, vetoes, strict=True):
                assert all(not vetoed & set(c.words) for c in caption.ranked)


def test_unseen_objects_follow_the_classifier():
    """A photo the classifier calls a beagle: "dog" may be written, "cat" and "bench" may not; people words never
    are vetoed (ImageNet has no class for people); off, a veto of 0, no classifier or Chinese: no veto."""
    vocab = Vocabulary([*SPECIAL_TOKENS, "a", "dog", "dogs", "puppy", "cat", "man", "people", "bench", "grass"])
    probabilities = _probabilities(beagle=0.9, tabby=0.004)
    (vetoed,) = unseen_objects(probabilities, DecodeOptions(), vocab)
    assert {"cat", "bench"} <= vetoed
    assert not vetoed & {"dog", "dogs", "puppy", "man", "people", "grass", "a"}
    (strict,) = unseen_objects(probabilities, replace(DecodeOptions(), grounding_veto=0.001), vocab)
    assert "cat" not in strict and "bench" in strict  # tabby at 0.004 clears a lower veto
    # Noise spread over an object's many classes does not make it seen: every dog breed at 0.0002 (0.024 in all)
    breeds = np.array([word == "dog" for word in caption_words()])
    (noise,) = unseen_objects(np.where(breeds, 0.0002, 0.0).astype(np.float32)[None], DecodeOptions(), vocab)
    assert breeds.sum() > 100 and {"dog", "dogs", "puppy"} <= noise
    assert unseen_objects(probabilities, DecodeOptions(grounding="off"), vocab) is None
    assert unseen_objects(probabilities, DecodeOptions(grounding_veto=0.0), vocab) is None
    assert unseen_objects(None, DecodeOptions(), vocab) is None
    chinese = Vocabulary([*SPECIAL_TOKENS, "狗", "cat"], tokenization="chars", lang="zh")
    assert unseen_objects(probabilities, DecodeOptions(), chinese) is None
    with pytest.raises(ValueError, match="grounding_veto"):
        DecodeOptions(grounding_veto=1.0)


def test_captioners_veto_from_their_own_tags():
    """ImageCaptioner.caption_features vetoes from the probabilities it is given: the photo's caption under "tags"
    never names an unseen object the plain search would, and with grounding off it may."""
    from captioner.artifacts.model_files import ModelInfo
    from captioner.decoding.captioning import ImageCaptioner

    vocab = Vocabulary([*SPECIAL_TOKENS, *WORDS])
    captioner = ImageCaptioner()
    captioner.info = ModelInfo("efficientnet_lite0", 224, len(vocab), vocab.fingerprint)
    captioner.vocab, captioner.search = vocab, Search(TinyDecoder(3), vocab, max_length=6)
    features = _features(3, 8)
    off = captioner.caption_features(features, DecodeOptions(grounding="off"), np.zeros((8, 1000), np.float32))
    tags = captioner.caption_features(features, DecodeOptions(), np.zeros((8, 1000), np.float32))
    assert any({"dog", "cat"} & set(c.words) for c in off)  # the plain search names them, unseen
    assert not any({"dog", "cat"} & set(c.words) for c in tags)
