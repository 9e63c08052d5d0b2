"""Greedy and beam-search decoding: exactness, scores, n-best lists, confidence and attention."""

from __future__ import annotations

import itertools
from dataclasses import replace

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_checks import check_caption, expected_scores, teacher_forced

from captioner.decoding.arrays import NUMPY
from captioner.decoding.constraints import RepeatBlocker
from captioner.decoding.loops import SearchSettings
from captioner.decoding.options import DecodeOptions
from captioner.decoding.tf_arrays import TF
from captioner.decoding.tf_search import TFSearch
from captioner.models.base import build_caption_model, get_decoder
from captioner.text.vocabulary import Vocabulary
from captioner.training.xent import CaptionTrainer

# Each image group has three captions of different lengths, so the decoder stays uncertain:
# captions of varied length, and beam search has real alternatives to find.
GROUPS = [["a red circle", "a red circle on grey", "a big red circle on a grey background"],
          ["two dogs run", "two dogs run on the beach", "dogs on a beach"],
          ["a man rides a bike", "a man on a blue bike", "a man rides"],
          ["the girl jumps", "a girl in a green dress jumps", "the girl in green jumps high"]]
VOCAB = Vocabulary.build([c for group in GROUPS for c in group], min_count=1)
MAX_LENGTH = 8
CELLS, CHANNELS = 9, 16
CENTRES = np.random.default_rng(0).normal(size=(len(GROUPS), CELLS, CHANNELS)).astype("float32")


