"""The NAS-Bench-101 ground-truth table: a gzip CSV with one row per unique cell, in hash order.

Columns ``index, hash, adjacency, ops, params, cifar10_test_acc`` (format of the shared
``nb101_ground_truth.csv.gz``): ``index`` is the rank of ``hash`` (rows sorted by hash),
``adjacency`` and ``ops`` are JSON (the pruned cell), ``params`` the official trainable parameter
count, ``cifar10_test_acc`` the 108-epoch test accuracy in % (mean of 3 seeds; empty = no value).
Every row is validated when read; the 423,624 cells share about 2,500 distinct matrices and 365 op
lists, which are validated once each and interned so a loaded table takes little memory (it is loaded once per process).
"""
from __future__ import annotations

import csv
import gzip
import json
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.errors import ZcpError
from evaluation.spaces.nb101.spec import prune, validate_matrix, validate_ops

COLUMNS = ("index", "hash", "adjacency", "ops", "params", "cifar10_test_acc")
HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class NB101Table:
    """Rows of the table as arrays (row i = hash rank i); cells interned in ``matrices`` / ``op_lists``."""

    path: Path
    hashes: np.ndarray  # 'S32', sorted
    matrix_id: np.ndarray  # int32 into matrices
    ops_id: np.ndarray  # int32 into op_lists
    matrices: tuple[np.ndarray, ...]
    op_lists: tuple[tuple[str, ...], ...]
    params: np.ndarray  # int64
    accuracy: np.ndarray  # float64, NaN where empty


def is_hash(text: object) -> bool:
    """True for a well-formed module hash (32 lowercase hex digits)."""
    return isinstance(text, str) and len(text) == 32 and set(text) <= HEX


class _Interner:
    """Numbers each distinct text, parsed and checked once (by ``check``, which gets the parsed JSON)."""

    def __init__(self, check, path: Path) -> None:
        self.check, self.path, self.ids, self.values = check, path, {}, []

    def __call__(self, text: str, rank: int) -> int:
        if text not in self.ids:
            where = f"{self.path}: line {rank + 2}"
            try:
                value = self.check(json.loads(text))
            except json.JSONDecodeError as exc:
                raise ZcpError(f"{where}: {text[:40]!r} is not valid JSON ({exc.msg})") from None
            except ZcpError as exc:
                raise ZcpError(f"{where}: {exc}") from None
            self.ids[text] = len(self.values)
            self.values.append(value)
        return self.ids[text]


def _pruned_matrix(adjacency: object) -> np.ndarray:
    matrix = validate_matrix(adjacency)
    if prune(matrix, ("",) * len(matrix))[0].shape != matrix.shape:
        raise ZcpError("the cell is not pruned (a vertex lies on no input-output path)")
    return matrix


