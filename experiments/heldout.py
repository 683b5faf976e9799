"""Held-out report of finished campaigns (issue 7 protocol): one command re-creates every number.

    .venv/bin/python -m experiments.heldout runs/tss-cifar10-s0 runs/tss-cifar10-s1 runs/tss-cifar10-s2 \\
        --out results/tss-cifar10

The runs are seeds of one campaign (configs equal but for ``[gp] seed``). Each run's best expression
(highest search fitness) is scored on two held-out samples per dataset (per space and dataset for a
cross-space campaign, named ``SPACE/DATASET``), both drawn from the held-out split only: ``random`` (the
campaign's own held-out sample) and ``stratified`` (equal counts from ``bins`` equal-width accuracy bins;
short bins give all they have, and the report lists them: on NATS-SSS CIFAR-10 the lowest bins of the
held-out half hold only 4, 5 and 26 networks). Next to them, on the same networks:
the baselines that the language expresses exactly (``experiments.campaign.BASELINES``, from the cache);
two rows for the single-terminal expressions of the campaign's language (gp/single.py; scored from the
caches, seconds): the one with the best search fitness (the campaign's own fitness on its search caches,
targets combined as the campaign combines them: chosen without held-out labels, an honest baseline) and
the best on each held-out sample by the campaign's metric (chosen on that sample: an upper bound of
every single-terminal expression, the strict bar of issue 18); and, with ``--zoo``, hand-designed
proxies of the zoo run on the live networks with the cache's batch, seed and images (scores kept in
``--scores``, the score cache of ``zcp score``, so re-runs and other campaigns on the same networks
reuse them). Kendall tau and Spearman rho carry percentile-bootstrap 95% intervals over networks, and
each evolved proxy's Kendall tau minus each zoo proxy's carries a paired interval (the same resamples for
both: evaluation/report.py, ``paired``), which says whether it is above that proxy on these networks.

Writes ``results.json``, ``results.md`` (tables, cost accounting), ``fitness.png`` (best and median
search fitness, diversity and mean tree size per generation, per seed; islands pooled) and ``scatter.png`` (best proxy vs accuracy, held-out), and
``energy.json``: the energy of this report's phases, measured with CodeCarbon (evaluation/energy.py)
unless ``--no-energy``. The cost table takes each run's measured energy from its hall of fame.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from evaluation import energy
from evaluation.atomic import atomic_write_text
from evaluation.errors import ZcpError
from evaluation.evaluators import one_thread
from evaluation.report import evaluate as metrics_row
from evaluation.report import Paired, paired, paired_markdown, plot_scatter
from evaluation.fitness import Fitness, cache_accuracy
from evaluation.proxies import get_proxy
from evaluation.samples import make_sample
from evaluation.scoring import score_sample
from evaluation.spaces import get_space
from experiments.commands import energy_options
from experiments.campaign import (BASELINES, CONFIG, LOG, Part, Prepared, cache_for, prepare, read_hall_of_fame,
                                  search_payload)
from experiments.config import Config, load_config
from gp.single import single_terminal_expressions
from primitives.functions import REGISTRY
from primitives.terminals import terminal_types

SINGLE_BEST = "single terminal, best by search fitness"
SINGLE_MAX = "single terminal, best on this sample (upper bound)"
SINGLE_TOP = 10
"""How many single-terminal expressions results.json lists by search fitness."""
RESAMPLE_SEED = 0
"""Seed of the bootstrap resamples: every cell's intervals and every paired difference draw the same ones."""


def evolved_name(seed: int) -> str:
    """The row name of the proxy evolved with GP seed ``seed`` (results.json, results.md, ablation)."""
    return f"evolved (seed {seed})"


