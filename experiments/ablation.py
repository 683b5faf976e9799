"""Ablation table (issue 13): what each lever moved, from the held-out reports of campaigns on one dataset.

    .venv/bin/python -m experiments.ablation results/sss-cifar10 results/sss-cifar10-zoo ... --out results/ablation.md

Each argument is a ``results/NAME`` folder written by :mod:`experiments.heldout`; its levers are read
from the configs of the runs it reports (search samples and subsets, terminals, islands, evaluations
per seed), which ``results.json`` records (reports written before it did: from the run folders), and
its numbers from ``results.json``: the held-out Kendall tau of the seed with the best
search fitness (never chosen by held-out score) on the random and the stratified sample, with the
bootstrap interval, and the seed means. The first folder is the reference: the last columns give each
campaign's difference from it. ``--part`` picks a held-out part of cross-space reports (e.g. sss/cifar10).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from evaluation.errors import ZcpError
from experiments.campaign import CONFIG, campaign_terminals
from experiments.commands import write_table
from experiments.config import Config, load_config, parse_config
from experiments.heldout import evolved_name
from primitives.terminals import BASE

PROTOCOLS = ("random", "stratified")


def levers(config: Config) -> str:
    """The levers a campaign config sets, in words."""
    c, s, g = config.campaign, config.sample, config.gp
    terminals = sorted(set(campaign_terminals(config)) - set(BASE))
    several = len(c.spaces) * len(c.datasets) * len(s.search_kinds) * s.subsets > 1
    words = ["search " + " + ".join(s.search_kinds) + (f" x {s.subsets} subsets" if s.subsets > 1 else "")
             + (", goals " + " / ".join(f"{g:g}" for g in c.goals.values()) if c.goals
                else f", {c.combine}" if several else ""),
             "@base" + (" + " + ", ".join(terminals) if terminals else "")]
    if g.islands > 1:
        words.append(f"{g.islands} islands")
    return "; ".join(words)


def _configs(folder: Path, result: dict[str, Any]) -> list[Config]:
    """The configs of the runs a report covers: recorded in it, or else read from the run folders."""
    if "configs" in result:
        return [parse_config(text, f"{folder}/results.json (config of {run})")
                for run, text in zip(result["runs"], result["configs"], strict=True)]
    runs = [Path(run) for run in result["runs"]]
    missing = [run for run in runs if not (run / CONFIG).is_file()]
    if missing:
        raise ZcpError(f"{folder} records no configs and reports {missing[0]}, which is not here: "
                       "run the campaign first, or rewrite the report with experiments.heldout")
    return [load_config(run / CONFIG) for run in runs]


def row(folder: Path, part: str | None) -> dict[str, Any]:
    """One campaign's levers, evaluations per seed and held-out numbers (see the module docstring)."""
    try:
        result = json.loads((folder / "results.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ZcpError(f"{folder} holds no readable results.json ({exc}): run experiments.heldout first") from None
    configs = _configs(folder, result)
    fitness = result["single_terminal"]["evolved_search_fitness"]
    best = configs[max(range(len(fitness)), key=fitness.__getitem__)].gp.seed
    out = {"name": folder.name, "levers": levers(configs[0]),
           "evaluations": int(statistics.median(c["evaluations"] for c in result["cost"])), "seeds": len(fitness)}
    for protocol in PROTOCOLS:
        parts = result[protocol]
        name = part or next(iter(parts))
        if name not in parts:
            raise ZcpError(f"{folder} has no held-out part {name!r} (it has {', '.join(parts)})")
        cells = parts[name]
        evolved = [cells[k]["kendall"] for k in cells if k.startswith("evolved (seed")]
        chosen = cells[evolved_name(best)]
        out[protocol] = (chosen["kendall"], chosen["kendall_ci"], statistics.mean(evolved))
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| campaign | levers | evaluations per seed | seeds | random tau, best seed [95% CI] | mean | "
            "stratified tau, best seed [95% CI] | mean | vs first: random / stratified |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    ref = rows[0]
    for r in rows:
        cells = []
        for protocol in PROTOCOLS:
            tau, (lo, hi), mean = r[protocol]
            cells += [f"{tau:.3f} [{lo:.3f}, {hi:.3f}]", f"{mean:.3f}"]
        delta = " / ".join(f"{round(r[p][0] - ref[p][0], 3) + 0.0:+.3f}" for p in PROTOCOLS)  # no -0.000
        lines.append(f"| `{r['name']}` | {r['levers']} | {r['evaluations']:,} | {r['seeds']} | " + " | ".join(cells)
                     + f" | {delta} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="results/NAME folders; the first is the reference")
    parser.add_argument("--part", default=None, help="held-out part (default: each report's first)")
    parser.add_argument("--out", required=True, type=Path, help="markdown file")
    args = parser.parse_args(argv)
    return write_table("ablation", lambda: markdown([row(folder, args.part) for folder in args.results]), args.out)


if __name__ == "__main__":
    sys.exit(main())
