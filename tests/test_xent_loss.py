"""The cross-entropy objective against a plain NumPy reference: padding ignored, label smoothing as a
mixture with the uniform distribution, and the doubly stochastic attention penalty over real words only."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from captioner.models.base import build_caption_model
from captioner.training.xent import CaptionTrainer

VOCAB, CELLS, CHANNELS = 11, 6, 5
# Three captions of different lengths, padded with 0: the padding must count for nothing.
TARGETS = np.array([[4, 7, 5, 2, 0, 0],
                    [9, 2, 0, 0, 0, 0],
                    [5, 6, 7, 8, 10, 2]], np.int32)


def reference_loss(logits: np.ndarray, alpha: np.ndarray, targets: np.ndarray, smoothing: float,
                   attention_reg: float) -> float:
    """Written from the paper's definitions, one real (non-pad) token at a time.

    Cross-entropy with the smoothed target q = (1 - ε)·onehot + ε/V, averaged over real tokens, plus
    λ · mean over images and cells of (1 - Σ_t α_ti)², the sum running over the real tokens only.
    """
    batch, steps, vocab = logits.shape
    token_losses = []
    coverage = np.zeros((batch, alpha.shape[-1]))
    for b in range(batch):
        for t in range(steps):
            if targets[b, t] == 0:
                continue
            shifted = logits[b, t] - logits[b, t].max()
            log_p = shifted - np.log(np.exp(shifted).sum())
            q = np.full(vocab, smoothing / vocab)
            q[targets[b, t]] += 1.0 - smoothing
            token_losses.append(-(q * log_p).sum())
            coverage[b] += alpha[b, t]
    return float(np.mean(token_losses) + attention_reg * np.mean((1.0 - coverage) ** 2))


def _trainer(smoothing: float, attention_reg: float) -> CaptionTrainer:
    keras.utils.set_random_seed(0)
    model = build_caption_model(VOCAB, (CELLS, CHANNELS), embedding_dim=8, units=8, attention_units=4, dropout=0.0)
    return CaptionTrainer(model, label_smoothing=smoothing, attention_reg=attention_reg)


@pytest.mark.parametrize(("smoothing", "attention_reg"), [(0.0, 0.0), (0.1, 1.0), (0.3, 2.5)])
def test_compute_loss_matches_a_numpy_reference(smoothing, attention_reg):
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=3.0, size=(*TARGETS.shape, VOCAB)).astype("float32")
    raw = rng.normal(scale=2.0, size=(*TARGETS.shape, CELLS))
    alpha = (np.exp(raw) / np.exp(raw).sum(-1, keepdims=True)).astype("float32")  # rows sum to 1, as softmax
    # Garbage where the targets are padding: it must not change the loss.
    logits[TARGETS == 0] = rng.normal(scale=50.0, size=(int((TARGETS == 0).sum()), VOCAB))
    trainer = _trainer(smoothing, attention_reg)
    loss = float(trainer.compute_loss(y=TARGETS, y_pred=(logits, alpha)))
    assert loss == pytest.approx(reference_loss(logits, alpha, TARGETS, smoothing, attention_reg), rel=1e-5)


def test_the_loss_fit_reports_is_the_reference_on_the_model_outputs():
    """Through Keras's own step (evaluate): the loss is computed on the model's logits and attention."""
    trainer = _trainer(0.1, 1.0)
    trainer.compile(optimizer="adam")
    rng = np.random.default_rng(2)
    features = rng.normal(size=(len(TARGETS), CELLS, CHANNELS)).astype("float32")
    inputs = np.concatenate([np.ones((len(TARGETS), 1), np.int32), TARGETS[:, :-1]], axis=1)  # <start> + words
    logits, alpha = (np.asarray(x) for x in trainer.caption_model([features, inputs], training=False))
    reported = trainer.evaluate((features, inputs), TARGETS, batch_size=len(TARGETS), verbose=0)
    assert reported == pytest.approx(reference_loss(logits, alpha, TARGETS, 0.1, 1.0), rel=1e-5)
