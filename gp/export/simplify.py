"""Time-limited sympy simplification: it must never hang an export.

``sympy.simplify`` can take unbounded time on some trees, and a Python thread cannot be stopped, so
it runs in a child process (``python -m gp.export.simplify``: the expression pickled on stdin, the
result pickled on stdout) that is killed at the time limit. On a timeout or any failure the form
sympy builds automatically (the hall of fame's canonical form) is kept, and the reason is returned.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import sympy


def simplify(expr: sympy.Expr, timeout: float) -> tuple[sympy.Expr, str]:
    """``(form, how)``: the simplified form and "simplified", or ``expr`` and why it was kept."""
    try:
        done = subprocess.run([sys.executable, "-m", "gp.export.simplify"], input=pickle.dumps(expr),
                              capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return expr, f"not simplified: sympy took longer than {timeout:g} s (canonical form kept)"
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        return expr, f"not simplified: sympy failed ({lines[-1] if lines else f'exit {done.returncode}'})"
    return pickle.loads(done.stdout), "simplified"


def simplify_all(exprs: Sequence[sympy.Expr], timeout: float) -> list[tuple[sympy.Expr, str]]:
    """:func:`simplify` of each expression, in parallel child processes (one per core at a time)."""
    with ThreadPoolExecutor(max_workers=max(1, min(len(exprs), os.cpu_count() or 1))) as pool:
        return list(pool.map(lambda e: simplify(e, timeout), exprs))


def _child() -> None:
    expr = pickle.load(sys.stdin.buffer)
    sys.stdout.buffer.write(pickle.dumps(sympy.simplify(expr)))


if __name__ == "__main__":
    _child()
