"""The Streamlit app through Streamlit's own harness (AppTest): examples, decoding, explain, export,
missing model, bad uploads and a model shared between sessions. Real browser: test_app_browser.py."""

from __future__ import annotations

import re
import shutil

import pytest
from app_files import AWKWARD_FILES, shape_png
from conftest import ROOT
from streamlit.testing.v1 import AppTest

import captioner
from captioner import gallery
from captioner.decode import DecodeOptions

pytestmark = pytest.mark.slow
APP = str(ROOT / "app.py")
TIMEOUT = 180  # a cold run loads TensorFlow, the model and MobileNetV2 on a busy two-core machine


@pytest.fixture
def app_env(shapes_model, monkeypatch):
    """Point the app at the model the tests trained (never at runs/ or a shipped model)."""
    result = shapes_model["result"]
    monkeypatch.setenv("CAPTIONER_MODEL", str(result.model_path))
    monkeypatch.setenv("CAPTIONER_TOKENIZER", str(result.vocab_path))
    monkeypatch.setenv("CAPTIONER_ENCODER_WEIGHTS", str(shapes_model["weights"]))
    return shapes_model


def start() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    return at


def plain(markdown: str) -> str:
    """Markdown the app escaped (file names, paths, captions) back to the text a user reads."""
    return re.sub(r"\\(.)", r"\1", markdown)


def caption_of(at: AppTest, index: int) -> str:
    """The caption shown on card `index` (bold Markdown)."""
    return plain(at.main.get_by_key(f"caption_{index}").markdown[0].value).strip("*")


def cards(at: AppTest) -> list:
    return [node for node in at.main if getattr(node, "key", None) and node.key.startswith("card_")]


def test_examples_get_captions_from_the_model_vocabulary(app_env):
    at = start()
    assert "Drop one or more photos" in at.info[0].value and not cards(at)
    at.pills(key="examples").set_value(["Cat", "Coffee"]).run()
    assert not at.exception and not at.error
    assert len(cards(at)) == 2
    vocab = set(captioner.load(app_env["result"].model_path, app_env["result"].vocab_path,
                               app_env["weights"]).vocab.tokens[4:])
    for index in range(2):
        words = caption_of(at, index).split()
        assert words and set(words) <= vocab
    assert [p.value for p in at.main.get("progress") if "confidence" in (p.proto.text or "")]
    assert at.code[0].value[0].isupper() and at.code[0].value.endswith(".")  # copyable alt text


def test_decoding_controls_change_the_search(app_env):
    at = start()
    at.pills(key="examples").set_value(["Rocket"]).run()
    model = captioner.load(app_env["result"].model_path, app_env["result"].vocab_path, app_env["weights"])
    image = gallery.load_example("Rocket")

    at.sidebar.slider[0].set_value(4)  # beam width
    at.sidebar.slider[1].set_value(3).run()  # n-best shown
    expected = model.caption(image, DecodeOptions(beam_size=4, n_best=3))
    assert caption_of(at, 0) == expected.text
    alternatives = at.main.expander[0]
    assert alternatives.label == f"{len(expected.alternatives)} best captions"
    assert alternatives.markdown[0].value.startswith(f"1. {expected.text}")

    at.sidebar.radio[0].set_value("Greedy").run()
    assert caption_of(at, 0) == model.caption(image, DecodeOptions(beam_size=1)).text
    assert at.sidebar.slider[0].disabled and not at.main.expander  # no n-best list for greedy search


def test_explain_shows_one_attention_map_per_word(app_env):
    at = start()
    at.file_uploader[0].set_value(("shape.png", shape_png(), "image/png")).run()
    words = caption_of(at, 0).split()
    strip = at.main.image[-1]
    assert strip.captions == words  # the strip of small maps, one per word
    word_buttons = at.segmented_control[0]
    assert word_buttons.value == words[0] and len(set(word_buttons.options)) == len(words)  # "a", "a (2)"
    word_buttons.set_value(word_buttons.options[-1]).run()
    assert at.main.image[-2].captions == [f"attention for “{words[-1]}”"]


