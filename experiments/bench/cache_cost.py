"""What a terminal cache costs per network: build seconds (median, max), peak RSS, size on disk.

    .venv/bin/python -m experiments.bench.cache_cost --space nb101 --sample S.json --batch-size 64 --out DIR

Each network of the sample is built into its own one-network cache by ``build_cache`` (serial
backend: one thread, as each Ray task runs), so its seconds are measured alone, including the
per-build overhead (image batch, manifest, packing). Seconds are CPU seconds of this process (what
the build takes on one idle core; wall seconds are printed beside them, and exceed them when other
jobs share the cores). Size per 1,000 networks and build hours per
1,000 networks (one core) are extrapolated linearly from the measured networks; say so when quoting.

``--terminals`` lists terminals and groups (default ``@base``); each part of them that a campaign caches
on its own (``evaluation.cache.cache_parts``: @base, then one part per other pass) is built and timed
separately, and the last lines give each part's median seconds beside the first part's:

    .venv/bin/python -m experiments.bench.cache_cost --space sss --sample S.json --out DIR --terminals @base,@zoo
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time
from dataclasses import replace
from pathlib import Path

from evaluation.cache import build_cache, cache_parts
from evaluation.errors import ZcpError
from evaluation.samples import read_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", required=True)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--sample", required=True, help="sample file (zcp bench sample)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="folder for the one-network caches")
    parser.add_argument("--terminals", default="@base", help="comma-separated terminals and @groups")
    args = parser.parse_args()
    sample = read_sample(args.sample, args.space)
    try:
        parts = cache_parts(args.terminals.split(","))
    except ValueError as exc:
        raise SystemExit(f"cache_cost: error: {exc}") from None
    seconds, walls, sizes = [], [], []
    by_part: list[list[float]] = [[] for _ in parts]
    for index, arch in zip(sample.indices, sample.archs):
        one = replace(sample, indices=(index,), archs=(arch,), n=1)
        cpu = wall = size = 0.0
        for k, part in enumerate(parts):
            out = Path(args.out) / f"{index}-part{k}"
            start, begun = time.process_time(), time.perf_counter()
            try:
                build_cache(one, args.dataset, out, batch_size=args.batch_size, seed=args.seed, backend="serial",
                            progress=False, terminals=part)
            except ZcpError as exc:
                raise SystemExit(f"cache_cost: error: {exc}") from None
            by_part[k].append(time.process_time() - start)
            cpu, wall = cpu + by_part[k][-1], wall + time.perf_counter() - begun
            size += sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        seconds.append(cpu)
        walls.append(wall)
        sizes.append(size)
        print(f"{args.space} {arch}: {seconds[-1]:.1f} CPU s ({walls[-1]:.1f} s wall), {sizes[-1] / 2**20:.2f} MiB",
              flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{len(seconds)} {args.space} networks, batch {args.batch_size}: build median {statistics.median(seconds):.1f} CPU s, "
          f"max {max(seconds):.1f}, mean {statistics.mean(seconds):.1f} (wall median {statistics.median(walls):.1f} s); peak RSS {peak:.0f} MiB; "
          f"{statistics.mean(sizes) / 2**20:.2f} MiB per network on disk")
    print(f"extrapolated per 1,000 networks: {statistics.mean(sizes) * 1000 / 2**30:.2f} GiB on disk, "
          f"{statistics.mean(seconds) * 1000 / 3600:.1f} core-hours")
    first = statistics.median(by_part[0])
    for part, values in zip(parts, by_part):
        label = ", ".join(part) if len(part) < 8 else f"{len(part)} terminals ({part[0]}, ...)"
        print(f"  part {label}: median {statistics.median(values):.2f} CPU s per network "
              f"({statistics.median(values) / first:.2f}x the first part)")


if __name__ == "__main__":
    main()
