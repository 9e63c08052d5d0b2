"""The Streamlit app through Streamlit's own harness (AppTest): examples, decoding, explain, export,
missing model, bad uploads, a model shared between sessions and captions in several languages side
by side. Real browser: test_app_browser.py."""

from __future__ import annotations

import io
import random
import re
import shutil

import pytest
from app_files import AWKWARD_FILES, shape_png
from conftest import ROOT, ZH_BACKGROUNDS, ZH_COLOURS, ZH_SHAPES, draw_shape
from streamlit.testing.v1 import AppTest

import captioner
from captioner.decoding.options import DecodeOptions
from captioner.serving import gallery

pytestmark = pytest.mark.slow
APP = str(ROOT / "app.py")
TIMEOUT = 180  # a cold run loads TensorFlow, the model and MobileNetV2 on a busy two-core machine


@pytest.fixture
def app_env(shapes_model, monkeypatch, tmp_path):
    """Point the app at the model the tests trained (never at runs/ or a shipped model); the other
    languages at files that do not exist, so that models committed to models/<lang>/ change nothing."""
    result = shapes_model["result"]
    monkeypatch.setenv("CAPTIONER_MODEL", str(result.model_path))
    monkeypatch.setenv("CAPTIONER_TOKENIZER", str(result.vocab_path))
    monkeypatch.setenv("CAPTIONER_ENCODER_WEIGHTS", str(shapes_model["weights"]))
    for lang in ("zh", "de"):
        monkeypatch.setenv(f"CAPTIONER_MODEL_{lang.upper()}", str(tmp_path / "absent" / lang / "mymodel.h5"))
        monkeypatch.setenv(f"CAPTIONER_TOKENIZER_{lang.upper()}", str(tmp_path / "absent" / lang / "tokenizer.pkl"))
    return shapes_model


@pytest.fixture
def bilingual_env(app_env, chinese_shapes_model, monkeypatch):
    """English and Chinese shapes models; German stays missing."""
    result = chinese_shapes_model["result"]
    monkeypatch.setenv("CAPTIONER_MODEL_ZH", str(result.model_path))
    monkeypatch.setenv("CAPTIONER_TOKENIZER_ZH", str(result.vocab_path))
    return {"en": app_env, "zh": chinese_shapes_model}


def start() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    return at


def plain(markdown: str) -> str:
    """Markdown the app escaped (file names, paths, captions) back to the text a user reads."""
    return re.sub(r"\\(.)", r"\1", markdown)


def caption_of(at: AppTest, index: int, lang: str = "en") -> str:
    """The caption in `lang` shown on card `index` (bold Markdown)."""
    return plain(at.main.get_by_key(f"caption_{index}_{lang}").markdown[0].value).strip("*")


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
    assert alternatives.label == f"{len(expected.ranked)} best captions"
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


def test_missing_model_shows_what_is_missing_and_how_to_get_it(app_env, monkeypatch, tmp_path):
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


def test_sidebar_loads_another_model_from_typed_paths_when_the_operator_allows(app_env, monkeypatch, tmp_path):
    monkeypatch.setenv("CAPTIONER_ALLOW_MODEL_PATHS", "1")
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


def test_english_and_chinese_captions_side_by_side(bilingual_env):
    at = start()
    assert at.pills(key="languages").value == ["en"]  # English alone until more are picked
    at.pills(key="languages").set_value(["en", "zh"]).run()
    image = draw_shape("square", "blue", "black", random.Random(2))
    at.file_uploader[0].set_value([("square.png", _png(image), "image/png"),
                                   ("bad.jpg", b"nope", "image/jpeg")]).run()
    assert not at.exception
    options = DecodeOptions(beam_size=3, n_best=3)  # the sidebar's defaults
    for lang, trained in bilingual_env.items():
        model = captioner.load(trained["result"].model_path, trained["result"].vocab_path, trained["weights"])
        assert caption_of(at, 0, lang) == model.caption(image, options).text  # same as the model alone
    chinese = caption_of(at, 0, "zh")
    assert chinese and " " not in chinese  # characters joined without spaces
    # A whole caption of the task's grammar ("<background>背景上的<colour><shape>"), as the model was taught:
    # not cut short, no special tokens, nothing between the characters.
    one_of = ["|".join(names.values()) for names in (ZH_BACKGROUNDS, ZH_COLOURS, ZH_SHAPES)]
    assert re.fullmatch("({})背景上的({})({})".format(*one_of), chinese), chinese
    card = at.main.get_by_key("card_0")
    assert [c.value for c in card.caption if "translate" in c.value] == [
        ":material/translate: English", ":material/translate: 中文 · Chinese"]  # each column says its language
    assert len([p for p in card.get("progress") if "confidence" in (p.proto.text or "")]) == 2
    assert at.main.get_by_key("card_1").error  # the unreadable file still gets its message

    rows = at.main.dataframe[-1].value  # the export table: one row per image and language
    assert list(zip(rows["file"], rows["language"], strict=True)) == [("square.png", "en"), ("square.png", "zh"),
                                                                      ("bad.jpg", "")]
    assert at.code[-1].value.splitlines()[1] == f"square.png (zh): {chinese}。"

    at.radio(key="explain_lang").set_value("zh").run()  # the Explain tab in Chinese: one map per character
    assert at.main.image[-1].captions == list(chinese)


