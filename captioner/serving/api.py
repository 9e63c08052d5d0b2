"""The public object: a trained captioner that turns image files into captions."""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras

from captioner.artifacts.model_files import MODEL_FILE, VOCAB_FILE, ModelInfo, load_model, matching_encoder
from captioner.decoding.captioning import ImageCaptioner
from captioner.decoding.tf_search import TFSearch
from captioner.errors import CaptionerError
from captioner.features.encoders import ImageEncoder
from captioner.models.base import StepDecoder, get_decoder
from captioner.models.ensemble import Ensemble
from captioner.text.vocabulary import Vocabulary


class Captioner(ImageCaptioner):
    """Encoder + decoder + vocabulary. The CNN is built on first use (it may need weights)."""

    def __init__(self, model: keras.Model, vocab: Vocabulary, info: ModelInfo,
                 encoder_weights: str | os.PathLike | None = "imagenet", decoder: StepDecoder | None = None):
        self.model = model
        self.vocab = vocab
        self.info = info
        self.decoder = decoder or get_decoder(model)  # an Ensemble decodes several models together
        self.search = TFSearch(self.decoder, vocab)
        self._encoder_weights = encoder_weights
        self._encoder: ImageEncoder | None = None

    @property
    def encoder(self) -> ImageEncoder:
        if self._encoder is None:
            self._encoder = matching_encoder(self.model, self.info, self._encoder_weights)
        return self._encoder


def load_keras(model_path: str | os.PathLike = MODEL_FILE, vocab_path: str | os.PathLike = VOCAB_FILE,
               encoder_weights: str | os.PathLike | None = "imagenet") -> Captioner:
    """A saved model and vocabulary on Keras (what `captioner.load` does for a model file)."""
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
