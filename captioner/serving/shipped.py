"""Where the shipped models of each language live, and the environment variables that override them.

One place for the rules every surface follows (CLI, app, notebooks, scripts): English at the
repository root, other languages and the English variants in models/<name>/; CAPTIONER_MODEL /
CAPTIONER_TOKENIZER for English and CAPTIONER_MODEL_<LANG> / CAPTIONER_TOKENIZER_<LANG> for the
others; the recipe that trains each is in RECIPES (configs/flickr8k.yaml trains English on MobileNetV2,
configs/flickr8k_small.yaml the fast English model).
"""

from __future__ import annotations

import os
from pathlib import Path

from captioner.artifacts.model_files import MODEL_FILE, VOCAB_FILE

SHIPPED_LANGUAGES = {"en": "English", "zh": "Chinese", "de": "German"}
#: Every model the repository ships, by name, with the language it captions in: each language's default
#: model (on EfficientNet-Lite2, whose tags ground English captions); "en-fast", an
#: English model with under half the decoder's weights, faster and lower dev scores (MODEL_CARD.md, "The fast
#: English model"); and "en-mobilenet", English on MobileNetV2 features, without tags.
#: The options are chosen by their path, models/<name>/.
SHIPPED_MODELS = {**{lang: lang for lang in SHIPPED_LANGUAGES}, "en-fast": "en", "en-mobilenet": "en"}


def shipped_model_paths(name: str = "en", root: str | os.PathLike = ".") -> tuple[Path, Path]:
    """Model and vocabulary of a shipped model (a language code or another of SHIPPED_MODELS' names):
    mymodel.h5 + tokenizer.pkl in the repository root for English, models/<name>/ for the others."""
    folder = Path(root) if name == "en" else Path(root) / "models" / name
    return folder / MODEL_FILE, folder / VOCAB_FILE


def env_names(lang: str) -> tuple[str, str]:
    """The environment variables naming a language's model and tokenizer, e.g. CAPTIONER_MODEL_ZH."""
    suffix = "" if lang == "en" else f"_{lang.upper()}"
    return f"CAPTIONER_MODEL{suffix}", f"CAPTIONER_TOKENIZER{suffix}"


#: The first training recipe of each language's shipped model (scripts/train_shipped.sh runs every stage).
RECIPES = {"en": "configs/flickr8k_lite2.yaml", "zh": "configs/flickr8k_zh_lite2.yaml",
           "de": "configs/flickr8k_de_lite2.yaml"}


def recipe_path(lang: str) -> str:
    """The training recipe of a language's shipped model."""
    return RECIPES[lang]
