"""The load test's small CI version: two real browser sessions caption at once on one server.

benchmarks/load_test.py runs the same driver (scripts/appdriver.py: serve_app_for, RssSampler,
caption_in_sessions) with the shipped model and 2, 4 and 8 sessions, and reports times and memory.
Here the small shapes model keeps it fast, and nothing about time is asserted: only that every
session gets every caption and nothing fails.
"""

from __future__ import annotations

import random
from pathlib import Path

import appdriver  # scripts/appdriver.py, on pytest's pythonpath
import pytest
from conftest import draw_shape

from captioner.artifacts.model_files import load_vocabulary

pytest.importorskip("playwright.async_api")

pytestmark = pytest.mark.slow
TIMEOUT_S = 180  # first captions: TensorFlow, the model and MobileNetV2 load on a busy two-core machine


@pytest.fixture
def photo_sets(tmp_path) -> list[list[Path]]:
    """Two sessions, two different shape photos each (PNG and JPEG)."""
    sets = []
    for session, combos in enumerate(((("circle", "red", "white"), ("square", "blue", "black")),
                                      (("triangle", "green", "grey"), ("circle", "yellow", "black")))):
        files = []
        for k, (shape, colour, background) in enumerate(combos):
            path = tmp_path / f"s{session}-{shape}.{'png' if k == 0 else 'jpg'}"
            draw_shape(shape, colour, background, random.Random(10 * session + k)).save(path)
            files.append(path)
        sets.append(files)
    return sets


def test_two_sessions_at_once_all_get_their_captions(shapes_model, photo_sets, tmp_path):
    if not Path(appdriver.CHROMIUM).is_file():
        pytest.skip(f"needs Debian's chromium at {appdriver.CHROMIUM} (apt-get install chromium)")
    result = shapes_model["result"]
    env = appdriver.single_language_env(result.model_path, result.vocab_path, shapes_model["weights"],
                                        tmp_path / "absent")
    with appdriver.serve_app_for(4 * TIMEOUT_S, env) as server, appdriver.RssSampler(server.process.pid) as rss:
        sessions = appdriver.caption_in_sessions(server.url, photo_sets, TIMEOUT_S)
        log = server.log()

    assert [s.error for s in sessions] == [None, None], log[-3000:]
    vocab = set(load_vocabulary(result.vocab_path).tokens[4:])
    for session, files in zip(sessions, photo_sets, strict=True):
        assert session.files == files and session.seconds is not None
        assert len(session.captions) == len(files)
        for caption in session.captions:
            assert caption and set(caption.split()) <= vocab, caption
    assert "Traceback" not in log
    assert log.count("captioner app: loaded model") == 1  # one model for both sessions
    assert rss.samples > 1 and rss.peak_mib > 100  # the sampler saw the server (TensorFlow alone is more)
