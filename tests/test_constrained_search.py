"""Constrained beam search: every caption writes one of its image's constraint words, the best such caption is
found when the beam is exhaustive, and an empty constraint is exactly plain beam search, on both runtimes.

The NumPy path runs over tiny random NumPy decoders (drawn by hypothesis); the TensorFlow path over a tiny
random Keras decoder, whose NumPy twin (the same decoder with its outputs as arrays) must give the same captions.
"""

from __future__ import annotations

import csv
import itertools
import json
import shutil
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from captioner.artifacts.model_files import ModelInfo
from captioner.cli.main import build_parser
from captioner.cli.options import decode_options
from captioner.data.datasets import CaptionDataset
from captioner.decoding.captioning import ImageCaptioner
from captioner.decoding.grounding import mark_grounded, search_constraints, tag_constraints
from captioner.decoding.options import Caption, DecodeOptions
from captioner.decoding.search import Search
from captioner.decoding.tf_search import TFSearch
from captioner.errors import CaptionerError
from captioner.evaluation.evaluate import caption_split
from captioner.features.cache import FeatureCache
from captioner.features.imagenet import imagenet_classes
from captioner.models.base import build_caption_model, get_decoder
from captioner.serving.batch import caption_record, caption_to_file
from captioner.text.vocabulary import SPECIAL_TOKENS, Vocabulary

WORDS = ["a", "dog", "cat", "runs", "on", "grass"]
VOCAB = Vocabulary([*SPECIAL_TOKENS, *WORDS])  # V = 10
CELLS, CHANNELS = 4, 5


class TinyDecoder:
    """A random recurrent decoder in NumPy with the decoder contract (prepare, step): sharp, far from uniform."""

    def __init__(self, seed: int, vocab_size: int = len(VOCAB), units: int = 6, sharpness: float = 3.0):
        rng = np.random.default_rng(seed)
        self.vocab_size = vocab_size
        self.embed = rng.normal(size=(vocab_size, units)).astype(np.float32)
        self.recur = (rng.normal(size=(units, units)) * 0.7).astype(np.float32)
        self.key = rng.normal(size=(CHANNELS, units)).astype(np.float32)
        self.out = (rng.normal(size=(units, vocab_size)) * sharpness).astype(np.float32)

    def prepare(self, features: np.ndarray, training: bool = False) -> tuple[list, list]:
        keys = np.tanh(features @ self.key)  # (batch, cells, units)
        return [keys], [keys.mean(1)]  # memory, state (batch, units)

    def step(self, tokens: np.ndarray, state: list, memory: list, training: bool = False):
        keys = np.repeat(memory[0], len(tokens) // len(memory[0]), axis=0)  # (rows, cells, units)
        energy = np.einsum("rcu,ru->rc", keys, state[0])  # (rows, cells)
        alpha = np.exp(energy - energy.max(1, keepdims=True))
        alpha /= alpha.sum(1, keepdims=True)  # (rows, cells)
        hidden = np.tanh(self.embed[tokens] + state[0] @ self.recur + np.einsum("rc,rcu->ru", alpha, keys))
        return hidden @ self.out, alpha.astype(np.float32), [hidden.astype(np.float32)]


def _features(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, CELLS, CHANNELS)).astype(np.float32)


def _log_prob(decoder, grid: np.ndarray, ids: list[int], ended: bool) -> float:
    """log p of `ids` (and <end>) stepping the decoder one word at a time."""
    memory, state = decoder.prepare(grid[None])
    total, token = 0.0, VOCAB.start_id
    for next_id in [*ids, VOCAB.end_id] if ended else ids:
        logits, _, state = decoder.step(np.array([token]), state, memory)
        logits = np.asarray(logits, np.float64)[0]
        total += logits[next_id] - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
        token = next_id
    return total


def _assert_same(got: list[Caption], want: list[Caption]) -> None:
    """The same captions, scores, n-best lists and attention."""
    for a, b in zip(got, want, strict=True):
        assert [c.text for c in a.ranked] == [c.text for c in b.ranked]
        np.testing.assert_allclose([c.score for c in a.ranked], [c.score for c in b.ranked], rtol=1e-6)
        np.testing.assert_allclose([c.log_prob for c in a.ranked], [c.log_prob for c in b.ranked], rtol=1e-6)
        for x, y in zip(a.ranked, b.ranked, strict=True):
            np.testing.assert_allclose(x.attention, y.attention, atol=1e-6)


