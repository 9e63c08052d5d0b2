"""captioner.gallery: per-image result or error, example photos, model-card scores and exports."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from app_files import AWKWARD_FILES

from captioner import gallery
from captioner.decode import Caption, DecodeOptions
from captioner.errors import ArtifactError, WeightsError


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
    best.alternatives = [best, other]
    results = [gallery.ImageResult("dog.jpg", caption=best),
               gallery.ImageResult("bad.png", error="bad.png: not an image Pillow can read")]
    rows = list(csv.DictReader(io.StringIO(gallery.to_csv(results))))
    assert rows == [
        {"file": "dog.jpg", "caption": "a dog on the grass", "alt_text": "A dog on the grass.",
         "confidence": str(round(best.confidence, 4)), "alternatives": "a brown dog, running", "error": ""},
        {"file": "bad.png", "caption": "", "alt_text": "", "confidence": "", "alternatives": "",
         "error": "bad.png: not an image Pillow can read"}]
    data = json.loads(gallery.to_json(results))
    assert data[0]["alternatives"] == [{"caption": "a brown dog, running", "confidence": round(other.confidence, 4)}]
    assert data[1]["confidence"] is None and data[1]["error"].startswith("bad.png")


def test_model_scores_keeps_only_score_tables():
    extra = {"dev_greedy": {"BLEU-4": 0.21, "CIDEr": 0.5}, "config": {"data": "x", "epochs": 3},
             "test": {"BLEU-4": 1}, "note": "hello", "empty": {}}
    assert gallery.model_scores(extra) == {"dev_greedy": {"BLEU-4": 0.21, "CIDEr": 0.5}, "test": {"BLEU-4": 1.0}}
    assert gallery.model_scores(None) == {}


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
    assert [r.name for r in results if r.caption] == good
    assert all(r.caption.text and r.error is None for r in results if r.name in good)
    assert all(r.caption is None and r.error for r in results if r.name not in good)
    assert calls == [(2, 5), (4, 5), (5, 5)]
    assert results[0].caption.text == "a red circle on a white background"
    assert 1 <= len(results[0].caption.alternatives) <= 2
