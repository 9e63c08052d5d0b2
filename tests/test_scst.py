"""Self-critical training: the CIDEr-D reward matches pycocoevalcap, and fine-tuning raises it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider

from captioner.training.rewards import CiderD

REFS = {
    "1": ["a dog runs on the grass", "a brown dog running", "the dog is running in a field"],
    "2": ["two children play in the water", "kids splash in a pool", "two kids swimming"],
    "3": ["a man rides a bike down a hill", "a cyclist on a mountain road", "man on a bicycle"],
}
HYPS = {"1": "a dog running on grass", "2": "two kids play in a pool", "3": "a man on a bike"}


def test_cider_d_equals_pycocoevalcap_on_the_same_corpus():
    ours = CiderD([[r.split() for r in REFS[k]] for k in REFS], mark_end=False)
    expected = Cider().compute_score({k: REFS[k] for k in REFS}, {k: [HYPS[k]] for k in REFS})[1]
    got = [ours.score(HYPS[k].split(), i) for i, k in enumerate(REFS)]
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_reward_prefers_good_and_complete_captions():
    scorer = CiderD([[r.split() for r in REFS[k]] for k in REFS])
    assert scorer.score(["a", "dog", "running", "on", "grass"], 0) > scorer.score(["a", "dog", "running", "on"], 0)
    assert scorer.score(["a", "dog", "running", "on", "grass"], 0) > scorer.score(["two", "kids", "swimming"], 0)
    assert scorer.score([], 0) == pytest.approx(0.0, abs=1e-6)


# --- the self-critical trainer on a tiny model -------------------------------------------------------

GROUPS = [["a red circle on grey", "a red circle", "red circle on a grey background"],
          ["two dogs run on the beach", "two dogs run", "dogs on a beach"],
          ["a man rides a bike", "a man on a bike", "a man rides a blue bike"]]
CELLS, CHANNELS = 6, 12


@pytest.fixture(scope="module")
def tiny():
    """A decoder briefly trained with cross-entropy on three feature grids, and what SCST needs with it."""
    import keras

    from captioner.models.base import build_caption_model
    from captioner.text.vocabulary import Vocabulary
    from captioner.training.xent import CaptionTrainer

    keras.utils.set_random_seed(0)
    vocab = Vocabulary.build([c for group in GROUPS for c in group], min_count=1)
    centres = np.random.default_rng(0).normal(size=(len(GROUPS), CELLS, CHANNELS)).astype("float32")
    model = build_caption_model(len(vocab), (CELLS, CHANNELS), embedding_dim=16, units=32, attention_units=8,
                                dropout=0.0)
    sequences = [vocab.encode(c) for group in GROUPS for c in group] * 4
    tokens = np.zeros((len(sequences), max(map(len, sequences))), np.int32)
    for row, sequence in enumerate(sequences):
        tokens[row, : len(sequence)] = sequence
    grids = np.repeat(centres, 3, axis=0)[np.arange(len(sequences)) % 9]
    trainer = CaptionTrainer(model, attention_reg=0.0)
    trainer.compile(optimizer=keras.optimizers.Adam(0.01))
    trainer.fit((grids, tokens[:, :-1]), tokens[:, 1:], batch_size=12, epochs=2, verbose=0)
    reward = CiderD([[vocab.tokenize(c) for c in group] for group in GROUPS])
    return model, vocab, reward, centres


def _mean_reward(trainer, centres: np.ndarray, draws: int = 64) -> float:
    import tensorflow as tf

    features = tf.constant(np.repeat(centres, draws, axis=0))
    samples = trainer.generator.sample(features)[0].numpy()
    return float(trainer._rewards(samples, np.repeat(np.arange(len(centres)), draws)).mean())


def test_leave_one_out_advantage_by_hand():
    import tensorflow as tf

    from captioner.training.scst import leave_one_out_advantage

    rewards = tf.constant([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]])
    expected = [[1 - 2.5, 2 - 2.0, 3 - 1.5], [0 - 3.0, 0 - 3.0, 6 - 0.0]]
    np.testing.assert_allclose(leave_one_out_advantage(rewards), expected)


def test_samples_stop_at_end_and_never_hold_special_tokens(tiny):
    import tensorflow as tf

    from captioner.decoding.tf_search import TFSearch
    from captioner.models.base import get_decoder

    model, vocab, _, centres = tiny
    samples, log_probs = TFSearch(get_decoder(model), vocab).sample(tf.constant(np.repeat(centres, 20, 0)))
    samples, log_probs = samples.numpy(), log_probs.numpy()
    assert len({tuple(row) for row in samples}) > 3, "sampling, not greedy decoding"
    for row in samples:
        ends = np.flatnonzero(row == vocab.end_id)
        words = row[: ends[0]] if len(ends) else row
        assert not set(words) & {vocab.pad_id, vocab.start_id, vocab.unk_id}
        if len(ends):
            assert (row[ends[0] + 1:] == vocab.pad_id).all()
    assert (log_probs[samples == vocab.pad_id] == 0).all(), "no log-probability after <end>"
    assert (log_probs[samples != vocab.pad_id] < 0).all(), "every drawn token has its log-probability"


def test_self_critical_steps_raise_the_reward(tiny):
    import keras
    import tensorflow as tf

    from captioner.training.scst import SelfCriticalTrainer

    model, vocab, reward, centres = tiny
    trainer = SelfCriticalTrainer(model, vocab, reward, samples=6)
    trainer.compile(optimizer=keras.optimizers.Adam(5e-3))
    keras.utils.set_random_seed(1)
    before = _mean_reward(trainer, centres)
    data = tf.data.Dataset.from_tensor_slices((centres, np.arange(len(centres)))).repeat(20).batch(3)
    history = trainer.fit(data, epochs=1, verbose=0).history
    after = _mean_reward(trainer, centres)
    assert after > before + 0.3, (before, after)
    assert history["reward"][-1] > 0


def test_self_critical_needs_two_samples(tiny):
    from captioner.training.scst import SelfCriticalTrainer

    model, vocab, reward, _ = tiny
    with pytest.raises(ValueError, match="at least 2 samples"):
        SelfCriticalTrainer(model, vocab, reward, samples=1)


def _teacher_forced_log_probs(model, vocab, features, samples, temperature=1.0):
    """log p of each sampled token under the sampling policy, softmax(logits / temperature) over the tokens a
    sample may hold (not <pad>, <start> or <unk>), by one teacher-forced pass in inference mode: (rows, T)."""
    import tensorflow as tf

    inputs = tf.constant(np.concatenate([np.full((len(samples), 1), vocab.start_id), samples[:, :-1]], 1), tf.int32)
    logits, _ = model([features, inputs], training=False)  # (rows, T, V)
    never = np.isin(np.arange(len(vocab)), [vocab.pad_id, vocab.start_id, vocab.unk_id])  # (V,)
    policy = tf.nn.log_softmax(tf.where(never, -np.inf, logits / temperature))  # (rows, T, V)
    return tf.gather(policy, samples, batch_dims=2).numpy()


def test_the_policy_gradient_never_moves_tokens_a_sample_cannot_hold():
    """Samples never hold <unk>, so the policy is renormalised over the other words: its log-probabilities are
    those of that distribution even where the model puts most of its mass on <unk>, and the self-critical loss has
    no gradient on <unk>'s logit. (Unrenormalised, every negative advantage raised <unk>, which no sample could
    lower again, until the Lite2 models wrote almost nothing else.)"""
    import keras
    import tensorflow as tf

    from captioner.decoding.tf_search import TFSearch
    from captioner.models.base import build_caption_model, get_decoder
    from captioner.text.vocabulary import Vocabulary
    from captioner.training.scst import leave_one_out_advantage

    keras.utils.set_random_seed(3)
    vocab = Vocabulary.build([c for group in GROUPS for c in group], min_count=1)
    model = build_caption_model(len(vocab), (CELLS, CHANNELS), embedding_dim=16, units=32, attention_units=8)
    decoder = get_decoder(model)
    bias = decoder.out_vocab.bias
    bias.assign(tf.tensor_scatter_nd_update(bias, [[vocab.unk_id]], [8.0]))  # <unk> gets most of the mass
    features = tf.constant(np.random.default_rng(3).normal(size=(6, CELLS, CHANNELS)).astype("float32"))
    generator = TFSearch(decoder, vocab, max_length=8)
    with tf.GradientTape() as tape:
        samples, log_probs = generator.sample(features, copies=4)  # (24, T) each
        rewards = tf.constant(np.random.default_rng(4).random((6, 4)).astype("float32"))
        advantage = tf.reshape(leave_one_out_advantage(rewards), [-1])  # (24,)
        loss = -tf.reduce_sum(advantage[:, None] * log_probs)
    samples, log_probs = samples.numpy(), log_probs.numpy()
    mask = samples != vocab.pad_id
    reference = _teacher_forced_log_probs(model, vocab, tf.repeat(features, 4, axis=0), samples)
    np.testing.assert_allclose(log_probs[mask], reference[mask], atol=1e-4)
    assert log_probs[mask].mean() > -4, "the drawn words are likely under the renormalised policy"
    gradient = tape.gradient(loss, bias).numpy()
    assert gradient[vocab.unk_id] == 0 and gradient[vocab.pad_id] == 0
    assert np.abs(gradient).max() > 1e-3


def test_sampling_at_a_temperature_draws_from_the_sharpened_distribution():
    """At temperature T the draws and their log-probabilities are those of softmax(logits / T): near 0 they are
    the greedy captions, and the policy gradient follows the tempered log-probabilities."""
    import keras
    import tensorflow as tf

    from captioner.decoding.options import GREEDY
    from captioner.decoding.tf_search import TFSearch
    from captioner.models.base import build_caption_model, get_decoder
    from captioner.text.vocabulary import Vocabulary

    keras.utils.set_random_seed(2)
    vocab = Vocabulary.build([c for group in GROUPS for c in group], min_count=1)
    model = build_caption_model(len(vocab), (CELLS, CHANNELS), embedding_dim=16, units=32, attention_units=8)
    features = np.random.default_rng(2).normal(scale=3.0, size=(12, CELLS, CHANNELS)).astype("float32")
    generator = TFSearch(get_decoder(model), vocab, max_length=8)
    for temperature in (0.5, 2.0):
        samples, log_probs = (x.numpy() for x in generator.sample(tf.constant(features), temperature=temperature))
        mask = samples != vocab.pad_id
        reference = _teacher_forced_log_probs(model, vocab, tf.constant(features), samples, temperature)
        np.testing.assert_allclose(log_probs[mask], reference[mask], atol=1e-4)
    cold, _ = generator.sample(tf.constant(features), temperature=1e-3)
    greedy = [caption.words for caption in generator.greedy(features, replace(GREEDY, block_repeats=False))]
    assert [vocab.words(row) for row in cold.numpy()] == greedy


def test_sampled_log_probs_are_those_of_the_drawing_pass_with_or_without_dropout():
    """Self-critical training differentiates the log-probabilities the sampling pass recorded: without
    dropout they are the model's teacher-forced ones; with dropout on, each draw's own masks change them."""
    import keras
    import tensorflow as tf

    from captioner.decoding.tf_search import TFSearch
    from captioner.models.base import build_caption_model, get_decoder
    from captioner.text.vocabulary import Vocabulary

    keras.utils.set_random_seed(0)
    vocab = Vocabulary.build([c for group in GROUPS for c in group], min_count=1)
    model = build_caption_model(len(vocab), (CELLS, CHANNELS), embedding_dim=16, units=32, attention_units=8,
                                dropout=0.5)
    features = tf.constant(np.random.default_rng(0).normal(size=(12, CELLS, CHANNELS)).astype("float32"))
    generator = TFSearch(get_decoder(model), vocab, max_length=8)
    for dropout in (False, True):
        samples, log_probs = (x.numpy() for x in generator.sample(features, training=dropout))
        mask = samples != vocab.pad_id
        reference = _teacher_forced_log_probs(model, vocab, features, samples)
        gap = np.abs(log_probs - reference)[mask]
        if dropout:
            assert gap.mean() > 0.05, "training=True must sample with dropout on"
        else:
            np.testing.assert_allclose(log_probs[mask], reference[mask], atol=1e-4)


def test_copies_draw_several_captions_of_each_image_in_row_order():
    """sample(..., copies=n) prepares each image once and returns its n draws together (the layout the
    self-critical baseline groups by): every row's log-probabilities are those of its own image."""
    import keras
    import tensorflow as tf

    from captioner.decoding.tf_search import TFSearch
    from captioner.models.base import build_caption_model, get_decoder
    from captioner.text.vocabulary import Vocabulary

    keras.utils.set_random_seed(1)
    vocab = Vocabulary.build([c for group in GROUPS for c in group], min_count=1)
    model = build_caption_model(len(vocab), (CELLS, CHANNELS), embedding_dim=16, units=32, attention_units=8)
    features = np.random.default_rng(1).normal(scale=3.0, size=(4, CELLS, CHANNELS)).astype("float32")
    samples, log_probs = (x.numpy() for x in TFSearch(get_decoder(model), vocab, max_length=8).sample(
        tf.constant(features), copies=3))
    assert samples.shape[0] == 12
    mask = samples != vocab.pad_id
    reference = _teacher_forced_log_probs(model, vocab, tf.constant(np.repeat(features, 3, axis=0)), samples)
    np.testing.assert_allclose(log_probs[mask], reference[mask], atol=1e-4)
