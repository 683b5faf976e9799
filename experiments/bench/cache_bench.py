"""Benchmark the terminal cache; every ratio is measured side by side in this one run.

    .venv/bin/python -m experiments.bench.cache_bench --cache runs/bench_cache_1000 [--networks 10]

1. cache build per network vs the same passes without hooks (real forward + backward, noise
   forward + backward, circle forward), and vs a single real forward + backward;
2. loading the cache (size on disk, seconds);
3. random expressions of depth <= 6 evaluated over every cached network (median seconds);
4. one expression from live networks (terminals recomputed, only the passes it needs) vs from the
   cache, per network.
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from evaluation.cache import load_cache
from evaluation.images import load_batch
from evaluation.spaces import get_space
from primitives.expression import evaluate, parse, random_expression, terminals_of
from primitives.functions import REGISTRY
from primitives.terminals import compute_terminals, terminal_types


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _bare_passes(model: torch.nn.Module, x: torch.Tensor, circle: torch.Tensor) -> None:
    labels = torch.zeros(len(x), dtype=torch.long)
    for batch in (x, torch.randn_like(x)):
        model.zero_grad()
        F.cross_entropy(model(batch), labels).backward()
    with torch.no_grad():
        model(circle)


def _one_pass(model: torch.nn.Module, x: torch.Tensor) -> None:
    model.zero_grad()
    F.cross_entropy(model(x), torch.zeros(len(x), dtype=torch.long)).backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True, help="a cache of ~1,000 TSS networks (zcp cache build)")
    parser.add_argument("--networks", type=int, default=10, help="networks for the build and live timings")
    parser.add_argument("--expressions", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as each cache-building task runs

    start = time.perf_counter()
    cache = load_cache(args.cache)
    env = cache.env()
    load_s = time.perf_counter() - start
    size = sum(f.stat().st_size for f in cache.path.rglob("*") if f.is_file())
    m = cache.manifest
    space, indices = get_space(m["space"]), cache.indices
    x = load_batch(m["dataset"], m["batch_size"], m["seed"], m["image_source"]).images
    circle = torch.randn(m["curve_points"], *x.shape[1:])

    rng = np.random.default_rng(args.seed)
    chosen = [int(i) for i in rng.choice(indices, args.networks, replace=False)]
    build, bare, single = [], [], []
    for index in chosen:
        torch.manual_seed(m["seed"])
        model = space.build(index, m["dataset"])
        _one_pass(model, x)  # warm-up
        build.append(_timed(lambda: compute_terminals(model, x, seed=m["seed"])))
        bare.append(_timed(lambda: _bare_passes(model, x, circle)))
        single.append(_timed(lambda: _one_pass(model, x)))
    print(f"1. cache build, {args.networks} {m['space']} networks, batch {m['batch_size']}, 1 thread (medians):")
    print(f"   terminals {statistics.median(build):.3f} s | same passes bare {statistics.median(bare):.3f} s | "
          f"one fwd+bwd {statistics.median(single):.3f} s")
    ratios = [b / p for b, p in zip(build, bare)]
    print(f"   ratio vs same passes: median {statistics.median(ratios):.2f} (max {max(ratios):.2f}, "
          f"all networks together {sum(build) / sum(bare):.2f}); "
          f"vs one fwd+bwd: median {statistics.median(b / s for b, s in zip(build, single)):.2f}")

    print(f"2. cache of {len(indices)} networks: {size / 2**20:.0f} MiB on disk, "
          f"loaded into language values in {load_s:.2f} s")

    names = terminal_types(cache.manifest["terminals"])
    pyrng = random.Random(args.seed)
    times = []
    for _ in range(args.expressions):
        text = random_expression(REGISTRY, names, pyrng, max_depth=6)
        node = parse(text, REGISTRY, names)
        times.append(_timed(lambda: evaluate(node, env, {})))
    print(f"3. {args.expressions} random expressions (depth <= 6) over {len(indices)} cached networks, "
          f"{torch.get_num_threads()} thread: median {statistics.median(times) * 1e3:.1f} ms, max {max(times):.3f} s")

    torch.set_num_threads(2)
    times = []
    for _ in range(args.expressions):
        node = parse(random_expression(REGISTRY, names, pyrng, max_depth=6), REGISTRY, names)
        times.append(_timed(lambda: evaluate(node, env, {})))
    print(f"   same with 2 threads: median {statistics.median(times) * 1e3:.1f} ms, max {max(times):.3f} s")
    torch.set_num_threads(1)

    text = "n_add(layer_sum(v_min(chan_corr_eig)), n_log(layer_sum(m_logdet(code_kernel))))"
    node = parse(text, REGISTRY, names)
    needed = terminals_of(node)
    live = []
    for index in chosen:
        torch.manual_seed(m["seed"])
        model = space.build(index, m["dataset"])
        live.append(_timed(lambda: compute_terminals(model, x, needed, seed=m["seed"])))
    cached = _timed(lambda: evaluate(node, env, {})) / len(indices)
    print(f"4. {text}: live {statistics.median(live):.3f} s/network (passes it needs only) vs cache "
          f"{cached * 1e3:.3f} ms/network: {statistics.median(live) / cached:.0f}x")


if __name__ == "__main__":
    main()
