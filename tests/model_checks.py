"""What a caption's numbers must be, recomputed from one teacher-forced pass of the model over its words.

A caption's confidence, log-probability and attention are checked against the model's own forward pass
(features and <start> + words in, next-token logits and attention out), not against the caption's own
fields, so a search that mixes up beams, lengths or captions fails these checks.
"""

from __future__ import annotations

import numpy as np

from captioner.text.vocabulary import SPECIAL_TOKENS, Vocabulary, join_tokens


def teacher_forced(model, vocab: Vocabulary, grid: np.ndarray, words: list[str],
                   ended: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One forward pass of `model` over <start> + words for one feature grid (cells, channels).

    Returns the probability the model gave each next token: the words, then <end> if `ended` (a caption
    cut at the maximum length has none), (n + 1,) or (n,); and the attention of each word's step, (n, cells).
    """
    ids = [vocab.tokens.index(w) for w in words]  # raises for a word the model cannot have emitted
    tokens = np.array([[vocab.start_id, *ids]], np.int32)  # (1, n + 1)
    logits, alpha = model([np.asarray(grid, np.float32)[None], tokens], training=False)  # (1, n + 1, V), α
    logits = np.asarray(logits[0], np.float64)
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    targets = [*ids, vocab.end_id] if ended else ids
    return np.exp(log_probs[np.arange(len(targets)), targets]), np.asarray(alpha[0])[:len(ids)]


def expected_scores(model, vocab: Vocabulary, grid: np.ndarray, words: list[str],
                    ended: bool = True) -> tuple[float, float]:
    """(log p of the words and <end>, geometric mean of those probabilities) from a teacher-forced pass."""
    probs, _ = teacher_forced(model, vocab, grid, words, ended)
    log_prob = float(np.log(probs).sum())
    return log_prob, float(np.exp(log_prob / len(probs)))


def check_scores(words: list[str], log_prob: float, confidence: float, model, vocab: Vocabulary, grid: np.ndarray,
                 max_length: int, rtol: float = 1e-4, atol: float = 1e-4) -> np.ndarray:
    """Assert a caption's log-probability and confidence (as a Caption holds them, or as a CSV/JSON record
    wrote them) are the model's for those words of `grid`; returns the model's attention for them, (n, cells).

    A caption of `max_length` words was cut before its <end>: its log p and confidence have no <end> term."""
    assert not set(words) & set(SPECIAL_TOKENS), words
    ended = len(words) < max_length
    probs, alpha = teacher_forced(model, vocab, grid, words, ended)
    np.testing.assert_allclose(log_prob, np.log(probs).sum(), rtol=rtol, atol=atol, err_msg=str(words))
    np.testing.assert_allclose(confidence, np.prod(probs) ** (1 / len(probs)), rtol=rtol, atol=atol,
                               err_msg=str(words))
    return alpha


def check_caption(caption, model, vocab: Vocabulary, grid: np.ndarray, max_length: int,
                  rtol: float = 1e-4, atol: float = 1e-4) -> None:
    """Assert `caption` (a Caption) is one the model wrote for `grid`: real tokens joined as the vocabulary
    joins them, with the log-probability, confidence and per-word attention of the model's own pass."""
    assert caption.text == join_tokens(caption.words, vocab.tokenization)
    alpha = check_scores(caption.words, caption.log_prob, caption.confidence, model, vocab, grid, max_length,
                         rtol, atol)
    np.testing.assert_allclose(caption.attention, alpha, atol=max(atol, 1e-5))


def check_record(record: dict, model, vocab: Vocabulary, grid: np.ndarray, max_length: int) -> None:
    """Assert a caption record of `captioner caption --json` or a batch file (caption, confidence, log_prob
    and its n-best list, rounded to 4 decimals) holds the model's own scores of each caption's words."""
    assert record["n_best"][0]["caption"] == record["caption"]
    for entry in [record, *record["n_best"]]:
        check_scores(vocab.tokenize(entry["caption"]), entry["log_prob"], entry["confidence"], model, vocab, grid,
                     max_length, rtol=1e-5, atol=2e-4)