def _runs(run_dirs: list[Path]) -> list[tuple[Path, Config, dict[str, Any]]]:
    """Each run's config and finished hall of fame; all configs must agree but for the GP seed."""
    runs = []
    for run_dir in run_dirs:
        config = load_config(run_dir / CONFIG)
        record = read_hall_of_fame(run_dir)
        if record.get("status") != "finished":
            raise ZcpError(f"{run_dir} is not finished (finish it with `zcp resume {run_dir}`)")
        runs.append((run_dir, config, record))
    first = runs[0][1].results_dict()
    for run_dir, config, _ in runs[1:]:
        other = config.results_dict()
        if {k: v for k, v in other.items() if k != "gp"} != {k: v for k, v in first.items() if k != "gp"}:
            raise ZcpError(f"{run_dir} differs from {runs[0][0]} in more than [gp]: not seeds of one campaign")
    return runs


def _stratified(config: Config, run_dir: Path, prepared: Prepared, n: int, bins: int) -> list[Part]:
    """The stratified held-out sample of each held-out part (space and dataset), with its cache."""
    c, s = config.campaign, config.sample
    parts = []
    for part in prepared.heldout:
        space, dataset = part.sample.space, part.sample.dataset
        sample = make_sample(get_space(space), "stratified", n, c.seed, "heldout", dataset,
                             prepared.truth[space, dataset], s.split_seed, s.heldout_fraction, bins)
        for note in sample.notes:
            print(f"stratified {part.name}: {note}", file=sys.stderr)
        cache = cache_for(config, sample, dataset, run_dir)
        parts.append(Part(part.name, sample, cache, cache_accuracy(cache, prepared.truth[space, dataset])))
    return parts


def _cell(name: str, scores: np.ndarray, accuracy: np.ndarray, resamples: int) -> dict[str, Any]:
    row = metrics_row(name, scores, accuracy, math.nan, resamples, RESAMPLE_SEED)
    return {"n": row.n, **row.values, **{f"{m}_ci": list(ci) for m, ci in row.intervals.items()}}


def _single_terminal(config: Config, prepared: Prepared, protocols: dict[str, list[Part]],
                     resamples: int) -> tuple[dict[str, Any], dict[str, dict[str, dict[str, Any]]]]:
    """Score every single-terminal expression (gp/single.py) from the caches: results.json's summary
    (``by_search_fitness``: the best :data:`SINGLE_TOP`, best first), and protocol -> part name ->
    {:data:`SINGLE_MAX`: the cell of the best on that part}."""
    begun = time.perf_counter()
    singles = single_terminal_expressions(REGISTRY, terminal_types(prepared.terminals))
    ranking = _search_ranking(config, prepared, singles)
    best_on = {protocol: {part.name: {SINGLE_MAX: _best_on(part, singles, config, prepared.terminals, resamples)}
                          for part in parts} for protocol, parts in protocols.items()}
    return {"count": len(ranking), "metric": config.campaign.metric, "seconds": round(time.perf_counter() - begun, 1),
            "by_search_fitness": [{"expression": t, "search_fitness": f} for t, f in ranking[:SINGLE_TOP]]}, best_on


def _search_ranking(config: Config, prepared: Prepared, singles: dict[str, list[str]]) -> list[tuple[str, float]]:
    """Every single-terminal expression with its search fitness (the campaign's fitness on its search
    caches), best first; ties keep the enumeration order."""
    fitness = search_payload(config, prepared).fitness()
    with one_thread():  # as the campaign's evaluator scores
        ranked = [(text, value) for texts in singles.values()
                  for text, value in zip(texts, fitness(texts, share_subtrees=True))]
    return sorted(ranked, key=lambda pair: -pair[1])


def _best_on(part: Part, singles: dict[str, list[str]], config: Config, terminals: tuple[str, ...],
             resamples: int) -> dict[str, Any]:
    """The cell of the single-terminal expression with the highest correlation (the campaign's metric)
    on ``part`` itself (the first in enumeration order on ties), with that ``expression``."""
    fitness = Fitness([part.target()], terminals, config.campaign.metric)
    with one_thread():
        values = [(value[0], text) for texts in singles.values()
                  for text, value in zip(texts, fitness.values(texts, share_subtrees=True))]
    best = max(values, key=lambda pair: pair[0])[1]
    return {"expression": best, **_cell(SINGLE_MAX, fitness.scores(best)[0], part.accuracy, resamples)}


