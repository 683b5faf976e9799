"""``zcp score``, ``zcp compare``, ``zcp search``: hand-designed or exported proxies on a benchmark."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from evaluation import energy
from evaluation.datasets import DATASETS
from evaluation.errors import ZcpError
from evaluation.images import SOURCES as IMAGE_SOURCES
from evaluation.parallel import BACKENDS, device_kind, start_ray
from evaluation.proxies import Proxy, proxy_names
from evaluation.groundtruth import load_ground_truth
from evaluation.report import (evaluate, paired, plot_kendall, plot_scatter, read_per_network, write_csv,
                               write_markdown, write_paired_csv, write_per_network)
from evaluation.samples import Sample, described, make_sample, read_sample
from evaluation.scoring import RECHECK_RTOL, Scores, resolve, same_entry, score_sample
from evaluation.spaces import SPACES, check_space_dataset, get_space
from experiments.commands import energy_options, paths_from, paths_options, ray_options, space_from

DEFAULT_SCORE_CACHE = "runs/scores"


def _options(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are read as JSON where they parse (numbers, booleans), else text."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ZcpError(f"--option {item!r} must read KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _names(value: str) -> list[str]:
    return list(dict.fromkeys(filter(None, (name.strip() for name in value.split(",")))))


def _device_arg(value: str) -> str:
    """--device checked when the command line is read, before any work starts."""
    try:
        device_kind(value)
    except ZcpError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _common(with_sample: bool = True) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False, parents=[paths_options()])
    parent.add_argument("--space", choices=SPACES, required=True)
    parent.add_argument("--dataset", choices=DATASETS, required=True)
    if with_sample:
        parent.add_argument("--sample", required=True, help="sample file (zcp bench sample)")
    parent.add_argument("--batch-size", type=int, default=64)
    parent.add_argument("--seed", type=int, default=0, help="network initialisation, image choice, proxy randomness")
    parent.add_argument("--images", choices=IMAGE_SOURCES, default="auto", help="image source (gaussian: no labels)")
    parent.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="proxy option, e.g. splits=2 (repeatable)")
    parent.add_argument("--backend", choices=BACKENDS, default="ray")
    parent.add_argument("--device", default="auto", type=_device_arg, help="auto (cuda if available), cpu, cuda or cuda:N; "
                        "scores made on CUDA are cached apart from CPU ones")
    parent.add_argument("--workers", type=int, default=None, help="Ray CPUs or local processes (default: all cores)")
    ray_options(parent, gpus=False)
    parent.add_argument("--score-cache", default=DEFAULT_SCORE_CACHE, help="folder of cached scores")
    return parent


def register(groups: argparse._SubParsersAction) -> None:
    score = groups.add_parser("score", parents=[_common(), energy_options()], help="score a sample with one proxy")
    score.add_argument("--proxy", required=True, help=f"zoo name ({', '.join(proxy_names())}) or exported .py file")
    score.add_argument("--out", required=True, help="CSV: index, arch, score, seconds")
    score.set_defaults(run=run_score)

    compare = groups.add_parser("compare", parents=[_common(), energy_options()],
                                help="compare proxies against the ground truth")
    compare.add_argument("--proxies", required=True, help="comma-separated zoo names or .py files; 'all' = the zoo")
    compare.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals")
    compare.add_argument("--paired", metavar="PROXY[,PROXY...]", type=_names, default=[],
                         help="also give every other proxy's Kendall tau minus each of these (names of the comparison, "
                         "e.g. az_nas or az_nas.expressivity) with a paired bootstrap interval")
    compare.add_argument("--scores-from", action="append", default=[], metavar="CSV",
                         help="scores.csv of an earlier compare made with the same settings: its scores stand in for "
                         "the networks it holds (repeatable; a set-level proxy needs its component columns)")
    compare.add_argument("--recheck", type=int, default=2, metavar="N",
                         help="with --scores-from: networks per proxy whose scores from the file must equal this "
                         "run's (from the score cache, else scored again first) before the rest are taken (default 2)")
    compare.add_argument("--out", required=True, help="folder for results.csv, results.md, scores.csv and plots")
    compare.set_defaults(run=run_compare)

    search = groups.add_parser("search", parents=[_common(with_sample=False)],
                               help="zero-shot NAS: pick the proxy's best of random pools")
    search.add_argument("--proxy", required=True, help="zoo name or exported .py file")
    search.add_argument("--pool", type=int, default=1000, help="architectures per trial")
    search.add_argument("--trials", type=int, default=5)
    search.set_defaults(run=run_search)


def _score_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return dict(batch_size=args.batch_size, seed=args.seed, image_source=args.images, options=_options(args.option),
                backend=args.backend, workers=args.workers, address=args.address, paths=paths_from(args),
                node_ip=args.node_ip_address, device=args.device)


def _meter(args: argparse.Namespace, path: Path) -> energy.EnergyMeter | energy.NoMeter:
    """The run's energy meter; Ray is started in its own phase so that no proxy's figure includes it."""
    meter = energy.energy_meter(path, args.energy, args.energy_region)
    if args.backend == "ray":
        with meter.phase("start Ray"):
            start_ray(args.workers, args.address)
    return meter


def _scored(meter: energy.EnergyMeter | energy.NoMeter, ref: str, sample: Any, args: argparse.Namespace,
            **scoring: Any) -> Scores:
    """``score_sample`` as an energy phase named after the proxy, counting the networks scored this run."""
    with meter.phase(f"score {ref}") as row:
        scores = score_sample(ref, sample, args.dataset, args.score_cache, **_score_kwargs(args), **scoring)
        row["networks"] = scores.scored
    return scores


def run_score(args: argparse.Namespace) -> int:
    check_space_dataset(space_from(args), args.dataset)
    sample = read_sample(args.sample, args.space)
    out = Path(args.out)
    meter = _meter(args, out.with_name(f"{out.stem}.{energy.ENERGY_FILE}"))
    scores = _scored(meter, args.proxy, sample, args)
    space = get_space(args.space)
    write_per_network(scores.indices, [space.arch_str(int(i)) for i in scores.indices],
                      {"score": scores.values, **scores.components, "seconds": scores.seconds}, args.out)
    print(f"{scores.proxy}: scored {len(scores.indices)} {args.space} networks "
          f"({np.isnan(scores.values).sum()} NaN, {np.mean(scores.seconds):.3f} s/network) -> {Path(args.out)}")
    if meter.rows:
        per = meter.rows[-1].get("joules_per_network")
        print(f"{energy.summary(meter.rows)}; " + (f"{per:.3g} J per network scored this run" if per else
                                                    "no network scored this run (all from the score cache)")
              + f" -> {meter.path}")
    return 0


def _expand(proxies: str) -> list[str]:
    refs = []
    for item in filter(None, (p.strip() for p in proxies.split(","))):
        refs.extend(proxy_names() if item == "all" else [item])
    if not refs:
        raise ZcpError("--proxies names no proxy")
    return list(dict.fromkeys(refs))


def _row_names(proxy: str, components: Any) -> list[str]:
    """A proxy's rows in a comparison: its own, then (set-level proxies) one per component."""
    return [proxy, *(f"{proxy}.{k}" for k in components)]


