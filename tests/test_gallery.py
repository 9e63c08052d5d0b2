"""captioner.serving.gallery: per-image result or error, example photos, model-card scores and exports."""

from __future__ import annotations

import csv
import io
import json
import random

import numpy as np
import pytest
from app_files import AWKWARD_FILES
from conftest import draw_shape

import captioner
from captioner.decoding.options import Caption, DecodeOptions
from captioner.errors import ArtifactError, WeightsError
from captioner.serving import gallery


def _caption(text: str, log_prob: float = -1.0) -> Caption:
    words = text.split()
    return Caption(text, words, log_prob, np.full((len(words), 49), 1 / 49))


def test_read_images_reports_each_bad_file_and_keeps_the_rest():
    results = gallery.read_images([(name, data) for name, (data, _, _) in AWKWARD_FILES.items()])
    assert [r.name for r in results] == list(AWKWARD_FILES)
    for result, (_, _, expected_error) in zip(results, AWKWARD_FILES.values(), strict=True):
        if expected_error:
            assert result.image is None and result.error.startswith(expected_error)
        else:
            assert result.error is None and result.image.mode == "RGB"
    by_name = {r.name: r for r in results}
    assert by_name["rotated.jpg"].image.size == (60, 120)  # EXIF orientation applied: upright
    assert by_name["animated.gif"].notes == ["animated (2 frames): only the first frame was captioned"]
    assert by_name["shape.png"].notes == []


def test_examples_are_bundled_photos_loaded_at_run_time():
    for label in gallery.EXAMPLES:
        image = gallery.load_example(label)
        assert image.mode == "RGB" and min(image.size) >= 256


@pytest.mark.parametrize(("text", "alt"), [("a dog runs on the grass", "A dog runs on the grass."),
                                           ("a dog .", "A dog ."), ("", "")])
def test_alt_text_is_a_sentence(text, alt):
    assert gallery.alt_text(_caption(text)) == alt


def test_exports_hold_every_image_with_caption_or_error():
    best, other = _caption("a dog on the grass", -2.0), _caption("a brown dog, running", -3.0)
    best.alternatives = [other]
    results = [gallery.ImageResult("dog.jpg", captions={"en": best}),
               gallery.ImageResult("bad.png", error="bad.png: not an image Pillow can read")]
    rows = list(csv.DictReader(io.StringIO(gallery.to_csv(results))))
    assert rows == [
        {"file": "dog.jpg", "language": "en", "caption": "a dog on the grass", "alt_text": "A dog on the grass.",
         "confidence": str(round(best.confidence, 4)), "alternatives": "a brown dog, running", "error": ""},
        {"file": "bad.png", "language": "", "caption": "", "alt_text": "", "confidence": "", "alternatives": "",
         "error": "bad.png: not an image Pillow can read"}]
    data = json.loads(gallery.to_json(results))
    assert data[0]["alternatives"] == [{"caption": "a brown dog, running", "confidence": round(other.confidence, 4)}]
    assert data[1]["confidence"] is None and data[1]["error"].startswith("bad.png")


def test_exports_have_one_row_per_image_and_language():
    english, chinese = _caption("a red circle"), Caption("红色圆形", list("红色圆形"), -1.0, np.full((4, 49), 1 / 49))
    results = [gallery.ImageResult("a.png", captions={"en": english, "zh": chinese}),
               gallery.ImageResult("b.png", captions={"en": english, "zh": chinese})]
    rows = list(csv.DictReader(io.StringIO(gallery.to_csv(results))))
    assert [(r["file"], r["language"], r["caption"]) for r in rows] == [
        ("a.png", "en", "a red circle"), ("a.png", "zh", "红色圆形"),
        ("b.png", "en", "a red circle"), ("b.png", "zh", "红色圆形")]
    assert rows[1]["alt_text"] == "红色圆形。"  # a Chinese full stop, not "."
    assert "红色圆形" in gallery.to_json(results)  # JSON keeps the characters readable, not \u escapes


def test_model_paths_come_from_the_environment(monkeypatch):
    for name in ("CAPTIONER_MODEL", "CAPTIONER_TOKENIZER", "CAPTIONER_ENCODER_WEIGHTS"):
        monkeypatch.delenv(name, raising=False)
    assert gallery.ModelPaths.from_env() == gallery.ModelPaths("mymodel.h5", "tokenizer.pkl", "imagenet")
    monkeypatch.setenv("CAPTIONER_MODEL", "m/x.h5")
    monkeypatch.setenv("CAPTIONER_ENCODER_WEIGHTS", "w.h5")
    assert gallery.ModelPaths.from_env() == gallery.ModelPaths("m/x.h5", "tokenizer.pkl", "w.h5")


