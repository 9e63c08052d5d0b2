"""Tags: what the encoder's ImageNet classifier sees, on every caption, from the same CNN pass, on both runtimes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

import captioner
from captioner.cli.main import main as cli
from captioner.errors import CaptionerError
from captioner.features.imagenet import imagenet_classes
from captioner.features.tags import TAGS_MIN_PROBABILITY, confident_words, top_tags
from captioner.portable.model import PortableCaptioner
from captioner.serving import loading
from captioner.serving.api import Captioner
from captioner.serving.batch import caption_to_file

#: scikit-image's public-domain photos and the caption words their tags should name.
PHOTOS = {"chelsea": {"cat"}, "coffee": {"coffee", "cup", "mug"}, "rocket": {"missile", "rocket", "shuttle"},
          "stereo_motorcycle": {"motorcycle", "scooter"}}


def _photo(name: str, folder: Path) -> Path:
    pixels = getattr(skimage.data, name)()
    pixels = pixels[0] if isinstance(pixels, tuple) else pixels  # the stereo pair: its left view
    path = folder / f"{name}.png"
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("skimage_photos")
    return [_photo(name, folder) for name in PHOTOS]


def test_top_tags_keeps_the_best_classes_above_the_threshold():
    probabilities = np.zeros((2, 1000), np.float32)  # (photos, classes)
    probabilities[0, [285, 281, 282]] = 0.7, 0.2, TAGS_MIN_PROBABILITY / 2
    probabilities[1, 967] = 0.9
    first, second = top_tags(probabilities)
    assert [(t.name, t.word, t.index) for t in first] == [("Egyptian cat", "cat", 285), ("tabby", "cat", 281)]
    assert first[0].probability == pytest.approx(0.7)
    assert [t.word for t in second] == ["coffee"]
    assert len(top_tags(np.full((1, 1000), 0.1), k=3)[0]) == 3


def test_confident_words_sum_the_classes_of_one_object():
    """Canoe (caption word "canoe") and speedboat ("boat") are one boat: 0.06 each make it confident at 0.1, where
    either word alone would not be; a class outside the object table (coffee) stands on its own."""
    index = {c.name: i for i, c in enumerate(imagenet_classes())}
    probabilities = np.zeros((1, 1000), np.float32)  # (photos, classes)
    probabilities[0, [index["canoe"], index["speedboat"], index["espresso"]]] = 0.06, 0.06, 0.3
    (words,) = confident_words(probabilities, 0.1)
    assert list(words) == ["coffee", "boat"] and words["boat"] == pytest.approx(0.12)


def test_tags_name_what_the_photos_show(lite_shapes_model, photos):
    result = lite_shapes_model["result"]
    model = captioner.load(result.model_path, result.vocab_path, lite_shapes_model["weights"])
    assert isinstance(model, Captioner)  # an explicit weights file: the Keras path
    captions = model.caption_many(photos, captioner.DecodeOptions(beam_size=3, n_best=2))
    for photo, caption, expected in zip(photos, captions, PHOTOS.values(), strict=True):
        assert expected & {tag.word for tag in caption.tags[:3]}, (photo.name, caption.tags)
        assert all(alternative.tags == caption.tags for alternative in caption.ranked)
    assert captions[0].tags[0].name == "Egyptian cat" and captions[0].tags[0].probability > 0.5


def test_tags_on_the_export_the_cli_and_batch_files(lite_shapes_model, photos, tmp_path, capsys):
    from captioner.export import export_model

    result = lite_shapes_model["result"]
    keras_model = captioner.load(result.model_path, result.vocab_path, lite_shapes_model["weights"])
    folder = export_model(result.model_path, result.vocab_path, "onnx", tmp_path / "export",
                          encoder_weights=lite_shapes_model["weights"])
    portable = captioner.load(folder)
    for ours, theirs in zip(portable.caption_many(photos), keras_model.caption_many(photos), strict=True):
        assert [t.name for t in ours.tags] == [t.name for t in theirs.tags]
        np.testing.assert_allclose([t.probability for t in ours.tags], [t.probability for t in theirs.tags],
                                   atol=1e-3)
        assert ours.text == theirs.text

    assert cli(["caption", str(photos[0]), "--model", str(folder), "--tags"]) == 0
    assert "tags: Egyptian cat (0." in capsys.readouterr().out
    assert cli(["caption", str(photos[3]), "--model", str(folder), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert {"motorcycle", "scooter"} & {tag["word"] for tag in record["tags"]}

    report = caption_to_file(portable, photos, tmp_path / "captions.csv", progress=False)
    assert report.captioned == len(photos)
    with (tmp_path / "captions.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert json.loads(rows[1]["tags"])[0]["name"] == "espresso"


def test_auto_runtime_exports_once_and_captions_as_keras_does(lite_shapes_model, tmp_path, monkeypatch):
    """`captioner.load(model file)` runs from an export made on first use, kept in the cache by the model's
    hash; the second load opens it without exporting again, and the captions are Keras's."""
    result = lite_shapes_model["result"]
    monkeypatch.setenv("KERAS_HOME", str(Path(lite_shapes_model["weights"]).parent.parent))  # "imagenet" = that file
    monkeypatch.setenv(loading.CACHE_ENV, str(tmp_path))
    first = captioner.load(result.model_path, result.vocab_path)
    assert isinstance(first, PortableCaptioner)
    assert first.folder.parent == tmp_path / "exports"

    def no_second_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr("captioner.export.export_model", no_second_export)
    second = captioner.load(result.model_path, result.vocab_path)
    assert second.folder == first.folder
    images = [lite_shapes_model["folder"] / "images" / name for name in sorted(lite_shapes_model["held_out"])]
    keras_model = captioner.load(result.model_path, result.vocab_path, runtime="tensorflow")
    assert isinstance(keras_model, Captioner)
    for ours, theirs in zip(second.caption_many(images), keras_model.caption_many(images), strict=True):
        assert ours.text == theirs.text
        assert ours.confidence == pytest.approx(theirs.confidence, abs=1e-4)
    with pytest.raises(CaptionerError, match="unknown runtime"):
        captioner.load(result.model_path, result.vocab_path, runtime="gpu")
    blocker = tmp_path / "a-file"  # a cache "folder" that cannot be created: one line, never a traceback
    blocker.write_text("")
    monkeypatch.setenv(loading.CACHE_ENV, str(blocker / "cache"))
    with pytest.raises(CaptionerError, match="to a writable folder"):
        captioner.load(result.model_path, result.vocab_path, runtime="portable")
