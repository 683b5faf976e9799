"""Benchmark: build + one forward pass of random TSS networks, and memory over many builds.

    .venv/bin/python -m experiments.bench.build_forward [--networks 100] [--builds 1000] [--batch 64]

Prints, side by side in one run: median build and forward seconds per network (real CIFAR-10
batch), and RSS after each tenth of ``--builds`` network builds with the fitted slope (KiB/build).
"""
from __future__ import annotations

import argparse
import gc
import resource
import statistics
import time

import numpy as np
import torch

from evaluation.images import load_batch
from evaluation.spaces import get_space


def rss_mib() -> float:
    """Current resident set size in MiB (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="tss")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--networks", type=int, default=100)
    parser.add_argument("--builds", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    space = get_space(args.space)
    rng = np.random.default_rng(args.seed)
    x = load_batch(args.dataset, args.batch, args.seed).images
    build_s, forward_s = [], []
    for index in rng.choice(space.size, args.networks, replace=False):
        t0 = time.perf_counter()
        model = space.build(int(index), args.dataset)
        t1 = time.perf_counter()
        with torch.no_grad():
            model(x)
        t2 = time.perf_counter()
        build_s.append(t1 - t0)
        forward_s.append(t2 - t1)
    print(f"{args.networks} random {args.space} networks, batch {args.batch}, {torch.get_num_threads()} threads:")
    print(f"  build   median {statistics.median(build_s) * 1e3:7.1f} ms  total {sum(build_s):6.1f} s")
    print(f"  forward median {statistics.median(forward_s) * 1e3:7.1f} ms  total {sum(forward_s):6.1f} s")

    marks, rss = [], []
    step = max(1, args.builds // 10)
    for n, index in enumerate(rng.integers(0, space.size, args.builds), start=1):
        model = space.build(int(index), args.dataset)
        del model
        if n % step == 0:
            gc.collect()
            marks.append(n)
            rss.append(rss_mib())
    slope = np.polyfit(marks, rss, 1)[0] * 1024
    print(f"RSS over {args.builds} builds (MiB at every {step}): " + " ".join(f"{r:.0f}" for r in rss))
    print(f"  slope {slope:+.2f} KiB/build (first->last {rss[-1] - rss[0]:+.1f} MiB)")


if __name__ == "__main__":
    main()
