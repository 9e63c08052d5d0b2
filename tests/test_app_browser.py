"""End to end: `streamlit run app.py` on a loopback port, driven by real headless Chromium.

Covers what AppTest cannot: a real upload through the browser, the rendered page, and two browser
tabs (two sessions) captioning at the same time with one shared model.
"""

from __future__ import annotations

import os
from pathlib import Path

import appdriver  # scripts/appdriver.py, on pytest's pythonpath
import numpy as np
import pytest
from PIL import Image, ImageOps

import captioner
from captioner.serving import gallery

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.slow
WAIT_MS = 120_000  # first caption: TensorFlow, the model and MobileNetV2 load on a busy two-core machine


@pytest.fixture(scope="module")
def server(lite_shapes_model, tmp_path_factory):
    """The app on a model whose encoder (EfficientNet-Lite0) has an ImageNet classifier, so photos get tags."""
    if not Path(appdriver.CHROMIUM).is_file():
        needs = f"needs Debian's chromium at {appdriver.CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI") == "true":  # CI installs it: its absence is a failure, not a skip
            pytest.fail(needs)
        pytest.skip(needs)
    result = lite_shapes_model["result"]
    absent = tmp_path_factory.mktemp("absent")  # other languages: no model, whatever models/ holds
    env = {"CAPTIONER_MODEL": str(result.model_path), "CAPTIONER_TOKENIZER": str(result.vocab_path),
           "CAPTIONER_ENCODER_WEIGHTS": str(lite_shapes_model["weights"]),
           **{f"CAPTIONER_{kind}_{lang}": str(absent / name) for lang in ("ZH", "DE")
              for kind, name in (("MODEL", "mymodel.h5"), ("TOKENIZER", "tokenizer.pkl"))}}
    with appdriver.serve_app(env) as running:
        yield running


@pytest.fixture(scope="module")
def browser(server):
    with playwright.sync_playwright() as p:
        chromium = appdriver.launch_chromium(p)
        yield chromium
        chromium.close()


@pytest.fixture
def photo(tmp_path) -> Path:
    """A real photo (scikit-image's public-domain coffee cup) as a JPEG file."""
    path = tmp_path / "coffee.jpg"
    gallery.load_example("Coffee").save(path, quality=90)
    return path


def open_app(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    page.get_by_text("Drop one or more photos").wait_for(timeout=WAIT_MS)
    return page


def test_upload_a_photo_and_a_corrupt_file(server, browser, photo, tmp_path, lite_shapes_model):
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG " * 8)
    page = open_app(browser, server.url)
    appdriver.upload(page, [photo, corrupt])

    caption = page.locator(".st-key-caption_0_en")
    caption.wait_for(timeout=WAIT_MS)
    # The page shows the caption the library gives the same photo with the same model and default search.
    result = lite_shapes_model["result"]
    model = captioner.load(result.model_path, result.vocab_path, encoder_weights=lite_shapes_model["weights"])
    expected = model.caption(photo)
    assert caption.inner_text().strip() == expected.text
    # Under the photo, chips name what the classifier sees: for the coffee cup, an espresso.
    chips = page.locator(".st-key-tags_0")
    chips.wait_for(timeout=WAIT_MS)
    assert expected.tags[0].name == "espresso"
    assert f"espresso {expected.tags[0].probability:.0%}" in chips.inner_text()

    error = page.locator(".st-key-error_1")
    error.wait_for(timeout=WAIT_MS)
    assert "broken.jpg: the image data is corrupt or truncated" in error.inner_text()
    assert page.locator('[data-testid="stException"]').count() == 0  # no traceback anywhere
    # A visitor of the public app can name no server path: the sidebar has no text field at all.
    assert page.locator('[data-testid="stSidebar"] input[type="text"]').count() == 0
    assert page.get_by_label("Model (.h5)").count() == 0

    # The rendered card shows the uploaded photo itself: its pixels on screen match the file's, and not
    # the same photo mirrored (a stand-in for any other picture of the same colours).
    shot = tmp_path / "card.png"
    page.locator(".st-key-card_0 img").first.screenshot(path=shot)
    with Image.open(shot) as shown, Image.open(photo) as original:
        shown, original = np.asarray(shown.convert("RGB"), float), original.convert("RGB").resize(shown.size)
        assert shown.shape[1] > 100  # drawn at a visible size
        same = np.abs(shown - np.asarray(original, float)).mean()
        mirrored = np.abs(shown - np.asarray(ImageOps.mirror(original), float)).mean()
    assert same < 12 and mirrored > 2 * same, (same, mirrored)
    page.close()


def test_two_tabs_caption_at_once_with_one_shared_model(server, browser, photo):
    pages = [open_app(browser, server.url) for _ in range(2)]
    for page in pages:  # both uploads are in flight before either caption is waited for
        appdriver.upload(page, [photo])
    captions = []
    for page in pages:
        page.locator(".st-key-caption_0_en").wait_for(timeout=WAIT_MS)
        captions.append(page.locator(".st-key-caption_0_en").inner_text())
    assert captions[0] and captions[0] == captions[1]
    loaded = [page.get_by_text("Loaded at").first.inner_text() for page in pages]
    assert loaded[0] == loaded[1]  # the same load, not one per session
    assert server.log().count("captioner app: loaded model") == 1
    for page in pages:
        page.close()
