"""Atomic file writes: a reader sees the old file or the complete new one, never half of it.

A process killed while writing leaves only a hidden temporary file (``.<name>.<random>.tmp``) beside
the target; :func:`remove_stale_temps` clears those when a run or build resumes."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from evaluation.errors import ZcpError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temp file in the same folder, fsync it, then rename it over ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ZcpError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ZcpError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Delete the temporary files (and folders) an interrupted atomic write left in ``folder``; returns how many."""
    stale = [*Path(folder).glob(".*.tmp"), *Path(folder).glob(".*.tmpdir")]
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return len(stale)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))
