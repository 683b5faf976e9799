"""Benchmark: resident memory while building a cache and across many generations (is it flat?).

    .venv/bin/python -m experiments.bench.rss_bench [--networks 1000] [--generations 100] [--out runs/rss_bench]

Builds (or resumes) a cache of ``--networks`` random TSS networks in this process (serial backend,
so this process's RSS covers the work), sampling RSS against the number of finished shards, then
runs ``--generations`` of GP on that cache, writing a checkpoint after every generation as a
campaign does. Prints RSS marks and the fitted slopes (KiB per network, KiB per generation) over
the part after the first tenth (warm-up: imports, first allocations). Use small values for a quick run.
"""
from __future__ import annotations

import argparse
import gc
import threading
import time
from pathlib import Path

import numpy as np

from evaluation.cache import SHARDS, build_cache, load_cache
from evaluation.evaluators import Evaluator, Payload
from evaluation.groundtruth import load_ground_truth
from evaluation.samples import make_sample
from evaluation.spaces import get_space
from experiments.bench.build_forward import rss_mib
from experiments.checkpoint import write_checkpoint
from gp.engine import Evolution, GPConfig
from primitives.functions import REGISTRY
from primitives.terminals import terminal_types


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ``ys`` (MiB) over ``xs``, in KiB per unit, after the first tenth of ``xs``."""
    start = xs[0] + (xs[-1] - xs[0]) / 10
    keep = [(x, y) for x, y in zip(xs, ys) if x >= start]
    if len({x for x, _ in keep}) < 2:
        return float("nan")
    return float(np.polyfit(*zip(*keep), 1)[0]) * 1024


def _marks(xs: list[float], ys: list[float], k: int = 10) -> str:
    idx = np.linspace(0, len(xs) - 1, min(k, len(xs))).astype(int)
    return " ".join(f"{xs[i]:.0f}:{ys[i]:.0f}" for i in idx)


def build_phase(args: argparse.Namespace, out: Path) -> tuple[list[float], list[float], float]:
    """Build the cache while a thread samples (finished shards, RSS MiB) every ``--every`` seconds;
    returns the samples of the building part and the peak RSS of the whole build. Packing (all
    shards concatenated, then deleted) is left out of the samples: its memory is the packed cache's."""
    sample = make_sample(get_space("tss"), "random", args.networks, args.seed)
    shards, xs, ys, done = out / SHARDS, [], [], threading.Event()

    def watch() -> None:
        while not done.wait(args.every):
            n = sum(1 for _ in shards.glob("*.npz")) if shards.exists() else 0
            xs.append(float(n))
            ys.append(rss_mib())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    build_cache(sample, args.dataset, out, batch_size=args.batch_size, seed=args.seed, backend="serial",
                progress=False)
    done.set()
    watcher.join()
    building = xs.index(max(xs)) + 1 if xs else 0  # shards are deleted while packing
    return xs[:building], ys[:building], max(ys, default=float("nan"))


def evolve_phase(args: argparse.Namespace, cache_dir: Path, run_dir: Path) -> tuple[list[float], list[float]]:
    """``--generations`` of GP on the cache with a checkpoint per generation; RSS after each."""
    cache = load_cache(cache_dir)
    terminals = tuple(cache.manifest["terminals"])
    truth = load_ground_truth("tss").accuracy[args.dataset][cache.indices]
    evaluator = Evaluator(Payload((args.dataset,), (cache.arrays,), (truth,), terminals, "kendall", "min"))
    engine = Evolution(REGISTRY, terminal_types(terminals), GPConfig(population=args.population, seed=args.seed),
                       evaluator)
    engine.initialise()
    xs, ys = [], []
    for _ in range(args.generations):
        engine.step()
        write_checkpoint(run_dir / "checkpoint.json", {"engine": engine.state()})
        gc.collect()
        xs.append(float(engine.generation))
        ys.append(rss_mib())
    return xs, ys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=1000)
    parser.add_argument("--generations", type=int, default=100)
    parser.add_argument("--population", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=float, default=1.0, help="seconds between RSS samples during the build")
    parser.add_argument("--out", default="runs/rss_bench", help="folder for the cache and the checkpoint")
    args = parser.parse_args()

    out = Path(args.out)
    cache_dir = out / f"cache-{args.networks}-b{args.batch_size}-s{args.seed}"
    start = time.perf_counter()
    xs, ys, peak = build_phase(args, cache_dir)
    print(f"cache build, {args.networks} networks (batch {args.batch_size}, all terminals, serial), "
          f"{time.perf_counter() - start:.0f} s; RSS MiB at shards done:")
    print(f"  {_marks(xs, ys)}")
    print(f"  slope {slope(xs, ys):+.2f} KiB/network; peak {peak:.0f} MiB (packing included)")
    start = time.perf_counter()
    gx, gy = evolve_phase(args, cache_dir, out)
    print(f"evolution, {args.generations} generations x population {args.population} on that cache, "
          f"{time.perf_counter() - start:.0f} s; RSS MiB at generation:")
    print(f"  {_marks(gx, gy)}")
    print(f"  slope {slope(gx, gy):+.2f} KiB/generation (first->last {gy[-1] - gy[0]:+.1f} MiB)")


if __name__ == "__main__":
    main()
