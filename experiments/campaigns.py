"""Run one protocol campaign for several GP seeds, then its held-out report (issue 7).

    .venv/bin/python -m experiments.campaigns tss-cifar10 --seeds 0 1 2 [--set sample.search_n=300 ...] [--zoo zico,synflow]

Runs ``experiments/configs/NAME.toml`` once per seed into ``runs/NAME-s<seed>`` (a finished run is
kept, an interrupted one resumed), then writes ``results/NAME/`` with :mod:`experiments.heldout`.
The seeds vary ``[gp] seed`` only: samples and caches (``[cache] dir``) are shared, so the spread
reported is that of the search, on the same networks.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evaluation.errors import ZcpError
from experiments import campaign, heldout
from experiments.commands import energy_options, energy_settings

CONFIGS = Path(__file__).parent / "configs"


def run_seeds(name: str, seeds: list[int], overrides: list[str], runs: Path, energy: bool | None = None) -> list[Path]:
    """Finish ``runs/NAME-s<seed>`` for every seed; returns the run directories (``energy=False``: no
    energy tracking, also in resumed runs)."""
    config = CONFIGS / f"{name}.toml"
    if not config.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.toml")))
        raise ZcpError(f"no campaign config {config.name} (known: {known})")
    dirs = []
    for seed in seeds:
        run_dir = runs / f"{name}-s{seed}"
        if (run_dir / campaign.HOF).exists() and campaign.read_hall_of_fame(run_dir).get("status") == "finished":
            print(f"{run_dir}: finished already", file=sys.stderr)
        elif (run_dir / campaign.CHECKPOINT).exists():
            campaign.resume(run_dir, energy=energy)
        else:
            campaign.start(config, run_dir, overrides=[*overrides, f"gp.seed={seed}"])
        dirs.append(run_dir)
    return dirs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[energy_options()])
    parser.add_argument("name", help="a config in experiments/configs/, without .toml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--stratified-n", type=int, default=None)
    parser.add_argument("--zoo", type=heldout.proxy_list, default=[],
                        help="zoo proxies to run on the same held-out networks, comma-separated (e.g. zico,synflow)")
    args = parser.parse_args(argv)
    try:
        dirs = run_seeds(args.name, args.seeds, [*args.set, *energy_settings(args)], args.runs,
                         None if args.energy else False)
        result = heldout.report(dirs, args.results / args.name, args.stratified_n, zoo=args.zoo,
                                track_energy=args.energy, energy_region=args.energy_region)
    except ZcpError as exc:
        print(f"campaigns: error: {exc}", file=sys.stderr)
        return 2
    print(heldout.markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
