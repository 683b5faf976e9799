"""Reading the project's JSON record files (samples, checkpoints) with one-line errors."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evaluation.errors import ZcpError


def read_json_record(path: Path, what: str, fmt: str, kind: str) -> dict[str, Any]:
    """The JSON object in ``path`` whose ``"format"`` is ``fmt``; ZcpError naming ``what`` (e.g. 'sample
    file') if it is missing, not JSON, or not a ``kind`` (e.g. 'zcp sample')."""
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ZcpError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ZcpError(f"{what} {path} is not valid JSON ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != fmt:
        raise ZcpError(f'{what} {path} is not a {kind} (expected "format": "{fmt}")')
    return record
