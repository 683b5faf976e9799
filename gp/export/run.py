"""Reading what an export needs from a campaign's run directory (see ``experiments.campaign``).

``hall_of_fame.json`` gives the entries (best first, with held-out scores once the run finished),
``config.toml`` the options the campaign scored its networks with (seed, backward signal),
``checkpoint.json`` the config hash the campaign recorded. Problems are one-line ZcpErrors.
"""
from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.errors import ZcpError

HOF, CONFIG, CHECKPOINT = "hall_of_fame.json", "config.toml", "checkpoint.json"
CURVE_POINTS = 64  # campaigns build caches with compute_terminals' default


@dataclass(frozen=True)
class Run:
    """A run directory's hall of fame and the facts an exported proxy records."""

    path: Path
    status: str
    entries: list[dict[str, Any]]
    options: dict[str, Any]
    config: dict[str, Any]
    config_digest: str | None

    @property
    def run_id(self) -> str:
        return self.path.resolve().name

    def entry(self, rank: int) -> dict[str, Any]:
        """The hall-of-fame entry of 1-based ``rank``."""
        if not isinstance(rank, int) or not 1 <= rank <= len(self.entries):
            raise ZcpError(f"rank {rank!r} is not in 1..{len(self.entries)} (entries in {self.path / HOF})")
        return self.entries[rank - 1]


def _read(path: Path, loads: Callable[[str], Any], missing: str) -> Any:
    try:
        return loads(path.read_text())
    except FileNotFoundError:
        raise ZcpError(missing) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSON and TOML decode errors are ValueErrors
        raise ZcpError(f"{path} is unreadable ({type(exc).__name__})") from None


def read_run(run_dir: str | Path) -> Run:
    """The run in ``run_dir`` (a run directory, or its hall_of_fame.json)."""
    path = Path(run_dir)
    if path.name == HOF and path.is_file():
        path = path.parent
    if not path.is_dir():
        raise ZcpError(f"run directory {path} does not exist")
    hof = _read(path / HOF, json.loads,
                f"{path} has no {HOF}: not a campaign run directory, or the campaign has not started")
    entries = hof.get("entries") if isinstance(hof, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("expression"), str)
                                                and isinstance(e.get("fitness"), (int, float)) for e in entries):
        raise ZcpError(f"{path / HOF} is not a zcp hall of fame (no list of entries with expression and fitness)")
    if not entries:
        raise ZcpError(f"{path / HOF} holds no entries yet")
    config = _read(path / CONFIG, tomllib.loads, f"{path} has no {CONFIG}: the campaign's scoring options are unknown")
    try:  # config.toml holds the complete config (defaults filled in)
        options = {"seed": int(config["campaign"]["seed"]), "signal": str(config["cache"]["signal"]),
                   "curve_points": CURVE_POINTS}
    except (KeyError, TypeError, ValueError):
        raise ZcpError(f"{path / CONFIG} lacks campaign.seed or cache.signal: not a zcp run config") from None
    checkpoint = _read(path / CHECKPOINT, json.loads, "") if (path / CHECKPOINT).is_file() else {}
    digest = checkpoint.get("config_digest") if isinstance(checkpoint, dict) else None
    return Run(path, str(hof.get("status", "unknown")), entries, options, config, digest)