def _read_rows(path: Path) -> list[list[str]]:
    """CSV records of the gzip file; a damaged file is a ZcpError."""
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
            return list(csv.reader(f, strict=True))
    except FileNotFoundError:
        raise ZcpError(f"nb101 ground-truth table not found: {path} (set it with --nb101-table, "
                       f"$ZCP_NB101_TABLE or nb101_table in [paths] of the config file)") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ZcpError(f"nb101 ground-truth table {path} is truncated or not a valid gzip file ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ZcpError(f"nb101 ground-truth table {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise ZcpError(f"{path}: malformed CSV ({exc})") from None
    except OSError as exc:
        raise ZcpError(f"cannot read nb101 ground-truth table {path}: {exc.strerror or exc}") from None


def _accuracy(text: str) -> float:
    """A cifar10_test_acc cell: '' is no value (NaN), else a number in 0..100; ValueError otherwise."""
    value = float(text) if text else math.nan
    if text and not 0.0 <= value <= 100.0:
        raise ValueError(text)
    return value


def _check_row(row: list[str], rank: int, previous: str, where: str) -> None:
    """The per-row rules, with a message naming the first broken one (cells are checked by the interner)."""
    if len(row) != len(COLUMNS):
        raise ZcpError(f"{where}: {len(row)} fields, expected {len(COLUMNS)} (truncated or malformed row)")
    index, digest, _, _, count, acc = row
    if index != str(rank):
        raise ZcpError(f"{where}: index {index!r}, expected {rank} (rows must be in hash order, numbered from 0)")
    if not is_hash(digest):
        raise ZcpError(f"{where}: hash {digest!r} is not 32 lowercase hex digits")
    if digest <= previous:
        raise ZcpError(f"{where}: hash {digest} is not after the previous row's (rows must be sorted by hash, unique)")
    if not (count.isascii() and count.isdigit()) or int(count) == 0:
        raise ZcpError(f"{where}: params {count!r} is not a positive integer")
    try:
        _accuracy(acc)
    except ValueError:
        raise ZcpError(f"{where}: cifar10_test_acc {acc!r} is not a number in 0..100 (accuracy in %)") from None


def read_nb101_table(path: str | os.PathLike, expected_rows: int | None = None) -> NB101Table:
    """Load and validate the table (a few seconds for the full space); any problem is a ZcpError naming
    the file and line. Rows are checked column by column at C speed; only a table that fails that is
    walked row by row to name its first bad line."""
    path = Path(path)
    rows = _read_rows(path)
    if not rows:
        raise ZcpError(f"nb101 ground-truth table {path} is empty")
    header, rows = rows[0], rows[1:]
    if tuple(header) != COLUMNS:
        raise ZcpError(f"nb101 ground-truth table {path} has columns {','.join(header)}; expected {','.join(COLUMNS)}")
    n = len(rows)
    try:
        index, digests, adjacency, ops, counts, accs = zip(*rows) if rows else ((),) * len(COLUMNS)
        hashes = np.array(digests, dtype="S32")
        fine = (all(len(r) == len(COLUMNS) for r in rows) and list(index) == list(map(str, range(n)))
                and all(len(d) == 32 for d in digests) and set("".join(digests)) <= HEX
                and bool((hashes[1:] > hashes[:-1]).all()) and "".join(counts).isascii() and "".join(counts).isdigit()
                and all(counts))
        params = np.array(counts, dtype=np.int64)
        accuracy = np.array([_accuracy(a) for a in accs], dtype=np.float64)
        fine = fine and bool((params > 0).all())
    except (ValueError, UnicodeEncodeError, OverflowError):
        fine = False
    if not fine:
        previous = ""
        for rank, row in enumerate(rows):
            _check_row(row, rank, previous, f"{path}: line {rank + 2}")
            previous = row[1]
        raise ZcpError(f"nb101 ground-truth table {path} is malformed")  # unreachable if the checks agree
    matrices = _Interner(_pruned_matrix, path)
    op_lists = _Interner(lambda o: validate_ops(o, len(o) if isinstance(o, list) else -1), path)
    matrix_id = np.array([matrices(a, r) for r, a in enumerate(adjacency)], dtype=np.int32)
    ops_id = np.array([op_lists(o, r) for r, o in enumerate(ops)], dtype=np.int32)
    sizes = np.array([len(m) for m in matrices.values] + [0])
    lengths = np.array([len(o) for o in op_lists.values] + [0])
    wrong = np.flatnonzero(sizes[matrix_id] != lengths[ops_id])
    if wrong.size:
        r = int(wrong[0])
        raise ZcpError(f"{path}: line {r + 2}: {len(op_lists.values[ops_id[r]])} ops for a cell of "
                       f"{len(matrices.values[matrix_id[r]])} vertices (one op per vertex)")
    if expected_rows is not None and n != expected_rows:
        raise ZcpError(f"nb101 ground-truth table {path} has {n} cells, the space has {expected_rows}: "
                       f"truncated or incomplete file?")
    return NB101Table(path, hashes, matrix_id, ops_id, tuple(matrices.values), tuple(op_lists.values), params, accuracy)
