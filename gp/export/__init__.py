"""Export discovered proxies: standalone Python files (torch + numpy only), sympy, LaTeX, JSON records.

Modules: ``bundle`` (the exported file's source: the torch-only modules of ``primitives`` plus the
expression compiled to Python), ``simplify`` (time-limited sympy simplification), ``run`` (reading a
run directory's hall of fame), ``write`` (``zcp export``) and ``load`` (a proxy as a callable, from a
hall of fame or an exported file). ``load_proxy`` and ``export_run`` are imported lazily, so that the
simplification child process (``python -m gp.export.simplify``) imports sympy only.
"""
from __future__ import annotations

from typing import Any

__all__ = ["export_run", "load_proxy"]


def __getattr__(name: str) -> Any:
    if name == "load_proxy":
        from gp.export.load import load_proxy
        return load_proxy
    if name == "export_run":
        from gp.export.write import export_run
        return export_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