constraint_sets = st.lists(st.sets(st.sampled_from(WORDS), max_size=2), min_size=1, max_size=4)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), constraints=constraint_sets, beam=st.integers(1, 4), n_best=st.integers(1, 4),
       penalty=st.sampled_from([0.0, 0.7, 1.0]), repeats=st.booleans(), max_length=st.integers(2, 7))
def test_every_caption_writes_a_constraint_word(seed, constraints, beam, n_best, penalty, repeats, max_length):
    """Whatever the decoder, beam, n-best size and rules: each caption of the n-best list writes one of its image's
    words (a word blocked by no rule can always be written), distinct and best first."""
    search = Search(TinyDecoder(seed), VOCAB, max_length=max_length)
    options = DecodeOptions(beam_size=beam, n_best=min(n_best, beam), length_penalty=penalty,
                            block_repeats=repeats)
    captions = search.generate(_features(seed, len(constraints)), options, constraints)
    for caption, wanted in zip(captions, constraints, strict=True):
        assert 1 <= len(caption.ranked) <= options.n_best
        assert len({c.text for c in caption.ranked}) == len(caption.ranked)
        assert [c.score for c in caption.ranked] == sorted((c.score for c in caption.ranked), reverse=True)
        for hypothesis in caption.ranked:
            assert not wanted or wanted & set(hypothesis.words), (wanted, hypothesis.text)
            assert len(hypothesis.words) <= max_length
            assert hypothesis.attention.shape == (len(hypothesis.words), CELLS)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), constraints=st.lists(st.lists(st.sets(st.sampled_from(WORDS), min_size=1,
       max_size=2), max_size=2), min_size=1, max_size=3), beam=st.integers(1, 3), penalty=st.sampled_from([0.0, 0.7]),
       repeats=st.booleans(), max_length=st.integers(3, 7))
def test_every_caption_writes_a_word_of_each_constraint(seed, constraints, beam, penalty, repeats, max_length):
    """With several word sets an image (Anderson et al.'s conjunction, a search state per subset met), each caption
    of the n-best list writes one word of every set of its image."""
    search = Search(TinyDecoder(seed), VOCAB, max_length=max_length)
    options = DecodeOptions(beam_size=beam, n_best=beam, length_penalty=penalty, block_repeats=repeats)
    captions = search.generate(_features(seed, len(constraints)), options, constraints)
    for caption, sets in zip(captions, constraints, strict=True):
        for hypothesis in caption.ranked:
            assert all(words & set(hypothesis.words) for words in sets), (sets, hypothesis.text)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), beam=st.integers(1, 4), n_best=st.integers(1, 4),
       penalty=st.sampled_from([0.0, 0.7]), repeats=st.booleans(), constrained=st.sets(st.integers(0, 2)))
def test_an_empty_constraint_is_plain_beam_search(seed, beam, n_best, penalty, repeats, constrained):
    """Images with no constraint get exactly the plain search's captions, scores, n-best lists and attention,
    whether no image of the batch has one (the plain loop) or others do (the two-state loop)."""
    search = Search(TinyDecoder(seed), VOCAB, max_length=6)
    options = DecodeOptions(beam_size=beam, n_best=min(n_best, beam), length_penalty=penalty, block_repeats=repeats)
    features = _features(seed, 3)
    plain = search.generate(features, options)
    constraints = [{"dog"} if i in constrained else set() for i in range(3)]
    got = search.generate(features, options, constraints)
    free = [i for i in range(3) if i not in constrained]
    _assert_same([got[i] for i in free], [plain[i] for i in free])


@pytest.mark.parametrize(("seed", "penalty"), [(0, 0.7), (1, 0.0), (2, 1.0), (3, 0.7)])
def test_an_exhaustive_constrained_beam_finds_the_best_caption_with_the_word(seed, penalty):
    """With a beam wider than every hypothesis, the caption is the best-scoring one (by enumeration, stepping the
    decoder word by word) among all captions that write a constraint word, and its score is that caption's."""
    words = ["a", "dog", "cat"]
    vocab = Vocabulary([*SPECIAL_TOKENS, *words])
    decoder, max_length = TinyDecoder(seed, len(vocab)), 3
    grid = _features(seed, 1)
    truth = {}
    for n in range(max_length + 1):
        for sequence in itertools.product(words, repeat=n):
            ended = n < max_length
            log_p = _log_prob(decoder, grid[0], vocab.ids(sequence), ended)
            truth[" ".join(sequence)] = log_p / (n + ended) ** penalty
    options = DecodeOptions(beam_size=40, length_penalty=penalty, block_repeats=False, max_length=max_length)
    search = Search(decoder, vocab)
    for wanted in ({"cat"}, {"dog", "cat"}, {"a"}):
        caption = search.generate(grid, options, [wanted])[0]
        best = max((text for text in truth if wanted & set(text.split())), key=truth.get)
        assert caption.text == best
        np.testing.assert_allclose(caption.score, truth[best], atol=1e-5)
    for sets in ([{"cat"}, {"dog"}], [{"a"}, {"dog", "cat"}]):  # a word of each set
        caption = search.generate(grid, options, [sets])[0]
        best = max((text for text in truth if all(words & set(text.split()) for words in sets)), key=truth.get)
        assert caption.text == best
        np.testing.assert_allclose(caption.score, truth[best], atol=1e-5)
    unconstrained = search.generate(grid, options)[0]
    assert unconstrained.text == max(truth, key=truth.get)


