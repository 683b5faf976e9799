"""Campaign checkpoints: plain JSON with a SHA-256 of their content, written atomically.

The checksum catches a damaged or hand-edited file before anything in it is used; it is not a
signature (anyone can recompute it), so every field is still validated where it is used, and
expression strings are only ever parsed against the primitive set, never run as Python.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from evaluation.atomic import atomic_write_text
from evaluation.errors import ZcpError
from evaluation.jsonfile import read_json_record

FORMAT = "zcp-checkpoint/1"


def _digest(record: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def write_checkpoint(path: Path, record: dict[str, Any]) -> Path:
    """Write ``record`` (plain JSON values) with its format tag and checksum, atomically."""
    body = {"format": FORMAT, **record}
    return atomic_write_text(path, json.dumps({**body, "sha256": _digest(body)}) + "\n")


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The record :func:`write_checkpoint` wrote; ZcpError (one line) if it is missing, unreadable or damaged."""
    record = read_json_record(path, "checkpoint", FORMAT, "zcp checkpoint")
    stored = record.pop("sha256", None)
    if stored != _digest(record):
        raise ZcpError(f"checkpoint {path} fails its checksum: the file was damaged or edited; "
                       f"restore it from a backup or start the campaign again")
    del record["format"]
    return record
