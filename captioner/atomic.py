"""Writing files and folders atomically: into a temporary path beside the target, renamed over it once complete.

A crash, a kill or a full disk then leaves the previous file (or none), never a half-written one. Every
file the package writes that a later run trusts goes through `atomic_path`.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL = ".partial-"  # temporary paths are .<target name>.partial-<pid><suffix>


def partial_path(target: Path, suffix: str = "") -> Path:
    """A temporary path beside `target`, this process's own; `suffix` keeps an extension a writer insists on."""
    return target.with_name(f".{target.name}{PARTIAL}{os.getpid()}{suffix}")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _is_running(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate it there; keep the file
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but is not ours (PermissionError), or this platform cannot tell
        return True
    return True


def remove_stale_partials(target: Path) -> None:
    """Delete what writes of `target` killed before they finished left beside it (their process is gone)."""
    for partial in target.parent.glob(f".{glob.escape(target.name)}{PARTIAL}*"):
        pid = partial.name.rpartition(PARTIAL)[2].partition(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _is_running(int(pid)):
            _remove(partial)


def _sync(path: Path) -> None:
    """Flush a written file to disk, so that once renamed it is never found empty after a crash."""
    if path.is_file():
        with path.open("rb+") as handle:
            os.fsync(handle.fileno())


@contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write `target`'s content to (a file, or a folder); once the block ends
    without an error it replaces `target`; on an error it is removed and `target` is left as it was.

    Nest two blocks to replace two files only once both are complete. Leftovers of killed writers of the
    same target are removed first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(target)
    partial = partial_path(target, suffix)
    _remove(partial)
    try:
        yield partial
        _sync(partial)
        if partial.is_dir() and target.exists():  # a folder cannot be renamed over another
            _remove(target)
        os.replace(partial, target)
    finally:
        _remove(partial)


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    """Replace `target` with `data` atomically."""
    with atomic_path(target) as partial:
        partial.write_bytes(data)
