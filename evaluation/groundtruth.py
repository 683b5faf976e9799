"""Benchmark ground truth (test accuracy and parameter count per architecture): one reader, two backends.

(NAS-Bench-101 has one backend, its gzip table, in the format its space defines:
``evaluation/spaces/nb101/table.py``; CIFAR-10 only.)

- **table**: a CSV in the format of ``nats_tss_ground_truth.csv`` (columns ``index``, ``arch``, then
  ``{dataset}_test_acc`` and ``{dataset}_params_M`` for each dataset), loaded and fully validated in
  well under a second;
- **archive**: an official NATS-Bench fast-mode archive folder (``NATS-tss-v1_0-3ffb9-simple``,
  ``NATS-sss-v1_0-50262-simple``) read through ``nats_bench`` -- minutes for a whole space, which is
  why :func:`export_table` converts an archive into a table once.

Both give the same numbers: the full training schedule (``hp='200'`` for TSS, ``hp='90'`` for SSS),
averaged over the benchmark's training seeds (``is_random=False``), i.e.
``api.get_more_info(i, dataset, hp=..., is_random=False)['test-accuracy']`` and
``api.get_cost_info(i, dataset, hp=...)['params']`` (millions of parameters).

'cifar10' is NATS-Bench's 'cifar10' entry: trained on the full 50k training set, tested on the 10k
test set. It is NOT NATS-Bench's 'cifar10-valid' entry (trained on a 25k half of the training set;
its 'test-accuracy' is also on the 10k test set, but of that weaker training), whose accuracies
differ and which is never read here. Several proxy papers (Abdelfattah et al., MeCo, Dextr)
correlate against 'cifar10-valid', so their CIFAR-10 numbers are only roughly comparable.

A table stores values with 6 decimals, like the reference table; an empty cell means the source has
no value (NaN in memory), anything else must be a finite number in range.
"""
from __future__ import annotations

import csv
import io
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from evaluation.atomic import atomic_write_text
from evaluation.datasets import DATASETS
from evaluation.errors import ZcpError
from evaluation.paths import ARCHIVE_NAMES, DataPaths, resolve_paths
from evaluation.spaces import SPACES, SearchSpace, get_space

SOURCES = ("auto", "table", "archive")
FULL_HP = {"tss": "200", "sss": "90"}  # the benchmark's full training schedule (epochs) per space
ACC_COLUMNS = tuple(f"{d}_test_acc" for d in DATASETS)
PARAMS_COLUMNS = tuple(f"{d}_params_M" for d in DATASETS)
TABLE_COLUMNS = ("index", "arch", *ACC_COLUMNS, *PARAMS_COLUMNS)
ARCHIVE_EXT = "pickle.pbz2"  # nats_bench's bz2-compressed pickles


@dataclass(frozen=True)
class GroundTruth:
    """Ground truth of one space: row i of every array is official index i; NaN where the source has no value.

    Arrays are read-only float64 of shape (space size,); ``params_m`` is in millions of parameters.
    Keys are the space's datasets (``spaces.space_datasets``: cifar10 only for nb101).
    """

    space: str
    arch: tuple[str, ...]
    accuracy: dict[str, np.ndarray]
    params_m: dict[str, np.ndarray]
    source: str


class Source(NamedTuple):
    """One place ground truth may come from, as ``zcp bench info`` reports it."""

    what: str
    path: Path
    found: bool
    detail: str

    def __str__(self) -> str:
        return f"{self.what:12s} {'found' if self.found else 'NOT FOUND':9s} {self.path}  ({self.detail})"


def _space(space: str | SearchSpace) -> SearchSpace:
    return get_space(space) if isinstance(space, str) else space


def _how_to_set(key: str) -> str:
    return f"set it with --{key.replace('_', '-')}, ${'ZCP_' + key.upper()} or {key} in [paths] of the config file"


def _frozen(values: np.ndarray) -> np.ndarray:
    values.flags.writeable = False
    return values


