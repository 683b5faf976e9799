"""Benchmark scaling on a Ray cluster: cache-build and fitness throughput with 1, 2 and 4 worker nodes.

    .venv/bin/python -m experiments.bench.cluster_bench [--nodes 1 2 4] [--networks 16] [--candidates 200]
    .venv/bin/python -m experiments.bench.cluster_bench --address HEAD:6379 --workers 1 8 32   # a real cluster

Without ``--address`` it starts, for each count N, a local cluster of separate ``ray start``
processes bound to 127.0.0.1: a head offering no CPUs (the driver's node) plus N worker nodes of
one CPU each, so N is the number of workers. Each cluster builds the same cache (random TSS networks,
Gaussian images) and scores the same random expressions (depth <= 6) with N fitness actors; it
prints networks/s and candidates/s and their ratios to one worker, and checks that every cluster's
cache and fitness equal the one-worker run. On a machine with fewer cores than nodes the ratios
measure contention, not the code: the cores are the limit.
"""
from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from evaluation.cache import build_cache, load_cache
from evaluation.cluster import LocalCluster
from evaluation.evaluators import Evaluator, Payload
from evaluation.samples import make_sample
from evaluation.spaces import get_space
from primitives.expression import random_expression
from primitives.functions import REGISTRY
from primitives.terminals import terminal_types

TERMS = ("params", "code_kernel", "chan_corr_eig", "act_sv", "snip", "wgrad_norm")


def measure(address: str, workers: int, args: argparse.Namespace, out: Path) -> tuple[float, float, dict, list]:
    """Cache-build networks/s and fitness candidates/s on the cluster at ``address`` with ``workers``."""
    import ray

    sample = make_sample(get_space("tss"), "random", args.networks, args.seed)
    start = time.perf_counter()
    build_cache(sample, "cifar10", out, batch_size=args.batch_size, seed=args.seed, terminals=TERMS,
                image_source="gaussian", backend="ray", workers=workers, address=address, device="cpu",
                progress=False)
    build_rate = args.networks / (time.perf_counter() - start)
    cache = load_cache(out)
    accuracy = np.random.default_rng(args.seed).random(len(cache.indices))  # fitness cost does not depend on it
    payload = Payload(("cifar10",), (cache.arrays,), (accuracy,), TERMS, "kendall", "min")
    rng = random.Random(args.seed)
    texts = [random_expression(REGISTRY, terminal_types(TERMS), rng, max_depth=6) for _ in range(args.candidates)]
    evaluator = Evaluator(payload, "ray", workers, address)
    try:
        evaluator(texts[:2 * workers])  # actors start and fetch the payload
        start = time.perf_counter()
        fitness = evaluator(texts)
        fitness_rate = len(texts) / (time.perf_counter() - start)
    finally:
        evaluator.close()
        ray.shutdown()
    return build_rate, fitness_rate, cache.arrays, fitness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4], help="local worker nodes per cluster")
    parser.add_argument("--address", default=None, help="a running cluster instead (then --workers counts)")
    parser.add_argument("--workers", type=int, nargs="+", default=None, help="workers per run on --address")
    parser.add_argument("--networks", type=int, default=16)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--object-store-mb", type=int, default=100)
    args = parser.parse_args()

    counts = args.workers or ([1, 2, 4] if args.address else args.nodes)
    root = Path(tempfile.mkdtemp(prefix="zcp-cluster-bench-"))
    rows = []
    try:
        for n in counts:
            if args.address:
                result = measure(args.address, n, args, root / f"cache{n}")
            else:
                with LocalCluster(object_store_mb=args.object_store_mb) as cluster:
                    cluster.start_head(num_cpus=0)
                    for _ in range(n):
                        cluster.add_node(num_cpus=1)
                    result = measure(cluster.address, n, args, root / f"cache{n}")
            rows.append((n, *result))
            print(f"{n} worker(s): cache build {result[0]:.2f} networks/s, fitness {result[1]:.1f} candidates/s",
                  flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    one = rows[0]
    for n, build, fit, arrays, fitness in rows:
        same = all(np.array_equal(arrays[k], one[3][k]) for k in one[3]) and fitness == one[4]
        print(f"{n} vs {one[0]} worker(s): cache build {build / one[1]:.2f}x, fitness {fit / one[2]:.2f}x; "
              f"identical cache and fitness: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