def test_export_offers_csv_and_json(app_env):
    at = start()
    at.file_uploader[0].set_value([("shape.png", shape_png(), "image/png"), ("bad.jpg", b"nope", "image/jpeg")]).run()
    labels = [button.proto.label for button in at.get("download_button")]
    assert labels == ["Download CSV", "Download JSON"]
    alt_lines = at.code[-1].value.splitlines()
    assert alt_lines == [f"shape.png: {at.code[0].value}"]  # only images with a caption


def test_bad_uploads_get_a_message_and_the_others_their_caption(app_env):
    at = start()
    at.file_uploader[0].set_value([(name, data, mime) for name, (data, mime, _) in AWKWARD_FILES.items()]).run()
    assert not at.exception
    for index, (name, (_, _, expected_error)) in enumerate(AWKWARD_FILES.items()):
        card = at.main.get_by_key(f"card_{index}")
        if expected_error:
            assert [e.value for e in card.error] and card.error[0].value.startswith(expected_error), name
            assert not card.markdown or not any(m.value.startswith("**") for m in card.markdown)
        else:
            assert not card.error, name
            assert caption_of(at, index), name
    assert any("only the first frame" in info.value for info in at.info)
    assert "5 of 9 images captioned; 4 could not be read." in [c.value for c in at.main.caption]


def test_missing_model_shows_what_is_missing_and_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv("CAPTIONER_MODEL", str(tmp_path / "mymodel.h5"))
    monkeypatch.setenv("CAPTIONER_TOKENIZER", str(tmp_path / "tokenizer.pkl"))
    at = start()
    assert f"{tmp_path / 'mymodel.h5'}: model file not found" in plain(at.error[0].value)
    assert "captioner train" in at.markdown[-1].value and "CAPTIONER_MODEL" in at.markdown[-1].value
    assert not at.file_uploader  # no half-working page


def test_missing_encoder_weights_say_where_to_put_them(app_env, monkeypatch, tmp_path):
    monkeypatch.setenv("CAPTIONER_ENCODER_WEIGHTS", str(tmp_path / "mobilenet.h5"))
    at = start()
    assert f"{tmp_path / 'mobilenet.h5'} not found" in plain(at.error[0].value)
    assert "KERAS_HOME" in at.markdown[-1].value


def test_sidebar_loads_another_model(app_env, monkeypatch, tmp_path):
    monkeypatch.setenv("CAPTIONER_MODEL", str(tmp_path / "missing.h5"))
    at = start()
    assert "missing.h5: model file not found" in plain(at.error[0].value)
    result = app_env["result"]
    at.sidebar.text_input[0].set_value(str(result.model_path))
    at.sidebar.text_input[1].set_value(str(result.vocab_path))
    at.sidebar.button[0].click().run()
    assert not at.error and not at.exception
    assert result.model_path.name in plain(at.sidebar.markdown[0].value)
    assert "dev_greedy" in at.sidebar.dataframe[0].value.columns  # scores from the model card


def test_two_sessions_share_one_loaded_model(app_env, monkeypatch, tmp_path):
    """st.cache_resource: the second session (and every rerun) reuses the first one's model."""
    result = app_env["result"]
    folder = tmp_path / "fresh"  # paths no earlier test loaded, so this test sees the first load
    folder.mkdir()
    monkeypatch.setenv("CAPTIONER_MODEL", str(shutil.copy(result.model_path, folder)))
    monkeypatch.setenv("CAPTIONER_TOKENIZER", str(shutil.copy(result.vocab_path, folder)))
    loads = []
    real = gallery.load_captioner
    monkeypatch.setattr(gallery, "load_captioner", lambda paths: loads.append(paths) or real(paths))
    first, second = start(), start()
    for at in (first, second):
        at.file_uploader[0].set_value(("shape.png", shape_png(), "image/png")).run()
        assert caption_of(at, 0)
    assert len(loads) == 1
    loaded_at = [at.sidebar.caption[-1].value for at in (first, second)]
    assert loaded_at[0] == loaded_at[1] and loaded_at[0].startswith("Loaded at")