def test_load_captioner_names_the_missing_file(tmp_path, shapes_model):
    with pytest.raises(ArtifactError, match=r"nothing\.h5: model file not found"):
        gallery.load_captioner(gallery.ModelPaths(str(tmp_path / "nothing.h5"), str(tmp_path / "t.pkl")))
    result = shapes_model["result"]
    with pytest.raises(WeightsError, match=r"no-such-weights\.h5 not found"):  # the encoder is built at load time
        gallery.load_captioner(gallery.ModelPaths(str(result.model_path), str(result.vocab_path),
                                                  str(tmp_path / "no-such-weights.h5")))


def test_caption_images_captions_good_files_around_bad_ones(shapes_model):
    result = shapes_model["result"]
    loaded = gallery.load_captioner(gallery.ModelPaths(str(result.model_path), str(result.vocab_path),
                                                       str(shapes_model["weights"])))
    calls = []
    items = [(name, data) for name, (data, _, _) in AWKWARD_FILES.items()]
    results = gallery.caption_images(loaded.captioner, items, DecodeOptions(beam_size=3, n_best=2), batch_size=2,
                                     progress=lambda done, total: calls.append((done, total)))
    good = [name for name, (_, _, error) in AWKWARD_FILES.items() if error is None]
    assert [r.name for r in results if r.captions] == good
    assert all(r.captions["en"].text and r.error is None for r in results if r.name in good)
    assert all(not r.captions and r.error for r in results if r.name not in good)
    assert calls == [(2, 5), (4, 5), (5, 5)]
    assert results[0].captions["en"].text == "a red circle on a white background"
    assert 1 <= len(results[0].captions["en"].ranked) <= 2


class _CountingCaptioner:
    """Stands in for a Captioner: counts encodings and captions every image with its own word."""

    def __init__(self, encoder: str, word: str):
        self.info = type("Info", (), {"encoder": encoder, "image_size": 224})()
        self.word, self.encoded = word, 0

    def encode_and_classify(self, images):
        self.encoded += 1
        return np.zeros((len(images), 49, 8), np.float32), None

    def caption_features(self, features, options, probabilities=None):
        return [_caption(f"{self.word} {i}") for i in range(len(features))]


def test_languages_on_one_encoder_share_one_encoding_and_others_get_their_own():
    english, chinese = _CountingCaptioner("mobilenet_v2", "en"), _CountingCaptioner("mobilenet_v2", "zh")
    german = _CountingCaptioner("vgg16", "de")
    found = gallery.caption_in_languages({"zh": chinese, "de": german, "en": english}, ["a.png", "b.png"])
    assert (chinese.encoded, english.encoded, german.encoded) == (1, 0, 1)
    assert [list(row) for row in found] == [["zh", "de", "en"]] * 2  # the caller's language order
    assert [row["en"].text for row in found] == ["en 0", "en 1"]
    assert gallery.caption_in_languages({"en": english}, []) == []


def test_caption_in_languages_encodes_once_and_matches_each_model_alone(shapes_model, chinese_shapes_model,
                                                                        monkeypatch):
    models = {}
    for lang, trained in (("en", shapes_model), ("zh", chinese_shapes_model)):
        result = trained["result"]
        models[lang] = captioner.load(result.model_path, result.vocab_path, trained["weights"])
    rng = random.Random(5)
    images = [draw_shape(shape, colour, "white", rng) for shape, colour in (("circle", "red"), ("square", "blue"))]
    alone = {lang: [c.text for c in model.caption_many(images)] for lang, model in models.items()}

    encoded = []
    for lang, model in models.items():
        monkeypatch.setattr(model, "encode_and_classify", lambda batch, real=model.encode_and_classify, lang=lang:
                            encoded.append((lang, len(batch))) or real(batch))
    found = gallery.caption_in_languages(models, images)
    assert encoded == [("en", 2)]  # one CNN pass for both languages
    assert {lang: [row[lang].text for row in found] for lang in models} == alone
    assert all(row["zh"].text and " " not in row["zh"].text for row in found)  # characters, joined without spaces

    results = gallery.caption_images(models, [("shape.png", images[0]), ("empty.png", b"")])
    assert list(results[0].captions) == ["en", "zh"] and results[0].captions["zh"].text == alone["zh"][0]
    assert not results[1].captions and results[1].error