@pytest.fixture(scope="module")
def model():
    """A small decoder briefly trained on noisy copies of four feature grids (seconds)."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    model = build_caption_model(len(VOCAB), (CELLS, CHANNELS), embedding_dim=16, units=32, attention_units=8,
                                dropout=0.0)
    copies = 20
    sequences = [VOCAB.encode(c) for group in GROUPS for c in group] * copies
    tokens = np.zeros((len(sequences), max(map(len, sequences))), np.int32)
    for row, sequence in enumerate(sequences):
        tokens[row, : len(sequence)] = sequence
    grids = np.repeat(CENTRES, 3, axis=0)[np.arange(len(sequences)) % (3 * len(GROUPS))]
    grids = grids + rng.normal(scale=0.3, size=grids.shape).astype("float32")  # (n, 9, 16)
    trainer = CaptionTrainer(model, attention_reg=0.0)
    trainer.compile(optimizer=keras.optimizers.Adam(0.01))
    trainer.fit((grids, tokens[:, :-1]), tokens[:, 1:], batch_size=12, epochs=4, verbose=0)
    return model


@pytest.fixture(scope="module")
def generator(model):
    return TFSearch(get_decoder(model), VOCAB, max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def features():
    """Four unseen noisy grids per group: (16, 9, 16)."""
    noise = np.random.default_rng(1).normal(scale=0.5, size=(16, CELLS, CHANNELS))
    return (np.repeat(CENTRES, 4, axis=0) + noise).astype("float32")


def _repeats(written: list[int]) -> set[int]:
    """Words that would repeat the last word or a three-word phrase of `written`, computed plainly."""
    if not written:
        return set()
    banned = {written[-1]}
    if len(written) >= 2:
        banned |= {written[s + 2] for s in range(len(written) - 2) if written[s:s + 2] == written[-2:]}
    return banned


def _eager_greedy(model, features: np.ndarray, block_repeats: bool = True) -> list[str]:
    """Reference greedy decoding, one eager decoder step at a time, no tf.function or XLA."""
    decoder = get_decoder(model)
    memory, state = decoder.prepare(features)
    tokens = np.full(len(features), VOCAB.start_id)
    out = []
    for _ in range(MAX_LENGTH):
        logits, _, state = decoder.step(tokens, state, memory)
        logits = logits.numpy()
        logits[:, [VOCAB.pad_id, VOCAB.start_id, VOCAB.unk_id]] = -np.inf
        for row, written in enumerate(np.stack(out, 1).tolist() if out else [[]] * len(features)):
            if block_repeats:
                logits[row, list(_repeats(written))] = -np.inf
        tokens = logits.argmax(-1)
        out.append(tokens)
    return [VOCAB.decode(row) for row in np.stack(out, 1)]


def test_greedy_matches_a_plain_eager_loop(model, generator, features):
    captions = generator.greedy(features)
    assert [c.text for c in captions] == _eager_greedy(model, features)
    unblocked = generator.greedy(features, DecodeOptions(beam_size=1, block_repeats=False))
    assert [c.text for c in unblocked] == _eager_greedy(model, features, block_repeats=False)
    assert len({len(c.words) for c in captions}) > 1, "the test model should give captions of varied lengths"


def test_beam_width_one_is_exactly_greedy(generator, features):
    greedy = generator.greedy(features)
    for options in (DecodeOptions(beam_size=1), DecodeOptions(beam_size=1, n_best=3, length_penalty=1.0)):
        beam = generator.generate(features, options)
        assert [c.text for c in beam] == [c.text for c in greedy]
        assert [c.log_prob for c in beam] == [c.log_prob for c in greedy]
        assert all(c.alternatives == [] and c.ranked == [c] for c in beam)


def test_beam_search_machinery_with_one_beam_follows_greedy(generator, features):
    """With k=1 and raw log-probabilities, the beam bookkeeping (pool, gathers, stopping) reproduces greedy."""
    seqs, scores, norms, _, (greedy_tokens, greedy_logp, _) = generator._beam(
        tf.constant(features), SearchSettings(1, 0.0, True, True, MAX_LENGTH, 1))
    best = np.argmax(norms.numpy(), axis=1)
    beam_tokens = seqs.numpy()[np.arange(len(features)), best]
    assert [VOCAB.decode(row) for row in beam_tokens] == [VOCAB.decode(row) for row in greedy_tokens.numpy()]
    np.testing.assert_allclose(scores.numpy()[np.arange(len(features)), best], greedy_logp.numpy().sum(1),
                               rtol=1e-5)


def test_greedy_decoded_inside_the_beam_search_is_the_greedy_caption(generator, features):
    *_, inside = generator._beam(tf.constant(features), SearchSettings(3, 0.7, True, True, MAX_LENGTH, 3))
    assert [VOCAB.decode(row) for row in inside[0].numpy()] == [c.text for c in generator.greedy(features)]


@pytest.mark.parametrize("length_penalty", [0.0, 0.7, 1.0])
def test_wider_beam_never_scores_below_greedy(generator, features, length_penalty):
    greedy = generator.generate(features, DecodeOptions(beam_size=1, length_penalty=length_penalty))
    for k in (2, 3, 5):
        beam = generator.generate(features, DecodeOptions(beam_size=k, length_penalty=length_penalty))
        for g, b in zip(greedy, beam, strict=True):
            assert b.score >= g.score - 1e-5, (k, g.text, g.score, b.text, b.score)


def test_beam_search_finds_better_captions_than_greedy(generator, features):
    greedy = generator.generate(features, DecodeOptions(beam_size=1))
    beam = generator.generate(features, DecodeOptions(beam_size=3))
    assert any(b.score > g.score + 1e-3 for g, b in zip(greedy, beam, strict=True)), "beam search is not searching"


def test_scores_are_the_model_log_probabilities(model, generator, features):
    options = DecodeOptions(beam_size=4, n_best=4, length_penalty=0.7)
    for image, caption in zip(features, generator.generate(features, options), strict=True):
        for alternative in caption.ranked:
            if len(alternative.words) < MAX_LENGTH:  # ended with <end>
                expected, _ = expected_scores(model, VOCAB, image, alternative.words)
                np.testing.assert_allclose(alternative.log_prob, expected, rtol=1e-4, atol=1e-4)
                assert alternative.score == pytest.approx(alternative.log_prob / (len(alternative.words) + 1) ** 0.7)


def test_n_best_entries_are_distinct_and_sorted(generator, features):
    captions = generator.generate(features, DecodeOptions(beam_size=5, n_best=4))
    assert any(c.alternatives for c in captions)
    for caption in captions:
        texts = [a.text for a in caption.ranked]
        scores = [a.score for a in caption.ranked]
        assert caption.ranked[0] is caption and caption not in caption.alternatives and 1 <= len(texts) <= 4
        assert len(set(texts)) == len(texts)
        assert scores == sorted(scores, reverse=True)


def test_confidence_is_the_geometric_mean_of_the_token_probabilities(model, generator, features):
    """Recomputed from the model's own next-token probabilities, not from the caption's stored log_prob."""
    checked = 0
    for options in (DecodeOptions(beam_size=1), DecodeOptions(beam_size=3, n_best=3, length_penalty=0.0)):
        for image, caption in zip(features, generator.generate(features, options), strict=True):
            for alternative in caption.ranked:
                if len(alternative.words) < MAX_LENGTH:  # ended with <end>
                    probs, _ = teacher_forced(model, VOCAB, image, alternative.words)
                    assert alternative.confidence == pytest.approx(np.prod(probs) ** (1 / len(probs)), rel=1e-4)
                    checked += 1
    assert checked >= 20


def test_attention_is_the_models_attention_for_those_words(model, generator, features):
    """Each word's attention row is the one the decoder computed before emitting that word, whichever beam it
    came from, as a teacher-forced pass over the same words gives it."""
    for options in (DecodeOptions(beam_size=1), DecodeOptions(beam_size=3, n_best=3)):
        for image, caption in zip(features, generator.generate(features, options), strict=True):
            for alternative in caption.ranked:
                assert alternative.attention.shape == (len(alternative.words), CELLS)
                np.testing.assert_allclose(alternative.attention.sum(axis=1), 1.0, rtol=1e-5)
                _, alpha = teacher_forced(model, VOCAB, image, alternative.words)
                np.testing.assert_allclose(alternative.attention, alpha, atol=1e-5)


def test_max_length_is_respected(model, generator, features):
    """Captions cut at max_length score their words only: no <end> term in log p or confidence."""
    cut = 0
    for beam_size in (1, 3):
        captions = generator.generate(features, DecodeOptions(beam_size=beam_size, n_best=3, max_length=3))
        assert all(len(a.words) <= 3 for c in captions for a in c.ranked)
        for image, caption in zip(features, captions, strict=True):
            for alternative in caption.ranked:
                check_caption(alternative, model, VOCAB, image, max_length=3)
                cut += not alternative.ended
    assert cut >= 5


def test_captions_do_not_depend_on_the_batch(generator, features):
    """Batches are padded to a bucket size for XLA; the padding must not leak into the results."""
    for options in (DecodeOptions(beam_size=1), DecodeOptions(beam_size=3)):
        whole = [c.text for c in generator.generate(features, options)]
        assert [c.text for c in generator.generate(features[:5], options)] == whole[:5]
        assert [generator.generate(features[i:i + 1], options)[0].text for i in (0, 6, 11)] == [
            whole[i] for i in (0, 6, 11)]
    assert generator.generate(features[:0], DecodeOptions(beam_size=3)) == []


def test_new_batch_sizes_do_not_retrace(model, features):
    """Each call reuses the compiled search: a trace per call would cost far more than decoding."""
    generator = TFSearch(get_decoder(model), VOCAB, max_length=MAX_LENGTH)
    for batch in (1, 3, 4, 1):
        generator.generate(features[:batch], DecodeOptions(beam_size=1))
        generator.generate(features[:batch], DecodeOptions(beam_size=3))
    assert generator._greedy.experimental_get_tracing_count() <= 2  # a static shape, then (None, 9, 16)
    assert generator._beam.experimental_get_tracing_count() <= 2


def test_invalid_beam_size(generator, features):
    with pytest.raises(ValueError, match="beam_size must be at least 1"):
        generator.generate(features, DecodeOptions(beam_size=0))


def _repeat_blocked(vocab: Vocabulary, history, t):
    """What RepeatBlocker adds to log-probabilities (rows, V): 0, or NEG_INF (or a multiple) where it blocks."""
    zeros = np.zeros((len(history), len(vocab)), np.float32)
    return RepeatBlocker(vocab)(tf.constant(zeros) if tf.is_tensor(history) else zeros, history, t)


@pytest.mark.parametrize("axis", [1, 2])
def test_write_puts_values_at_step_t_on_both_array_libraries(axis):
    """ops.write fills index t of an axis and nothing else: in place in NumPy, by a one-hot product in TensorFlow."""
    rng = np.random.default_rng(axis)
    x = rng.normal(size=(2, 3, 5, 4)).astype(np.float32)
    x[(slice(None),) * axis + (2,)] = 0  # the slot a search writes is still zero
    values = rng.normal(size=np.delete(x.shape, axis)).astype(np.float32)
    want = x.copy()
    want[(slice(None),) * axis + (2,)] = values
    np.testing.assert_array_equal(TF.write(tf.constant(x), tf.constant(2), tf.constant(values), axis).numpy(), want)
    np.testing.assert_array_equal(NUMPY.write(x, 2, values, axis), want)


def test_repeat_blocker_blocks_the_last_word_and_repeated_three_word_phrases():
    history = np.zeros((3, MAX_LENGTH), np.int32)
    history[0, :5] = [5, 6, 7, 5, 6]  # "5 6" again: 7 would repeat "5 6 7"; 6 would follow itself
    history[1, :2] = [5, 6]
    history[2, :4] = [8, 8, 9, 4]  # pairs never recur
    for t, rows in ((5, [0]), (2, [1]), (4, [2])):
        for mask in (_repeat_blocked(VOCAB, history, t),
                     _repeat_blocked(VOCAB, tf.constant(history), tf.constant(t)).numpy()):
            for row in rows:
                blocked = set(np.flatnonzero(mask[row] < 0))
                assert blocked == _repeats(history[row, :t].tolist())
    mask = _repeat_blocked(VOCAB, tf.constant(history), tf.constant(0)).numpy()
    assert set(np.flatnonzero(mask[0] < 0)) == set()


def test_repeat_blocker_blocks_a_noun_phrase_opened_twice():
    """"a baby is holding a" may not go on with "baby", nor "a woman and" with "woman"; modifiers ("a red dog
    and a red cat") and words after other words may repeat; NumPy and TensorFlow agree."""
    vocab = Vocabulary.build(["a baby is holding a toy", "a woman and a man", "a red dog and a red cat",
                              "the dog sees the dog"], min_count=1)
    cases = {"a baby is holding a": {"a", "baby"}, "a woman and": {"and", "woman"},
             "a red dog and a": {"a"}, "the dog sees the": {"the", "dog"},
             "dog sees a": {"a"}}
    for text, expected in cases.items():
        ids = vocab.encode(text)[1:-1]  # without <start> and <end>
        history = np.zeros((1, MAX_LENGTH), np.int32)
        history[0, :len(ids)] = ids
        for mask in (_repeat_blocked(vocab, history, len(ids)),
                     _repeat_blocked(vocab, tf.constant(history), tf.constant(len(ids))).numpy()):
            assert {vocab.tokens[i] for i in np.flatnonzero(mask[0] < 0)} == expected, text


def test_blocking_repeats_stops_a_model_that_stutters():
    """A decoder trained only on "go go go go go" says it again unless repeats are blocked."""
    keras.utils.set_random_seed(0)
    vocab = Vocabulary.build(["go go go go go", "stop now"], min_count=1)
    model = build_caption_model(len(vocab), (CELLS, CHANNELS), embedding_dim=8, units=16, attention_units=4,
                                dropout=0.0)
    tokens = np.array([vocab.encode("go go go go go")] * 64, np.int32)
    grids = np.repeat(CENTRES[:1], 64, axis=0)
    trainer = CaptionTrainer(model, attention_reg=0.0)
    trainer.compile(optimizer=keras.optimizers.Adam(0.02))
    trainer.fit((grids, tokens[:, :-1]), tokens[:, 1:], batch_size=16, epochs=10, verbose=0)
    generator = TFSearch(get_decoder(model), vocab, max_length=MAX_LENGTH)
    for options in (DecodeOptions(beam_size=1), DecodeOptions(beam_size=3)):
        stutter = generator.generate(CENTRES[:1], replace(options, block_repeats=False))[0].words
        assert stutter[:5] == ["go"] * 5
        fluent = generator.generate(CENTRES[:1], options)[0].words
        assert fluent and all(a != b for a, b in itertools.pairwise(fluent))


def test_character_vocabularies_may_double_a_character():
    """Chinese writes words with a doubled character (狗狗, 泡泡): only repeated trigrams are blocked."""
    vocab = Vocabulary.build(["小狗狗在玩泡泡", "狗狗"], min_count=1, tokenization="chars", lang="zh")
    dog, bubble = vocab.tokens.index("狗"), vocab.tokens.index("泡")
    history = np.zeros((2, MAX_LENGTH), np.int32)
    history[0, :2] = [dog, dog]
    history[1, :5] = [dog, bubble, dog, dog, bubble]  # "狗泡" again: 狗 would repeat "狗泡狗"
    mask = _repeat_blocked(vocab, tf.constant(history), tf.constant(2)).numpy()
    blocked = [set(np.flatnonzero(row < 0)) for row in mask]
    assert blocked[0] == set()
    mask = _repeat_blocked(vocab, tf.constant(history), tf.constant(5)).numpy()
    assert set(np.flatnonzero(mask[1] < 0)) == {dog}
