"""What every captioner does with images once it can encode pixels and caption feature grids.

Shared by the Keras captioner (serving.api.Captioner) and the portable one (portable.model), so
batching, file streaming and the one-image call are written once; no TensorFlow is imported here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from captioner.data.images import Failure, ImageSource, load_array, load_batches
from captioner.decoding.options import DEFAULT_DECODING, Caption, DecodeOptions


class ImageCaptioner:
    """Images → captions, given `image_size`, `encode_pixels` and `caption_features` from a subclass."""

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) the encoder takes, e.g. (224, 224)."""
        raise NotImplementedError

    def encode_pixels(self, images: np.ndarray) -> np.ndarray:
        """Feature grids (n, cells, channels) of uint8 images (n, height, width, 3) already resized."""
        raise NotImplementedError

    def caption_features(self, features: np.ndarray, options: DecodeOptions = DEFAULT_DECODING) -> list[Caption]:
        """Captions for a batch of feature grids (n, cells, channels)."""
        raise NotImplementedError

    def encode(self, images: Sequence[ImageSource]) -> np.ndarray:
        """Feature grids for a batch of images: (n, cells, channels)."""
        return self.encode_pixels(np.stack([load_array(image, self.image_size) for image in images]))

    def caption_many(self, images: Sequence[ImageSource], options: DecodeOptions = DEFAULT_DECODING,
                     batch_size: int = 32) -> list[Caption]:
        """Captions for many images, encoded and decoded in batches."""
        captions: list[Caption] = []
        for start in range(0, len(images), batch_size):
            captions.extend(self.caption_features(self.encode(images[start:start + batch_size]), options))
        return captions

    def caption_files(self, paths: Sequence[str | os.PathLike], options: DecodeOptions = DEFAULT_DECODING,
                      batch_size: int = 32) -> Iterator[tuple[list[tuple[Path, Caption]], list[Failure]]]:
        """Caption image files batch by batch: per batch, (path, caption) pairs and the unreadable files.

        The next batch is decoded on threads while this one runs through the networks, and one
        batch at a time is held in memory however many files there are.
        """
        paths = [Path(p) for p in paths]
        for rows, images, failures in load_batches(paths, self.image_size, batch_size):
            captions = self.caption_features(self.encode_pixels(images), options) if images is not None else []
            yield [(paths[row], caption) for row, caption in zip(rows, captions, strict=True)], failures

    def caption(self, image: ImageSource, options: DecodeOptions = DEFAULT_DECODING) -> Caption:
        """Caption one image (path, bytes, file object or PIL image); str() gives the text.

        Every method here decodes with beam 3 (`DecodeOptions()`, as the CLI and the app do) unless
        `options` says otherwise: `captioner.decoding.options.GREEDY`, or e.g. DecodeOptions(beam_size=5, n_best=5).
        """
        return self.caption_many([image], options)[0]
