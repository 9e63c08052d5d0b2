"""The runtimes an exported function runs on: ONNX Runtime, LiteRT, or TensorFlow for a SavedModel.

Each opens one exported function and calls it on NumPy arrays, positionally, returning a list of
NumPy arrays. A runtime's package is imported only when an export made for it is opened, and a
missing package is a CaptionerError saying what to install.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import numpy as np

from captioner.artifacts.manifest import RUNTIMES
from captioner.errors import ArtifactError, CaptionerError


def _import_runtime(runtime: str):
    module, package = RUNTIMES[runtime]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CaptionerError(f"this model was exported for {runtime}, whose runtime {module} is not installed: "
                             f"pip install {package} (or pip install -r requirements-app.txt).") from None


def _unreadable(path: Path, runtime: str, error: Exception) -> ArtifactError:
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    return ArtifactError(f"{path}: {runtime} cannot open this exported file ({first}); copy the folder again or "
                         f"export the model again.")


class OnnxFunction:
    """An .onnx graph on ONNX Runtime's CPU provider."""

    def __init__(self, path: Path, threads: int = 0):
        ort = _import_runtime("onnx")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        options.intra_op_num_threads = threads  # 0: one per core
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads sleep, not spin
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own Fail/InvalidProtobuf/… types
            raise _unreadable(path, "onnxruntime", error) from None
        self.inputs = [node.name for node in self.session.get_inputs()]

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, dict(zip(self.inputs, arrays, strict=True)))


class LiteRTFunction:
    """A .tflite flatbuffer on the LiteRT interpreter; inputs are resized to each call's batch."""

    def __init__(self, path: Path, name: str, threads: int = 0):
        _import_runtime("litert")  # a clear error if ai-edge-litert is missing
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        # XNNPACK cannot re-plan the step graph for a new number of rows, so it runs on the built-in kernels.
        resolver = OpResolverType.AUTO if name == "encoder" else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads or None,
                                           experimental_op_resolver_type=resolver)
        except Exception as error:  # LiteRT raises ValueError/RuntimeError for a bad flatbuffer
            raise _unreadable(path, "LiteRT", error) from None
        self.inputs = self.interpreter.get_input_details()  # in the exported function's order
        self.outputs = self.interpreter.get_output_details()
        self.shapes: list[tuple] = []

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        shapes = [array.shape for array in arrays]
        if shapes != self.shapes:  # resizing re-plans the interpreter's memory: only when the batch changes
            for detail, shape in zip(self.inputs, shapes, strict=True):
                self.interpreter.resize_tensor_input(detail["index"], shape)
            self.interpreter.allocate_tensors()
            self.shapes = shapes
        for detail, array in zip(self.inputs, arrays, strict=True):
            self.interpreter.set_tensor(detail["index"], np.ascontiguousarray(array, detail["dtype"]))
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(detail["index"]) for detail in self.outputs]


class SavedModelFunction:
    """An endpoint of an exported SavedModel, on TensorFlow (for users who have it, e.g. TF Serving)."""

    def __init__(self, path: Path, name: str):
        tf = _import_runtime("savedmodel")
        try:
            self.saved = tf.saved_model.load(str(path))  # kept: the endpoint reads its variables
            self.function = getattr(self.saved, name)
        except Exception as error:  # tf raises OSError/ValueError/… for a broken SavedModel
            raise _unreadable(path, "TensorFlow", error) from None

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        outputs = self.function(*arrays)
        return [np.asarray(x) for x in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


class OnnxStep:
    """The decoder's step on ONNX Runtime: a single row on one thread, several rows on `threads`.

    Over one row (greedy decoding of one image) a step is bound by reading its weights (9 MB in float32),
    which a second thread does not speed up while waking it at every step costs; over several rows (beam
    search, batches) it is bound by arithmetic, which threads split. On 2 AVX2 cores, shipped English
    model, float32 export: beam 3 took 14.4 and 13.1 ms a caption against 16.3 and 15.2 on one thread, in
    two same-process comparisons. ONNX Runtime's int8 products were slower on two threads (10.1 against
    9.5 ms), so int8 exports keep one; so does threads=1.
    """

    def __init__(self, path: Path, threads: int = 0, quantized: bool = False):
        self.single = OnnxFunction(path, 1)
        pooled = not quantized and (threads or os.cpu_count() or 1) > 1
        self.pooled = OnnxFunction(path, threads) if pooled else self.single

    def __call__(self, tokens: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
        return (self.single if len(tokens) == 1 else self.pooled)(tokens, *arrays)


def open_function(runtime: str, path: Path, name: str, threads: int = 0, quantized: bool = False):
    """The exported function `name` ("encoder", "prepare" or "step") stored at `path`, on its runtime.

    `threads` (0: one per core) is for the encoder and the decoder's prepare (49 cells × 1280 channels
    through the context maps: 7.3 ms on one AVX2 core, 3.8 ms on two), and on ONNX Runtime for steps over
    several rows of a float32 export (OnnxStep). LiteRT runs steps on one thread.
    """
    if runtime == "onnx":
        return OnnxStep(path, threads, quantized) if name == "step" else OnnxFunction(path, threads)
    if runtime == "litert":
        return LiteRTFunction(path, name, 1 if name == "step" else threads)
    return SavedModelFunction(path, name)
