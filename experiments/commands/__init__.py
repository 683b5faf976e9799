"""Subcommand groups of ``zcp``; each module has ``register(subparsers)``."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from evaluation.atomic import atomic_write_text
from evaluation.errors import ZcpError
from evaluation.paths import KEYS, DataPaths, resolve_paths
from evaluation.spaces import SearchSpace, get_space


def paths_options() -> argparse.ArgumentParser:
    """A parent parser with one flag per data location (see ``evaluation.paths``)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("data locations (else $ZCP_<KEY>, config file, defaults)")
    for key in KEYS:
        group.add_argument(f"--{key.replace('_', '-')}", dest=key, metavar="PATH", default=None)
    return parent


def energy_options(region: bool = True) -> argparse.ArgumentParser:
    """A parent parser with ``--no-energy`` (and ``--energy-region``): energy tracking (evaluation/energy.py)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("energy (measured with CodeCarbon's offline tracker)")
    group.add_argument("--no-energy", dest="energy", action="store_false",
                       help="do not measure energy (CodeCarbon is then not even imported)")
    if region:
        group.add_argument("--energy-region", default="", metavar="ISO3",
                           help="3-letter country code for a CO2 figure (default: energy only)")
    return parent


def energy_settings(args: argparse.Namespace) -> list[str]:
    """``--no-energy`` / ``--energy-region`` as campaign config settings (kept in the run's config.toml)."""
    return ([] if args.energy else ["campaign.energy=false"]) + \
        ([f"campaign.energy_region={json.dumps(args.energy_region)}"] if args.energy_region else [])


def paths_from(args: argparse.Namespace) -> DataPaths:
    return resolve_paths(**{k: getattr(args, k, None) for k in KEYS})


def _gpus(text: str) -> float:
    from evaluation.cluster import gpu_share

    try:
        return gpu_share(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("gpus_per_task", "--gpus-per-task")) from None


def ray_options(parser: argparse.ArgumentParser, gpus: bool = True) -> None:
    """The flags that join a Ray cluster (and, with ``gpus``, ask it for GPUs); see README "Clusters"."""
    parser.add_argument("--address", default=None,
                        help="join a Ray cluster: HOST:PORT of its head, or auto (the one `ray start` left here)")
    parser.add_argument("--node-ip-address", default=None, metavar="IP",
                        help="this machine's address in the cluster (default: derived from --address)")
    if gpus:
        parser.add_argument("--gpus-per-task", type=_gpus, default=None, metavar="G",
                            help="GPUs each Ray task asks for (fractions share a GPU; default: a share per worker "
                                 "on CUDA, else 0)")


def space_from(args: argparse.Namespace) -> SearchSpace:
    """``--space``; a space whose identities come from its table (nb101) reads the table the flags name."""
    space = get_space(args.space)
    if hasattr(space, "load"):
        space.load(paths_from(args).table(space.name))
    return space


def write_table(tool: str, make: Callable[[], str], out: Path) -> int:
    """Make a markdown table, write it atomically to ``out`` and print it (0); a ZcpError is one line
    ``TOOL: error: ...`` on stderr (2). The exit status of the experiment scripts' ``main``."""
    try:
        text = make()
    except ZcpError as exc:
        print(f"{tool}: error: {exc}", file=sys.stderr)
        return 2
    atomic_write_text(out, text)
    print(text)
    return 0