def test_constraints_outside_the_vocabulary_or_special_tokens_are_dropped():
    """A word the model cannot write is no constraint: the image decodes as plain beam search."""
    search = Search(TinyDecoder(5), VOCAB, max_length=6)
    features = _features(5, 2)
    _assert_same(search.generate(features, DecodeOptions(), [{"zebra"}, {"<end>", "<unk>"}]),
                 search.generate(features, DecodeOptions()))
    with pytest.raises(ValueError, match="constraints for 2 images"):
        search.generate(features, DecodeOptions(), [{"dog"}])


def test_each_image_of_a_batch_gets_its_own_constraint():
    """In one batch, each image's captions are those it gets decoded alone with its own constraint."""
    search = Search(TinyDecoder(7), VOCAB, max_length=7)
    features = _features(7, 4)
    constraints = [{"cat"}, set(), {"grass", "runs"}, {"dog"}]
    options = DecodeOptions(beam_size=3, n_best=3)
    together = search.generate(features, options, constraints)
    for i, wanted in enumerate(constraints):
        _assert_same([together[i]], search.generate(features[i:i + 1], options, [wanted]))


@pytest.fixture(scope="module")
def keras_decoder():
    """A random-weight Keras decoder (fixed seed) with sharp next-word distributions."""
    keras.utils.set_random_seed(3)
    model = build_caption_model(len(VOCAB), (CELLS, CHANNELS), embedding_dim=8, units=16, attention_units=8,
                                dropout=0.0)
    decoder = get_decoder(model)
    decoder.out_vocab.kernel.assign(decoder.out_vocab.kernel * 3.0)
    return decoder


class AsArrays:
    """A Keras decoder with NumPy arrays in and out: the NumPy loops over the very same weights."""

    def __init__(self, decoder):
        self.decoder, self.vocab_size = decoder, decoder.vocab_size

    @staticmethod
    def _numpy(nest):
        return keras.tree.map_structure(lambda x: np.asarray(x), nest)

    def prepare(self, features, training=False):
        return self._numpy(self.decoder.prepare(features, training=training))

    def step(self, tokens, state, memory, training=False):
        return self._numpy(self.decoder.step(tokens, state, memory, training))


def test_tensorflow_and_numpy_runtimes_agree(keras_decoder):
    """The compiled TensorFlow search and the NumPy one give the same constrained captions, and on TensorFlow
    too every caption writes a constraint word and an empty constraint is plain beam search."""
    features = _features(11, 4)
    constraints = [{"cat"}, set(), {"grass", "on"}, {"runs"}]
    options = DecodeOptions(beam_size=3, n_best=2, max_length=7)
    search = TFSearch(keras_decoder, VOCAB)
    compiled = search.generate(features, options, constraints)
    eager = Search(AsArrays(keras_decoder), VOCAB).generate(features, options, constraints)
    assert [[c.text for c in a.ranked] for a in compiled] == [[c.text for c in a.ranked] for a in eager]
    np.testing.assert_allclose([c.score for a in compiled for c in a.ranked],
                               [c.score for a in eager for c in a.ranked], atol=1e-4)
    for caption, wanted in zip(compiled, constraints, strict=True):
        assert all(not wanted or wanted & set(c.words) for c in caption.ranked)
    plain = search.generate(features, options)
    _assert_same([compiled[1]], [plain[1]])
    _assert_same(search.generate(features, options, [set()] * 4), plain)
    greedy = replace(options, beam_size=1, n_best=1)  # one beam per state
    assert "cat" in search.generate(features, greedy, constraints)[0].words
    both = [[{"cat"}, {"grass"}], set(), {"runs"}, [{"dog"}, {"on"}]]  # four states: a word of each set
    compiled = search.generate(features, options, both)
    eager = Search(AsArrays(keras_decoder), VOCAB).generate(features, options, both)
    assert [[c.text for c in a.ranked] for a in compiled] == [[c.text for c in a.ranked] for a in eager]
    assert all({"cat", "grass"} <= set(c.words) for c in compiled[0].ranked)
    _assert_same([compiled[1]], [plain[1]])


