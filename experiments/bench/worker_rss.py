"""Benchmark: resident memory of one worker process that computes many networks' terminals in a row,
without and with :func:`evaluation.parallel.release_memory` after each network (what every task does).

    .venv/bin/python -m experiments.bench.worker_rss --space nb101 --sample S.json --n 15 --batch-size 32

Each mode runs in a fresh spawned process, one after the other, over the same first ``--n`` networks of
the sample: build the network, compute its ``@base`` terminals (one thread, as a task does), then
(second mode only) release. Prints, per network, the seconds and the RSS after it in both modes, then
the largest RSS between networks, the peak RSS and the median seconds, with their ratios.
"""
from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import time

import torch

from evaluation.errors import ZcpError
from evaluation.images import load_batch
from evaluation.parallel import release_memory
from evaluation.samples import read_sample
from evaluation.spaces import get_space
from experiments.bench.build_forward import rss_mib
from primitives.terminals import compute_terminals


def run_mode(space: str, dataset: str, indices: list[int], batch_size: int,
             release: bool) -> list[tuple[float, float, float, float]]:
    """(seconds, RSS MiB after, peak RSS MiB so far, seconds of the release) per network, in this process."""
    torch.set_num_threads(1)
    batch = load_batch(dataset, batch_size, 0)
    rows = []
    for index in indices:
        start = time.perf_counter()
        torch.manual_seed(0)
        compute_terminals(get_space(space).build(index, dataset), batch.images, labels=batch.labels)
        built = time.perf_counter()
        if release:
            release_memory()
        end = time.perf_counter()
        rows.append((end - start, rss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, end - built))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", required=True)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--sample", required=True, help="sample file (zcp bench sample)")
    parser.add_argument("--n", type=int, default=15, help="networks, from the start of the sample")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    try:
        indices = list(read_sample(args.sample, args.space).indices[:args.n])
    except ZcpError as exc:
        raise SystemExit(f"worker_rss: error: {exc}") from None
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        kept, released = (pool.apply(run_mode, (args.space, args.dataset, indices, args.batch_size, flag))
                          for flag in (False, True))
    print(f"{args.space} {args.dataset}, batch {args.batch_size}, {len(indices)} networks in one process each mode")
    print("network | s without | RSS MiB after, without | s with | RSS MiB after, with release_memory")
    for index, a, b in zip(indices, kept, released):
        print(f"{index} | {a[0]:.1f} | {a[1]:.0f} | {b[0]:.1f} | {b[1]:.0f}")
    for name, k in (("largest RSS between networks (MiB)", 1), ("peak RSS (MiB)", 2)):
        x, y = max(r[k] for r in kept), max(r[k] for r in released)
        print(f"{name}: without {x:.0f}, with {y:.0f}, ratio {x / y:.2f}")
    x, y = (statistics.median(r[0] for r in rows) for rows in (kept, released))
    print(f"median seconds per network: without {x:.2f}, with {y:.2f}, ratio {y / x:.2f}; "
          f"release_memory itself: median {statistics.median(r[3] for r in released) * 1e3:.0f} ms, "
          f"max {max(r[3] for r in released) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
