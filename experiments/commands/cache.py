"""``zcp cache``: build and inspect terminal caches."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from evaluation import energy
from evaluation.cache import RECHECK_RTOL, build_cache, load_cache, recheck_cache, unbuilt
from evaluation.datasets import DATASETS
from evaluation.errors import ZcpError
from evaluation.images import SOURCES as IMAGE_SOURCES
from evaluation.parallel import BACKENDS
from evaluation.samples import read_sample
from evaluation.spaces import SPACES, check_space_dataset
from experiments.commands import energy_options, paths_from, paths_options, ray_options, space_from
from primitives.terminals import SIGNALS


def register(groups: argparse._SubParsersAction) -> None:
    cache = groups.add_parser("cache", help="terminal caches: run each network once, score proxies from the cache")
    sub = cache.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=type(cache))

    build = sub.add_parser("build", parents=[paths_options(), energy_options()], help="build or resume a cache")
    build.add_argument("--space", choices=SPACES, required=True)
    build.add_argument("--dataset", choices=DATASETS, required=True)
    build.add_argument("--sample", required=True, help="sample file (zcp bench sample)")
    build.add_argument("--batch-size", type=int, default=64)
    build.add_argument("--seed", type=int, default=0, help="network initialisation, image choice, noise")
    build.add_argument("--signal", choices=SIGNALS, default="pseudo_ce", help="backward signal (default label-free)")
    build.add_argument("--images", choices=IMAGE_SOURCES, default="auto", help="image source")
    build.add_argument("--backend", choices=BACKENDS, default="ray")
    build.add_argument("--workers", type=int, default=None, help="Ray CPUs or local processes (default: all cores)")
    ray_options(build)
    build.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    build.add_argument("--terminals", default=None, help="comma-separated terminals and @groups (@base, @zoo, @labels, @all; default: @base)")
    build.add_argument("--out", required=True)
    build.set_defaults(run=run_build)

    recheck = sub.add_parser("recheck", parents=[paths_options()],
                             help="adopt a cache made by other code when this code gives its numbers")
    recheck.add_argument("dir")
    recheck.add_argument("--networks", type=int, default=2, help="networks to run again (default 2)")
    recheck.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    recheck.set_defaults(run=run_recheck)

    info = sub.add_parser("info", help="describe a cache")
    info.add_argument("dir")
    info.set_defaults(run=run_info)


def run_build(args: argparse.Namespace) -> int:
    check_space_dataset(space_from(args), args.dataset)
    sample = read_sample(args.sample, args.space)
    terminals = tuple(args.terminals.split(",")) if args.terminals else None
    meter = energy.energy_meter(Path(args.out) / energy.ENERGY_FILE, args.energy, args.energy_region)
    start = time.perf_counter()
    with meter.phase("cache build") as row:
        row["networks"] = unbuilt(Path(args.out), sample)
        path = build_cache(sample, args.dataset, args.out, batch_size=args.batch_size, seed=args.seed,
                           terminals=terminals, signal=args.signal, image_source=args.images, backend=args.backend,
                           workers=args.workers, address=args.address, device=args.device, paths=paths_from(args),
                           gpus_per_task=args.gpus_per_task, node_ip=args.node_ip_address)
    seconds = time.perf_counter() - start
    print(f"cache of {len(sample.indices)} {args.space} networks ({args.dataset}, batch {args.batch_size}, "
          f"seed {args.seed}) ready at {path} ({seconds:.1f} s this run)")
    if meter.rows:
        print(f"{energy.summary(meter.rows)}; {_per_network(meter.rows[0])} -> {meter.path}")
    return 0


def _per_network(row: dict) -> str:
    per = row.get("joules_per_network")
    return f"{per:.3g} J per network built ({row['networks']} this run)" if per else "no network built this run"


def run_recheck(args: argparse.Namespace) -> int:
    if args.networks < 1:
        raise ZcpError(f"--networks must be >= 1 (got {args.networks}): a cache is adopted only once some of its "
                       "networks give its numbers")
    count = recheck_cache(args.dir, args.networks, device=args.device, paths=paths_from(args))
    print(f"cache {args.dir}: " + (f"{count} networks run again, every terminal equal within {RECHECK_RTOL:g}: "
                                   "marked as made by this code" if count else "already made by this code"))
    return 0


def run_info(args: argparse.Namespace) -> int:
    cache = load_cache(args.dir)
    m = cache.manifest
    size = sum(f.stat().st_size for f in cache.path.rglob("*") if f.is_file())
    layers = cache.arrays["layers"]
    print(f"{cache.path}: {len(cache.indices)} {m['space']} networks, dataset {m['dataset']}, seed {m['seed']}, "
          f"batch {m['batch_size']}, signal {m['signal']}, images {m['image_source']}, code {m['code_version']}")
    print(f"  sample {m['sample_kind']}/{m['sample_split']} (sha {m['sample_sha']}); "
          f"layers per network {int(layers.min())}..{int(layers.max())} (mean {np.mean(layers):.1f}); "
          f"{len(m['terminals'])} terminals; {size / 2**20:.1f} MiB on disk")
    return 0
