"""Run a notebook top to bottom in a fresh kernel and save it with its outputs (what the committed
notebooks hold). Run from the repository root, e.g.

    KERAS_HOME=$PWD/.keras python scripts/run_notebook.py image-captioner.ipynb

The file is only replaced when every cell ran; after an error, the partial run is saved beside it
as <name>.failed.ipynb for a look.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbclient
import nbformat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell (default: %(default)s)")
    args = parser.parse_args()
    for path in args.notebooks:
        nb = nbformat.read(path, as_version=4)
        client = nbclient.NotebookClient(nb, timeout=args.timeout, kernel_name="python3", coalesce_streams=True,
                                         resources={"metadata": {"path": str(Path.cwd())}})
        print(f"running {path}…", flush=True)
        try:
            client.execute()
        except nbclient.exceptions.CellExecutionError as error:
            failed = path.with_suffix(".failed.ipynb")
            nbformat.write(nb, failed)
            print(f"{path}: a cell failed; partial run saved as {failed}\n{error}", file=sys.stderr)
            return 1
        nbformat.write(nb, path)
        print(f"saved {path} with its outputs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
