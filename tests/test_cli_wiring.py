"""Wiring: each `captioner caption` search flag reaches the search, and every shipped recipe is a valid setting.

The search itself is replaced by a recorder, so these tests check exactly which DecodeOptions arrive at
`TFSearch.generate` (the entry point of greedy and beam search) for a given command line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from captioner.artifacts.model_files import ModelInfo, save_model
from captioner.cli.main import main
from captioner.decoding.options import Caption, DecodeOptions
from captioner.decoding.tf_search import TFSearch
from captioner.features.encoders import BACKBONES
from captioner.models.base import build_caption_model, registered_decoders
from captioner.serving.shipped import RECIPES as SHIPPED_RECIPES
from captioner.serving.shipped import SHIPPED_LANGUAGES, recipe_path, shipped_model_paths
from captioner.text.vocabulary import MAX_CAPTION_LENGTH, Vocabulary
from captioner.training.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "configs").glob("*.yaml"))
VOCAB = Vocabulary.build(["a dog runs on the grass"], min_count=1, max_length=6)


@pytest.fixture(scope="module")
def model_args(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """A saved random-weight model; with `--encoder-weights none` the CLI runs without downloads."""
    folder = tmp_path_factory.mktemp("model")
    keras.utils.set_random_seed(0)
    model = build_caption_model(len(VOCAB), (49, 1280), embedding_dim=8, units=16, attention_units=8)
    info = ModelInfo("mobilenet_v2", 224, len(VOCAB), VOCAB.fingerprint)
    save_model(model, VOCAB, info, folder / "mymodel.h5", folder / "tokenizer.pkl")
    return ["--model", str(folder / "mymodel.h5"), "--tokenizer", str(folder / "tokenizer.pkl"),
            "--encoder-weights", "none"]


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> list[DecodeOptions]:
    """The DecodeOptions every call of TFSearch.generate receives (it answers with a fixed caption)."""
    calls: list[DecodeOptions] = []

    def generate(self: TFSearch, features: np.ndarray, options: DecodeOptions, constraints=None,
                 vetoes=None) -> list[Caption]:
        calls.append(options)
        return [Caption("a dog", ["a", "dog"], -1.0, np.full((2, features.shape[1]), 1 / features.shape[1]),
                        score=-0.5) for _ in features]

    monkeypatch.setattr(TFSearch, "generate", generate)
    return calls


@pytest.mark.parametrize(("flags", "changed"), [
    ([], {}),
    (["--beam", "5"], {"beam_size": 5}),
    (["--beam", "1"], {"beam_size": 1}),
    (["--n-best", "2"], {"n_best": 2}),
    (["--length-penalty", "0.25"], {"length_penalty": 0.25}),
    (["--length-penalty", "0"], {"length_penalty": 0.0}),
    (["--allow-repeats"], {"block_repeats": False}),
    (["--beam", "4", "--n-best", "4", "--length-penalty", "1.5", "--allow-repeats"],
     {"beam_size": 4, "n_best": 4, "length_penalty": 1.5, "block_repeats": False}),
])
@pytest.mark.parametrize("output", [False, True], ids=["print", "output-file"])
def test_each_search_flag_changes_exactly_its_field(model_args: list[str], photo: Path, tmp_path: Path,
                                                    received: list[DecodeOptions], flags: list[str],
                                                    changed: dict, output: bool) -> None:
    """A flag sets its own DecodeOptions field and no other; with no flag the search gets DecodeOptions()."""
    extra = ["--output", str(tmp_path / "captions.jsonl")] if output else []
    assert main(["caption", str(photo), *flags, *model_args, *extra]) == 0
    assert received == [dataclasses.replace(DecodeOptions(), **changed)]


def test_recipes_are_found() -> None:
    """The recipe folder is where these tests look (a rename would silently test nothing), and the recipe the app
    and the CLI name for each shipped language's model is there."""
    assert {"flickr8k.yaml", "flickr8k_scst.yaml"} <= {p.name for p in RECIPES}
    assert set(SHIPPED_RECIPES) == set(SHIPPED_LANGUAGES)
    assert all((ROOT / recipe_path(lang)).resolve() in RECIPES for lang in SHIPPED_LANGUAGES)


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_loads_with_valid_settings(recipe: Path) -> None:
    """Each configs/*.yaml reads through TrainConfig.from_file into settings a run can use."""
    config = TrainConfig.from_file(recipe)
    assert config.encoder in BACKBONES and config.decoder in registered_decoders()
    assert Path(config.data).parts[-2:] == ("data", "flickr8k")  # the shared dataset, as the README says
    assert config.tokenization == ("chars" if config.lang in ("zh", "ja") else "words")
    assert config.min_count >= 1 and 1 <= config.max_length <= MAX_CAPTION_LENGTH and 0 <= config.dropout < 1
    assert 0 <= config.label_smoothing < 1 and config.batch_size >= 1 and config.epochs >= 1
    assert 0 < config.learning_rate < 0.01 and config.embedding_dim >= 1 and config.units >= 1
    stem = recipe.stem.removeprefix("flickr8k").replace("_", "-")  # "_de_scst" → "-de-scst"
    assert config.output == f"runs/flickr8k{stem}", "each recipe writes its own run folder"
    if "scst" in recipe.stem:
        stage_one = TrainConfig.from_file(recipe.with_name(recipe.name.split("_scst")[0] + ".yaml"))
        shipped = str(shipped_model_paths(config.lang or "en")[0])  # or fine-tune the shipped model itself
        assert config.objective == "scst" and config.init_from in (f"{stage_one.output}/mymodel.h5", shipped)
        assert config.lang == stage_one.lang and config.scst_samples >= 2 and config.label_smoothing == 0
        assert config.learning_rate < stage_one.learning_rate  # fine-tuning, not training from scratch
    elif recipe.stem.endswith("_ft"):  # more cross-entropy epochs from its stage 1, for a weight soup with it
        stage_one = TrainConfig.from_file(recipe.with_name(recipe.name.removesuffix("_ft.yaml") + ".yaml"))
        assert config.objective == "xent" and config.init_from == f"{stage_one.output}/mymodel.h5"
        assert config.lang == stage_one.lang and config.learning_rate < stage_one.learning_rate
    else:
        assert config.objective == "xent" and config.init_from is None


def test_recipes_write_distinct_runs() -> None:
    """No two recipes write the same run folder (a later run would overwrite an earlier model)."""
    outputs = [TrainConfig.from_file(recipe).output for recipe in RECIPES]
    assert len(set(outputs)) == len(outputs), outputs
