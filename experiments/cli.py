"""The ``zcp`` command: one subcommand group per pipeline stage, each in ``experiments/commands/``."""
from __future__ import annotations

import argparse
import sys

from evaluation.errors import ZcpError
from experiments.commands import bench, cache, evolve, export, proxies


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``zcp: error: ...`` and exit 2, no usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="zcp", description="Discover zero-cost NAS proxies by genetic programming.")
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND", parser_class=Parser)
    bench.register(groups)
    cache.register(groups)
    evolve.register(groups)
    export.register(groups)
    proxies.register(groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except ZcpError as exc:
        print(f"zcp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"zcp: interrupted{'; ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
