"""Where the shipped models of each language live, and the environment variables that override them.

One place for the rules every surface follows (CLI, app, notebooks, scripts): English at the
repository root, other languages in models/<lang>/; CAPTIONER_MODEL / CAPTIONER_TOKENIZER for
English and CAPTIONER_MODEL_<LANG> / CAPTIONER_TOKENIZER_<LANG> for the others; the recipe that
trains each is configs/flickr8k.yaml or configs/flickr8k_<lang>.yaml.
"""

from __future__ import annotations

import os
from pathlib import Path

from captioner.serving.artifacts import MODEL_FILE, VOCAB_FILE

SHIPPED_LANGUAGES = {"en": "English", "zh": "Chinese", "de": "German"}


def shipped_model_paths(lang: str = "en", root: str | os.PathLike = ".") -> tuple[Path, Path]:
    """Model and vocabulary shipped for a language: mymodel.h5 + tokenizer.pkl in the repository
    root for English, models/<lang>/ for the others."""
    folder = Path(root) if lang == "en" else Path(root) / "models" / lang
    return folder / MODEL_FILE, folder / VOCAB_FILE


def env_names(lang: str) -> tuple[str, str]:
    """The environment variables naming a language's model and tokenizer, e.g. CAPTIONER_MODEL_ZH."""
    suffix = "" if lang == "en" else f"_{lang.upper()}"
    return f"CAPTIONER_MODEL{suffix}", f"CAPTIONER_TOKENIZER{suffix}"


def recipe_path(lang: str) -> str:
    """The training recipe of a language's shipped model."""
    return "configs/flickr8k.yaml" if lang == "en" else f"configs/flickr8k_{lang}.yaml"
