"""Campaign configuration: a TOML file with the sections below; an unknown key is an error naming it.

    [campaign]  space, datasets, metric ('kendall' | 'spearman'), combine ('min' | 'mean'),
                goals (a table: search sample name -> the correlation asked of it, e.g.
                {"cifar10/random" = 0.77, "cifar10/stratified" = 0.83}; empty = none),
                cost_weight (fitness minus this x passes per network; 0 = off), seed,
                time_limit (seconds one candidate may take; an overrun scores worst),
                energy (measure energy per phase with CodeCarbon: true | false),
                energy_region (3-letter country code for a CO2 figure; empty = energy only)
    [sample]    search_kind, search_n (one size for every search kind, or a list: one per kind), subsets,
                heldout_kind, heldout_n, split_seed, heldout_fraction, bins
    [cache]     batch_size, images, signal, terminals (names and @groups of primitives.terminals.GROUPS;
                empty = @base, the original 48), dir (empty = <run>/caches)
    [gp]        the fields of gp.engine.GPConfig
    [parallel]  backend ('serial' | 'ray'), workers, address (empty = local Ray; 'auto' = the cluster
                `ray start` left on this machine), gpus_per_task (cache tasks and fitness actors; 0 = default:
                a GPU share per worker for a CUDA cache build, none for fitness),
                node_ip_address (this machine's address in the cluster; empty = derived from address),
                memo_mib (MiB of subtree values each fitness evaluator keeps across generations;
                0 = none; speed only, the scores are the same)

Every value has a default; the run directory keeps the complete config (defaults filled in), and its
hash (of every setting that can change results, so not the energy ones nor ``memo_mib``) guards
``zcp resume`` against a changed config.

Search targets. The fitness of a campaign combines (``combine``) the correlations on every search
target: one per space x dataset x search kind x subset. ``space`` and ``search_kind`` take one name or
a list of names: ``space = ["tss", "sss"]`` is a cross-space campaign (one language, one hall of
fame, a search and a held-out cache per space and dataset; the spaces' ground truths must all have
every dataset); ``search_kind = ["random", "stratified"]`` evolves on several samples of the search
split at once (robust fitness); ``subsets = k`` splits each search sample into k disjoint random
subsets of at least ``MIN_SUBSET_N`` networks, each a target (EZNAS's fitness: the minimum over
subsets). Held-out samples come from the held-out split of each space, disjoint from every search
sample.
"""
from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from evaluation.cluster import gpu_share
from evaluation.energy import check_region
from evaluation.errors import ZcpError
from evaluation.fitness import TIME_LIMIT, options_problem
from evaluation.samples import KINDS, split_indices
from evaluation.spaces import check_space_dataset, get_space
from gp.engine import GPConfig
from primitives.expression import parse
from primitives.functions import REGISTRY
from primitives.terminals import DEFAULT, labels_problem, resolve_terminals, terminal_types


MIN_SUBSET_N = 10
"""Fewest networks a search subset may hold: a Kendall tau over fewer is mostly noise."""


def _is_name(value: Any) -> bool:
    return isinstance(value, str)


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


ONE_OR_MORE = {"one_or_more": (_is_name, "a name or a non-empty list of names")}
"""Field metadata: the key takes a name or a list of names (one name is kept as a plain string)."""
PER_KIND = {"one_or_more": (_is_whole, "a whole number or a non-empty list of them")}
"""Field metadata: the key takes a number for every search kind or a list of numbers, one per kind."""


def _names(value: str | tuple[str, ...]) -> tuple[str, ...]:
    """The names of a one-or-more field as a tuple."""
    return (value,) if isinstance(value, str) else tuple(value)


def _distinct(key: str, values: tuple[str, ...]) -> None:
    doubled = sorted({v for v in values if values.count(v) > 1})
    if doubled:
        raise ValueError(f"{key} names {doubled[0]!r} twice")


@dataclass(frozen=True)
class CampaignSection:
    space: str | tuple[str, ...] = field(default="tss", metadata=ONE_OR_MORE)
    datasets: tuple[str, ...] = ("cifar10",)
    metric: str = "kendall"
    combine: str = "min"
    goals: dict[str, float] = field(default_factory=dict)
    cost_weight: float = 0.0
    seed: int = 0
    time_limit: float = TIME_LIMIT
    energy: bool = True
    energy_region: str = ""

    def __post_init__(self) -> None:
        _distinct("space", self.spaces)
        _distinct("datasets", self.datasets)
        problem = options_problem(self.metric, self.combine, self.cost_weight, self.time_limit,
                                  tuple(self.goals.values()))
        if problem:
            raise ValueError(problem)

    @property
    def spaces(self) -> tuple[str, ...]:
        return _names(self.space)


