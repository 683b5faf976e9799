"""Benchmark fitness throughput: candidates per second, serial and with 1 and 2 Ray actors.

    .venv/bin/python -m experiments.bench.fitness_bench --cache runs/bench_cache_1000 [--candidates 400]

The same random expressions (depth <= 6) are scored by each evaluator in one run; prints the rates,
the 2-vs-1 actor scaling ratio, and this process's peak RSS.
"""
from __future__ import annotations

import argparse
import random
import resource
import time

import numpy as np

from evaluation.cache import load_cache
from evaluation.evaluators import Evaluator, Payload
from evaluation.groundtruth import load_ground_truth
from primitives.expression import random_expression
from primitives.functions import REGISTRY
from primitives.terminals import terminal_types


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True)
    parser.add_argument("--candidates", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    cache = load_cache(args.cache)
    m = cache.manifest
    truth = load_ground_truth(m["space"]).accuracy[m["dataset"]][cache.indices]
    terminals = tuple(m["terminals"])
    payload = Payload((m["dataset"],), (cache.arrays,), (truth,), terminals, "kendall", "min")
    rng = random.Random(args.seed)
    texts = [random_expression(REGISTRY, terminal_types(terminals), rng, max_depth=6) for _ in range(args.candidates)]

    results = {}
    for label, backend, workers in (("serial", "serial", 1), ("ray x1", "ray", 1), ("ray x2", "ray", 2)):
        evaluator = Evaluator(payload, backend, workers)
        evaluator(texts[:4])  # warm-up (actor start, first-call costs)
        start = time.perf_counter()
        fitness = evaluator(texts)
        seconds = time.perf_counter() - start
        evaluator.close()
        results[label] = (len(texts) / seconds, fitness)
        print(f"{label:7s}: {len(texts)} candidates over {len(cache.indices)} networks in {seconds:.1f} s "
              f"= {len(texts) / seconds:.1f} candidates/s")
        if backend == "ray":  # the next evaluator starts Ray with its own number of CPUs
            import ray

            ray.shutdown()
    assert np.allclose(results["serial"][1], results["ray x2"][1]), "serial and Ray fitness differ"
    print(f"scaling 2 vs 1 actor: {results['ray x2'][0] / results['ray x1'][0]:.2f}x; identical fitness serial/Ray: yes")
    print(f"peak RSS of the driver: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
