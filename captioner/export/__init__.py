"""Export a trained captioner to one folder a user can copy: encoder (preprocessing included), the decoder's
prepare and step, the vocabulary and a manifest, for ONNX Runtime, LiteRT or TensorFlow (SavedModel).

`captioner.load(folder)` captions from such a folder with the portable runtime (captioner.portable),
without TensorFlow for ONNX and LiteRT. This package imports TensorFlow only inside `export_model`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from captioner.artifacts.manifest import MANIFEST_FILE, RUNTIMES, VOCABULARY_FILE, Manifest
from captioner.atomic import atomic_path
from captioner.errors import CaptionerError

FORMATS = tuple(RUNTIMES)  # onnx (recommended: fastest on CPU), litert, savedmodel
QUANTIZATIONS = ("int8",)  # stored decoder weights; none (float32) by default


def check_format(fmt: str) -> str:
    """The format, or a CaptionerError listing the ones there are."""
    if fmt not in FORMATS:
        raise CaptionerError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    return fmt


def check_quantize(fmt: str, quantize: str | None) -> None:
    """A CaptionerError unless `quantize` is None or a quantization the format supports (int8: ONNX only)."""
    if quantize is None:
        return
    if quantize not in QUANTIZATIONS:
        raise CaptionerError(f"unknown quantization {quantize!r}; choose {', '.join(QUANTIZATIONS)} or leave it out.")
    if fmt != "onnx":
        raise CaptionerError(f"--quantize {quantize} is for --format onnx (ONNX Runtime's int8 kernels); "
                             f"export {fmt} without it.")


def export_model(model_path: str | os.PathLike, vocab_path: str | os.PathLike, fmt: str, output: str | os.PathLike,
                 encoder_weights: str | os.PathLike | None = "imagenet", quantize: str | None = None) -> Path:
    """Write the exported folder `output` (replacing an earlier export there) and return its path;
    quantize="int8" stores the decoder's weights as int8 (ONNX), faster on CPU at a small change in captions.

    The folder is written beside its target and renamed into place once complete, so a failed
    export never leaves a half-written folder that looks usable.
    """
    check_format(fmt)
    check_quantize(fmt, quantize)
    import captioner
    from captioner.artifacts.model_files import load_model, matching_encoder
    from captioner.export.graphs import export_graphs
    from captioner.export.writers import WRITERS, quantize_onnx

    output = Path(output)
    if output.exists() and not (output / MANIFEST_FILE).is_file():
        raise CaptionerError(f"{output} exists and is not an exported captioner; choose a new folder.")
    model, vocab, info = load_model(model_path, vocab_path)
    encoder = matching_encoder(model, info, encoder_weights)
    with atomic_path(output) as partial:
        partial.mkdir()
        graphs = export_graphs(model, encoder)
        files = WRITERS[fmt](graphs, partial)
        if quantize:
            quantize_onnx(partial, files)
        (partial / VOCABULARY_FILE).write_text(json.dumps(vocab.to_dict(), ensure_ascii=False), encoding="utf-8")
        Manifest(fmt, files, graphs.memory_arrays, graphs.state_arrays, encoder.grid_shape, encoder.image_size[0],
                 dict(info.__dict__), captioner_version=captioner.__version__,
                 extra={**({"quantized": quantize} if quantize else {}),
                        **({"classifier": True} if encoder.classifier else {})}).write(partial)
    return output