@dataclass(frozen=True)
class SampleSection:
    search_kind: str | tuple[str, ...] = field(default="random", metadata=ONE_OR_MORE)
    search_n: int | tuple[int, ...] = field(default=200, metadata=PER_KIND)
    subsets: int = 1
    heldout_kind: str = "random"
    heldout_n: int = 200
    split_seed: int = 0
    heldout_fraction: float = 0.5
    bins: int = 10

    def __post_init__(self) -> None:
        for key, kind in [*(("search_kind", k) for k in self.search_kinds), ("heldout_kind", self.heldout_kind)]:
            if kind not in KINDS:
                raise ValueError(f"{key} {kind!r} is not one of {', '.join(KINDS)}")
        _distinct("search_kind", self.search_kinds)
        if len(self.search_sizes) != len(self.search_kinds):
            raise ValueError(f"search_n lists {len(self.search_sizes)} sizes for {len(self.search_kinds)} search kinds "
                             f"({', '.join(self.search_kinds)}): give one size, or one per kind")
        smallest = min(self.search_sizes)
        problems = [
            (smallest >= 1 and self.heldout_n >= 1, "search_n and heldout_n must be >= 1"),
            (self.bins >= 1, "bins must be >= 1"),
            (0.0 < self.heldout_fraction < 1.0, f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}"),
            (self.subsets >= 1, f"subsets must be >= 1, got {self.subsets}"),
            (self.subsets == 1 or smallest >= self.subsets * MIN_SUBSET_N,
             f"subsets = {self.subsets} needs search_n >= {self.subsets * MIN_SUBSET_N} "
             f"(at least {MIN_SUBSET_N} networks per subset), got {smallest}"),
        ]
        for ok, message in problems:
            if not ok:
                raise ValueError(message)

    @property
    def search_kinds(self) -> tuple[str, ...]:
        return _names(self.search_kind)

    def draws(self) -> list[tuple[str, str, int]]:
        """(split, kind, size) of every sample asked for: each search kind, then the held-out sample."""
        return [*(("search", k, n) for k, n in zip(self.search_kinds, self.search_sizes)),
                ("heldout", self.heldout_kind, self.heldout_n)]

    @property
    def search_sizes(self) -> tuple[int, ...]:
        """The size asked of each search kind's sample, in the order of :attr:`search_kinds`."""
        if isinstance(self.search_n, int):
            return (self.search_n,) * len(self.search_kinds)
        return self.search_n


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
    gpus_per_task: float = 0.0
    node_ip_address: str = ""
    memo_mib: int = 512

    def __post_init__(self) -> None:
        gpu_share(self.gpus_per_task)
        if self.memo_mib < 0:
            raise ValueError(f"memo_mib must be >= 0 MiB, got {self.memo_mib}")


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
            lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
            lines.append("")
        return "\n".join(lines)

    def results_dict(self) -> dict[str, dict[str, Any]]:
        """:meth:`to_dict` without the settings that cannot change results (energy tracking, memo size),
        nor those added since runs were made while they keep their default."""
        values = self.to_dict()
        for section, keys in SPEED_ONLY.items():
            values[section] = {k: v for k, v in values[section].items() if k not in keys}
        for section, keys in ADDED_LATER.items():
            default = SECTIONS[section]()
            values[section] = {k: v for k, v in values[section].items() if k not in keys or v != getattr(default, k)}
        return values

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.results_dict(), sort_keys=True).encode()).hexdigest()[:16]


SPEED_ONLY = {"campaign": ("energy", "energy_region"), "parallel": ("memo_mib",)}
"""Settings left out of the digest: they change what a run measures or how fast it goes, never its results."""
ADDED_LATER = {"campaign": ("goals",)}
"""Settings left out of the digest at their default (which is how runs made before them behaved), so
that those runs still resume."""


SECTIONS = {"campaign": CampaignSection, "sample": SampleSection, "cache": CacheSection, "gp": GPConfig,
            "parallel": ParallelSection}


