"""``zcp bench``: the benchmark substrate (what data is where, builder checks, samples, tables)."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from tqdm import tqdm

from evaluation import groundtruth, images
from evaluation.check import check_params
from evaluation.datasets import DATASETS
from evaluation.errors import ZcpError
from evaluation.samples import KINDS, SPLITS, make_sample, read_sample, subsample, write_sample
from evaluation.spaces import SPACES, check_space_dataset, space_datasets
from experiments.commands import paths_from, paths_options, space_from


def register(groups: argparse._SubParsersAction) -> None:
    bench = groups.add_parser("bench", help="benchmark substrate: data, checks, samples")
    sub = bench.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=type(bench))
    common = paths_options()

    info = sub.add_parser("info", parents=[common], help="say what data was found where")
    info.set_defaults(run=run_info)

    check = sub.add_parser("check", parents=[common], help="build networks, compare parameter counts with the benchmark")
    check.add_argument("--space", choices=SPACES, required=True)
    check.add_argument("--dataset", choices=DATASETS, default=None,
                       help="required unless the space has one dataset (nb101: cifar10)")
    check.add_argument("--limit", type=int, default=None, help="check N random architectures (default: all)")
    check.add_argument("--seed", type=int, default=0, help="seed choosing the --limit architectures")
    check.add_argument("--workers", type=int, default=0, help="processes (default: all cores)")
    check.add_argument("--source", choices=groundtruth.SOURCES, default="auto")
    check.set_defaults(run=run_check)

    sample = sub.add_parser("sample", parents=[common], help="draw a sample of architectures into a file")
    sample.add_argument("--space", choices=SPACES, required=True)
    sample.add_argument("--dataset", choices=DATASETS, default=None, help="needed by stratified / quantile")
    sample.add_argument("--split", choices=SPLITS, default="search")
    sample.add_argument("--kind", choices=KINDS, default="random")
    sample.add_argument("--n", type=int, required=True)
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--bins", type=int, default=10)
    sample.add_argument("--split-seed", type=int, default=0)
    sample.add_argument("--heldout-fraction", type=float, default=0.5)
    sample.add_argument("--source", choices=groundtruth.SOURCES, default="auto")
    sample.add_argument("--within", default=None, metavar="SAMPLE",
                        help="draw --n uniformly from this sample file instead (nested samples)")
    sample.add_argument("--keep", default=None, metavar="SAMPLE",
                        help="with --within: hold every network of this earlier subset of it and draw the rest")
    sample.add_argument("--out", required=True)
    sample.set_defaults(run=run_sample)

    export = sub.add_parser("export-table", parents=[common], help="convert an official archive into a table file")
    export.add_argument("--archive", required=True, help="official archive folder, e.g. NATS-tss-v1_0-3ffb9-simple")
    export.add_argument("--space", choices=SPACES, required=True)
    export.add_argument("--out", required=True)
    export.set_defaults(run=run_export)


def run_info(args: argparse.Namespace) -> int:
    paths = paths_from(args)
    print("ground truth:")
    for line in groundtruth.describe_sources(paths):
        print(f"  {line}")
    print("images (official pickles preferred, else the offline npz):")
    for dataset, found in images.available_sources(paths).items():
        where = found[found["auto"]] if found["auto"] else "NOT FOUND (set --cifar-dir / --imagenet16-dir / --data-dir)"
        print(f"  {dataset:15s} {found['auto'] or '-':7s} {where}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    space = space_from(args)
    if args.dataset is None:
        if len(space_datasets(space)) > 1:
            raise ZcpError(f"the {space.name} space has several datasets: choose one with --dataset")
        args.dataset = space_datasets(space)[0]
    check_space_dataset(space, args.dataset)
    truth = groundtruth.load_ground_truth(args.space, paths_from(args), args.source)
    indices = np.arange(space.size)
    if args.limit is not None:
        if not 1 <= args.limit <= space.size:
            raise ZcpError(f"--limit must be in 1..{space.size}, got {args.limit}")
        indices = np.sort(np.random.default_rng(args.seed).choice(space.size, args.limit, replace=False))
    expected = truth.params_m[args.dataset]
    known = ~np.isnan(expected[indices])
    if not known.all():
        print(f"zcp: note: {int((~known).sum())} of {len(indices)} architectures have no parameter count in "
              f"{truth.source}; they are not checked", file=sys.stderr)
        indices = indices[known]
    if not len(indices):
        raise ZcpError(f"no architecture to check: {truth.source} has no {args.dataset} parameter counts")
    start, bad = time.perf_counter(), 0
    results = check_params(args.space, args.dataset, expected, indices.tolist(), args.workers)
    tty, step = sys.stderr.isatty(), max(1000, len(indices) // 100)
    for done, (_, mismatch) in enumerate(tqdm(results, total=len(indices), disable=not tty, desc="check"), start=1):
        if mismatch is not None:
            bad += 1
            print(mismatch, flush=True)
        if not tty and done % step == 0:  # a log of a long run says how far it got
            print(f"zcp: checked {done} of {len(indices)}, {bad} mismatch, {time.perf_counter() - start:.0f} s",
                  file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    print(f"{args.space}/{args.dataset}: {len(indices) - bad} of {len(indices)} networks match the benchmark's "
          f"parameter counts, {bad} mismatch ({seconds:.1f} s; ground truth: {truth.source})")
    return 1 if bad else 0


def run_sample(args: argparse.Namespace) -> int:
    space = space_from(args)
    if args.keep is not None and args.within is None:
        raise ZcpError("--keep needs --within (the sample both are subsets of)")
    if args.within is not None:
        keep = None if args.keep is None else read_sample(args.keep, args.space)
        sample = subsample(read_sample(args.within, args.space), args.n, args.seed, keep)
        path = write_sample(sample, args.out)
        print(f"wrote {len(sample.indices)} {args.space} architectures (uniform subset of {args.within}, seed {args.seed}"
              f"{'' if keep is None else f', holding the {len(keep.indices)} of {args.keep}'}) to {path}")
        return 0
    accuracy = None
    if args.dataset is not None:
        check_space_dataset(space, args.dataset)
    if args.kind != "random":
        if args.dataset is None:
            raise ZcpError(f"a {args.kind} sample needs --dataset (its bins are of ground-truth accuracy)")
        accuracy = groundtruth.load_ground_truth(args.space, paths_from(args), args.source).accuracy[args.dataset]
    sample = make_sample(space, args.kind, args.n, args.seed, args.split, args.dataset, accuracy,
                         args.split_seed, args.heldout_fraction, args.bins)
    for note in sample.notes:
        print(f"zcp: note: {note}", file=sys.stderr)
    path = write_sample(sample, args.out)
    print(f"wrote {len(sample.indices)} {args.space} architectures ({args.kind}, {args.split} split, seed {args.seed}) to {path}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    path = groundtruth.export_table(args.archive, args.space, args.out)
    print(f"wrote {path} ({time.perf_counter() - start:.1f} s)")
    return 0
