"""The notebook image-captioner.ipynb: it runs end to end on a tiny Flickr8k subset, and the
committed copy carries the outputs of a real run."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT
from notebook_helpers import (
    check_committed_run,
    images,
    output_text,
    outputs,
    parameters,
    parameters_index,
    read_notebook,
    run_with_parameters,
)

NOTEBOOK = ROOT / "image-captioner.ipynb"
PARAMETERS = ("DATA_DIR", "IMAGE_LIMIT", "EPOCHS", "OUTPUT_DIR", "CACHE_DIR", "ENCODER_WEIGHTS",
              "FAST_METRICS", "SHOWCASE_MODEL")


def test_first_code_cell_is_the_tagged_parameters_cell():
    nb = read_notebook(NOTEBOOK)
    assert "parameters" in nb.cells[parameters_index(nb)].metadata.get("tags", [])
    values = parameters(nb)
    assert set(PARAMETERS) <= set(values)
    assert values["DATA_DIR"] == "../shared/data/flickr8k"
    assert values["ENCODER_WEIGHTS"] == "imagenet"


def test_committed_notebook_has_the_outputs_of_a_full_run():
    nb = read_notebook(NOTEBOOK)
    check_committed_run(nb)
    text = output_text(nb)
    headers = [line for line in text.splitlines() if "BLEU-1" in line]
    assert "beam 3" in text and any("METEOR" in line for line in headers), "show the full COCO metrics"
    assert len(images(nb)) >= 6
    assert NOTEBOOK.stat().st_size < 3_000_000, "keep the notebook small: modest figures, JPEG photos"


@pytest.mark.slow
def test_notebook_runs_end_to_end_on_a_tiny_subset(flickr8k, tmp_path):
    run = tmp_path / "run"
    overrides = {
        "DATA_DIR": str(flickr8k), "IMAGE_LIMIT": 20, "EPOCHS": 1, "OUTPUT_DIR": str(run),
        "CACHE_DIR": str(tmp_path / "cache"), "ENCODER_WEIGHTS": "imagenet", "FAST_METRICS": True,
        # the model trained by the notebook itself exercises the "shipped model is present" branch
        "SHOWCASE_MODEL": str(run / "mymodel.h5"),
    }
    assert set(overrides) == set(PARAMETERS)
    nb = run_with_parameters(NOTEBOOK, overrides, tmp_path)

    assert not [o for o in outputs(nb) if o.output_type == "error"]
    text = output_text(nb)
    assert "dev split, 20 images" in text
    for row in ("greedy", "beam 3", "human (1 vs 4)", "greedy (mymodel.h5)"):
        assert row in text
    headers = [line for line in text.splitlines() if "BLEU-1" in line]  # metrics tables
    assert headers and all("CIDEr" in line and "METEOR" not in line for line in headers)  # FAST_METRICS
    assert f"using {run / 'mymodel.h5'}" in text  # the showcase section found the model and used it
    assert len(images(nb)) >= 8  # samples, word stats, grid, curves, captions, attention maps
    for name in ("mymodel.h5", "tokenizer.pkl", "history.png"):
        assert (run / name).is_file()
    assert list(Path(tmp_path / "cache").rglob("*.npy")), "features were cached where CACHE_DIR says"
