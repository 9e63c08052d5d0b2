"""The public object: a trained captioner that turns image files into captions."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import keras
import numpy as np

from captioner.data.images import Failure, ImageSource, load_array, load_batches
from captioner.decoding.options import DEFAULT_DECODING, Caption, DecodeOptions
from captioner.decoding.search import CaptionGenerator
from captioner.errors import ArtifactError, CaptionerError
from captioner.features.encoders import ImageEncoder, shared_encoder
from captioner.models.base import StepDecoder, get_decoder
from captioner.models.ensemble import Ensemble
from captioner.serving.artifacts import MODEL_FILE, VOCAB_FILE, ModelInfo, load_model
from captioner.text.vocabulary import Vocabulary


class Captioner:
    """Encoder + decoder + vocabulary. The CNN is built on first use (it may need weights)."""

    def __init__(self, model: keras.Model, vocab: Vocabulary, info: ModelInfo,
                 encoder_weights: str | os.PathLike | None = "imagenet", decoder: StepDecoder | None = None):
        self.model = model
        self.vocab = vocab
        self.info = info
        self.decoder = decoder or get_decoder(model)  # an Ensemble decodes several models together
        self.generator = CaptionGenerator(self.decoder, vocab)
        self._encoder_weights = encoder_weights
        self._encoder: ImageEncoder | None = None

    @property
    def encoder(self) -> ImageEncoder:
        if self._encoder is None:
            encoder = shared_encoder(self.info.encoder, self._encoder_weights)
            expected = tuple(self.model.inputs[0].shape[1:])
            if encoder.feature_shape != expected:
                raise ArtifactError(f"encoder {self.info.encoder} gives {encoder.feature_shape} "
                                    f"features but the model expects {expected}.")
            self._encoder = encoder
        return self._encoder

    @property
    def grid_shape(self) -> tuple[int, int]:
        """Rows and columns of the feature grid the attention weights refer to, e.g. (7, 7)."""
        return self.encoder.grid_shape

    def encode(self, images: Sequence[ImageSource]) -> np.ndarray:
        """Feature grids for a batch of images: (n, cells, channels)."""
        size = self.encoder.image_size
        return self.encoder(np.stack([load_array(image, size) for image in images]))

    def caption_features(self, features: np.ndarray, options: DecodeOptions = DEFAULT_DECODING) -> list[Caption]:
        """Captions for a batch of feature grids (n, cells, channels)."""
        return self.generator.generate(features, options)

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
        for rows, images, failures in load_batches(paths, self.encoder.image_size, batch_size):
            captions = self.caption_features(self.encoder(images), options) if images is not None else []
            yield [(paths[row], caption) for row, caption in zip(rows, captions, strict=True)], failures

    def caption(self, image: ImageSource, options: DecodeOptions = DEFAULT_DECODING) -> Caption:
        """Caption one image (path, bytes, file object or PIL image); str() gives the text.

        Every method here decodes with beam 3 (`DecodeOptions()`, as the CLI and the app do) unless
        `options` says otherwise: `captioner.decoding.options.GREEDY`, or e.g. DecodeOptions(beam_size=5, n_best=5).
        """
        return self.caption_many([image], options)[0]


def load(model_path: str | os.PathLike = MODEL_FILE, vocab_path: str | os.PathLike = VOCAB_FILE,
         encoder_weights: str | os.PathLike | None = "imagenet") -> Captioner:
    """Load a saved model and vocabulary: `captioner.load().caption("photo.jpg")`."""
    model, vocab, info = load_model(model_path, vocab_path)
    return Captioner(model, vocab, info, encoder_weights)


def ensemble(captioners: Sequence[Captioner]) -> Captioner:
    """One Captioner decoding with several models of one vocabulary and encoder together: their next-word
    log-probabilities are averaged inside the same search, and the CNN runs once for all of them."""
    first = captioners[0]
    for other in captioners[1:]:
        if other.vocab.fingerprint != first.vocab.fingerprint:
            raise CaptionerError("models in an ensemble must share one vocabulary (tokenizer.pkl); train them "
                                 "on the same vocabulary or caption with them one at a time.")
        if (other.info.encoder, other.info.image_size) != (first.info.encoder, first.info.image_size):
            raise CaptionerError(f"models in an ensemble must read the same features, not {first.info.encoder} "
                                 f"and {other.info.encoder}.")
    return Captioner(first.model, first.vocab, first.info, first._encoder_weights,
                     Ensemble([c.decoder for c in captioners]))
