"""Transfer matrix: the best proxy evolved on dataset X, Kendall tau on dataset Y's held-out networks.

    .venv/bin/python -m experiments.transfer runs/tss-cifar10-s0 runs/tss-cifar100-s0 runs/tss-in16-s0 \\
        --out results/transfer.md [--split search]

Each run contributes its best expression (row, labelled by the spaces, datasets and seed it was evolved
on, and by its folder's name where several runs share that label) and the held-out caches of its spaces
and datasets (columns; named ``SPACE/DATASET`` when the runs span several spaces). Every expression is
scored on every column's cache; the held-out samples of all runs come from the held-out split, so no
cell sees a search network.
``--split search`` scores them on the runs' search samples instead (columns ``DATASET/KIND``): what a
choice among evolved proxies may look at without touching held-out labels.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evaluation.errors import ZcpError
from evaluation.fitness import Fitness, Target, rank_correlation
from experiments.campaign import CONFIG, prepare, read_hall_of_fame
from experiments.commands import write_table
from experiments.config import load_config

SPLITS = ("heldout", "search")


def transfer(run_dirs: list[Path], split: str = "heldout") -> tuple[dict[str, str], dict[str, dict[str, float]]]:
    """(row label -> expression, row label -> column (dataset, or space/dataset; ``/KIND`` added for the
    search split) -> Kendall tau on that column's ``split`` sample)."""
    if split not in SPLITS:
        raise ZcpError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
    rows: dict[str, str] = {}
    columns: dict[str, tuple[Target, tuple[str, ...]]] = {}
    configs = [load_config(run_dir / CONFIG) for run_dir in run_dirs]
    several = len({space for config in configs for space in config.campaign.spaces}) > 1
    labels = [f"{'+'.join(c.campaign.spaces) + ' ' if several else ''}{'+'.join(c.campaign.datasets)} "
              f"(seed {c.gp.seed})" for c in configs]
    for run_dir, config, label in zip(run_dirs, configs, labels):
        try:
            best = read_hall_of_fame(run_dir)["entries"][0]["expression"]
        except (KeyError, IndexError, TypeError) as exc:
            raise ZcpError(f"{run_dir}'s hall of fame has no entries ({type(exc).__name__}: {exc})") from None
        prepared = prepare(config, run_dir, splits=(split,))
        rows[f"{label}, {run_dir.name}" if labels.count(label) > 1 else label] = best  # two campaigns, one dataset
        for part in prepared.search if split == "search" else prepared.heldout:
            sample = part.sample
            column = "/".join([*([sample.space] if several else []), str(sample.dataset),
                               *([sample.kind] if split == "search" else [])])
            columns.setdefault(column, (part.target(), prepared.terminals))
    matrix = {}
    for label, text in rows.items():
        matrix[label] = {}
        for column, (target, terminals) in columns.items():
            try:
                scores = Fitness([target], terminals).scores(text)[0]
            except ZcpError:  # the expression needs a terminal that column's cache lacks
                matrix[label][column] = float("nan")
                continue
            matrix[label][column] = rank_correlation(scores, target.accuracy)
    return rows, matrix


def markdown(rows: dict[str, str], matrix: dict[str, dict[str, float]]) -> str:
    datasets = sorted({d for cells in matrix.values() for d in cells})
    lines = ["| evolved on | " + " | ".join(f"tau on {d}" for d in datasets) + " | expression |",
             "|---|" + "---|" * (len(datasets) + 1)]
    for label, cells in matrix.items():
        lines.append(f"| {label} | " + " | ".join(f"{cells[d]:.3f}" for d in datasets) + f" | `{rows[label]}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", required=True, type=Path, help="markdown file")
    parser.add_argument("--split", choices=SPLITS, default="heldout", help="score on the held-out samples or the search samples")
    args = parser.parse_args(argv)
    return write_table("transfer", lambda: markdown(*transfer(args.runs, args.split)), args.out)


if __name__ == "__main__":
    sys.exit(main())
