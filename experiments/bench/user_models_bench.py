"""Benchmark: proxies on the models users have, seconds per score and peak memory per model family.

    .venv/bin/python -m experiments.bench.user_models_bench [--batch-size 64] [--repeats 1] [--threads 1]
        [--families nats,resnet18,vit] [--proxies exported,az_nas,zico] [--all-zoo]

Families: the NATS-Bench cell network as the official code returns it (``(features, logits)``, TSS
index 1), a torchvision-style ResNet-18 (in-place ReLUs, ``tests/models.py``) and a small ViT (dim 192,
depth 6, 3 heads, 4 x 4 patches, GELU MLPs), on one CIFAR-10 batch (32 x 32, real images when the shared
data is there, else Gaussian). Proxies: the README's best CIFAR-10 proxy exported with ``zcp export``
(its ``score``), AZ-NAS and ZiCo from the zoo (library calls: ``get_proxy(name)(model, images)``, ZiCo
with the batch's labels). Each (family, proxy) runs in a fresh child process, so its peak resident set
size (``ru_maxrss``) is that score's own; the RSS after building the model and loading the batch is
printed beside it. Seconds are the median of ``--repeats`` scores, with torch on ``--threads`` threads
(1 by default: on a shared machine more threads than free cores make timings meaningless).
``--all-zoo`` also scores every zoo proxy once per family and prints which ones cannot run, and why.
Last, the cost of seeing functional activations: median seconds of a train-mode forward of each family
with and without ``primitives.layers.ActivationUnits`` active (a no-op callback), side by side.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from evaluation.errors import ZcpError
from evaluation.images import load_batch
from evaluation.proxies import get_proxy, proxy_names
from evaluation.spaces import get_space
from experiments.bench.build_forward import rss_mib
from experiments.config import Config
from primitives.layers import ActivationUnits
from gp.export import export_run, load_proxy
from tests.models import ResNet18, ViT, official

EXPORTED = "n_mul(layer_wsum(v_min(noise_chan_corr_eig)), layer_sum(v_min(m_eig(grad_corr_sum))))"
FAMILIES = {
    "nats": lambda: official(get_space("tss").build(1, "cifar10")),
    "resnet18": lambda: ResNet18(),
    "vit": lambda: ViT(image=32, patch=4, dim=192, depth=6, heads=3),
}


def _export(root: Path) -> Path:
    """The README's CIFAR-10 proxy as an exported file (a run directory with it as the only entry)."""
    config, run = Config(), root / "run"
    run.mkdir()
    (run / "config.toml").write_text(config.to_toml())
    (run / "hall_of_fame.json").write_text(json.dumps({"status": "finished", "entries": [
        {"expression": EXPORTED, "fitness": 0.0}]}))
    return root / "out" / export_run(run, root / "out", top=1, timeout=10)[0]["files"]["py"]


def _child(family: str, proxy: str, batch_size: int, repeats: int, exported: str) -> dict:
    torch.manual_seed(0)
    model = FAMILIES[family]()
    batch = load_batch("cifar10", batch_size, 0)
    score = load_proxy(exported) if proxy == "exported" else get_proxy(proxy)
    labels = {"labels": batch.labels} if proxy == "zico" else {}
    ready = rss_mib()
    seconds, value = [], None
    for _ in range(repeats):
        begun = time.perf_counter()
        value = score(model, batch.images, **labels)
        seconds.append(time.perf_counter() - begun)
    return {"seconds": statistics.median(seconds), "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "ready_mib": ready, "score": value, "images": batch.source}


def _zoo(family: str, batch_size: int) -> dict[str, str]:
    """Every zoo proxy once: 'ok' or the one-line reason it cannot run on this family."""
    torch.manual_seed(0)
    model, batch = FAMILIES[family](), load_batch("cifar10", batch_size, 0)
    out = {}
    for name in proxy_names():
        try:
            get_proxy(name)(model, batch.images, labels=batch.labels if get_proxy(name).needs_labels else None)
            out[name] = "ok"
        except ZcpError as exc:
            out[name] = str(exc)
    return out


def _mode_overhead(family: str, batch_size: int, repeats: int = 5) -> tuple[float, float]:
    """Median seconds of a no-grad train-mode forward without and with the activation-unit mode."""
    torch.manual_seed(0)
    model, x = FAMILIES[family](), load_batch("cifar10", batch_size, 0).images
    times: dict[bool, list[float]] = {False: [], True: []}
    with torch.no_grad():
        for _ in range(repeats):
            for active in (False, True):
                begun = time.perf_counter()
                if active:
                    with ActivationUnits(lambda u: None):
                        model(x)
                else:
                    model(x)
                times[active].append(time.perf_counter() - begun)
    return statistics.median(times[False]), statistics.median(times[True])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--proxies", default="exported,az_nas,zico")
    parser.add_argument("--all-zoo", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("FAMILY", "PROXY", "EXPORTED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1], args.batch_size, args.repeats, args.child[2])))
        return
    with tempfile.TemporaryDirectory() as tmp:
        exported = _export(Path(tmp))
        print(f"batch {args.batch_size} x 3 x 32 x 32, {args.threads} torch thread(s); seconds: median of "
              f"{args.repeats} score(s); peak RSS of a child process doing only that")
        print(f"{'family':>9} | {'proxy':>8} | {'s / score':>9} | {'peak RSS MiB':>12} | {'RSS before MiB':>14} | score")
        for family in args.families.split(","):
            for proxy in args.proxies.split(","):
                done = subprocess.run([sys.executable, "-m", "experiments.bench.user_models_bench", "--child", family,
                                       proxy, str(exported), "--batch-size", str(args.batch_size),
                                       "--repeats", str(args.repeats), "--threads", str(args.threads)],
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    lines = done.stderr.strip().splitlines()
                    print(f"{family:>9} | {proxy:>8} | failed: {lines[-1] if lines else done.returncode}")
                    continue
                r = json.loads(done.stdout.strip().splitlines()[-1])
                value = r["score"] if isinstance(r["score"], float) else {k: round(v, 3) for k, v in r["score"].items()}
                print(f"{family:>9} | {proxy:>8} | {r['seconds']:9.2f} | {r['peak_mib']:12.0f} | {r['ready_mib']:14.0f} | "
                      f"{value} ({r['images']} images)", flush=True)
    for family in args.families.split(","):
        plain, seen = _mode_overhead(family, args.batch_size)
        print(f"{family}: forward {plain:.3f} s, with activation units seen {seen:.3f} s (x{seen / plain:.2f})")
    if args.all_zoo:
        for family in args.families.split(","):
            for name, status in _zoo(family, args.batch_size).items():
                if status != "ok":
                    print(f"{family}: {name} cannot run: {status}")


if __name__ == "__main__":
    main()
