"""Attention maps: where the decoder looked for each word, drawn over the image."""

from __future__ import annotations

import functools

import numpy as np
from matplotlib import font_manager
from matplotlib.figure import Figure
from PIL import Image

from captioner.decoding.options import Caption

#: Fonts with Chinese glyphs, which matplotlib's default DejaVu Sans lacks; the first installed is used.
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei",
             "SimHei", "Microsoft YaHei", "PingFang SC")


@functools.cache
def caption_fonts() -> list[str]:
    """Font family for caption text in figures: DejaVu Sans, then an installed CJK font that matplotlib
    falls back on glyph by glyph, so Chinese captions are not drawn as boxes. Without one (e.g.
    `apt-get install fonts-noto-cjk` adds one) Chinese shows as boxes."""
    installed = {font.name for font in font_manager.fontManager.ttflist}
    return ["DejaVu Sans", *[name for name in CJK_FONTS if name in installed][:1]]


def heatmap(weights: np.ndarray, grid_shape: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """One word's weights over the grid (cells,), smoothly upsampled to `size` (w, h), scaled 0..1."""
    grid = np.asarray(weights, np.float32).reshape(grid_shape)  # (rows, columns)
    grid = grid / max(float(grid.max()), 1e-12)
    upsampled = Image.fromarray((grid * 255).astype(np.uint8), mode="L").resize(size, Image.Resampling.BICUBIC)
    return np.asarray(upsampled, np.float32) / 255.0  # (h, w)


def overlay(image: Image.Image, weights: np.ndarray, grid_shape: tuple[int, int],
            strength: float = 0.75) -> Image.Image:
    """The image dimmed where attention is low and lit where it is high, as in Xu et al. (2015)."""
    rgb = np.asarray(image.convert("RGB"), np.float32)
    light = heatmap(weights, grid_shape, image.size)[..., None]  # (h, w, 1)
    shaded = rgb * ((1 - strength) + strength * light)
    return Image.fromarray(np.clip(shaded, 0, 255).astype(np.uint8))


def word_label(caption: Caption, position: int) -> str:
    """A word as its attention panel names it; for a grounded model, saying when it was copied from the tags."""
    word = caption.words[position]
    return f"{word} (copied from tags)" if caption.copied is not None and caption.copied[position] else word


def attention_figure(image: Image.Image, caption: Caption, grid_shape: tuple[int, int], columns: int = 5
                     ) -> Figure:
    """A figure: the image, then one panel per word with its attention overlay.

    Built without pyplot, so it changes no global matplotlib state (notebooks keep their backend).
    """
    panels = [("", image)] + [(word_label(caption, i), overlay(image, weights, grid_shape))
                              for i, weights in enumerate(caption.attention)]
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(2.4 * columns, 2.6 * rows))
    for index, (word, picture) in enumerate(panels):
        ax = fig.add_subplot(rows, columns, index + 1)
        ax.imshow(picture)
        ax.set_title(word or "input", fontsize=12, fontfamily=caption_fonts())
        ax.axis("off")
    fig.suptitle(caption.text, fontsize=13, fontfamily=caption_fonts())
    fig.tight_layout()
    return fig


def save_attention_figure(image: Image.Image, caption: Caption, grid_shape: tuple[int, int], path) -> None:
    """Write attention_figure to a PNG file."""
    attention_figure(image, caption, grid_shape).savefig(path, dpi=90)
