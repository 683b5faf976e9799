"""Benchmark exported proxies: export time, and score time per TSS network against the cache path.

    .venv/bin/python -m experiments.bench.export_bench [--networks 10] [--batch-size 64] [--images auto]

A temporary run directory gets a hall of fame of a few proxies (forward-only, gradient, curvature,
SVD); ``export_run`` exports them (timed, sympy simplification included). Each exported file then
scores the same random TSS networks (initialised as the cache initialises them) on the same batch,
next to the campaign's path: ``compute_terminals`` of every terminal per network (what a cache build
does once per network) followed by the expression's evaluation. Prints the medians, their ratio and
the largest relative difference between the two scores (it must be below 1e-6).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from evaluation.images import load_batch
from evaluation.spaces import get_space
from experiments.config import Config
from gp.export import export_run, load_proxy
from primitives.expression import evaluate, parse
from primitives.functions import REGISTRY
from primitives.terminals import TERMINALS, collate, compute_terminals, terminal_types

PROXIES = {
    "NASWOT (forward)": "layer_sum(m_logdet(code_kernel))",
    "grad spectra (backward)": "layer_sum(v_sum(grad_sv))",
    "curvature + SNIP": "n_add(layer_mean(snip), n_log(curvature))",
    "activation SVD": "layer_max(v_std(m_svd(act_corr_sum)))",
}


def _run_dir(root: Path) -> Path:
    config = Config()
    run = root / "run"
    run.mkdir()
    (run / "config.toml").write_text(config.to_toml())
    (run / "checkpoint.json").write_text(json.dumps({"config_digest": config.digest()}))
    entries = [{"expression": e, "fitness": 0.0} for e in PROXIES.values()]
    (run / "hall_of_fame.json").write_text(json.dumps({"status": "finished", "entries": entries}))
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--images", default="auto", help="image source (auto, npz, pickle, gaussian)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    images = load_batch("cifar10", args.batch_size, args.seed, args.images).images
    space = get_space("tss")
    indices = random.Random(args.seed).sample(range(space.size), args.networks)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        records = export_run(_run_dir(Path(tmp)), Path(tmp) / "out", top=len(PROXIES))
        print(f"export of {len(records)} proxies (sympy included): {time.perf_counter() - start:.1f} s")
        scores = {name: load_proxy(Path(tmp) / "out" / r["files"]["py"]) for name, r in zip(PROXIES, records)}
        cache_s, packed = [], []
        export_s = {name: [] for name in PROXIES}
        exported = {name: [] for name in PROXIES}
        for index in indices:
            torch.manual_seed(args.seed)
            model = space.build(index, "cifar10")
            t = time.perf_counter()
            packed.append(compute_terminals(model, images, TERMINALS, seed=args.seed))
            cache_s.append(time.perf_counter() - t)
            for name, score in scores.items():
                t = time.perf_counter()
                exported[name].append(score(model, images))
                export_s[name].append(time.perf_counter() - t)
    env = collate({k: np.concatenate([p[k] for p in packed]) for k in packed[0]}, TERMINALS)
    print(f"{args.networks} random TSS networks, batch {args.batch_size}, {torch.get_num_threads()} torch threads")
    print(f"cache path (all {len(TERMINALS)} terminals, once per network): median {statistics.median(cache_s):.3f} s")
    for name, text in PROXIES.items():
        t = time.perf_counter()
        campaign = evaluate(parse(text, REGISTRY, terminal_types()), env).numpy()
        per_net = (time.perf_counter() - t) / args.networks
        diff = np.max(np.abs(np.array(exported[name]) - campaign) / np.maximum(np.abs(campaign), 1e-300))
        med = statistics.median(export_s[name])
        print(f"  {name:24s} exported score: median {med:.3f} s/network "
              f"({med / statistics.median(cache_s):.2f}x the cache build; cache evaluation {per_net * 1e3:.2f} ms/network); "
              f"max rel. difference {diff:.1e}")
        assert diff < 1e-6, f"{name}: exported and cache scores differ by {diff:.1e}"


if __name__ == "__main__":
    main()
