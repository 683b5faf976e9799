"""Campaign configuration: a TOML file with the sections below; an unknown key is an error naming it.

    [campaign]  space, datasets, metric ('kendall' | 'spearman'), combine ('min' | 'mean'),
                cost_weight (fitness minus this x passes per network; 0 = off), seed,
                time_limit (seconds one candidate may take; an overrun scores worst)
    [sample]    search_kind, search_n, heldout_kind, heldout_n, split_seed, heldout_fraction, bins
    [cache]     batch_size, images, signal, terminals (empty = all), dir (empty = <run>/caches)
    [gp]        the fields of gp.engine.GPConfig
    [parallel]  backend ('serial' | 'ray'), workers, address (empty = local Ray)

Every value has a default; the run directory keeps the complete config (defaults filled in), and its
hash guards ``zcp resume`` against a changed config.
"""
from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from evaluation.errors import ZcpError
from evaluation.fitness import TIME_LIMIT, options_problem
from evaluation.spaces import check_space_dataset, get_space
from gp.engine import GPConfig
from primitives.expression import parse
from primitives.functions import REGISTRY
from primitives.terminals import TERMINALS, terminal_types


@dataclass(frozen=True)
class CampaignSection:
    space: str = "tss"
    datasets: tuple[str, ...] = ("cifar10",)
    metric: str = "kendall"
    combine: str = "min"
    cost_weight: float = 0.0
    seed: int = 0
    time_limit: float = TIME_LIMIT

    def __post_init__(self) -> None:
        problem = options_problem(self.metric, self.combine, self.cost_weight, self.time_limit)
        if problem:
            raise ValueError(problem)


@dataclass(frozen=True)
class SampleSection:
    search_kind: str = "random"
    search_n: int = 200
    heldout_kind: str = "random"
    heldout_n: int = 200
    split_seed: int = 0
    heldout_fraction: float = 0.5
    bins: int = 10


@dataclass(frozen=True)
class CacheSection:
    batch_size: int = 64
    images: str = "auto"
    signal: str = "pseudo_ce"
    terminals: tuple[str, ...] = ()
    dir: str = ""


@dataclass(frozen=True)
class ParallelSection:
    backend: str = "ray"
    workers: int = 2
    address: str = ""


@dataclass(frozen=True)
class Config:
    campaign: CampaignSection = field(default_factory=CampaignSection)
    sample: SampleSection = field(default_factory=SampleSection)
    cache: CacheSection = field(default_factory=CacheSection)
    gp: GPConfig = field(default_factory=GPConfig)
    parallel: ParallelSection = field(default_factory=ParallelSection)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {f.name: _plain(asdict(getattr(self, f.name))) for f in fields(self)}

    def to_toml(self) -> str:
        lines = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
            lines.append("")
        return "\n".join(lines)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


SECTIONS = {"campaign": CampaignSection, "sample": SampleSection, "cache": CacheSection, "gp": GPConfig,
            "parallel": ParallelSection}


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _section(cls: type, raw: Any, name: str, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ZcpError(f"{where}: [{name}] must be a table")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ZcpError(f"{where}: unknown key {name}.{unknown[0]} (known in [{name}]: {', '.join(known)})")
    values = {}
    defaults = cls()
    for key, value in raw.items():
        default = getattr(defaults, key)
        if isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ZcpError(f"{where}: {name}.{key} must be a list of strings, got {value!r}")
            value = tuple(value)
        elif isinstance(default, bool) or isinstance(value, bool):
            if type(value) is not type(default):
                raise ZcpError(f"{where}: {name}.{key} must be {type(default).__name__}, got {value!r}")
        elif isinstance(default, float) and isinstance(value, int):
            value = float(value)
        elif not isinstance(value, type(default)):
            raise ZcpError(f"{where}: {name}.{key} must be {type(default).__name__}, got {value!r}")
        values[key] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ZcpError(f"{where}: [{name}] {exc}") from None


def _override(raw: dict[str, Any], setting: str) -> None:
    """Apply one ``SECTION.KEY=VALUE`` (VALUE a TOML literal, else a plain string) to ``raw``."""
    target, sep, value = setting.partition("=")
    section, dot, key = target.strip().partition(".")
    if not (sep and dot and section and key):
        raise ZcpError(f"--set {setting!r}: expected SECTION.KEY=VALUE, e.g. gp.seed=1")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    table = raw.setdefault(section, {})
    if not isinstance(table, dict):
        raise ZcpError(f"--set {setting!r}: [{section}] is not a table")
    table[key] = parsed


def parse_config(text: str, where: str = "config", overrides: Sequence[str] = ()) -> Config:
    """Parse and validate a campaign config; ``overrides`` are ``SECTION.KEY=VALUE`` settings on top."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ZcpError(f"{where} is not valid TOML ({exc})") from None
    for setting in overrides:
        _override(raw, setting)
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ZcpError(f"{where}: unknown section [{unknown[0]}] (known: {', '.join(SECTIONS)})")
    config = Config(**{name: _section(SECTIONS[name], raw[name], name, where) for name in raw})
    space = get_space(config.campaign.space)
    for dataset in config.campaign.datasets:
        check_space_dataset(space, dataset)
    if not config.campaign.datasets:
        raise ZcpError(f"{where}: campaign.datasets is empty")
    unknown = [t for t in config.cache.terminals if t not in TERMINALS]
    if unknown:
        raise ZcpError(f"{where}: cache.terminals: unknown terminal {unknown[0]!r} (see primitives/terminals.py)")
    types = terminal_types(config.cache.terminals or None)
    for text in config.gp.initial_expressions:
        try:
            parse(text, REGISTRY, types)
        except ZcpError as exc:
            raise ZcpError(f"{where}: gp.initial_expressions: {exc}") from None
    return config


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read and validate a campaign config file (plus ``SECTION.KEY=VALUE`` overrides)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ZcpError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ZcpError(f"cannot read config file {path} ({exc})") from None
    return parse_config(text, str(path), overrides)
