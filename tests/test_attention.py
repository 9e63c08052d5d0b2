"""Attention maps drawn over the image: heatmaps, overlays and figures, Chinese captions included."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
from conftest import BACKGROUNDS, COLOURS, SHAPES, draw_shape, shape_caption
from PIL import Image

import captioner
from captioner.decoding.options import Caption
from captioner.serving.attention_maps import attention_figure, caption_fonts, heatmap, overlay


def test_heatmap_is_brightest_where_the_weight_is():
    weights = np.zeros(49)
    weights[3 * 7 + 5] = 1.0  # row 3, column 5 of the 7×7 grid
    light = heatmap(weights, (7, 7), (140, 70))  # (w, h)
    assert light.shape == (70, 140) and light.max() == pytest.approx(1.0, abs=0.02)
    row, col = np.unravel_index(np.argmax(light), light.shape)
    assert 3 * 10 <= row < 4 * 10 and 5 * 20 <= col < 6 * 20  # inside that cell, scaled


def test_overlay_dims_what_was_not_looked_at():
    image = Image.new("RGB", (70, 70), (200, 200, 200))
    weights = np.zeros(49)
    weights[0] = 1.0  # top-left cell
    shaded = np.asarray(overlay(image, weights, (7, 7)))
    assert shaded.shape == (70, 70, 3)
    assert shaded[5, 5].mean() > 150 and shaded[65, 65].mean() < 80


def chinese_caption() -> Caption:
    words = ["一", "只", "狗"]
    attention = np.full((3, 49), 1 / 49)
    return Caption("一只狗", words, -1.0, attention)


def test_figure_has_the_image_and_one_panel_per_word():
    fig = attention_figure(Image.new("RGB", (64, 64)), chinese_caption(), (7, 7), columns=2)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["input", "一", "只", "狗"]


@pytest.mark.skipif(len(caption_fonts()) < 2, reason="no CJK font installed (apt-get install fonts-wqy-microhei)")
def test_chinese_words_are_drawn_with_a_cjk_font_not_boxes(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph … missing from font" for boxes
        attention_figure(Image.new("RGB", (64, 64)), chinese_caption(), (7, 7)).savefig(tmp_path / "zh.png")
    assert (tmp_path / "zh.png").stat().st_size > 0


def _shape_mask(image: Image.Image, background: str) -> np.ndarray:
    """Where the shape was drawn: every pixel that differs from the plain background, (h, w) bool."""
    return np.abs(np.asarray(image, np.int32) - np.array(BACKGROUNDS[background])).sum(-1) > 0


def _cell_coverage(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Fraction of each grid cell covered by the mask, flattened row by row as the attention weights are."""
    (rows, columns), (h, w) = grid, mask.shape
    return mask.reshape(rows, h // rows, columns, w // columns).mean(axis=(1, 3)).ravel()  # (cells,)


@pytest.mark.slow
def test_colour_and_shape_words_look_at_the_drawn_shape(shapes_model):
    """On unseen synthetic images, the attention a word gets (as the app draws it) falls on the shape it names.

    Lift = attention mass on the cells the shape covers (half or more of the cell) ÷ those cells' share of the
    grid; 1 is attention spread evenly. The doubly stochastic penalty spreads each caption's attention over
    every cell and MobileNetV2's receptive fields blur the shape into its neighbours, so lifts stay near 2
    (measured: colour 1.98, shape 1.47, background 0.15 on average over these 24 images, and the colour
    word's heatmap about 2.4 times brighter on the shape's pixels than off them). Only shapes drawn well off
    the diagonal are used, so that a grid read transposed or flipped puts them on other cells: then the
    colour word's lift falls to about 1, as it does for attention that ignores the image."""
    result = shapes_model["result"]
    model = captioner.load(result.model_path, result.vocab_path, encoder_weights=shapes_model["weights"])
    rng = random.Random(7)
    drawn: list[tuple[str, str, str]] = []
    images: list[Image.Image] = []
    while len(images) < 24:
        combination = (SHAPES[len(images) % 3], list(COLOURS)[len(images) % 4], list(BACKGROUNDS)[len(images) // 4 % 3])
        image = draw_shape(*combination, rng)
        rows, columns = np.nonzero(_shape_mask(image, combination[2]))
        if abs(columns.mean() - rows.mean()) > 60:  # centre 60 pixels or more off the diagonal
            drawn.append(combination)
            images.append(image)
    captions = model.caption_many(images)  # beam 3, the search the app's attention figure shows
    lifts: dict[str, list[float]] = {"colour": [], "shape": [], "background": []}
    inside, outside = [], []
    for image, (shape, colour, background), caption in zip(images, drawn, captions, strict=True):
        if caption.text != shape_caption(shape, colour, background):
            continue
        mask = _shape_mask(image, background)
        cells = _cell_coverage(mask, model.grid_shape) >= 0.5
        assert cells.any(), "every drawn shape covers at least one cell"
        for word, position in (("colour", 1), ("shape", 2), ("background", -1)):
            lifts[word].append(caption.attention[position][cells].sum() / cells.mean())
        light = heatmap(caption.attention[1], model.grid_shape, image.size)  # the overlay of the colour word
        inside.append(light[mask].mean())
        outside.append(light[~mask].mean())
    assert len(lifts["colour"]) >= 20, "the model should caption most of these images exactly"
    mean = {word: float(np.mean(values)) for word, values in lifts.items()}
    assert mean["colour"] > 1.5 and min(lifts["colour"]) > 1.0, mean
    assert mean["shape"] > 1.2, mean
    assert mean["background"] < 0.5, mean  # "background" is said looking away from the shape
    assert np.mean(inside) > 1.8 * np.mean(outside)  # the colour word's drawn heatmap is brightest on the shape
