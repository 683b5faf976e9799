"""Where the data lives: command-line flag > environment variable > user config file > default.

Keys (each also an environment variable, upper-cased with a ``ZCP_`` prefix):

- ``data_dir``: the offline reference data (ground-truth table, image batches), default
  ``../shared/data`` beside the repository;
- ``tss_archive`` / ``sss_archive``: official NATS-Bench archives (``NATS-tss-v1_0-3ffb9-simple``,
  ``NATS-sss-v1_0-50262-simple``), default under ``$TORCH_HOME`` (``~/.torch``) as ``nats_bench`` does;
- ``tss_table`` / ``sss_table``: ground-truth tables in the CSV format of
  ``nats_tss_ground_truth.csv`` (default ``<data_dir>/nats_{space}_ground_truth.csv``);
- ``nb101_table``: the NAS-Bench-101 gzip table (default ``<data_dir>/nb101_ground_truth.csv.gz``);
- ``cifar_dir``: folder holding ``cifar-10-batches-py/`` and/or ``cifar-100-python/``;
- ``imagenet16_dir``: folder holding the downsampled ImageNet 16x16 pickles.

The user config file is ``$ZCP_CONFIG`` or ``~/.config/zcp/config.toml`` with a ``[paths]`` table.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from evaluation.errors import ZcpError

REPO_ROOT = Path(__file__).resolve().parent.parent
ARCHIVE_NAMES = {"tss": "NATS-tss-v1_0-3ffb9-simple", "sss": "NATS-sss-v1_0-50262-simple"}


@dataclass(frozen=True)
class DataPaths:
    """Resolved locations; a path may not exist (``zcp bench info`` reports which do)."""

    data_dir: Path
    tss_archive: Path
    sss_archive: Path
    tss_table: Path
    sss_table: Path
    nb101_table: Path
    cifar_dir: Path
    imagenet16_dir: Path

    def archive(self, space: str) -> Path:
        return self.tss_archive if space == "tss" else self.sss_archive

    def table(self, space: str) -> Path:
        return {"tss": self.tss_table, "sss": self.sss_table, "nb101": self.nb101_table}[space]


KEYS = tuple(f.name for f in fields(DataPaths))


def _config_file_values() -> dict[str, str]:
    path = Path(os.environ.get("ZCP_CONFIG", Path.home() / ".config" / "zcp" / "config.toml"))
    if not path.is_file():
        return {}
    try:
        section = tomllib.loads(path.read_text()).get("paths", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ZcpError(f"cannot read config file {path}: {exc}") from None
    unknown = sorted(set(section) - set(KEYS))
    if unknown:
        raise ZcpError(f"unknown key(s) {', '.join(unknown)} in [paths] of {path}; known: {', '.join(KEYS)}")
    return {k: str(v) for k, v in section.items()}


def resolve_paths(**overrides: str | os.PathLike | None) -> DataPaths:
    """Resolve every location; ``overrides`` are command-line values (None = not given)."""
    unknown = sorted(set(overrides) - set(KEYS))
    if unknown:
        raise ZcpError(f"unknown path key(s): {', '.join(unknown)}")
    chosen: dict[str, str] = _config_file_values()
    chosen.update({k: os.environ[f"ZCP_{k.upper()}"] for k in KEYS if os.environ.get(f"ZCP_{k.upper()}")})
    chosen.update({k: str(v) for k, v in overrides.items() if v is not None})

    data_dir = Path(chosen.get("data_dir", REPO_ROOT.parent / "shared" / "data")).expanduser()
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".torch")).expanduser()
    defaults = {
        "tss_archive": torch_home / ARCHIVE_NAMES["tss"],
        "sss_archive": torch_home / ARCHIVE_NAMES["sss"],
        "tss_table": data_dir / "nats_tss_ground_truth.csv",
        "sss_table": data_dir / "nats_sss_ground_truth.csv",
        "nb101_table": data_dir / "nb101_ground_truth.csv.gz",
        "cifar_dir": data_dir,
        "imagenet16_dir": data_dir / "ImageNet16",
    }
    resolved = {k: Path(chosen[k]).expanduser() if k in chosen else v for k, v in defaults.items()}
    return DataPaths(data_dir=data_dir, **resolved)


