"""Subcommand groups of ``zcp``; each module has ``register(subparsers)``."""
from __future__ import annotations

import argparse

from evaluation.paths import KEYS, DataPaths, resolve_paths
from evaluation.spaces import SearchSpace, get_space


def paths_options() -> argparse.ArgumentParser:
    """A parent parser with one flag per data location (see ``evaluation.paths``)."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("data locations (else $ZCP_<KEY>, config file, defaults)")
    for key in KEYS:
        group.add_argument(f"--{key.replace('_', '-')}", dest=key, metavar="PATH", default=None)
    return parent


def paths_from(args: argparse.Namespace) -> DataPaths:
    return resolve_paths(**{k: getattr(args, k, None) for k in KEYS})


def space_from(args: argparse.Namespace) -> SearchSpace:
    """``--space``; a space whose identities come from its table (nb101) reads the table the flags name."""
    space = get_space(args.space)
    if hasattr(space, "load"):
        space.load(paths_from(args).table(space.name))
    return space
