"""``zcp export``: write the best discovered proxies of a run, or one expression, as standalone Python files."""
from __future__ import annotations

import argparse
import time

from evaluation.errors import ZcpError
from gp.export.write import SIMPLIFY_SECONDS, export_expression, export_run
from primitives.terminals import SIGNALS


def register(groups: argparse._SubParsersAction) -> None:
    export = groups.add_parser("export", help="export hall-of-fame proxies (or one expression) as standalone torch modules")
    export.add_argument("run_dir", nargs="?", help="campaign run directory (holds hall_of_fame.json)")
    export.add_argument("--expression", metavar="TEXT",
                        help="export this expression of the proxy language instead of a run's hall of fame")
    export.add_argument("--seed", type=int, help="with --expression: default scoring seed (default 0)")
    export.add_argument("--signal",
                        help=f"with --expression: default backward signal ({', '.join(SIGNALS)}; default pseudo_ce)")
    export.add_argument("--top", type=int, default=1, help="export the K best entries (default 1)")
    export.add_argument("--out", required=True, help="folder for proxy_<rank>.py/.json/.sympy/.tex")
    export.add_argument("--simplify-timeout", type=float, default=SIMPLIFY_SECONDS, metavar="SECONDS",
                        help=f"time limit of sympy simplification per entry (default {SIMPLIFY_SECONDS:g})")
    export.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if (args.run_dir is None) == (args.expression is None):
        raise ZcpError("zcp export takes either a run directory or --expression TEXT (exactly one)")
    if args.expression is None and (args.seed is not None or args.signal is not None):
        raise ZcpError("--seed and --signal go with --expression; a run's export takes its campaign's")
    if args.expression is not None:
        given = {k: v for k, v in (("seed", args.seed), ("signal", args.signal)) if v is not None}
        r = export_expression(args.expression, args.out, timeout=args.simplify_timeout, **given)
        print(f"{args.out}/{r['files']['py']} ({r['simplify']}): {r['simplified']}")
        return 0
    records = export_run(args.run_dir, args.out, args.top, args.simplify_timeout)
    for r in records:
        print(f"rank {r['rank']}: {args.out}/{r['files']['py']}  fitness {r['fitness']:.4f}  "
              f"({r['simplify']}): {r['simplified']}")
    print(f"exported {len(records)} proxies in {time.perf_counter() - start:.1f} s")
    return 0
