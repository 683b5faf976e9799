"""Benchmark: build one campaign's search cache through the campaign path and measure it.

    .venv/bin/python -m experiments.bench.campaign_cache sss-cifar10 [--set sample.search_n=200] [--run runs/bench-sss-cifar10]

Builds (or resumes) the first search cache (first space, dataset and search kind) that
``python -m experiments.campaigns NAME`` would build (same sample, same ``[cache]`` settings, same folder
under ``[cache] dir``, so the campaign reuses it), in this process (serial backend, so this process's
RSS covers the work and the shards finish one at a time). A killed build keeps its shards, whose times
still give the per-network seconds. A thread samples wall clock, this process's CPU time and RSS; each
shard's finishing time gives the seconds of its network. Prints per-network wall and CPU seconds
(median, max), the peak RSS, the cache's size on disk and its load time. A resumed build measures only
the networks it built; the first network of each run is left out (it pays for imports and the image
batch).

``--finished-only`` measures a build that was stopped before the end, without building: the
per-network wall seconds from its shards' times, and the size and load time of those networks packed
into a copy (``--run``/partial-cache), plus the Kendall tau of the campaign's baselines on them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import shutil
import statistics
import threading
import time
from pathlib import Path

import numpy as np

from evaluation.cache import MANIFEST, PACKED, SHARDS, load_cache, merge_caches, pack, sample_sha
from evaluation.errors import ZcpError
from evaluation.fitness import Fitness, make_target, rank_correlation
from evaluation.groundtruth import load_ground_truth
from evaluation.samples import Sample, make_sample
from evaluation.spaces import get_space
from experiments.bench.build_forward import rss_mib
from experiments.campaign import BASELINES, cache_for, campaign_terminals
from experiments.campaigns import CONFIGS
from experiments.config import load_config


def _dir_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def _stopped_build(root: Path, dataset: str, sample: Sample) -> Path:
    """The folder under ``root`` holding the shards of ``sample``'s cache (found by its manifest)."""
    for folder in sorted(root.glob(f"{dataset}-{sample.split}-*")):
        if (folder / SHARDS).is_dir() and json.loads((folder / MANIFEST).read_text())["sample_sha"] == sample_sha(sample):
            return folder
    raise ZcpError(f"no stopped build of this sample under {root}")


