"""What every captioner does with images, given an encoder (pixels → feature grids) and a search.

Shared by the Keras captioner (serving.api.Captioner) and the portable one (portable.model), so
encoding, batching, file streaming and the one-image call are written once; no TensorFlow is imported here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from captioner.artifacts.model_files import ModelInfo
from captioner.data.images import Failure, ImageSource, load_array, load_batches
from captioner.decoding.grounding import (
    mark_copied,
    mark_grounded,
    search_constraints,
    tag_constraints,
    unseen_objects,
)
from captioner.decoding.options import DEFAULT_DECODING, Caption, DecodeOptions
from captioner.decoding.search import Search
from captioner.features.cache import PixelEncoder
from captioner.features.class_row import with_class_row
from captioner.features.tags import top_tags
from captioner.models import CLASS_READERS
from captioner.text.vocabulary import Vocabulary

if TYPE_CHECKING:  # the decoder contract's module imports Keras; the searches run without it
    from captioner.models.base import StepDecoder


def with_tags(captions: list[Caption], probabilities: np.ndarray | None) -> list[Caption]:
    """The captions of a batch, each (and its alternatives) given its photo's tags from probabilities (n, 1000)."""
    if probabilities is not None:
        for caption, tags in zip(captions, top_tags(probabilities), strict=True):
            for hypothesis in caption.ranked:
                hypothesis.tags = tags
    return captions


class ImageCaptioner:
    """Images → captions: an `encoder`, a `search` over a `decoder` and the `vocab`, and the model's `info`."""

    info: ModelInfo
    vocab: Vocabulary
    decoder: StepDecoder
    search: Search

    @property
    def encoder(self) -> PixelEncoder:
        raise NotImplementedError

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Rows and columns of the feature grid the attention weights refer to, e.g. (7, 7)."""
        return self.encoder.grid_shape

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) the encoder takes, e.g. (224, 224)."""
        return self.encoder.image_size

    def encode_pixels(self, images: np.ndarray) -> np.ndarray:
        """Feature grids (n, cells, channels) of uint8 images (n, height, width, 3) already resized."""
        return self.encoder(images)

    def caption_features(self, features: np.ndarray, options: DecodeOptions = DEFAULT_DECODING,
                         probabilities: np.ndarray | None = None) -> list[Caption]:
        """Captions for a batch of feature grids (n, cells, channels); given the classifier's probabilities
        (n, 1000) of the same photos, with their tags and, as `options.grounding` asks, grounded in them."""
        reads_classes = self.info.decoder in CLASS_READERS
        tags = None if options.grounding == "off" else probabilities  # what a grounded decoder reads and copies
        if reads_classes:  # as one more row of its features
            features = with_class_row(features, tags)
        constraints = tag_constraints(probabilities, options, self.vocab)
        vetoes = unseen_objects(probabilities, options, self.vocab)
        if constraints is None:
            captions = self.search.generate(features, options, vetoes=vetoes)
        else:
            captions = mark_grounded(self.search.generate(features, options, search_constraints(constraints), vetoes),
                                     constraints)
        if reads_classes:
            captions = mark_copied(captions, tags)
        return with_tags(captions, probabilities)

    def encode(self, images: Sequence[ImageSource]) -> np.ndarray:
        """Feature grids for a batch of images: (n, cells, channels)."""
        return self.encode_pixels(self.load_pixels(images))

    def encode_and_classify(self, images: Sequence[ImageSource]) -> tuple[np.ndarray, np.ndarray | None]:
        """Feature grids (n, cells, channels) of a batch of images and, from the same CNN pass, the ImageNet
        classifier's probabilities (n, 1000), or None for an encoder without one."""
        return self.encoder.encode_and_classify(self.load_pixels(images))

    def load_pixels(self, images: Sequence[ImageSource]) -> np.ndarray:
        """A batch of images read and resized for the encoder: uint8 (n, height, width, 3)."""
        return np.stack([load_array(image, self.image_size) for image in images])

    def caption_pixels(self, images: np.ndarray, options: DecodeOptions = DEFAULT_DECODING) -> list[Caption]:
        """Captions, with the classifier's tags, for uint8 images (n, height, width, 3) already resized."""
        features, probabilities = self.encoder.encode_and_classify(images)  # (n, cells, channels), (n, 1000)
        return self.caption_features(features, options, probabilities)

    def caption_many(self, images: Sequence[ImageSource], options: DecodeOptions = DEFAULT_DECODING,
                     batch_size: int = 32) -> list[Caption]:
        """Captions for many images, encoded and decoded in batches."""
        captions: list[Caption] = []
        for start in range(0, len(images), batch_size):
            captions.extend(self.caption_pixels(self.load_pixels(images[start:start + batch_size]), options))
        return captions

    def caption_files(self, paths: Sequence[str | os.PathLike[str]], options: DecodeOptions = DEFAULT_DECODING,
                      batch_size: int = 32) -> Iterator[tuple[list[tuple[Path, Caption]], list[Failure]]]:
        """Caption image files batch by batch: per batch, (path, caption) pairs and the unreadable files.

        The next batch is decoded on threads while this one runs through the networks, and one
        batch at a time is held in memory however many files there are.
        """
        files = [Path(p) for p in paths]
        for rows, images, failures in load_batches(files, self.image_size, batch_size):
            captions = self.caption_pixels(images, options) if images is not None else []
            yield [(files[row], caption) for row, caption in zip(rows, captions, strict=True)], failures

    def caption(self, image: ImageSource, options: DecodeOptions = DEFAULT_DECODING) -> Caption:
        """Caption one image (path, bytes, file object or PIL image); str() gives the text.

        Every method here decodes with beam 3 (`DecodeOptions()`, as the CLI and the app do) unless
        `options` says otherwise: `captioner.decoding.options.GREEDY`, or e.g. DecodeOptions(beam_size=5, n_best=5).
        """
        return self.caption_many([image], options)[0]
