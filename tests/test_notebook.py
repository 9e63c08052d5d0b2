"""The notebook image-captioner.ipynb: it runs end to end on a tiny Flickr8k subset, and the
committed copy carries the outputs of a real run."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT

nbformat = pytest.importorskip("nbformat")

NOTEBOOK = ROOT / "image-captioner.ipynb"
PARAMETERS = ("DATA_DIR", "IMAGE_LIMIT", "EPOCHS", "OUTPUT_DIR", "CACHE_DIR", "ENCODER_WEIGHTS",
              "FAST_METRICS", "SHOWCASE_MODEL")


def read_notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def parameters_index(nb) -> int:
    code = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    assert code, "the notebook has no code cells"
    return code[0]


def outputs(nb) -> list:
    return [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]


def output_text(nb) -> str:
    """All stream text and text/plain results, concatenated."""
    parts = []
    for output in outputs(nb):
        if output.output_type == "stream":
            parts.append(output.text)
        elif "data" in output:
            parts.append(output.data.get("text/plain", ""))
    return "\n".join(parts)


def images(nb) -> list:
    return [o for o in outputs(nb) if "data" in o and ({"image/png", "image/jpeg"} & set(o.data))]


def test_first_code_cell_is_the_tagged_parameters_cell():
    nb = read_notebook()
    cell = nb.cells[parameters_index(nb)]
    assert "parameters" in cell.metadata.get("tags", [])
    namespace: dict = {}
    exec(cell.source, namespace)  # plain assignments only
    assert set(PARAMETERS) <= set(namespace)
    assert namespace["DATA_DIR"] == "../shared/data/flickr8k"
    assert namespace["ENCODER_WEIGHTS"] == "imagenet"


def test_committed_notebook_has_the_outputs_of_a_full_run():
    nb = read_notebook()
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), "some cells were not run; run the whole notebook"
    counts = [cell.execution_count for cell in code]
    assert counts == sorted(counts), "cells were run out of order; restart and run all"
    assert not [o for o in outputs(nb) if o.output_type == "error"]
    text = output_text(nb)
    headers = [line for line in text.splitlines() if "BLEU-1" in line]
    assert "beam 3" in text and any("METEOR" in line for line in headers), "show the full COCO metrics"
    assert len(images(nb)) >= 6
    assert NOTEBOOK.stat().st_size < 3_000_000, "keep the notebook small: modest figures, JPEG photos"


@pytest.mark.slow
def test_notebook_runs_end_to_end_on_a_tiny_subset(flickr8k, mobilenet_weights, tmp_path):
    nbclient = pytest.importorskip("nbclient")
    nb = read_notebook()
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    run = tmp_path / "run"
    overrides = {
        "DATA_DIR": str(flickr8k), "IMAGE_LIMIT": 20, "EPOCHS": 1, "OUTPUT_DIR": str(run),
        "CACHE_DIR": str(tmp_path / "cache"), "ENCODER_WEIGHTS": str(mobilenet_weights), "FAST_METRICS": True,
        # the model trained by the notebook itself exercises the "shipped model is present" branch
        "SHOWCASE_MODEL": str(run / "mymodel.h5"),
    }
    assert set(overrides) == set(PARAMETERS)
    injected = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in overrides.items()),
                                         metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(parameters_index(nb) + 1, injected)

    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}},
        coalesce_streams=True, record_timing=False)
    try:
        client.execute()
    finally:
        nbformat.write(nb, tmp_path / "executed.ipynb")  # for a look after a failure

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