def _rows_of(scores: Scores) -> list[tuple[str, np.ndarray]]:
    """The proxy's scores, then (set-level proxies) each component's."""
    return list(zip(_row_names(scores.proxy, scores.components), [scores.values, *scores.components.values()]))


def _tables(files: list[str], sample: Sample, truth: np.ndarray, dataset: str) -> list[tuple[str, dict, dict]]:
    """Each ``--scores-from`` file checked against the sample: (file, its row of each sample network, columns)."""
    position = {index: j for j, index in enumerate(sample.indices)}
    tables = []
    for path in files:
        indices, archs, columns = read_per_network(path)
        rows = {}
        for row, (index, arch) in enumerate(zip(indices, archs)):
            j = position.get(index)
            if j is None:
                continue
            if arch != sample.archs[j]:
                raise ZcpError(f"{path}: network {index} is {arch} there but {sample.archs[j]} in the sample "
                               "(another search space?)")
            if "accuracy" in columns and abs(columns["accuracy"][row] - truth[j]) > 1e-9:
                raise ZcpError(f"{path}: network {index} has accuracy {columns['accuracy'][row]} there but {truth[j]} "
                               f"in the {dataset} ground truth (another dataset?)")
            rows[index] = row
        if not rows:
            print(f"zcp: note: {path} holds no network of the sample", file=sys.stderr)
        tables.append((path, rows, columns))
    return tables


def _prior(proxy: Proxy, tables: list[tuple[str, dict, dict]]) -> dict[int, dict[str, Any]]:
    """The tables' entries for ``proxy``: its column or (set-level proxies, whose value depends on the
    whole sample) one column per component."""
    names = [f"{proxy.name}.{k}" for k in proxy.components] if proxy.components else [proxy.name]
    prior: dict[int, dict[str, Any]] = {}
    for path, rows, columns in tables:
        if not all(name in columns for name in names):
            continue
        for index, row in rows.items():
            values = [float(columns[name][row]) for name in names]
            entry = {"components": dict(zip(proxy.components, values))} if proxy.components else {"value": values[0]}
            if index in prior and not same_entry(prior[index], entry):
                raise ZcpError(f"{proxy.name}: network {index} has other scores in {path} than in an earlier "
                               "--scores-from file")
            prior[index] = entry
    return prior