def _probabilities(**by_name: float) -> np.ndarray:
    """One photo's ImageNet probabilities (1, 1000) with the given class names at the given probabilities."""
    index = {c.name: c.index for c in imagenet_classes()}
    row = np.zeros((1, 1000), np.float32)
    for name, p in by_name.items():
        row[0, index[name.replace("_", " ")]] = p
    return row


def test_tag_constraints_sum_classes_that_share_a_word_and_keep_what_the_vocabulary_has():
    """At 0.3, two dog breeds at 0.2 make "dog" confident (0.4); a cat at 0.25 is not; every word naming the object
    that the vocabulary has writes it; words outside the vocabulary or without grounding give no constraint."""
    on = DecodeOptions(grounding="constrained", grounding_min_probability=0.3)
    probabilities = _probabilities(beagle=0.2, basset=0.2, tabby=0.25)
    vocab = Vocabulary([*SPECIAL_TOKENS, *WORDS, "dogs", "puppy", "zebra"])
    assert tag_constraints(probabilities, on, vocab) == [{"dog": frozenset({"dog", "dogs", "puppy"})}]
    assert tag_constraints(probabilities, replace(on, grounding_min_probability=0.2), vocab) == [
        {"dog": frozenset({"dog", "dogs", "puppy"}), "cat": frozenset({"cat"})}]
    assert tag_constraints(_probabilities(zebra=0.9), on, VOCAB) == [{}]  # "zebra": not in this vocabulary
    assert tag_constraints(probabilities, DecodeOptions(), vocab) is None  # the default, tags: no constraint
    assert tag_constraints(probabilities, DecodeOptions(grounding="off"), vocab) is None
    assert tag_constraints(None, on, vocab) is None  # no classifier
    chinese = Vocabulary([*SPECIAL_TOKENS, "狗", "dog"], tokenization="chars", lang="zh")
    assert tag_constraints(probabilities, on, chinese) is None  # the tag words are English
    # only objects are required: espresso's "coffee" and lakeside's "lake" are not objects of the table
    scene = Vocabulary([*SPECIAL_TOKENS, *WORDS, "coffee", "lake"])
    assert tag_constraints(_probabilities(espresso=0.5, lakeside=0.4, tabby=0.35), on, scene) == [
        {"cat": frozenset({"cat"})}]
    with pytest.raises(ValueError, match="grounding must be one of"):
        DecodeOptions(grounding="copy")
    with pytest.raises(ValueError, match="grounding_min_probability"):
        DecodeOptions(grounding_min_probability=0.0)


def test_a_grounded_model_is_required_only_the_objects_it_learnt_from_its_tags():
    """A grounded model's vocabulary ends in the tag words its captions never wrote (here "zebra"): a confident
    zebra is required, a confident dog, which its captions taught it, is not."""
    on = DecodeOptions(grounding="constrained", grounding_min_probability=0.3)
    grounded = Vocabulary([*SPECIAL_TOKENS, *WORDS, "zebra"], tag_words=1)
    assert grounded.caption_words == frozenset(WORDS)
    assert tag_constraints(_probabilities(zebra=0.5, beagle=0.4), on, grounded) == [{"zebra": frozenset({"zebra"})}]
    assert tag_constraints(_probabilities(beagle=0.9), on, grounded) == [{}]
    plain = Vocabulary([*SPECIAL_TOKENS, *WORDS, "zebra"])  # the same words, all from captions
    assert tag_constraints(_probabilities(zebra=0.5, beagle=0.4), on, plain) == [
        {"zebra": frozenset({"zebra"}), "dog": frozenset({"dog"})}]


def test_grounded_by_names_the_tag_words_a_caption_writes():
    """mark_grounded gives each caption of the n-best list the tag words it writes."""
    search = Search(TinyDecoder(2), VOCAB, max_length=6)
    constraints = [{"cat": frozenset({"cat"}), "dog": frozenset({"dog"})}]
    captions = search.generate(_features(2, 1), DecodeOptions(n_best=3), search_constraints(constraints))
    for caption in mark_grounded(captions, constraints)[0].ranked:
        assert caption.grounded_by and set(caption.grounded_by) <= set(caption.words)


