"""Attention maps drawn over the image: heatmaps, overlays and figures, Chinese captions included."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

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
