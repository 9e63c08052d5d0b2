"""Reading and running the repository's notebooks in tests: outputs, parameters, nbclient runs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from conftest import ROOT


def read_notebook(path: Path):
    return nbformat.read(path, as_version=4)


def parameters_index(nb) -> int:
    """Index of the first code cell, which holds the parameters."""
    code = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
    assert code, "the notebook has no code cells"
    return code[0]


def parameters(nb) -> dict:
    """The names the parameters cell assigns (it must hold plain assignments only)."""
    namespace: dict = {}
    exec(nb.cells[parameters_index(nb)].source, namespace)
    namespace.pop("__builtins__")
    return namespace


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


def errors(nb) -> list:
    return [o for o in outputs(nb) if o.output_type == "error"]


def check_committed_run(nb) -> None:
    """The committed copy was run whole, in order, without errors."""
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code), "some cells were not run; run the whole notebook"
    counts = [cell.execution_count for cell in code]
    assert counts == sorted(counts), "cells were run out of order; restart and run all"
    assert not errors(nb)


def run_with_parameters(path: Path, overrides: dict, scratch: Path, timeout: int = 600):
    """Run a notebook from the repository root with `overrides` injected after its parameters cell
    (as papermill does); returns the executed notebook, also saved in `scratch` for a look after a failure."""
    nbclient = pytest.importorskip("nbclient")
    nb = read_notebook(path)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    injected = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in overrides.items()),
                                         metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(parameters_index(nb) + 1, injected)
    client = nbclient.NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}},
        coalesce_streams=True, record_timing=False)
    try:
        client.execute()
    finally:
        nbformat.write(nb, scratch / f"executed-{path.name}")
    return nb