def test_language_models_come_from_the_environment_or_the_shipped_layout(monkeypatch):
    for name in ("CAPTIONER_MODEL", "CAPTIONER_TOKENIZER", "CAPTIONER_MODEL_ZH", "CAPTIONER_TOKENIZER_ZH",
                 "CAPTIONER_MODEL_DE", "CAPTIONER_TOKENIZER_DE", "CAPTIONER_ENCODER_WEIGHTS"):
        monkeypatch.delenv(name, raising=False)
    assert gallery.language_models() == {
        "en": gallery.ModelPaths("mymodel.h5", "tokenizer.pkl"),
        "zh": gallery.ModelPaths("models/zh/mymodel.h5", "models/zh/tokenizer.pkl"),
        "de": gallery.ModelPaths("models/de/mymodel.h5", "models/de/tokenizer.pkl")}
    monkeypatch.setenv("CAPTIONER_MODEL_ZH", "elsewhere/zh.h5")
    monkeypatch.setenv("CAPTIONER_MODEL", "en.h5")
    monkeypatch.setenv("CAPTIONER_ENCODER_WEIGHTS", "w.h5")
    models = gallery.language_models()
    assert models["zh"] == gallery.ModelPaths("elsewhere/zh.h5", "models/zh/tokenizer.pkl", "w.h5")
    assert models["en"] == gallery.ModelPaths("en.h5", "tokenizer.pkl", "w.h5")
    assert models["de"].encoder_weights == "w.h5"


def test_missing_language_files_and_how_to_get_them(tmp_path):
    (tmp_path / "mymodel.h5").write_bytes(b"x")
    paths = gallery.ModelPaths(str(tmp_path / "mymodel.h5"), str(tmp_path / "tokenizer.pkl"))
    assert gallery.missing_files(paths) == [str(tmp_path / "tokenizer.pkl")]
    (tmp_path / "tokenizer.pkl").write_bytes(b"x")
    assert gallery.missing_files(paths) == []
    help_text = gallery.how_to_get("de")
    assert "configs/flickr8k_de_lite2.yaml" in help_text and "models/de/mymodel.h5" in help_text
    assert "CAPTIONER_MODEL_DE" in help_text
    assert [gallery.language_label(lang) for lang in ("en", "zh", "de")] == ["English", "中文 · Chinese",
                                                                             "Deutsch · German"]


def test_visitors_choose_among_the_operators_models_only(tmp_path, monkeypatch):
    """CAPTIONER_MODELS_DIR offers its model folders under their language; a form value that is not one
    of the choices (a path, an index out of range) names no model, so the app opens nothing for it."""
    from captioner.artifacts.model_files import ModelInfo, save_model
    from captioner.models.base import build_caption_model
    from captioner.text.vocabulary import Vocabulary

    vocab = Vocabulary.build(["ein hund"], min_count=1, lang="de")
    model = build_caption_model(len(vocab), (4, 8), embedding_dim=4, units=4, attention_units=4)
    save_model(model, vocab, ModelInfo("mobilenet_v2", 224, len(vocab), vocab.fingerprint, "de"),
               tmp_path / "offered" / "de-small" / "mymodel.h5", tmp_path / "offered" / "de-small" / "tokenizer.pkl")
    (tmp_path / "offered" / "junk").mkdir()
    (tmp_path / "offered" / "junk" / "mymodel.h5").write_bytes(b"not a model")
    environ = {"CAPTIONER_MODELS_DIR": str(tmp_path / "offered")}
    choices = gallery.model_choices(environ)
    assert [p.model for p in choices["de"]] == ["models/de/mymodel.h5", str(tmp_path / "offered/de-small/mymodel.h5")]
    assert all(len(choices[lang]) == 1 for lang in ("en", "zh"))
    assert gallery.chosen_model(choices, gallery.choice_key("de", 1)) == ("de", choices["de"][1])
    for crafted in ("/etc/passwd", "../../etc/passwd", "de:2", "de:-1", "en:0:/etc/passwd", "xx:0", None, 3):
        assert gallery.chosen_model(choices, crafted) is None, crafted
    assert not gallery.visitors_may_type_paths({})
    assert gallery.visitors_may_type_paths({"CAPTIONER_ALLOW_MODEL_PATHS": "1"})