def finished_only(sample: Sample, cache_dir: Path, copy_dir: Path, accuracy: np.ndarray) -> None:
    """Per-network seconds, size and load time of the networks a stopped build finished; baselines' tau."""
    shards = {int(p.stem): p for p in (cache_dir / SHARDS).glob("*.npz")}
    if len(shards) < 2:
        raise ZcpError(f"{cache_dir} holds {len(shards)} finished network(s): nothing to measure")
    ends = np.sort([p.stat().st_mtime for p in shards.values()])
    gaps = np.diff(ends)
    gaps = gaps[gaps < 10 * np.median(gaps)]  # a pause between two runs of the build is not a network
    print(f"  {len(shards)} of {len(sample.indices)} networks finished; seconds per network, wall: "
          f"median {statistics.median(gaps):.2f}, max {gaps.max():.2f} (over {len(gaps)} gaps)")
    done = dataclasses.replace(sample, indices=tuple(i for i in sample.indices if i in shards),
                               archs=tuple(a for i, a in zip(sample.indices, sample.archs) if i in shards))
    (copy_dir / SHARDS).mkdir(parents=True, exist_ok=True)
    manifest = json.loads((cache_dir / MANIFEST).read_text())
    manifest["sample_n"] = len(done.indices)
    (copy_dir / MANIFEST).write_text(json.dumps(manifest))
    for i in done.indices:
        shutil.copyfile(shards[i], copy_dir / SHARDS / f"{i}.npz")
    pack(copy_dir, done)
    start = time.perf_counter()
    cache = load_cache(copy_dir)
    print(f"  packed copy {copy_dir}: {_dir_mib(copy_dir / PACKED):.0f} MiB on disk for {len(done.indices)} networks, "
          f"loaded in {time.perf_counter() - start:.2f} s")
    target = make_target(cache, accuracy)
    fitness = Fitness([target], tuple(manifest["terminals"]))
    for name, text in BASELINES.items():
        tau = rank_correlation(fitness.scores(text)[0], target.accuracy, "kendall")
        print(f"  {name} ({text}): Kendall tau {tau:.3f} on these {len(done.indices)} networks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="a config in experiments/configs/, without .toml")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--run", type=Path, default=None, help="run directory for the sample files (default runs/bench-NAME)")
    parser.add_argument("--report-every", type=int, default=100, help="print a progress line every N shards")
    parser.add_argument("--finished-only", action="store_true",
                        help="do not build: measure the shards of a stopped build (see above)")
    parser.add_argument("--every", type=float, default=0.5, help="seconds between samples of the clocks and RSS")
    args = parser.parse_args()

    config = load_config(CONFIGS / f"{args.name}.toml", args.set)
    config = dataclasses.replace(config, parallel=dataclasses.replace(config.parallel, backend="serial", workers=1))
    c, s = config.campaign, config.sample
    space, dataset = c.spaces[0], c.datasets[0]
    accuracy = load_ground_truth(space).accuracy[dataset]
    sample = make_sample(get_space(space), s.search_kinds[0], s.search_sizes[0], c.seed, "search", dataset,
                         accuracy, s.split_seed, s.heldout_fraction, s.bins)
    for note in sample.notes:
        print(f"sample note: {note}")
    run_dir = args.run or Path("runs") / f"bench-{args.name}"
    if args.finished_only:
        folder = _stopped_build(Path(config.cache.dir or run_dir / "caches"), dataset, sample)
        print(f"{args.name}: stopped build {folder}")
        finished_only(sample, folder, run_dir / "partial-cache", accuracy)
        return

    clock: list[tuple[float, float, float]] = []  # (wall, cpu, rss MiB)
    finished: dict[str, float] = {}  # shard name -> mtime
    done = threading.Event()
    marks = [0]

    def watch() -> None:
        while not done.wait(args.every):
            clock.append((time.time(), time.process_time(), rss_mib()))
            for folder in Path(config.cache.dir or run_dir / "caches").glob(f"{dataset}-search-*/{SHARDS}"):
                for p in folder.glob("*.npz"):
                    if p.name not in finished:
                        try:
                            finished[p.name] = p.stat().st_mtime
                        except FileNotFoundError:  # packed away meanwhile
                            pass
            if len(finished) >= marks[-1] + args.report_every:
                marks.append(len(finished))
                print(f"  ... {len(finished)} shards, {time.time() - start:.0f} s, RSS {clock[-1][2]:.0f} MiB "
                      f"(peak {max(r for _, _, r in clock):.0f})", flush=True)

    watcher = threading.Thread(target=watch, daemon=True)
    start = time.time()
    watcher.start()
    cache = cache_for(config, sample, dataset, run_dir, progress=False)
    done.set()
    watcher.join()
    build_s = time.time() - start

    walls, cpus = (np.array(v) for v in zip(*[(w, cpu) for w, cpu, _ in clock]))
    ends = sorted(t for t in finished.values() if t >= start)
    wall_per = np.diff(ends)
    cpu_per = np.diff(np.interp(ends, walls, cpus))
    print(f"{args.name}: search cache of {len(sample.indices)} {space} networks on {dataset}, "
          f"batch {config.cache.batch_size}, {len(campaign_terminals(config))} terminals -> "
          f"{', '.join(map(str, cache.folders))}")
    print(f"  built {len(ends)} networks in this run ({build_s:.0f} s wall, packing included)")
    if len(wall_per):
        print(f"  seconds per network, wall: median {statistics.median(wall_per):.2f}, max {wall_per.max():.2f}; "
              f"CPU of this process: median {statistics.median(cpu_per):.2f}, max {cpu_per.max():.2f} "
              f"(over {len(wall_per)} networks)")
    peak_sampled = max((r for _, _, r in clock), default=float("nan"))
    print(f"  peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (ru_maxrss), "
          f"{peak_sampled:.0f} MiB sampled")
    start = time.perf_counter()
    loaded = merge_caches([load_cache(f, space=space, dataset=dataset) for f in cache.folders])
    print(f"  on disk {sum(_dir_mib(f / PACKED) for f in cache.folders):.0f} MiB; loaded {len(loaded.indices)} "
          f"networks in {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