def _make(space: SearchSpace, acc: np.ndarray, params: np.ndarray, source: str) -> GroundTruth:
    return GroundTruth(
        space=space.name,
        arch=tuple(space.arch_str(i) for i in range(space.size)),
        accuracy={d: _frozen(acc[k]) for k, d in enumerate(DATASETS)},
        params_m={d: _frozen(params[k]) for k, d in enumerate(DATASETS)},
        source=source,
    )


# ----------------------------------------------------------------------------------------- table

def _number(text: str, where: str, column: str) -> float:
    """A table cell: '' is a missing value (NaN); anything else must be a finite number in range."""
    if text == "":
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise ZcpError(f"{where}: {column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ZcpError(f"{where}: {column} {text!r} is not a finite number")
    if column.endswith("_test_acc") and not 0.0 <= value <= 100.0:
        raise ZcpError(f"{where}: {column} {text} is outside 0..100 (accuracy in %)")
    if column.endswith("_params_M") and not value > 0.0:
        raise ZcpError(f"{where}: {column} {text} is not a positive parameter count (millions)")
    return value


def _csv_rows(text: str, path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each CSV record; malformed CSV is a ZcpError."""
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        for row in reader:
            yield reader.line_num, row
    except csv.Error as exc:
        raise ZcpError(f"{path}: line {reader.line_num}: malformed CSV ({exc})") from None


def _read_nb101(path: Path, space: SearchSpace) -> GroundTruth:
    """The NB101 table; the space then identifies cells by this table's hashes (in every later worker too)."""
    table = space.load(path)
    return GroundTruth(space.name, tuple(h.decode() for h in table.hashes), {"cifar10": _frozen(table.accuracy)},
                       {"cifar10": _frozen(table.params / 1e6)}, f"table {path}")


def read_table(path: str | os.PathLike, space: str | SearchSpace) -> GroundTruth:
    """Load and validate a ground-truth table; any problem is a ZcpError naming the file and line."""
    space, path = _space(space), Path(path)
    if space.name == "nb101":
        return _read_nb101(path, space)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ZcpError(f"{space.name} ground-truth table not found: {path} ({_how_to_set(space.name + '_table')})") from None
    except OSError as exc:
        raise ZcpError(f"cannot read ground-truth table {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ZcpError(f"cannot read ground-truth table {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        raise ZcpError(f"ground-truth table {path} is empty")
    if not text.endswith("\n"):
        raise ZcpError(f"ground-truth table {path} does not end with a newline: truncated file?")

    rows = _csv_rows(text, path)
    _, header = next(rows)
    missing = [c for c in TABLE_COLUMNS if c not in header]
    if missing:
        raise ZcpError(f"ground-truth table {path} lacks column(s) {', '.join(missing)}; "
                       f"expected {','.join(TABLE_COLUMNS)}")
    doubled = sorted({c for c in header if header.count(c) > 1})
    if doubled:
        raise ZcpError(f"ground-truth table {path} has duplicate column(s) {', '.join(doubled)}")
    col = {name: header.index(name) for name in TABLE_COLUMNS}
    numeric = [(k, name, col[name]) for k, name in enumerate(ACC_COLUMNS + PARAMS_COLUMNS)]

    values = np.full((len(numeric), space.size), np.nan)
    line_of = np.zeros(space.size, dtype=np.int64)  # 0 = index not seen yet
    for line, row in rows:
        if not row:
            continue
        where = f"{path}: line {line}"
        if len(row) != len(header):
            raise ZcpError(f"{where}: {len(row)} fields, expected {len(header)} (truncated or malformed row)")
        cell = row[col["index"]]
        if not (cell.isascii() and cell.isdigit()) or int(cell) >= space.size:
            raise ZcpError(f"{where}: index {cell!r} is not an architecture index of {space.name} (0..{space.size - 1})")
        index = int(cell)
        if line_of[index]:
            raise ZcpError(f"{where}: index {index} appears again (first on line {line_of[index]})")
        line_of[index] = line
        expected = space.arch_str(index)
        if row[col["arch"]] != expected:
            raise ZcpError(f"{where}: arch {row[col['arch']]!r} is not {space.name} architecture {index} ({expected!r})")
        for k, name, j in numeric:
            values[k, index] = _number(row[j], where, name)

    absent = np.flatnonzero(line_of == 0)
    if absent.size:
        shown = ", ".join(map(str, absent[:5])) + (", ..." if absent.size > 5 else "")
        raise ZcpError(f"ground-truth table {path} lacks {absent.size} of {space.size} {space.name} "
                       f"architectures (index {shown}): truncated or incomplete file?")
    n = len(DATASETS)
    return _make(space, values[:n], values[n:], f"table {path}")


def write_table(truth: GroundTruth, out: str | os.PathLike) -> Path:
    """Write ``truth`` as a table (6 decimals, empty cell = no value), atomically."""
    def cell(value: float) -> str:
        return "" if math.isnan(value) else f"{value:.6f}"

    columns = [truth.accuracy[d].tolist() for d in DATASETS] + [truth.params_m[d].tolist() for d in DATASETS]
    lines = [",".join(TABLE_COLUMNS)]
    for i, arch in enumerate(truth.arch):
        lines.append(",".join([str(i), arch, *(cell(c[i]) for c in columns)]))
    return atomic_write_text(out, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------- archive

def _arch_files(folder: Path) -> dict[int, Path]:
    """Per-architecture files of a fast-mode archive, by index (``000123.pickle.pbz2`` or ``123.pickle.pbz2``)."""
    found = {}
    for name in os.listdir(folder):
        stem, dot, ext = name.partition(".")
        if dot and ext == ARCHIVE_EXT and stem.isascii() and stem.isdigit():
            found[int(stem)] = folder / name
    return found


def _check_archive_folder(path: Path, space: SearchSpace) -> None:
    """ZcpError unless ``path`` looks like an unpacked fast-mode archive folder."""
    name = ARCHIVE_NAMES[space.name]
    setting = _how_to_set(f"{space.name}_archive")
    if not path.exists():
        raise ZcpError(f"NATS-Bench {space.name} archive not found: {path} (expected the unpacked folder {name}; {setting})")
    if not path.is_dir():
        raise ZcpError(f"NATS-Bench {space.name} archive {path} is a file, expected the unpacked fast-mode folder "
                       f"{name} (unpack a .tar first; {setting})")
    if not (path / f"meta.{ARCHIVE_EXT}").is_file():
        inner = path / name
        hint = f"did you mean {inner}? " if (inner / f"meta.{ARCHIVE_EXT}").is_file() else ""
        raise ZcpError(f"{path} is not a NATS-Bench archive folder: it holds no meta.{ARCHIVE_EXT} "
                       f"({hint}expected the unpacked folder {name}; {setting})")


def read_archive(path: str | os.PathLike, space: str | SearchSpace) -> GroundTruth:
    """Read an official fast-mode archive folder through ``nats_bench`` (slow: one file per architecture).

    Architectures without a file, or without a dataset, get NaN there."""
    import nats_bench  # only this backend needs it

    space, path = _space(space), Path(path)
    _check_archive_folder(path, space)
    try:
        api = nats_bench.create(str(path), space.name, fast_mode=True, verbose=False)
    except Exception as exc:  # nats_bench raises whatever bz2/pickle/its own checks raise
        raise ZcpError(f"cannot read NATS-Bench archive {path}: {type(exc).__name__}: {exc}") from None
    if len(api.meta_archs) != space.size:
        other = [s for s in SPACES if s != space.name and get_space(s).size == len(api.meta_archs)]
        looks = f" (the size of the {other[0]} space)" if other else ""
        raise ZcpError(f"{path} is not the NATS-Bench {space.name} archive: it lists {len(api.meta_archs)} "
                       f"architectures{looks}, the {space.name} space has {space.size} "
                       f"({_how_to_set(f'{space.name}_archive')})")
    for i, arch in enumerate(api.meta_archs):
        if arch != space.arch_str(i):
            raise ZcpError(f"{path} is not the NATS-Bench {space.name} archive: its architecture {i} is {arch!r}, "
                           f"expected {space.arch_str(i)!r}")
    files = _arch_files(path)
    if not files:
        raise ZcpError(f"NATS-Bench archive {path} holds meta.{ARCHIVE_EXT} but no architecture files: incomplete unpack?")

    hp = FULL_HP[space.name]
    acc = np.full((len(DATASETS), space.size), np.nan)
    params = np.full((len(DATASETS), space.size), np.nan)
    for i in tqdm(sorted(files), desc=f"{space.name} archive", disable=not sys.stderr.isatty()):
        try:
            info = api.query_meta_info_by_index(i, hp)
            present = info.get_dataset_names()
            for k, dataset in enumerate(DATASETS):
                if dataset in present:
                    acc[k, i] = api.get_more_info(i, dataset, hp=hp, is_random=False).get("test-accuracy", np.nan)
                    # what api.get_cost_info(i, dataset, hp) returns, without its second deep copy
                    params[k, i] = info.get_compute_costs(dataset)["params"]
        except Exception as exc:  # any failure inside nats_bench on this file means the file is unusable
            raise ZcpError(f"cannot read architecture {i} (hp={hp}) from {files[i]}: {type(exc).__name__}: {exc}") from None
        api.arch2infos_dict.pop(i, None)  # the API caches every file it reads: keep memory flat
    return _make(space, acc, params, f"archive {path}")


def export_table(archive: str | os.PathLike, space: str | SearchSpace, out: str | os.PathLike) -> Path:
    """Convert an official archive into a table that :func:`read_table` loads in under a second."""
    return write_table(read_archive(archive, space), out)


# --------------------------------------------------------------------------------------- choosing

def load_ground_truth(space: str | SearchSpace, paths: DataPaths | None = None, source: str = "auto") -> GroundTruth:
    """Ground truth of ``space`` from ``source``: 'table', 'archive', or 'auto' (the table if it exists, else the archive)."""
    space = _space(space)
    paths = paths or resolve_paths()
    table = paths.table(space.name)
    if source == "table" or (space.name not in ARCHIVE_NAMES and source == "auto"):
        return read_table(table, space)
    if space.name not in ARCHIVE_NAMES and source == "archive":
        raise ZcpError(f"the {space.name} space has no archive backend: its ground truth is the table {table}")
    archive = paths.archive(space.name)
    if source == "archive":
        return read_archive(archive, space)
    if source != "auto":
        raise ZcpError(f"unknown ground-truth source {source!r}; known: {', '.join(SOURCES)}")
    if table.is_file():
        return read_table(table, space)
    if archive.exists():
        return read_archive(archive, space)
    raise ZcpError(f"no {space.name} ground truth: looked for the table {table} and the archive {archive}, found neither "
                   f"(table: {_how_to_set(space.name + '_table')}; archive: {_how_to_set(space.name + '_archive')}; "
                   f"'zcp bench export-table' turns an archive into a table)")


def describe_sources(paths: DataPaths) -> list[Source]:
    """Every place ground truth is looked for, whether it is there, and what 'auto' would use (cheap checks only)."""
    sources = []
    for name in SPACES:
        table = paths.table(name)
        has_table = table.is_file()
        sources.append(Source(f"{name} table", table, has_table,
                              "used by --source auto" if has_table else _how_to_set(f"{name}_table")))
        if name not in ARCHIVE_NAMES:
            continue
        archive = paths.archive(name)
        if not archive.exists():
            sources.append(Source(f"{name} archive", archive, False, _how_to_set(f"{name}_archive")))
            continue
        try:
            _check_archive_folder(archive, get_space(name))
        except ZcpError as exc:
            sources.append(Source(f"{name} archive", archive, False, str(exc)))
            continue
        count = len(_arch_files(archive))
        use = "auto prefers the table" if has_table else "used by --source auto; slow, 'zcp bench export-table' makes a table"
        sources.append(Source(f"{name} archive", archive, True, f"{count} architecture files; {use}"))
    return sources
