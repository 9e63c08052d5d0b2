"""Caption a gallery of user images: per-image result or error, in one or several languages, exports.

The Streamlit app (app.py) is a thin page over these helpers, so everything it does to images
and captions is plain Python that the CLI, notebooks and tests can use too.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from captioner.artifacts.model_files import MODEL_FILE, VOCAB_FILE, read_model_info, vocabulary_beside
from captioner.data.images import ImageSource, load_image
from captioner.decoding.options import DEFAULT_DECODING, Caption, DecodeOptions
from captioner.errors import CaptionerError, ImageError
from captioner.serving.loading import load
from captioner.serving.shipped import SHIPPED_LANGUAGES, env_names, recipe_path, shipped_model_paths

if TYPE_CHECKING:  # TensorFlow loads with a Keras model, never for an exported folder
    from captioner.portable.model import PortableCaptioner
    from captioner.serving.api import Captioner

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

    model: str = MODEL_FILE
    tokenizer: str = VOCAB_FILE
    encoder_weights: str = "imagenet"  # a file path, or "imagenet" for Keras's cache/download

    @classmethod
    def from_env(cls) -> ModelPaths:
        """CAPTIONER_MODEL, CAPTIONER_TOKENIZER, CAPTIONER_ENCODER_WEIGHTS, else the defaults."""
        model_var, tokenizer_var = env_names("en")
        return cls(os.environ.get(model_var) or cls.model, os.environ.get(tokenizer_var) or cls.tokenizer,
                   os.environ.get("CAPTIONER_ENCODER_WEIGHTS") or cls.encoder_weights)


#: How each shipped language is named to its readers, beside its English name.
NATIVE_NAMES = {"en": "English", "zh": "中文", "de": "Deutsch"}


def language_label(lang: str) -> str:
    """'中文 · Chinese' for a language code; the code itself for one we ship no model for."""
    english = SHIPPED_LANGUAGES.get(lang, lang)
    native = NATIVE_NAMES.get(lang, english)
    return english if native == english else f"{native} · {english}"


def language_models(environ: Mapping[str, str] = os.environ) -> dict[str, ModelPaths]:
    """Where each of SHIPPED_LANGUAGES' models is: environment variables, else the shipped layout.

    English reads CAPTIONER_MODEL / CAPTIONER_TOKENIZER (as ModelPaths.from_env), another language
    CAPTIONER_MODEL_<LANG> / CAPTIONER_TOKENIZER_<LANG> (e.g. CAPTIONER_MODEL_ZH); without them the
    files are those `api.shipped_model_paths` names (models/<lang>/ for all but English).
    CAPTIONER_ENCODER_WEIGHTS applies to every language.
    """
    weights = environ.get("CAPTIONER_ENCODER_WEIGHTS") or ModelPaths.encoder_weights
    models = {}
    for lang in SHIPPED_LANGUAGES:
        model_var, tokenizer_var = env_names(lang)
        model, tokenizer = shipped_model_paths(lang)
        models[lang] = ModelPaths(environ.get(model_var) or str(model), environ.get(tokenizer_var) or str(tokenizer),
                                  weights)
    return models


#: A folder of model folders (each with mymodel.h5 + tokenizer.pkl) that the app offers its visitors.
MODELS_DIR_ENV = "CAPTIONER_MODELS_DIR"
#: Set to 1 to let visitors type server paths of models to load: for a private deployment only.
ALLOW_PATHS_ENV = "CAPTIONER_ALLOW_MODEL_PATHS"


def visitors_may_type_paths(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the operator switched on free model paths for visitors (off unless set)."""
    return environ.get(ALLOW_PATHS_ENV, "").strip().lower() in ("1", "true", "yes")


def model_choices(environ: Mapping[str, str] = os.environ) -> dict[str, list[ModelPaths]]:
    """The models the operator offers for each language: the configured one first (language_models),
    then every folder of CAPTIONER_MODELS_DIR holding mymodel.h5 + tokenizer.pkl, under the language its
    model file records. Visitors of a public app pick among these and never name a path."""
    defaults = language_models(environ)
    choices = {lang: [paths] for lang, paths in defaults.items()}
    folder = environ.get(MODELS_DIR_ENV)
    weights = defaults["en"].encoder_weights
    for model in sorted(Path(folder).glob(f"*/{MODEL_FILE}")) if folder else []:
        tokenizer = vocabulary_beside(model)
        try:
            lang = read_model_info(model).lang
        except CaptionerError:
            continue  # not a captioner model: not offered
        paths = ModelPaths(str(model), str(tokenizer), weights)
        if tokenizer.is_file() and paths not in choices.setdefault(lang, []):
            choices[lang].append(paths)
    return choices


def choice_key(lang: str, index: int) -> str:
    """How a form names the index-th model_choices entry of a language: 'zh:1'."""
    return f"{lang}:{index}"


def chosen_model(choices: Mapping[str, Sequence[ModelPaths]], key: object) -> tuple[str, ModelPaths] | None:
    """The (language, paths) a choice_key names, or None for anything that is not one of the choices."""
    lang, _, index = str(key).partition(":")
    options = choices.get(lang, [])
    return (lang, options[int(index)]) if index.isdigit() and int(index) < len(options) else None


