"""Caption a gallery of user images: per-image result or error, example photos, exports.

The Streamlit app (app.py) is a thin page over these helpers, so everything it does to images
and captions is plain Python that the CLI, notebooks and tests can use too.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from PIL import Image

from captioner.api import Captioner, load
from captioner.decode import GREEDY, Caption, DecodeOptions
from captioner.errors import ImageError
from captioner.images import ImageSource, load_image

#: Example photos bundled with scikit-image (public domain / CC0), read at run time so that the
#: repository ships no photos: label → (skimage.data function, credit).
EXAMPLES: dict[str, tuple[str, str]] = {
    "Cat": ("chelsea", "Chelsea the cat, Stefan van der Walt (CC0)"),
    "Astronaut": ("astronaut", "Eileen Collins, NASA (public domain)"),
    "Coffee": ("coffee", "Coffee cup, Rachel Michetti (CC0)"),
    "Rocket": ("rocket", "DSCOVR launch, SpaceX (public domain)"),
}


def load_example(label: str) -> Image.Image:
    """One of EXAMPLES as an RGB image (needs scikit-image, which bundles the files)."""
    from skimage import data

    pixels = getattr(data, EXAMPLES[label][0])()
    return Image.fromarray(pixels).convert("RGB")


@dataclass(frozen=True)
class ModelPaths:
    """Which model, vocabulary and encoder weights to load; defaults come from the environment."""

    model: str = "mymodel.h5"
    tokenizer: str = "tokenizer.pkl"
    encoder_weights: str = "imagenet"  # a file path, or "imagenet" for Keras's cache/download

    @classmethod
    def from_env(cls) -> ModelPaths:
        """CAPTIONER_MODEL, CAPTIONER_TOKENIZER, CAPTIONER_ENCODER_WEIGHTS, else the defaults."""
        return cls(os.environ.get("CAPTIONER_MODEL") or cls.model,
                   os.environ.get("CAPTIONER_TOKENIZER") or cls.tokenizer,
                   os.environ.get("CAPTIONER_ENCODER_WEIGHTS") or cls.encoder_weights)


@dataclass
class LoadedModel:
    """A ready captioner (encoder built) and when it was loaded, to show and to share."""

    captioner: Captioner
    paths: ModelPaths
    loaded_at: float
    seconds: float


def load_captioner(paths: ModelPaths) -> LoadedModel:
    """Load model + vocabulary and build the encoder now, so missing weights fail here, not mid-caption.

    Raises CaptionerError (ArtifactError, WeightsError) with a message naming the missing file.
    """
    start = time.perf_counter()
    model = load(paths.model, paths.tokenizer, paths.encoder_weights)
    _ = model.grid_shape  # builds the CNN (and loads its weights)
    return LoadedModel(model, paths, time.time(), time.perf_counter() - start)


def model_scores(extra: dict | None) -> dict[str, dict[str, float]]:
    """The score tables of a model card's `extra` dict, e.g. {"dev_greedy": {"BLEU-4": 0.21, …}}."""
    return {name: {metric: float(value) for metric, value in table.items()}
            for name, table in (extra or {}).items()
            if isinstance(table, dict) and table
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in table.values())}


@dataclass
class ImageResult:
    """One gallery entry: its caption, or the reason it has none."""

    name: str
    image: Image.Image | None = None  # upright RGB, for previews and attention overlays
    caption: Caption | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)  # e.g. "animated: the first frame was captioned"

    @property
    def alt_text(self) -> str:
        return alt_text(self.caption) if self.caption else ""


def alt_text(caption: Caption) -> str:
    """The caption as a sentence for an <img alt="…">: capitalised, one full stop."""
    text = caption.text.strip()
    if not text:
        return ""
    return text[0].upper() + text[1:] + ("" if text.endswith((".", "!", "?", "。")) else ".")


def _named(source: ImageSource, name: str) -> ImageSource:
    """Bytes as a file object carrying its name, so error messages say which upload failed."""
    if isinstance(source, bytes):
        handle = io.BytesIO(source)
        handle.name = name
        return handle
    return source


def _notes(source: ImageSource) -> list[str]:
    """What a user should know about a readable image that was not captioned exactly as given."""
    if isinstance(source, Image.Image):
        frames = getattr(source, "n_frames", 1)
    else:
        with Image.open(source) as raw:  # only the header: load_image has already read it once
            frames = getattr(raw, "n_frames", 1)
    return [f"animated ({frames} frames): only the first frame was captioned"] if frames > 1 else []


def read_images(items: Sequence[tuple[str, ImageSource]]) -> list[ImageResult]:
    """Decode each (name, source) safely; unreadable ones get `error` instead of `image`."""
    results = []
    for name, source in items:
        if isinstance(source, bytes) and not source:
            results.append(ImageResult(name, error=f"{name}: the file is empty (0 bytes); re-export or "
                                                   f"re-download it."))
            continue
        source = _named(source, name)
        try:
            image = load_image(source)
        except ImageError as error:
            results.append(ImageResult(name, error=str(error)))
            continue
        results.append(ImageResult(name, image=image, notes=_notes(source)))
    return results


def caption_images(model: Captioner, items: Sequence[tuple[str, ImageSource]], options: DecodeOptions = GREEDY,
                   batch_size: int = 8, progress: Callable[[int, int], None] | None = None) -> list[ImageResult]:
    """Caption many images; a bad one gets a clear `error` and never stops the others.

    `progress(done, total)` is called after each batch, for a progress bar.
    """
    results = read_images(items)
    readable = [r for r in results if r.image is not None]
    for start in range(0, len(readable), batch_size):
        batch = readable[start:start + batch_size]
        for result, caption in zip(batch, model.caption_many([r.image for r in batch], options), strict=True):
            result.caption = caption
        if progress:
            progress(min(start + batch_size, len(readable)), len(readable))
    return results


EXPORT_FIELDS = ("file", "caption", "alt_text", "confidence", "alternatives", "error")


def _rows(results: Sequence[ImageResult]) -> list[dict]:
    return [{"file": r.name,
             "caption": r.caption.text if r.caption else "",
             "alt_text": r.alt_text,
             "confidence": round(r.caption.confidence, 4) if r.caption else None,
             "alternatives": [{"caption": a.text, "confidence": round(a.confidence, 4)}
                              for a in (r.caption.alternatives[1:] if r.caption else [])],
             "error": r.error or ""}
            for r in results]


def to_json(results: Sequence[ImageResult]) -> str:
    """All captions as a JSON list of {file, caption, alt_text, confidence, alternatives, error}."""
    return json.dumps(_rows(results), ensure_ascii=False, indent=2)


def to_csv(results: Sequence[ImageResult]) -> str:
    """All captions as CSV; alternatives are joined with " | " to stay one row per image."""
    out = io.StringIO()
    writer = csv.DictWriter(out, EXPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in _rows(results):
        row["alternatives"] = " | ".join(a["caption"] for a in row["alternatives"])
        row["confidence"] = "" if row["confidence"] is None else row["confidence"]
        writer.writerow(row)
    return out.getvalue()
