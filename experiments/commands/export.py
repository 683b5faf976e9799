"""``zcp export``: write the best discovered proxies of a run as standalone Python files."""
from __future__ import annotations

import argparse
import time

from gp.export.write import SIMPLIFY_SECONDS, export_run


def register(groups: argparse._SubParsersAction) -> None:
    export = groups.add_parser("export", help="export hall-of-fame proxies as standalone torch modules")
    export.add_argument("run_dir", help="campaign run directory (holds hall_of_fame.json)")
    export.add_argument("--top", type=int, default=1, help="export the K best entries (default 1)")
    export.add_argument("--out", required=True, help="folder for proxy_<rank>.py/.json/.sympy/.tex")
    export.add_argument("--simplify-timeout", type=float, default=SIMPLIFY_SECONDS, metavar="SECONDS",
                        help=f"time limit of sympy simplification per entry (default {SIMPLIFY_SECONDS:g})")
    export.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    records = export_run(args.run_dir, args.out, args.top, args.simplify_timeout)
    for r in records:
        print(f"rank {r['rank']}: {args.out}/{r['files']['py']}  fitness {r['fitness']:.4f}  "
              f"({r['simplify']}): {r['simplified']}")
    print(f"exported {len(records)} proxies in {time.perf_counter() - start:.1f} s")
    return 0
