"""Beam search against the truth: an exhaustive enumeration of every caption a tiny model can write.

With a beam at least as wide as the number of hypotheses at any step, beam search is exhaustive, so
its best caption and its n-best list must be exactly the top of a by-hand enumeration scored with
teacher-forced log-probabilities from one forward pass of the Keras model (never the decoder's steps).
The enumeration mirrors what `Caption.score` promises: log p / (scored tokens)**length_penalty, where a
caption that ended scores its words and <end> (len(words) + 1 tokens), and one cut at max_length scores
its words only (len(words) tokens).
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import keras
import numpy as np
import pytest
import tensorflow as tf

from captioner.decoding.options import Caption, DecodeOptions
from captioner.decoding.tf_search import TFSearch
from captioner.models.base import build_caption_model, get_decoder
from captioner.text.vocabulary import SPECIAL_TOKENS, Vocabulary
from captioner.training.xent import CaptionTrainer

VOCAB = Vocabulary([*SPECIAL_TOKENS, "red", "dog", "runs"])  # V = 7: 4 specials and 3 words
CELLS, CHANNELS = 4, 8
SCORE_TOL = 1e-5  # float32 decoder steps vs one teacher-forced pass


@pytest.fixture(scope="module")
def model() -> keras.Model:
    """A random-weight decoder (fixed seed) whose distributions are far from uniform."""
    keras.utils.set_random_seed(3)
    model = build_caption_model(len(VOCAB), (CELLS, CHANNELS), embedding_dim=8, units=16, attention_units=8,
                                dropout=0.0)
    out_vocab = get_decoder(model).out_vocab
    out_vocab.kernel.assign(out_vocab.kernel * 3.0)  # sharper next-word distributions than the initialiser's
    return model


@pytest.fixture(scope="module")
def generator(model: keras.Model) -> TFSearch:
    return TFSearch(get_decoder(model), VOCAB, max_length=8)


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    """Three random feature grids: (3, cells, channels)."""
    return np.random.default_rng(0).normal(size=(3, CELLS, CHANNELS)).astype("float32")


def _enumerate(model: keras.Model, vocab: Vocabulary, grid: np.ndarray, max_length: int, block_unk: bool,
               penalty: float) -> dict[str, tuple[float, float]]:
    """{text: (score, log p)} of every caption the search may write, from teacher-forced log-probabilities.

    Words are every token but <pad>, <start>, <end> (and <unk> when blocked). A caption is n < max_length
    words then <end> (log p of the words and <end>), or max_length words cut off (log p of the words).
    """
    specials = {vocab.pad_id, vocab.start_id, vocab.end_id} | ({vocab.unk_id} if block_unk else set())
    words = [i for i in range(len(vocab)) if i not in specials]
    # One pass over every <start> w1 … w_{L-1} gives the next-word distribution after each of its prefixes.
    prefixes = np.array([[vocab.start_id, *p] for p in itertools.product(words, repeat=max_length - 1)], np.int32)
    logits, _ = model([np.repeat(grid[None], len(prefixes), axis=0), prefixes], training=False)  # (n, L, V)
    log_probs = tf.nn.log_softmax(logits).numpy()
    row_of = {tuple(p[1:]): r for r, p in enumerate(prefixes)}
    captions = {}
    for n in range(max_length + 1):
        for sequence in itertools.product(words, repeat=n):
            row = log_probs[row_of[(*sequence, *[words[0]] * (max_length - 1 - n))[: max_length - 1]]]
            log_p = sum(float(row[t, token]) for t, token in enumerate(sequence))
            if n < max_length:
                log_p += float(row[n, vocab.end_id])
            text = vocab.decode(sequence)
            assert text not in captions
            captions[text] = (log_p / (n + (n < max_length)) ** penalty, log_p)
    return captions


def _assert_same_list(got: list[Caption], truth: dict[str, tuple[float, float]], n: int) -> None:
    """`got` is the top n of the enumeration: same scores in order, same texts (up to float ties)."""
    ranked = sorted(truth.items(), key=lambda item: -item[1][0])
    assert len(got) == min(n, len(ranked))
    for caption in got:
        assert caption.text in truth, f"beam search wrote {caption.text!r}, which no enumeration allows"
        np.testing.assert_allclose([caption.score, caption.log_prob], truth[caption.text], atol=SCORE_TOL)
    np.testing.assert_allclose([c.score for c in got], [s for _, (s, _) in ranked[:n]], atol=SCORE_TOL)
    clear = [i for i in range(len(got)) if i + 1 >= len(ranked) or ranked[i][1][0] - ranked[i + 1][1][0] > SCORE_TOL]
    for i in clear:  # wherever no float tie makes the order ambiguous, the sets of the first i+1 agree
        assert {c.text for c in got[: i + 1]} == {text for text, _ in ranked[: i + 1]}


@pytest.mark.parametrize(("max_length", "block_unk", "penalty"),
                         [(3, True, 0.7), (3, False, 0.0), (4, True, 1.0)])
def test_exhaustive_beam_is_the_enumeration(model: keras.Model, generator: TFSearch, features: np.ndarray,
                                            max_length: int, block_unk: bool, penalty: float) -> None:
    """An exhaustive beam returns the enumeration's best caption, and its n-best list is the enumeration's top n."""
    words = len(VOCAB) - 3 - block_unk
    # Wider than every hypothesis alive at any step (W**L) and than V**(L-1), and the finished pool never fills.
    beam = max(words**max_length, len(VOCAB) ** (max_length - 1))
    assert beam >= sum(words**n for n in range(max_length)) and 2 * beam >= words ** (max_length - 1) * (words + 1)
    truths = [_enumerate(model, VOCAB, grid, max_length, block_unk, penalty) for grid in features]
    total = len(truths[0])
    options = DecodeOptions(beam_size=beam, n_best=total, length_penalty=penalty, block_unk=block_unk,
                            block_repeats=False, max_length=max_length)
    for n_best in (total, 5):
        captions = generator.generate(features, replace(options, n_best=n_best))
        if not block_unk and n_best == total:
            assert any("<unk>" in c.text for c in captions[0].ranked), "<unk> is allowed here and must be written"
        for caption, truth in zip(captions, truths, strict=True):
            best = max(truth, key=lambda text: truth[text][0])
            second = sorted(s for s, _ in truth.values())[-2]
            assert truth[best][0] - second > 1e-3, "the test model should have a clear best caption"
            assert caption.text == best
            assert caption.ranked[0] is caption
            _assert_same_list(caption.ranked, truth, n_best)


# Two ways to start: "red" (3 of 5 captions) with three equally likely endings, or "blue" (2 of 5) with one.
# Greedy takes "red" (p ≈ 0.6) and then a third-likely word; "blue sky" is far likelier as a whole.
GARDEN = ["red dog", "red cat", "red bird", "blue sky", "blue sky"]
GARDEN_VOCAB = Vocabulary.build(GARDEN, min_count=1)


@pytest.fixture(scope="module")
def garden_model() -> keras.Model:
    """A decoder trained (seconds) to put the likeliest caption behind the less likely first word."""
    keras.utils.set_random_seed(0)
    model = build_caption_model(len(GARDEN_VOCAB), (CELLS, CHANNELS), embedding_dim=8, units=16,
                                attention_units=8, dropout=0.0)
    tokens = np.array([GARDEN_VOCAB.encode(c) for c in GARDEN] * 8 * 100, np.int32)  # 100 batches of 40
    grids = np.repeat(np.random.default_rng(1).normal(size=(1, CELLS, CHANNELS)), len(tokens), 0).astype("float32")
    trainer = CaptionTrainer(model, attention_reg=0.0)
    trainer.compile(optimizer=keras.optimizers.Adam(0.01))
    trainer.fit((grids, tokens[:, :-1]), tokens[:, 1:], batch_size=40, epochs=1, verbose=0)
    return model


def test_beam_beats_greedy_on_a_garden_path(garden_model: keras.Model) -> None:
    """Beam search finds the caption that greedy decoding cannot: a strictly higher score and different text."""
    generator = TFSearch(get_decoder(garden_model), GARDEN_VOCAB, max_length=4)
    grid = np.random.default_rng(1).normal(size=(1, CELLS, CHANNELS)).astype("float32")
    greedy = generator.greedy(grid, DecodeOptions(beam_size=1))[0]
    beam = generator.generate(grid, DecodeOptions(beam_size=2))[0]
    assert greedy.words[0] == "red", greedy.text
    assert beam.text == "blue sky" != greedy.text
    assert beam.score > greedy.score + 0.1, (beam.score, greedy.score)
    logits, _ = garden_model([grid, np.array([GARDEN_VOCAB.encode("blue sky")[:-1]], np.int32)], training=False)
    log_probs = tf.nn.log_softmax(logits[0]).numpy()  # the beam's score is the model's, not an artefact
    ids = GARDEN_VOCAB.encode("blue sky")[1:]
    np.testing.assert_allclose(beam.log_prob, sum(log_probs[t, i] for t, i in enumerate(ids)), atol=1e-4)