def test_unavailable_language_says_how_to_get_it(bilingual_env):
    at = start()
    assert at.pills(key="languages").options == ["English", "中文 · Chinese"]  # German has no model here
    note = next(c.value for c in at.main.caption if "Deutsch" in c.value)
    assert "is not available" in note and "mymodel.h5` not found" in note
    assert "configs/flickr8k_de_lite2.yaml" in note and "CAPTIONER_MODEL_DE" in note
    at.pills(key="examples").set_value(["Coffee"]).run()
    assert not at.exception and caption_of(at, 0)


def test_a_language_model_that_fails_to_load_leaves_the_others_working(bilingual_env, monkeypatch, tmp_path):
    broken = tmp_path / "de"
    broken.mkdir()
    (broken / "mymodel.h5").write_bytes(b"not a model")
    (broken / "tokenizer.pkl").write_bytes(b"not a vocabulary")
    monkeypatch.setenv("CAPTIONER_MODEL_DE", str(broken / "mymodel.h5"))
    monkeypatch.setenv("CAPTIONER_TOKENIZER_DE", str(broken / "tokenizer.pkl"))
    at = start()
    at.pills(key="languages").set_value(["en", "de"]).run()
    assert not at.exception
    assert at.error[0].value.startswith("**Deutsch · German** could not be loaded:")
    at.file_uploader[0].set_value(("shape.png", shape_png(), "image/png")).run()
    assert caption_of(at, 0)
    assert len(at.main.get_by_key("card_0").get("progress")) == 1  # English only, no empty German column


def _models_dir(tmp_path, **models) -> str:
    """A CAPTIONER_MODELS_DIR with one folder per named (model, tokenizer) pair."""
    root = tmp_path / "offered"
    for name, result in models.items():
        (root / name).mkdir(parents=True)
        shutil.copy(result.model_path, root / name / "mymodel.h5")
        shutil.copy(result.vocab_path, root / name / "tokenizer.pkl")
    return str(root)


def test_sidebar_loads_a_configured_model_for_another_language(app_env, chinese_shapes_model, monkeypatch, tmp_path):
    monkeypatch.setenv("CAPTIONER_MODELS_DIR", _models_dir(tmp_path, shapes_zh=chinese_shapes_model["result"]))
    at = start()
    assert at.pills(key="languages").options == ["English"]
    assert not at.sidebar.text_input, "a public app offers no free path fields"
    choice = at.sidebar.selectbox(key="form_choice")
    assert choice.options == ["English · run/mymodel.h5", "中文 · Chinese · shapes_zh/mymodel.h5"]
    choice.select_index(1)
    at.sidebar.button[0].click().run()
    assert not at.exception and not at.error
    assert at.pills(key="languages").value == ["en", "zh"]  # the loaded language is picked at once
    assert at.session_state["models"]["zh"].model == str(tmp_path / "offered" / "shapes_zh" / "mymodel.h5")
    assert any("中文 · Chinese" in m.value for m in at.sidebar.markdown)


def test_each_language_model_is_loaded_once_per_process(bilingual_env, monkeypatch, tmp_path):
    result = bilingual_env["zh"]["result"]
    folder = tmp_path / "zh"  # paths no earlier test loaded
    folder.mkdir()
    monkeypatch.setenv("CAPTIONER_MODEL_ZH", str(shutil.copy(result.model_path, folder)))
    monkeypatch.setenv("CAPTIONER_TOKENIZER_ZH", str(shutil.copy(result.vocab_path, folder)))
    loads = []
    real = gallery.load_captioner
    monkeypatch.setattr(gallery, "load_captioner", lambda paths: loads.append(paths.model) or real(paths))
    for at in (start(), start()):
        at.pills(key="languages").set_value(["en", "zh"]).run()
        at.file_uploader[0].set_value(("shape.png", shape_png(), "image/png")).run()
        assert caption_of(at, 0, "zh")
    assert loads.count(str(folder / "mymodel.h5")) == 1


def _png(image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
