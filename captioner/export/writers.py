"""Write ExportGraphs in each format with the converter made for it: tf2onnx, the LiteRT converter, Keras's
ExportArchive (SavedModel)."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import tensorflow as tf

from captioner.errors import CaptionerError
from captioner.export.graphs import ExportGraphs

ONNX_OPSET = 17
FUNCTIONS = ("encoder", "prepare", "step")


def _functions(graphs: ExportGraphs) -> dict:
    return {"encoder": graphs.encode, "prepare": graphs.prepare, "step": graphs.step}


@contextlib.contextmanager
def _quiet():
    """Converters print pages of progress; keep them off the user's terminal unless they fail."""
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.getLogger().setLevel(level)


def write_onnx(graphs: ExportGraphs, folder: Path) -> dict[str, str]:
    """One .onnx file per function, converted by tf2onnx."""
    try:
        import tf2onnx
    except ImportError:
        raise CaptionerError("exporting to ONNX needs tf2onnx and onnx: pip install 'captioner[export]' "
                             "(or pip install tf2onnx onnx).") from None
    files = {}
    for name, function in _functions(graphs).items():
        files[name] = f"{name}.onnx"
        with _quiet():
            tf2onnx.convert.from_function(function, input_signature=function.input_signature, opset=ONNX_OPSET,
                                          output_path=str(folder / files[name]))
    return files


def quantize_onnx(folder: Path, files: dict[str, str]) -> None:
    """Store the decoder's matrix weights (prepare and step) as int8, per output channel, with ONNX Runtime's
    dynamic quantization: activations are quantized as they come, so no calibration data is needed.

    The decoder's steps stream their weights from memory for a few rows at a time, so int8 weights (4x
    fewer bytes) make them faster on CPU; the CNN encoder stays float32 (its depthwise convolutions
    gain nothing from it)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for name in ("prepare", "step"):
        path = folder / files[name]
        quantized = path.with_suffix(".int8.onnx")
        with _quiet():
            quantize_dynamic(path, quantized, weight_type=QuantType.QInt8, per_channel=True)
        quantized.replace(path)


def write_litert(graphs: ExportGraphs, folder: Path) -> dict[str, str]:
    """One .tflite flatbuffer per function, converted by the LiteRT (TFLite) converter."""
    files = {}
    for name, function in _functions(graphs).items():
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()],
                                                                    graphs.tracked)
        with _quiet():
            flatbuffer = converter.convert()
        files[name] = f"{name}.tflite"
        (folder / files[name]).write_bytes(flatbuffer)
    return files


def write_savedmodel(graphs: ExportGraphs, folder: Path) -> dict[str, str]:
    """One SavedModel with an endpoint per function, written by Keras's ExportArchive (TF Serving reads it)."""
    import keras

    archive = keras.export.ExportArchive()
    for model in graphs.tracked:
        archive.track(model)
    for name, function in _functions(graphs).items():
        archive.add_endpoint(name, function)
    with _quiet():
        archive.write_out(str(folder / "savedmodel"))
    return dict.fromkeys(FUNCTIONS, "savedmodel")


WRITERS = {"onnx": write_onnx, "litert": write_litert, "savedmodel": write_savedmodel}