def _score(texts: dict[str, str], evolved: list[str], zoo: list[str], parts: list[Part], config: Config,
           terminals: tuple[str, ...], scores_dir: Path, resamples: int, meter: energy.EnergyMeter | energy.NoMeter,
           scored: dict[str, dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """part name -> proxy name -> {n, metric: value, metric_ci: [lo, hi]} on the held-out ``parts``, with
    the metrics and bootstrap of ``zcp compare`` (evaluation/report.py), so evolved proxies and the zoo
    read alike; cells ``scored`` already (part name -> proxy name -> cell) follow those of ``texts``. Second,
    part name -> the paired Kendall tau difference (evaluation/report.py: paired) of each ``evolved`` proxy
    against each zoo proxy, drawn on the cells' bootstrap resamples: whether an evolved proxy is above a
    hand-designed one on the same networks, which overlapping marginal intervals cannot say."""
    out: dict[str, dict[str, Any]] = {}
    pairs: dict[str, list[dict[str, Any]]] = {}
    for part in parts:
        fitness = Fitness([part.target()], terminals)
        with meter.phase("evolved and baselines (cache)"):
            values = {name: fitness.scores(text)[0] for name, text in texts.items()}
            table = out[part.name] = {name: _cell(name, v, part.accuracy, resamples) for name, v in values.items()}
        table.update(scored.get(part.name, {}))
        m, p = part.cache.manifest, config.parallel
        pairs[part.name] = []
        for ref in zoo:
            with meter.phase(f"zoo {ref} (live networks)") as row:
                scores = score_sample(ref, part.sample, part.sample.dataset, scores_dir, batch_size=m["batch_size"],
                                      seed=m["seed"], image_source=m["image_source"], backend=p.backend,
                                      workers=p.workers, address=p.address or None)
                row["networks"] = scores.scored
            if not np.array_equal(scores.indices, part.cache.indices):
                raise ZcpError(f"held-out sample and cache {part.cache.path} list different networks: rebuild the cache")
            table[zoo_name(ref)] = _cell(ref, scores.values, part.accuracy, resamples)
            pairs[part.name] += [asdict(paired(name, values[name], zoo_name(ref), scores.values, part.accuracy,
                                               resamples, RESAMPLE_SEED)) for name in evolved]
    return out, pairs


def proxy_list(text: str) -> list[str]:
    """``zico,synflow`` -> ["zico", "synflow"] (a command-line type)."""
    return [p.strip() for p in text.split(",") if p.strip()]


def zoo_name(ref: str) -> str:
    """Table name of a zoo proxy (its expression column says it ran on live networks)."""
    return f"{ref} (zoo)"


def _cost(runs: list[tuple[Path, Config, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each run's wall time and its energy as measured by the run (None: the run tracked no energy)."""
    rows = []
    for run_dir, config, record in runs:
        wall, workers = record["seconds_this_run"], config.parallel.workers
        phases = record.get("energy_this_run") or []
        kwh = sum(r["kwh"] for r in phases) if phases else None
        rows.append({"run": str(run_dir), "wall_s": wall, "cache_s": record.get("cache_seconds_this_run"),
                     "core_s_upper_bound": round(wall * workers, 1), "evaluations": record.get("evaluations"),
                     "networks": sum(record["search_n"]) + sum(record["heldout_n"]), "energy_kwh": kwh,
                     "energy_method": phases[0]["method"] if phases else None})
    return rows


def _fmt(cell: dict[str, Any], metric: str) -> str:
    lo, hi = cell[metric + "_ci"]
    return f"{cell[metric]:.3f} [{lo:.3f}, {hi:.3f}]"


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Held-out report: {', '.join(result['runs'])}", ""]
    single = result.get("single_terminal")
    if single:
        best = single["by_search_fitness"][0]
        lines += [f"Single-terminal expressions: {single['count']} (every terminal of the campaign through the "
                  f"shortest chains of type-changing unary primitives, and their negations; gp/single.py), scored "
                  f"from the caches in {single['seconds']} s. '{SINGLE_BEST}' is chosen on the search split "
                  f"(`{best['expression']}`, search fitness {best['search_fitness']:.3f}; the evolved proxies': "
                  f"{', '.join(f'{v:.3f}' for v in single['evolved_search_fitness'])}); '{SINGLE_MAX}' is chosen "
                  f"by {single['metric']} on each held-out sample itself: an upper bound, not a proxy one could "
                  "pick without held-out labels.", ""]
        for name, targets in single.get("evolved_search_targets", {}).items():
            lines += [f"Search fitness of {name} on each search target: "
                      + ", ".join(f"{t} {v:.3f}" for t, v in targets.items()) + ".", ""]
    for protocol in ("random", "stratified"):
        for dataset, table in result[protocol].items():
            n = next(iter(table.values()))["n"]
            lines += [f"## {dataset}, {protocol} held-out (n = {n})", "",
                      "| proxy | expression | Kendall tau [95% CI] | Spearman rho [95% CI] |", "|---|---|---|---|"]
            lines += [f"| {name} | `{cell.get('expression', result['expressions'][name])}` | {_fmt(cell, 'kendall')} | "
                      f"{_fmt(cell, 'spearman')} |" for name, cell in table.items()]
            evolved = [cell["kendall"] for name, cell in table.items() if name.startswith("evolved")]
            lines += ["", f"Evolved, over {len(evolved)} seed(s): Kendall tau mean {statistics.fmean(evolved):.3f}, "
                      f"spread (max - min) {max(evolved) - min(evolved):.3f}.", ""]
            notes = result.get("stratified_notes", {}).get(dataset) if protocol == "stratified" else None
            if notes:
                lines += ["Short accuracy bins (each gave all it has, so the sample is smaller than asked): "
                          + "; ".join(notes) + ".", ""]
            pairs = [Paired(**p) for p in result.get("paired", {}).get(protocol, {}).get(dataset, [])]
            if pairs:
                lines += [*paired_markdown(pairs, result["resamples"], f" on {dataset}, {protocol} held-out")[1:], ""]
    lines += ["## Cost", "", "| run | wall s | of which cache s | core-s (upper bound) | evaluations | networks | "
              "energy kWh (J) | how obtained |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {c['run']} | {c['wall_s']} | {c['cache_s']} | {c['core_s_upper_bound']} | {c['evaluations']} | "
              f"{c['networks']} | {_energy_cell(c)} | {c.get('energy_method') or 'run without energy tracking'} |"
              for c in result["cost"]]
    lines += ["", "Energy is what each run measured with CodeCarbon (per phase in its hall_of_fame.json); caches "
              "shared between seeds are built once, by the first run."]
    if any(c.get("energy_kwh") is None for c in result["cost"]):
        lines += ["Runs marked 'not measured' tracked no energy (made before zcp measured it, or with --no-energy): "
                  "their energy is unknown, not estimated."]
    lines += [""]
    if result.get("report_energy"):
        lines += ["Energy of this report (caches, scoring):", "", *energy.markdown(result["report_energy"]), ""]
    return "\n".join(lines)


def _energy_cell(cost: dict[str, Any]) -> str:
    kwh = cost.get("energy_kwh")
    return "not measured" if kwh is None else f"{kwh:.3g} ({kwh * energy.JOULES_PER_KWH:,.0f})"


def _plots(runs: list[tuple[Path, Config, dict[str, Any]]], best: tuple[str, str], kendall: float, part: Part,
           terminals: tuple[str, ...], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, div, size) = plt.subplots(1, 3, figsize=(13, 4))
    for run_dir, config, _ in runs:
        log = [json.loads(line) for line in (run_dir / LOG).read_text().splitlines() if line.strip()]
        gens = [line["generation"] for line in log]
        line = ax.plot(gens, [line["best"] for line in log], label=f"seed {config.gp.seed} best")[0]
        ax.plot(gens, [line["median"] for line in log], "--", color=line.get_color(), label=f"seed {config.gp.seed} median")
        div.plot(gens, [line["diversity"] for line in log], color=line.get_color(), label=f"seed {config.gp.seed}")
        size.plot(gens, [line["mean_size"] for line in log], color=line.get_color(), label=f"seed {config.gp.seed}")
    ax.set(xlabel="generation", ylabel="search fitness (Kendall tau)")
    div.set(xlabel="generation", ylabel="diversity (distinct expressions / population)")
    size.set(xlabel="generation", ylabel="mean tree size (nodes)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "fitness.png", dpi=120)
    plt.close(fig)

    scores = Fitness([part.target()], terminals).scores(best[1])[0]
    plot_scatter(best[0], scores, part.accuracy, kendall, out / "scatter.png")


def report(run_dirs: list[Path], out: Path, stratified_n: int | None = None, resamples: int = 1000,
           zoo: list[str] = (), scores_dir: Path = Path("runs/scores"), track_energy: bool = True,
           energy_region: str = "") -> dict[str, Any]:
    """Score every run's best expression and the baselines on both held-out protocols; write ``out``."""
    runs = _runs(run_dirs)
    run_dir, config, _ = runs[0]
    for ref in zoo:
        get_proxy(ref)
    meter = energy.energy_meter(out / energy.ENERGY_FILE, track_energy, energy_region)
    with meter.phase("caches"):  # held-out, and search for the single-terminal search fitness
        prepared = prepare(config, run_dir)
        stratified = _stratified(config, run_dir, prepared, stratified_n or config.sample.heldout_n, config.sample.bins)
    protocols = {"random": prepared.heldout, "stratified": stratified}
    with meter.phase("single-terminal expressions (cache)"):
        single, best_on = _single_terminal(config, prepared, protocols, resamples)
    texts = {evolved_name(c.gp.seed): r["entries"][0]["expression"] for _, c, r in runs}
    evolved = list(texts)
    texts.update(BASELINES)
    texts[SINGLE_BEST] = single["by_search_fitness"][0]["expression"]
    scored, pairs = {}, {}
    for protocol, parts in protocols.items():
        scored[protocol], pairs[protocol] = _score(texts, evolved, list(zoo), parts, config, prepared.terminals,
                                                   scores_dir, resamples, meter, best_on[protocol])
    single["evolved_search_fitness"] = [r["entries"][0]["fitness"] for _, _, r in runs]
    if len(runs[0][2]["entries"][0].get("search_targets", {})) > 1:
        single["evolved_search_targets"] = {evolved_name(c.gp.seed): r["entries"][0]["search_targets"]
                                            for _, c, r in runs}
    result = {"runs": [str(r) for r, _, _ in runs], "configs": [c.to_toml() for _, c, _ in runs],
              "expressions": texts | {zoo_name(ref): f"zoo: {ref}, live networks" for ref in zoo}
              | {SINGLE_MAX: "chosen on each held-out sample (its row names it)"},
              **scored, "paired": pairs, "resamples": resamples,
              "stratified_notes": {part.name: list(part.sample.notes) for part in stratified},
              "single_terminal": single,
              "cost": _cost(runs), "report_energy": meter.rows}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(result, indent=1) + "\n")
    atomic_write_text(out / "results.md", markdown(result))
    best_run = max(runs, key=lambda r: r[2]["entries"][0]["fitness"])
    name = evolved_name(best_run[1].gp.seed)
    first = prepared.heldout[0]
    _plots(runs, (name, texts[name]), result["random"][first.name][name]["kendall"], first, prepared.terminals, out)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[energy_options()])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run directories (seeds of one campaign)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--stratified-n", type=int, default=None, help="default: the campaign's heldout_n")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--zoo", type=proxy_list, default=[],
                        help="comma-separated zoo proxies to run on the same held-out networks (e.g. zico,synflow)")
    parser.add_argument("--scores", type=Path, default=Path("runs/scores"), help="score cache of the zoo proxies")
    args = parser.parse_args(argv)
    try:
        result = report(args.runs, args.out, args.stratified_n, args.resamples, args.zoo, args.scores, args.energy,
                        args.energy_region)
    except ZcpError as exc:
        print(f"heldout: error: {exc}", file=sys.stderr)
        return 2
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