class ShapesEncoder:
    """A stand-in EfficientNet-Lite: each image's grid from its pixels, and a classifier sure of a tabby cat."""

    name, image_size, grid_shape, classifier = "fake_lite", (8, 8), (2, 2), True

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.encode_and_classify(images)[0]

    def encode_and_classify(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        grids = images[:, ::4, ::4, :].reshape(len(images), CELLS, 3).astype(np.float32) / 255.0  # (n, 4, 3)
        grids = np.concatenate([grids, grids[..., :2]], -1)  # (n, cells, channels)
        return grids, np.repeat(_probabilities(tabby=0.9), len(images), axis=0)


class FakeCaptioner(ImageCaptioner):
    """The captioning methods every runtime shares, over a NumPy decoder and ShapesEncoder."""

    def __init__(self):
        self.vocab, self.decoder = VOCAB, TinyDecoder(4)
        self.search = Search(self.decoder, VOCAB, max_length=6)
        self.info = ModelInfo("fake_lite", 8, len(VOCAB), VOCAB.fingerprint)
        self._encoder = ShapesEncoder()

    @property
    def encoder(self) -> ShapesEncoder:
        return self._encoder


@pytest.fixture
def images(tmp_path) -> list[Path]:
    paths = []
    for i in range(3):
        pixels = np.random.default_rng(i).integers(0, 255, (8, 8, 3), dtype=np.uint8)
        paths.append(tmp_path / f"photo{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def test_captioners_ground_in_their_tags_and_batch_files_say_so(images, tmp_path):
    """caption_many with grounding names the tag word (cat) in every caption and says so in grounded_by, the JSON
    record and the CSV column; without grounding nothing is grounded."""
    model = FakeCaptioner()
    on = DecodeOptions(n_best=2, grounding="constrained")
    captions = model.caption_many(images, on)
    assert all("cat" in c.words and c.grounded_by == ["cat"] for caption in captions for c in caption.ranked)
    assert captions[0].tags[0].name == "tabby"
    assert all(not c.grounded_by for c in model.caption_many(images))
    assert caption_record("photo0.png", captions[0])["grounded_by"] == ["cat"]
    caption_to_file(model, images, tmp_path / "out.csv", on, progress=False)
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as handle:
        assert [json.loads(row["grounded_by"]) for row in csv.DictReader(handle)] == [["cat"]] * 3


def test_evaluation_reads_the_class_probabilities_beside_the_cached_features(images, tmp_path):
    """caption_split grounds cached features in the cached class probabilities; a cache without them (an encoder
    with no classifier) decodes unconstrained, and one that lacks some photos' probabilities is a clear error."""
    dataset = CaptionDataset(tmp_path, {p.name: ["a cat"] for p in images}, {"dev": [p.name for p in images]})
    model = FakeCaptioner()
    on = DecodeOptions(grounding="constrained")
    captions = caption_split(model, dataset, "dev", on, tmp_path / "cache")
    assert all(c.grounded_by == ["cat"] for c in captions.values())
    assert [c.text for c in captions.values()] == [c.text for c in model.caption_many(images, on)]
    classes = FeatureCache(tmp_path / "cache", "fake_lite", 8).class_cache().dir
    shutil.rmtree(classes)
    assert not any(c.grounded_by for c in caption_split(model, dataset, "dev", on, tmp_path / "cache").values())
    classes.mkdir()
    with pytest.raises(CaptionerError, match="no class probabilities for 3 of the photos"):
        caption_split(model, dataset, "dev", on, tmp_path / "cache")


def test_the_cli_takes_grounding_options():
    """--grounding picks off, tags or constrained; a bad threshold is a one-line error, not a traceback."""
    args = build_parser().parse_args(["caption", "x.jpg", "--grounding", "constrained",
                                      "--grounding-min-probability", "0.5"])
    assert decode_options(args, args.beam).grounding == "constrained"
    assert decode_options(args, args.beam).grounding_min_probability == 0.5
    assert build_parser().parse_args(["evaluate"]).grounding == "tags"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate", "--grounding", "copy"])
    args = build_parser().parse_args(["evaluate", "--grounding-min-probability", "2"])
    with pytest.raises(CaptionerError, match="grounding_min_probability must be in"):
        decode_options(args, beam_size=3)
