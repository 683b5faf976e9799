"""Shared singular values (primitives/ops.py ``_singular``) against one SVD per call, side by side.

    .venv/bin/python -m experiments.bench.svd_bench runs/caches/cifar10-heldout-sss-stratified-9f22f24f851e

Scores every single-terminal expression (gp/single.py) of the cache's terminals as the held-out report
does (one ``Fitness.values`` call per terminal, shared subtrees), once with ``m_svd``/``m_nuc``/``m_spec``/
``m_cond`` sharing one SVD per matrix and once computing it in each call, alternating ``--reps`` times on
one thread; prints CPU seconds, the ratio and whether the values are identical.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import primitives.ops as ops
from evaluation.cache import load_cache
from evaluation.fitness import Fitness, Target
from gp.single import single_terminal_expressions
from primitives.functions import REGISTRY
from primitives.terminals import terminal_types


def _per_call(m: ops.Matrix) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a, s, bad = ops._scaled(m)
    return torch.linalg.svdvals(a), s, bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache", help="a cache folder")
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    cache = load_cache(args.cache)
    names = tuple(cache.manifest["terminals"])
    singles = single_terminal_expressions(REGISTRY, terminal_types(names))
    fitness = Fitness([Target("index", cache.env(), cache.indices.astype(float))], names)
    torch.set_num_threads(1)
    shared = ops._singular
    seconds: dict[str, list[float]] = {"shared": [], "per call": []}
    values = {}
    try:
        for _ in range(args.reps):
            for label, fn in (("per call", _per_call), ("shared", shared)):
                ops._singular = fn
                start = time.process_time()
                values[label] = [v for texts in singles.values() for v in fitness.values(texts, share_subtrees=True)]
                seconds[label].append(time.process_time() - start)
    finally:
        ops._singular = shared
    a, b = (statistics.median(seconds[k]) for k in ("per call", "shared"))
    same = np.array_equal(np.array(values["shared"]), np.array(values["per call"]), equal_nan=True)
    print(f"{sum(map(len, singles.values()))} expressions on {len(cache.indices)} networks, one thread: one SVD per "
          f"call {a:.2f} CPU s, shared {b:.2f} CPU s ({a / b:.2f}x); identical values: {same}")


if __name__ == "__main__":
    main()
