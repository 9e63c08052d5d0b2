"""The pretrained encoder really is pretrained, and every image mode reaches it as sensible RGB pixels.

The reference numbers below were computed once with the shared MobileNetV2 ImageNet weights (Keras 3,
TensorFlow CPU) for a fixed synthetic image; wrong weights, a random network or broken preprocessing
change them far beyond the tolerance.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from captioner.data.images import load_array
from captioner.features.encoders import ImageEncoder

# Summary of the (49, 1280) features of `_fixed_image()` with the shared weights.
REFERENCE_MEAN, REFERENCE_STD = 0.3977, 1.1640
REFERENCE_ENTRIES = {(0, 853): 2.4867, (8, 1011): 2.4921, (16, 683): 2.5131, (24, 606): 2.5151,
                     (30, 60): 2.4977, (36, 90): 2.5968, (42, 15): 2.5598, (48, 469): 2.4718}
RTOL = 1e-3


def _fixed_image() -> np.ndarray:
    """A deterministic 224x224 RGB photo stand-in: a colour gradient with a red disc and a yellow square."""
    y, x = np.mgrid[0:224, 0:224]
    image = Image.fromarray(np.stack([x, y, 255 - (x + y) // 2], -1).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    draw.ellipse((30, 40, 120, 130), fill=(220, 30, 30))
    draw.rectangle((130, 120, 200, 200), fill=(240, 240, 20))
    return np.asarray(image)


@pytest.fixture(scope="module")
def pretrained_features(mobilenet_weights: Path) -> np.ndarray:
    """Features of the fixed image from the pretrained MobileNetV2: (49, 1280)."""
    return ImageEncoder("mobilenet_v2", mobilenet_weights)(_fixed_image()[None])[0]


def test_pretrained_features_match_the_reference(pretrained_features: np.ndarray) -> None:
    """Mean, spread and eight unsaturated entries equal the values stored when the weights were checked."""
    assert pretrained_features.shape == (49, 1280)
    np.testing.assert_allclose([pretrained_features.mean(), pretrained_features.std()],
                               [REFERENCE_MEAN, REFERENCE_STD], rtol=RTOL)
    cells, channels = zip(*REFERENCE_ENTRIES, strict=True)
    np.testing.assert_allclose(pretrained_features[list(cells), list(channels)], list(REFERENCE_ENTRIES.values()),
                               rtol=RTOL)


def test_pretrained_features_differ_from_a_random_network(pretrained_features: np.ndarray) -> None:
    """The weights file is really loaded: a randomly initialised MobileNetV2 gives quite different features."""
    random = ImageEncoder("mobilenet_v2", None)(_fixed_image()[None])[0]
    assert random.shape == pretrained_features.shape
    assert pretrained_features.std() > 0.5  # ImageNet features are large; a fresh network's are near zero
    assert np.abs(random - pretrained_features).mean() > 0.5 * np.abs(pretrained_features).mean() > 0.1
    assert abs(float(np.corrcoef(random.ravel(), pretrained_features.ravel())[0, 1])) < 0.5


# Image modes: an image with a 32x32 square of known content on a 64x64 background, the RGB pixels
# it must become inside and outside the square, and the format it survives a file round trip in.
SIZE, BOX = 64, (slice(16, 48), slice(16, 48))
INSIDE, OUTSIDE = (112, 112), (5, 5)  # pixels of the (224, 224, 3) array, inside and outside the square


def _square(inside, outside, dtype) -> np.ndarray:
    """A (64, 64[, channels]) array: `outside` everywhere, `inside` in the square."""
    pixels = np.empty((SIZE, SIZE, *np.shape(inside)), dtype)
    pixels[...] = outside
    pixels[BOX] = inside
    return pixels


def _palette(transparent: bool) -> Image.Image:
    image = Image.fromarray(_square(1, 0, np.uint8), "P")
    image.putpalette([0, 0, 128, 255, 128, 0] + [0, 0, 0] * 254)  # 0: navy, 1: orange
    if transparent:
        image.info["transparency"] = 0
    return image


MODES: dict[str, tuple[Callable[[], Image.Image], tuple, tuple, str]] = {
    "I": (lambda: Image.fromarray(_square(200, 0, np.int32), "I"), (200,) * 3, (0,) * 3, "TIFF"),
    "I 16-bit range": (lambda: Image.fromarray(_square(65535, 0, np.int32), "I"), (255,) * 3, (0,) * 3, "TIFF"),
    "F": (lambda: Image.fromarray(_square(200.0, 0.0, np.float32), "F"), (200,) * 3, (0,) * 3, "TIFF"),
    "1": (lambda: Image.fromarray(_square(True, False, bool)), (255,) * 3, (0,) * 3, "PNG"),
    "I;16": (lambda: Image.fromarray(_square(65535, 0, np.uint16)), (255,) * 3, (0,) * 3, "PNG"),
    "I;16 half": (lambda: Image.fromarray(_square(32896, 0, np.uint16)), (128,) * 3, (0,) * 3, "PNG"),
    "L": (lambda: Image.fromarray(_square(200, 0, np.uint8), "L"), (200,) * 3, (0,) * 3, "PNG"),
    "P": (lambda: _palette(False), (255, 128, 0), (0, 0, 128), "PNG"),
    "P transparent": (lambda: _palette(True), (255, 128, 0), (255, 255, 255), "PNG"),  # on white
    "RGBA": (lambda: Image.fromarray(_square((0, 0, 255, 255), (0, 0, 0, 0), np.uint8), "RGBA"),
             (0, 0, 255), (255, 255, 255), "PNG"),
    "RGBA half": (lambda: Image.fromarray(_square((0, 0, 255, 128), (0, 0, 0, 0), np.uint8), "RGBA"),
                  (127, 127, 255), (255, 255, 255), "PNG"),  # half-transparent blue over white
    "CMYK": (lambda: Image.fromarray(_square((255, 0, 0, 0), (0, 0, 0, 0), np.uint8), "CMYK"),
             (0, 255, 255), (255, 255, 255), "TIFF"),  # full cyan ink on white paper
    "LA": (lambda: Image.fromarray(_square((50, 255), (0, 0), np.uint8), "LA"), (50,) * 3, (255,) * 3, "PNG"),
}


@pytest.mark.parametrize("through_file", [False, True], ids=["in-memory", "file"])
@pytest.mark.parametrize("case", list(MODES))
def test_every_image_mode_becomes_the_rgb_it_implies(case: str, through_file: bool) -> None:
    """Each Pillow mode turns into (224, 224, 3) uint8 with its content visible and the colours the mode means."""
    make, inside, outside, file_format = MODES[case]
    image = make()
    mode = image.mode
    source: Image.Image | bytes = image
    if through_file:
        buffer = io.BytesIO()
        image.save(buffer, format=file_format)
        source = buffer.getvalue()
        assert Image.open(io.BytesIO(source)).mode == mode  # the decoder gives back the mode under test
    pixels = load_array(source, (224, 224))
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
    assert tuple(pixels[INSIDE]) == inside, (mode, pixels[INSIDE])
    assert tuple(pixels[OUTSIDE]) == outside, (mode, pixels[OUTSIDE])
    content = pixels[70:154, 70:154]  # well inside the square after resizing
    assert content.max() > 0 and (content == content[0, 0]).all(), "the square should be uniform and not black"