def _toml_value(value: Any) -> str:
    """A TOML literal: JSON's form of numbers, strings, booleans and lists is TOML's; tables go inline."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def part_name(config: Config, space: str, dataset: str, kind: str | None = None) -> str:
    """What logs and reports call a sample: its dataset, prefixed by its space in a cross-space
    campaign and followed by its kind when the campaign searches several kinds (``kind`` None: held-out)."""
    c, s = config.campaign, config.sample
    return "/".join([*([space] if len(c.spaces) > 1 else []), dataset,
                     *([kind] if kind is not None and len(s.search_kinds) > 1 else [])])


def search_part_names(config: Config) -> list[str]:
    """The names of a campaign's search samples, in the order of its search targets."""
    return [part_name(config, space, dataset, kind) for space in config.campaign.spaces
            for dataset in config.campaign.datasets for kind in config.sample.search_kinds]


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
        if "one_or_more" in known[key].metadata:
            value = _one_or_more(value, *known[key].metadata["one_or_more"], f"{where}: {name}.{key}")
        elif isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ZcpError(f"{where}: {name}.{key} must be a list of strings, got {value!r}")
            value = tuple(value)
        elif isinstance(default, dict):
            if not isinstance(value, dict) or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                                      for v in value.values()):
                raise ZcpError(f"{where}: {name}.{key} must be a table of numbers, got {value!r}")
            value = {k: float(v) for k, v in value.items()}
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


def _one_or_more(value: Any, is_item: Callable[[Any], bool], what: str, where: str) -> Any:
    """An item, or a non-empty list of items (a one-item list becomes the item itself, so configs compare
    equal); ``what`` names the accepted forms in the error."""
    if is_item(value):
        return value
    if not isinstance(value, list) or not value or not all(is_item(v) for v in value):
        raise ZcpError(f"{where} must be {what}, got {value!r}")
    return value[0] if len(value) == 1 else tuple(value)


def _check_splits(config: Config, where: str) -> None:
    """Every random sample the config asks for fits in its split of every space (binned kinds take what
    their bins hold and say so in the sample's notes)."""
    s = config.sample
    for space in config.campaign.spaces:
        size = get_space(space).size
        for split, kind, n in s.draws():
            pool = len(split_indices(size, split, s.split_seed, s.heldout_fraction))
            if kind == "random" and n > pool:
                raise ZcpError(f"{where}: sample.{split}_n = {n}: a random sample cannot hold more than the "
                               f"{pool} networks of the {space} {split} split")


def _check_goals(config: Config, where: str) -> None:
    """Goals, when given, name every search sample of the campaign and nothing else."""
    goals, names = config.campaign.goals, search_part_names(config)
    if not goals or set(goals) == set(names):
        return
    extra, missing = sorted(set(goals) - set(names)), sorted(set(names) - set(goals))
    problem = f"names {extra[0]!r}, which is not a search sample of this campaign" if extra else f"lacks {missing[0]!r}"
    raise ZcpError(f"{where}: campaign.goals {problem} (its search samples: {', '.join(names)})")


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
    spaces = [get_space(space) for space in config.campaign.spaces]
    _check_splits(config, where)
    for space in spaces:
        for dataset in config.campaign.datasets:
            check_space_dataset(space, dataset)
    if not config.campaign.datasets:
        raise ZcpError(f"{where}: campaign.datasets is empty")
    _check_goals(config, where)
    terminals = config_terminals(config.cache.terminals, where)
    problem = labels_problem(terminals, config.cache.signal)
    if problem:
        raise ZcpError(f"{where}: cache.terminals: {problem}")
    types = terminal_types(terminals)
    try:
        check_region(config.campaign.energy_region)
    except ZcpError as exc:
        raise ZcpError(f"{where}: campaign.energy_region: {exc}") from None
    for text in config.gp.initial_expressions:
        try:
            parse(text, REGISTRY, types)
        except ZcpError as exc:
            raise ZcpError(f"{where}: gp.initial_expressions: {exc}") from None
    return config


def config_terminals(names: Sequence[str], where: str = "config") -> tuple[str, ...]:
    """The terminals ``[cache] terminals`` names (groups expanded, sorted; empty = ``@base``)."""
    try:
        return resolve_terminals(names or DEFAULT)
    except ValueError as exc:
        raise ZcpError(f"{where}: cache.terminals: {exc}") from None


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
