"""``zcp evolve`` and ``zcp resume``: run an evolution campaign and print its summary."""
from __future__ import annotations

import argparse
from typing import Any

from evaluation.energy import summary
from experiments import campaign
from experiments.commands import energy_options, energy_settings, paths_from, paths_options


def register(groups: argparse._SubParsersAction) -> None:
    evolve = groups.add_parser("evolve", parents=[paths_options(), energy_options()],
                               help="run an evolution campaign from a TOML config")
    evolve.add_argument("config")
    evolve.add_argument("--out", required=True, help="run directory")
    evolve.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, e.g. --set gp.seed=1 (repeatable)")
    evolve.set_defaults(run=lambda a: _summary(campaign.start(a.config, a.out, paths_from(a),
                                                              overrides=[*a.set, *energy_settings(a)])))
    resume = groups.add_parser("resume", parents=[paths_options(), energy_options(region=False)],
                               help="continue a campaign from its checkpoint")
    resume.add_argument("run_dir")
    resume.set_defaults(run=lambda a: _summary(campaign.resume(a.run_dir, paths_from(a), energy=None if a.energy else False)))



def _summary(record: dict[str, Any], top: int = 5) -> int:
    """Print the held-out table: best evolved expressions next to the baselines."""
    datasets = list(next(iter(record["baselines"].values()))["heldout"]) if record["baselines"] else []
    print(f"finished generation {record['generation']} in {record['seconds_this_run']:.0f} s; "
          f"search networks {record['search_n']}, held-out networks {record['heldout_n']}")
    header = " | ".join(f"{d} tau / rho" for d in datasets)
    print(f"{'search fit':>10} | {header} | proxy")
    rows = [(e["expression"], f"{e['fitness']:.3f}", e["heldout"]) for e in record["entries"][:top]]
    rows += [(name, "-", b["heldout"]) for name, b in record["baselines"].items()]
    for name, fit, heldout in rows:
        cells = " | ".join(f"{heldout[d]['kendall']:+.3f} / {heldout[d]['spearman']:+.3f}" for d in datasets)
        print(f"{fit:>10} | {cells} | {name}")
    for line in _verdict(record, datasets):
        print(line)
    if record.get("energy_this_run"):
        print(summary(record["energy_this_run"]))
    return 0


def _verdict(record: dict[str, Any], datasets: list[str], against: tuple[str, ...] = ("#params", "NASWOT")) -> list[str]:
    """Whether the best proxy by search fitness beats the baselines on the held-out networks, per
    dataset (what a fresh run should reproduce even where its top 5 differs, see the README)."""
    base = [b for b in against if b in record["baselines"]]
    if not record["entries"] or not base:
        return []
    lines = []
    for d in datasets:
        tau = record["entries"][0]["heldout"][d]["kendall"]
        taus = {b: record["baselines"][b]["heldout"][d]["kendall"] for b in base}
        beats = all(tau > t for t in taus.values())
        lines.append(f"held-out {d}: the best proxy by search fitness (tau {tau:+.3f}) "
                     f"{'beats' if beats else 'does NOT beat'} " + " and ".join(f"{b} ({t:+.3f})" for b, t in taus.items()))
    return lines
