"""The manifest of an exported folder: what is in it, for which runtime, written by which version.

Read by the portable runtime, so this module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from captioner.errors import ArtifactError

MANIFEST_FILE = "manifest.json"
VOCABULARY_FILE = "vocabulary.json"
EXPORT_FORMAT = "captioner-export"
#: Bumped whenever what an exported folder holds changes; a reader only opens its own version.
#: 2: the step takes one memory per image, shared by its rows (version 1 took a copy per row).
EXPORT_VERSION = 2
#: Each format's runtime and the Python package (import name, pip name) that runs it.
RUNTIMES = {"onnx": ("onnxruntime", "onnxruntime"), "litert": ("ai_edge_litert", "ai-edge-litert"),
            "savedmodel": ("tensorflow", "tensorflow")}


@dataclass(frozen=True)
class Manifest:
    """An exported captioner: the encoder, the decoder's prepare and step, and how their arrays line up."""

    runtime: str  # a key of RUNTIMES
    files: dict[str, str]  # "encoder", "prepare", "step" → file (or folder) name in the export folder
    memory_arrays: int  # prepare returns memory_arrays memory arrays, then the state arrays
    state_arrays: int  # step takes tokens, the state arrays, the memory arrays; returns logits, α, state
    grid_shape: tuple[int, int]  # rows and columns of the feature grid, e.g. (7, 7)
    image_size: int  # the encoder's input is (batch, image_size, image_size, 3) uint8
    info: dict  # the model file's metadata (captioner.artifacts.model_files.ModelInfo fields)
    version: int = EXPORT_VERSION
    captioner_version: str = ""
    format: str = EXPORT_FORMAT
    extra: dict = field(default_factory=dict)  # e.g. {"quantized": "int8"}: the decoder's weights stored as int8

    def write(self, folder: Path) -> None:
        (folder / MANIFEST_FILE).write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False), encoding="utf-8")


def read_manifest(folder: str | Path) -> Manifest:
    """The folder's manifest; ArtifactError naming the problem if it is missing, corrupt or of another version."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise ArtifactError(f"{folder}: not an exported captioner (no {MANIFEST_FILE}); export one with "
                            f"`captioner export MODEL --format onnx --output {folder}`.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ArtifactError(f"{path}: corrupt export manifest ({error}); export the model again.") from None
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise ArtifactError(f"{path}: not a captioner export manifest; export the model again.")
    if data.get("version") != EXPORT_VERSION:
        raise ArtifactError(f"{folder}: exported by captioner {data.get('captioner_version') or '?'} in export "
                            f"format version {data.get('version')}, but this captioner reads version "
                            f"{EXPORT_VERSION}; export the model again with this version.")
    try:
        manifest = Manifest(**{**data, "grid_shape": tuple(data["grid_shape"])})
    except (KeyError, TypeError) as error:
        raise ArtifactError(f"{path}: incomplete export manifest ({error}); export the model again.") from None
    if manifest.runtime not in RUNTIMES:
        raise ArtifactError(f"{path}: unknown runtime {manifest.runtime!r}; export the model again.")
    missing = [name for name in [*manifest.files.values(), VOCABULARY_FILE] if not (folder / name).exists()]
    if missing:
        raise ArtifactError(f"{folder}: the export is incomplete ({', '.join(missing)} missing); copy the whole "
                            f"folder, or export the model again.")
    return manifest
