"""Shared fixtures: the offline reference data beside the repository (../shared/data by default)."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

# Tests must not pick up a developer's personal ~/.config/zcp/config.toml.
os.environ["ZCP_CONFIG"] = os.devnull

from evaluation.paths import resolve_paths  # noqa: E402


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data folder; skips (saying where it looked) if it is absent."""
    path = resolve_paths().data_dir
    if not (path / "nats_tss_ground_truth.csv").is_file():
        pytest.skip(f"shared reference data not found at {path} (set ZCP_DATA_DIR to point at it)")
    return path


@pytest.fixture(scope="session")
def tss_rows(data_dir: Path) -> list[dict[str, str]]:
    """Rows of the official TSS table, read with the csv module (independent of our reader)."""
    with open(data_dir / "nats_tss_ground_truth.csv", newline="") as f:
        return list(csv.DictReader(f))
