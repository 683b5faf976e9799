"""Benchmark: NB101 networks with the project's CPU max pool (``MaxPool3x3``) against the same networks with
``nn.MaxPool2d`` (PyTorch's NCHW kernel), side by side in one run.

    .venv/bin/python -m experiments.bench.nb101_pool [--networks 8] [--batch 64] [--reps 2] [--threads 1] [--seed 0]

On random NB101 cells that hold a max pool: seconds of a forward without gradients and of a forward +
backward (real CIFAR-10 batch, the model in training mode as the proxies run it), each network timed
with both pools alternately (the best of ``--reps``), summed over the networks; the ratio; and whether
outputs and gradients are bitwise equal.
"""
from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
import torch.nn as nn

from evaluation.images import load_batch
from evaluation.spaces.nb101 import NB101
from evaluation.spaces.nb101.network import MaxPool3x3


def official_pools(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose cell max pools are plain ``nn.MaxPool2d`` (same weights)."""
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, MaxPool3x3):
                setattr(module, name, nn.MaxPool2d(3, stride=1, padding=1))
    return model


def run(model: nn.Module, x: torch.Tensor, backward: bool) -> tuple[float, list[torch.Tensor]]:
    """Seconds of one pass and its results (logits, then every parameter's gradient)."""
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    with torch.set_grad_enabled(backward):
        out = model(x)
        if backward:
            out.sum().backward()
    seconds = time.perf_counter() - start
    return seconds, [out.detach(), *(p.grad for p in model.parameters() if backward)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (workers run with 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in ("networks", "batch", "reps", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)

    x = load_batch("cifar10", args.batch, args.seed).images
    rng = np.random.default_rng(args.seed)
    seconds = {(k, b): 0.0 for k in ("ours", "nchw") for b in (False, True)}
    equal = True
    picked = 0
    while picked < args.networks:
        index = int(rng.integers(NB101.size))
        if "maxpool3x3" not in NB101.cell(index)[1]:
            continue
        picked += 1
        torch.manual_seed(args.seed)
        models = {"ours": NB101.build(index)}
        models["nchw"] = official_pools(models["ours"])
        for backward in (False, True):
            best, results = {}, {}
            for _ in range(args.reps):
                for kind, model in models.items():
                    t, results[kind] = run(model, x, backward)
                    best[kind] = min(t, best.get(kind, t))
            for kind, t in best.items():
                seconds[kind, backward] += t
            equal &= all(a.equal(b) for a, b in zip(results["ours"], results["nchw"]))
    print(f"{args.networks} random NB101 cells with a max pool, batch {args.batch}, "
          f"{torch.get_num_threads()} threads, best of {args.reps} alternating reps, summed:")
    for backward, name in ((False, "forward (no grad)"), (True, "forward + backward")):
        ours, nchw = seconds["ours", backward], seconds["nchw", backward]
        print(f"  {name:19s} MaxPool3x3 {ours:7.2f} s  nn.MaxPool2d {nchw:7.2f} s  speed-up {nchw / ours:.2f}x")
    print(f"  outputs and gradients bitwise equal: {equal}")


if __name__ == "__main__":
    main()