def run_compare(args: argparse.Namespace) -> int:
    check_space_dataset(space_from(args), args.dataset)
    sample = read_sample(args.sample, args.space)
    refs = _expand(args.proxies)
    if args.scores_from and args.recheck < 1:
        raise ZcpError(f"--recheck must be >= 1 (got {args.recheck}): scores made elsewhere are taken only once some "
                       "are found equal here")
    proxies = {ref: resolve(ref)[0] for ref in refs}
    if args.paired:  # checked before any network is scored
        names = [name for proxy in proxies.values() for name in _row_names(proxy.name, proxy.components)]
        unknown = [name for name in args.paired if name not in names]
        if unknown:
            raise ZcpError(f"--paired {unknown[0]!r} is not one of the compared proxies ({', '.join(names)})")
    truth = load_ground_truth(args.space, paths_from(args)).accuracy[args.dataset][list(sample.indices)]
    if np.isnan(truth).any():
        raise ZcpError(f"the ground truth lacks {args.dataset} accuracy for {int(np.isnan(truth).sum())} networks of the sample")
    tables = _tables(args.scores_from, sample, truth, args.dataset)
    out = Path(args.out)
    meter = _meter(args, out / energy.ENERGY_FILE)
    rows, by_name, notes = [], {}, []
    for ref in refs:
        prior = _prior(proxies[ref], tables) if tables else {}
        scores = _scored(meter, ref, sample, args, prior=prior, prior_source=" or ".join(args.scores_from),
                         recheck=args.recheck)
        if prior:
            notes.append(f"{scores.proxy}: {scores.imported} of {len(sample.indices)} networks' scores taken from "
                         f"{', '.join(args.scores_from)} ({len(prior) - scores.imported} of its networks scored here "
                         f"or found in the score cache, all equal within {RECHECK_RTOL:g}); s/network from the rest.")
        for name, values in _rows_of(scores):
            row = evaluate(name, values, truth, float(np.nanmean(scores.seconds)), args.bootstrap, args.seed)
            rows.append(row)
            by_name[name] = values
            plot_scatter(name, values, truth, row.values["kendall"], out / "scatter" / f"{name}.png")
    write_per_network(sample.indices, list(sample.archs), {"accuracy": truth, **by_name}, out / "scores.csv")
    pairs = [paired(name, values, ref, by_name[ref], truth, args.bootstrap, args.seed)
             for ref in args.paired for name, values in by_name.items() if name != ref]
    if pairs:
        write_paired_csv(pairs, out / "paired.csv")
    where = (args.space, args.dataset)  # published values are per space and dataset
    write_csv(rows, out / "results.csv", where)
    title = (f"{args.space} {args.dataset}: {len(sample.indices)} networks ({described(sample)}), "
             f"batch {args.batch_size}, seed {args.seed}"
             + "".join(f", {key}={value}" for key, value in _options(args.option).items()))
    write_markdown(rows, out / "results.md", title, where, meter.rows, pairs, args.bootstrap, notes)
    plot_kendall(rows, out / "kendall.png")
    print((out / "results.md").read_text(), end="")
    return 0


def run_search(args: argparse.Namespace) -> int:
    space = space_from(args)
    check_space_dataset(space, args.dataset)
    if args.trials < 1:
        raise ZcpError(f"--trials must be >= 1, got {args.trials}")
    accuracy = load_ground_truth(args.space, paths_from(args)).accuracy[args.dataset]
    picked, best = [], []
    for trial in range(args.trials):
        pool = make_sample(space, "random", args.pool, args.seed + trial, split="all")
        scores = score_sample(args.proxy, pool, args.dataset, args.score_cache, **_score_kwargs(args))
        values = np.where(np.isfinite(scores.values), scores.values, -np.inf)
        acc = accuracy[scores.indices]
        picked.append(acc[int(np.argmax(values))])
        best.append(np.nanmax(acc))
        print(f"trial {trial}: picked index {scores.indices[int(np.argmax(values))]} with {picked[-1]:.2f}% "
              f"(pool best {best[-1]:.2f}%)")
    print(f"{scores.proxy} on {args.space}/{args.dataset}, {args.trials} trials of {args.pool} random networks: "
          f"picked {np.mean(picked):.2f} +- {np.std(picked):.2f}%, pool best {np.mean(best):.2f} +- {np.std(best):.2f}%, "
          f"space best {np.nanmax(accuracy):.2f}%")
    return 0
