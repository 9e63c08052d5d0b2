"""Horizontal-flip augmentation: mirrored captions, mirrored features, and a model that learns "right"
from photos that only ever show shapes on the left."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from captioner.data.datasets import CaptionDataset
from captioner.data.mirror import mirror_caption
from captioner.text.vocabulary import Vocabulary
from tests.conftest import BACKGROUNDS, COLOURS


@pytest.mark.parametrize("caption, lang, tokenization, mirrored", [
    ("a dog runs to the left of a man", "en", "words", "a dog runs to the right of a man"),
    ("Left hand up, right foot down", "en", "words", "Right hand up, left foot down"),
    ("a leftover sandwich on the bright table", "en", "words", "a leftover sandwich on the bright table"),
    ("ein Hund links, ein Kind rechts mit der linken Hand", "de", "words",
     "ein Hund rechts, ein Kind links mit der rechten Hand"),
    ("左边的狗和右边的猫", "zh", "chars", "右边的狗和左边的猫"),
    ("un chien à gauche", "fr", "words", "un chien à droite"),
    ("a dog on the left", "xx", "words", "a dog on the left"),  # a language with no word list: unchanged
])
def test_mirrored_captions_swap_left_and_right(caption, lang, tokenization, mirrored):
    assert mirror_caption(caption, lang, tokenization) == mirrored


def test_encoded_split_appends_the_mirrored_captions_after_the_originals(tmp_path):
    from captioner.training.pipelines import encode_split

    captions = {"a.jpg": ["a dog on the left", "a dog"], "b.jpg": ["a cat on the right"]}
    dataset = CaptionDataset(tmp_path, captions, {"train": ["a.jpg", "b.jpg"]})
    vocab = Vocabulary.build([c for cs in captions.values() for c in cs], min_count=1)
    index, sequences = encode_split(dataset, ["a.jpg", "b.jpg"], vocab, hflip=True)
    assert index.tolist() == [0, 0, 1, 2, 2, 3]  # the mirrored photos are rows 2 and 3
    texts = [" ".join(vocab.words(s[1:])) for s in sequences]
    assert texts == ["a dog on the left", "a dog", "a cat on the right",
                     "a dog on the right", "a dog", "a cat on the left"]


def _asymmetric_photo(path: Path) -> Path:
    image = Image.new("RGB", (224, 224), (128, 128, 128))
    ImageDraw.Draw(image).ellipse((10, 60, 90, 140), fill=(220, 30, 30))  # a red disc on the left
    image.save(path)
    return path


def test_mirrored_features_are_those_of_the_mirrored_photo(tmp_path, mobilenet_weights):
    from captioner.features.cache import FeatureCache
    from captioner.features.encoders import ImageEncoder

    photo = _asymmetric_photo(tmp_path / "photo.png")
    encoder = ImageEncoder("mobilenet_v2", str(mobilenet_weights))
    original, mirrored = (FeatureCache(tmp_path / "cache", "mobilenet_v2", 224, mirrored=m) for m in (False, True))
    for cache in (original, mirrored):
        assert cache.extract([photo], encoder, progress=False) == []
    assert original.dir != mirrored.dir
    flipped = np.asarray(Image.open(photo).convert("RGB"), np.float32)[None, :, ::-1]  # (1, 224, 224, 3)
    np.testing.assert_allclose(mirrored.load([photo])[0], encoder(flipped)[0], atol=2e-2)
    grid = original.load([photo])[0].astype(np.float32).reshape(7, 7, -1)  # (7, 7, 1280)
    mirrored_grid = mirrored.load([photo])[0].astype(np.float32).reshape(7, 7, -1)
    assert np.abs(mirrored_grid - grid).mean() > 0.05, "the mirrored photo was encoded, not the original"
    # and mirroring the grid itself is not the same thing, which is why the mirrored photos are encoded
    assert np.abs(mirrored_grid - grid[:, ::-1]).mean() > 0.01


SIDES = {"left": (8, 100), "right": (124, 216)}  # x range of the shape's box per side


def _side_photos(folder: Path, side: str, count: int, seed: int) -> list[tuple[str, str]]:
    """Shapes drawn on one side of the photo, each captioned with its colour and that side."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        colour = list(COLOURS)[i % len(COLOURS)]
        image = Image.new("RGB", (224, 224), BACKGROUNDS["grey"])
        low, high = SIDES[side]
        size = rng.randint(60, high - low)
        x, y = rng.randint(low, high - size), rng.randint(10, 214 - size)
        ImageDraw.Draw(image).rectangle((x, y, x + size, y + size), fill=COLOURS[colour])
        name = f"{side}{seed}_{i}.png"
        image.save(folder / name)
        rows.append((name, f"a {colour} square on the {side}"))
    return rows


@pytest.mark.slow
def test_flips_teach_right_from_photos_of_the_left(tmp_path, mobilenet_weights):
    """Every training photo has its shape on the left. With flip augmentation the model still captions
    shapes on the right, colour and side, though no original training caption says "right"."""
    import captioner
    from captioner.training.config import TrainConfig
    from captioner.training.run import train

    images = tmp_path / "images"
    images.mkdir()
    rows = [(*row, "train") for row in _side_photos(images, "left", 48, seed=0)]
    rows += [(*row, "dev") for row in _side_photos(images, "left", 8, seed=1)]
    with (tmp_path / "captions.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("image", "caption", "split"), *rows])
    config = TrainConfig(
        data=str(tmp_path / "captions.csv"), output=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"),
        encoder="mobilenet_v2", encoder_weights=str(mobilenet_weights), min_count=1, max_length=8, embedding_dim=32,
        units=64, attention_units=32, dropout=0.0, batch_size=16, epochs=12, learning_rate=3e-3, lr_schedule="constant",
        monitor="loss", patience=12, hflip=True, seed=0)
    result = train(config, log=lambda message: None)
    model = captioner.load(result.model_path, result.vocab_path, str(mobilenet_weights))
    test = _side_photos(images, "right", 8, seed=2)
    said = [model.caption(images / name).text for name, _ in test]
    assert sum(text.endswith("on the right") for text in said) >= 7, said
    assert sum(text == truth for text, (_, truth) in zip(said, test, strict=True)) >= 6, said
