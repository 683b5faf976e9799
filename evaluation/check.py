"""Check that the network builders reproduce the benchmark: parameter counts against ground truth.

Networks are built on torch's ``meta`` device (structure and shapes, no memory, no initialisation),
so all 15,625 x 3 TSS networks can be checked in minutes.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from evaluation.spaces import get_space


@dataclass(frozen=True)
class Mismatch:
    index: int
    arch: str
    built_params: int
    expected_params_m: float

    def __str__(self) -> str:
        return (f"index {self.index} {self.arch}: built {self.built_params} parameters "
                f"({self.built_params / 1e6:.6f} M), benchmark says {self.expected_params_m:.6f} M")


def count_params(space_name: str, index: int, dataset: str) -> int:
    """Parameters of the official network, built on the meta device."""
    with torch.device("meta"):
        model = get_space(space_name).build(index, dataset)
    return sum(p.numel() for p in model.parameters())


def _count_chunk(args: tuple[str, str, list[int]]) -> list[int]:
    space_name, dataset, indices = args
    torch.set_num_threads(1)
    return [count_params(space_name, i, dataset) for i in indices]


def iter_param_counts(space_name: str, dataset: str, indices: Sequence[int], workers: int = 0,
                      chunk: int = 50) -> Iterator[tuple[int, int]]:
    """Yield (index, parameter count) for ``indices``, in order, over ``workers`` processes (0 = all cores)."""
    workers = workers or os.cpu_count() or 1
    chunks = [list(indices[i:i + chunk]) for i in range(0, len(indices), chunk)]
    jobs = [(space_name, dataset, c) for c in chunks]
    if workers == 1:
        results = map(_count_chunk, jobs)
        for c, counts in zip(chunks, results):
            yield from zip(c, counts)
        return
    with ProcessPoolExecutor(workers) as pool:
        for c, counts in zip(chunks, pool.map(_count_chunk, jobs)):
            yield from zip(c, counts)


def matches(built_params: int, expected_params_m: float) -> bool:
    """The benchmark reports parameters in millions rounded to 6 decimals, i.e. to one parameter."""
    return round(built_params / 1e6, 6) == round(float(expected_params_m), 6)


def check_params(space_name: str, dataset: str, expected_params_m: np.ndarray, indices: Sequence[int],
                 workers: int = 0) -> Iterator[tuple[int, Mismatch | None]]:
    """Yield (index, mismatch or None) for each index; ``expected_params_m`` is indexed by official index."""
    space = get_space(space_name)
    for index, built in iter_param_counts(space_name, dataset, indices, workers):
        expected = float(expected_params_m[index])
        yield index, None if matches(built, expected) else Mismatch(index, space.arch_str(index), built, expected)