def missing_files(paths: ModelPaths) -> list[str]:
    """The model and tokenizer files of `paths` that do not exist (empty: the language can be offered); an
    exported folder holds its vocabulary."""
    if Path(paths.model).is_dir():
        return []
    return [name for name in (paths.model, paths.tokenizer) if not Path(name).is_file()]


def how_to_get(lang: str) -> str:
    """Markdown: how to get a language's model files, for a page that cannot offer the language yet."""
    model, tokenizer = shipped_model_paths(lang)
    model_var, tokenizer_var = env_names(lang)
    return (f"train it with `captioner train --config {recipe_path(lang)}` and put its `{MODEL_FILE}` + "
            f"`{VOCAB_FILE}` at `{model}` and `{tokenizer}`, or set `{model_var}` and `{tokenizer_var}`")


@dataclass
class LoadedModel:
    """A ready captioner (encoder built) and when it was loaded, to show and to share."""

    captioner: Captioner | PortableCaptioner
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


@dataclass
class ImageResult:
    """One gallery entry: its caption in each language, or the reason it has none."""

    name: str
    image: Image.Image | None = None  # upright RGB, for previews and attention overlays
    captions: dict[str, Caption] = field(default_factory=dict)  # language code → caption
    error: str | None = None
    notes: list[str] = field(default_factory=list)  # e.g. "animated: the first frame was captioned"


def alt_text(caption: Caption) -> str:
    """The caption as a sentence for an <img alt="…">: capitalised, one full stop ("。" after Chinese)."""
    text = caption.text.strip()
    if not text:
        return ""
    stop = "。" if unicodedata.east_asian_width(text[-1]) in "WF" else "."
    return text[0].upper() + text[1:] + ("" if text.endswith((".", "!", "?", "。")) else stop)


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


def caption_in_languages(models: Mapping[str, Captioner], images: Sequence[ImageSource],
                         options: DecodeOptions = DEFAULT_DECODING) -> list[dict[str, Caption]]:
    """Each image's caption by every model of {language: Captioner}, in the mapping's order.

    The CNN is the slow part, so captioners trained on the same encoder features (same
    `info.encoder` and `info.image_size`) decode from one encoding of the batch; a model on another
    encoder gets its own. Each model keeps its vocabulary, so Chinese comes back without spaces.
    The captioners are expected to use the same encoder weights (ImageNet, as the app loads them).
    """
    groups: dict[tuple[str, int], list[str]] = {}
    for lang, model in models.items():
        groups.setdefault((model.info.encoder, model.info.image_size), []).append(lang)
    found: list[dict[str, Caption]] = [{} for _ in images]
    if not images:
        return found
    for langs in groups.values():
        first = models[langs[0]]
        features, probabilities = first.encode_and_classify(images)  # one CNN pass for the group
        for lang in langs:
            captions = models[lang].caption_features(features, options, probabilities)
            for row, caption in zip(found, captions, strict=True):
                row[lang] = caption
    return [{lang: row[lang] for lang in models} for row in found]


def caption_images(models: Captioner | Mapping[str, Captioner], items: Sequence[tuple[str, ImageSource]],
                   options: DecodeOptions = DEFAULT_DECODING, batch_size: int = 8,
                   progress: Callable[[int, int], None] | None = None) -> list[ImageResult]:
    """Caption many images in one language (a Captioner) or several ({language: Captioner}).

    A bad image gets a clear `error` and never stops the others; each readable one is encoded once
    per batch however many languages share its encoder. `progress(done, total)` is called after
    each batch, for a progress bar.
    """
    if not isinstance(models, Mapping):
        models = {models.info.lang: models}
    results = read_images(items)
    readable = [r for r in results if r.image is not None]
    for start in range(0, len(readable), batch_size):
        batch = readable[start:start + batch_size]
        images = [r.image for r in batch if r.image is not None]
        for result, captions in zip(batch, caption_in_languages(models, images, options), strict=True):
            result.captions = captions
        if progress:
            progress(min(start + batch_size, len(readable)), len(readable))
    return results


EXPORT_FIELDS = ("file", "language", "caption", "alt_text", "confidence", "alternatives", "error")


def export_rows(results: Sequence[ImageResult]) -> list[dict]:
    """One row per image and language; an image without captions gets one row with its error."""
    rows = []
    for r in results:
        for lang, caption in r.captions.items() or [("", None)]:
            rows.append({"file": r.name, "language": lang,
                         "caption": caption.text if caption else "",
                         "alt_text": alt_text(caption) if caption else "",
                         "confidence": round(caption.confidence, 4) if caption else None,
                         "alternatives": [{"caption": a.text, "confidence": round(a.confidence, 4)}
                                          for a in (caption.alternatives if caption else [])],
                         "error": r.error or ""})
    return rows


def to_json(results: Sequence[ImageResult]) -> str:
    """All captions as a JSON list of {file, language, caption, alt_text, confidence, alternatives, error}."""
    return json.dumps(export_rows(results), ensure_ascii=False, indent=2)


def to_csv(results: Sequence[ImageResult]) -> str:
    """All captions as CSV, one row per image and language; alternatives are joined with " | "."""
    out = io.StringIO()
    writer = csv.DictWriter(out, EXPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in export_rows(results):
        row["alternatives"] = " | ".join(a["caption"] for a in row["alternatives"])
        row["confidence"] = "" if row["confidence"] is None else row["confidence"]
        writer.writerow(row)
    return out.getvalue()
