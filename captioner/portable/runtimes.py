"""The runtimes an exported function runs on: ONNX Runtime, LiteRT, or TensorFlow for a SavedModel.

Each opens one exported function and calls it on NumPy arrays, positionally, returning a list of
NumPy arrays. A runtime's package is imported only when an export made for it is opened, and a
missing package is a CaptionerError saying what to install.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from captioner.errors import ArtifactError, CaptionerError
from captioner.export.manifest import RUNTIMES


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


def open_function(runtime: str, path: Path, name: str, threads: int = 0):
    """The exported function `name` ("encoder", "prepare" or "step") stored at `path`, on its runtime.

    `threads` (0: one per core) is for the encoder and the decoder's prepare (49 cells × 1280 channels
    through the context maps: 7.3 ms on one AVX2 core, 3.8 ms on two); a step's few rows are too small
    to split, so it runs on one thread (two took 0.40 ms against 0.47 in isolation, and were no faster
    inside a search, where the second thread must wake at every step).
    """
    threads = 1 if name == "step" else threads
    if runtime == "onnx":
        return OnnxFunction(path, threads)
    if runtime == "litert":
        return LiteRTFunction(path, name, threads)
    return SavedModelFunction(path, name)
