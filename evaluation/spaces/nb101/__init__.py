"""NAS-Bench-101: 423,624 unique cells (CIFAR-10 only), identified by their module hash.

NB101 has no official index: an architecture's identity is its module hash (``arch_str``), and
its index here is only the hash's rank among all 423,624 (the ground-truth table's order), so
sample files list ``[rank, hash]`` pairs whose hash is what counts. The cell of a hash comes from
the ground-truth table (``nb101_table``: flag, ``$ZCP_NB101_TABLE``, config file, or
``<data_dir>/nb101_ground_truth.csv.gz``), loaded once per process on first use.
"""
from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import numpy as np
import torch.nn as nn

from evaluation.errors import ZcpError
from evaluation.paths import resolve_paths
from evaluation.spaces.base import check_index, check_space_dataset
from evaluation.spaces.nb101.network import NB101Network
from evaluation.spaces.nb101.spec import cell_hash
from evaluation.spaces.nb101.table import NB101Table, is_hash, read_nb101_table

SIZE = 423_624


class NASBench101:
    """The NB101 space: hash <-> rank, the cell of a hash, and the official networks."""

    name = "nb101"
    size = SIZE
    datasets = ("cifar10",)

    @cached_property
    def table(self) -> NB101Table:
        """The ground-truth table this process uses (loaded from the configured path on first use)."""
        return read_nb101_table(resolve_paths().nb101_table, SIZE)

    def load(self, path: str | os.PathLike) -> NB101Table:
        """Use the table at ``path`` from now on (read unless it is the one loaded); worker processes
        started later (Ray, process pools) read the same file."""
        loaded = self.__dict__.get("table")
        if loaded is None or loaded.path.resolve() != Path(path).resolve():
            self.__dict__["table"] = read_nb101_table(path, SIZE)
        os.environ["ZCP_NB101_TABLE"] = str(Path(path).resolve())
        return self.table

    def arch_str(self, index: int) -> str:
        """The module hash of the cell of rank ``index``."""
        return self.table.hashes[check_index(self, index)].decode()

    def index_of(self, arch: str) -> int:
        """Rank of a module hash; ZcpError if it is malformed or names no NB101 cell."""
        if not is_hash(arch):
            raise ZcpError(f"malformed NB101 hash {arch!r}: expected 32 lowercase hex digits")
        hashes = self.table.hashes
        rank = int(np.searchsorted(hashes, arch.encode()))
        if rank == len(hashes) or hashes[rank].decode() != arch:
            raise ZcpError(f"unknown NB101 hash {arch!r}: no cell of the space has it")
        return rank

    def index_of_cell(self, adjacency: object, ops: object) -> int:
        """Rank of any valid cell (validated, pruned and hashed as the nasbench API does)."""
        return self.index_of(cell_hash(adjacency, ops))

    def cell(self, arch: int | str) -> tuple[np.ndarray, tuple[str, ...]]:
        """(pruned adjacency matrix, ops) of a rank or hash."""
        index = self.index_of(arch) if isinstance(arch, str) else check_index(self, arch)
        t = self.table
        return t.matrices[t.matrix_id[index]], t.op_lists[t.ops_id[index]]

    def build(self, arch: int | str, dataset: str = "cifar10") -> nn.Module:
        """The official network of a rank or hash (CIFAR-10: 10 classes)."""
        check_space_dataset(self, dataset)
        return NB101Network(*self.cell(arch), num_classes=10)


NB101 = NASBench101()
