"""``zcp export``: the best hall-of-fame entries of a run as standalone files.

Per entry of rank r (``proxy_<rr>``): ``.py`` (the standalone module, see :mod:`gp.export.bundle`
and docs/export.md), ``.sympy`` (the simplified sympy form), ``.tex`` (its LaTeX) and ``.json`` (the
record: expression, forms, fitness, held-out scores, config hash, run id, scoring options).
An expression written out by hand (from a paper, a README, another run's log) exports the same way,
as ``proxy_01`` with no run, fitness or held-out scores recorded (:func:`export_expression`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sympy
from sympy.printing.latex import LatexPrinter

from evaluation.atomic import atomic_write_text
from evaluation.errors import ZcpError
from gp.export.bundle import compile_program, library_source
from gp.export.run import CURVE_POINTS, Run, read_run
from gp.export.simplify import simplify_all
from primitives import layers
from primitives.expression import Node, parse, terminals_of, to_sympy
from primitives.functions import REGISTRY
from primitives.terminals import SIGNALS, TERMINALS, terminal_types

SIMPLIFY_SECONDS = 20.0
# dataclasses look a class's module up in sys.modules: a file executed without being registered there
# (importlib's module_from_spec + exec_module, exec of its text) gets a stand-in while it defines them
LOADER = """import sys as _sys
import types as _types

_PLACEHOLDER = None
if __name__ not in _sys.modules:  # not registered by whoever runs this file: see the end of the file
    _PLACEHOLDER = _sys.modules[__name__] = _types.ModuleType(__name__)
"""


class _Latex(LatexPrinter):
    """LaTeX with names kept whole (sympy would read ``code_kernel`` as code with subscript kernel)."""

    def _hprint_Function(self, func: str) -> str:
        return r"\operatorname{%s}" % func.replace("_", r"\_")

    def _print_Symbol(self, expr: sympy.Symbol, style: str = "plain") -> str:
        return r"\mathrm{%s}" % expr.name.replace("_", r"\_")


def _forms(nodes: list[Node], timeout: float) -> list[tuple[str, str, str, str]]:
    """(canonical, simplified, LaTeX, how) of each parsed expression; simplified in parallel."""
    canonical: list[sympy.Expr | None] = []
    for node in nodes:
        try:
            canonical.append(to_sympy(node))
        except Exception:  # sympy cannot build some constant combinations: the text stands for itself
            canonical.append(None)
    done = iter(simplify_all([c for c in canonical if c is not None], timeout))
    forms = []
    for node, c in zip(nodes, canonical):
        if c is None:
            forms.append((node.text, node.text, "", "no sympy form (sympy failed to build it)"))
        else:
            form, how = next(done)
            forms.append((str(c), str(form), _Latex().doprint(form), how))
    return forms


def _scores_lines(record: dict[str, Any]) -> list[str]:
    """The docstring lines on where the proxy comes from and how it scored there."""
    if record["run_id"] is None:
        return ["Exported from an expression (zcp export --expression), not from a run: no fitness recorded."]
    heldout = record["heldout"]
    lines = [f"Search fitness: {record['fitness']:.4f} ({record['metric']}); held-out scores:"]
    if not isinstance(heldout, dict) or not heldout:
        return [*lines, "    not computed (the campaign had not finished)"]
    return [*lines, *(f"    {d}: " + ", ".join(f"{m} {float(v):+.4f}" for m, v in scores.items())
                      for d, scores in heldout.items())]


def _safe(text: str) -> str:
    """Text that can sit inside a triple-quoted docstring."""
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


def module_source(record: dict[str, Any], program: str) -> str:
    """The exported file's text: docstring, the library, the program and ``score``."""
    o = record["options"]
    source = "an expression" if record["run_id"] is None else \
        f"run {record['run_id']} (hall-of-fame rank {record['rank']})"
    doc = "\n".join([
        f"Zero-cost NAS proxy exported by zcp from {source}.",
        "", "Expression (zcp proxy language):", f"    {record['expression']}",
        "Simplified (sympy.simplify):" if record["simplify"] == "simplified" else f"Sympy form ({record['simplify']}):",
        f"    {record['simplified']}", *_scores_lines(record),
        ("" if record["config_hash"] is None else f"Config hash: {record['config_hash']}; ")
        + f"terminals: {', '.join(record['terminals'])}.", "",
        "Usage: score(model, inputs, *, labels=None, signal=..., seed=..., curve_points=..., output=None) -> float,",
        "for any torch.nn.Module and a batch of at least 2 inputs on the model's device (CPU or CUDA); the",
        "defaults are the campaign's. A forward may return a tensor, a tuple / list such as (features, logits),",
        "a dict or an object with `logits`: see pick_output (output= an index, key or callable overrides).",
        "Load it any usual way: import, importlib, runpy.run_path or exec of its text.",
        "Only the passes the terminals need run (a backward pass only for gradient terminals, the others",
        "without autograd); weights, buffers, gradients and training mode are left as found. Problems with",
        "the model or inputs raise ValueError (one line). Imports torch and numpy only; importing defines only.",
        "", "Layer definition (as in the zcp terminal cache):", "", layers.__doc__.strip()])
    score = f'''

EXPRESSION = {record['expression']!r}
NEEDED = {tuple(record['terminals'])!r}


def score(model, inputs, *, labels=None, signal={o['signal']!r}, seed={o['seed']!r}, curve_points={o['curve_points']!r},
          output=None):
    """The proxy's score (float) of ``model`` on the batch ``inputs``; see the module docstring."""
    return score_network(model, inputs, NEEDED, _program, labels=labels, signal=signal, seed=seed,
                         curve_points=curve_points, output=output)


__all__ = ["score", "EXPRESSION", "NEEDED"]
if _sys.modules.get(__name__) is _PLACEHOLDER:
    del _sys.modules[__name__]
'''
    return f'"""{_safe(doc)}\n"""\nfrom __future__ import annotations\n\n{LOADER}\n{library_source()}\n\n# {"-" * 30} the proxy (generated)\n\n{program}{score}'


def _record(node: Node, expression: str, forms: tuple[str, str, str, str], options: dict[str, Any],
            run: Run | None = None, rank: int = 1) -> dict[str, Any]:
    """The JSON record of one exported expression (of ``run``'s hall-of-fame entry ``rank``, if given)."""
    canonical, simplified, latex, how = forms
    needed = sorted(terminals_of(node))
    record = {"run_id": None, "run_dir": None, "rank": rank, "status": "expression", "expression": expression,
              "canonical": canonical, "simplified": simplified, "latex": latex, "simplify": how, "fitness": None,
              "metric": None, "heldout": None, "config_hash": None, "terminals": needed,
              "backward": any(TERMINALS[n].backward for n in needed), "options": options,
              "files": {k: f"proxy_{rank:02d}.{k}" for k in ("py", "sympy", "tex", "json")}}
    if run:
        entry = run.entry(rank)
        record.update(run_id=run.run_id, run_dir=str(run.path.resolve()), status=run.status, fitness=entry["fitness"],
                      metric=run.config.get("campaign", {}).get("metric"), heldout=entry.get("heldout"),
                      config_hash=run.config_digest)
    return record


def _write_entry(record: dict[str, Any], node: Node, out: Path) -> dict[str, Any]:
    """Write the files of one record; returns it."""
    files = record["files"]
    source = module_source(record, compile_program(node))
    compile(source, files["py"], "exec")  # a generator bug must fail here, not in a user's import
    atomic_write_text(out / files["py"], source)
    atomic_write_text(out / files["sympy"], record["simplified"] + "\n")
    latex = record["latex"]
    atomic_write_text(out / files["tex"], f"\\[ {latex} \\]\n" if latex else "% no LaTeX form\n")
    atomic_write_text(out / files["json"], json.dumps(record, indent=1) + "\n")
    return record


def _parse(run: Run, rank: int) -> Node:
    try:
        return parse(run.entry(rank)["expression"], REGISTRY, terminal_types())
    except ZcpError as exc:
        raise ZcpError(f"hall-of-fame entry {rank} of {run.path}: {exc}") from None


def _out_dir(out: str | Path) -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ZcpError(f"--out {out} exists and is not a directory")
    return out


def export_run(run_dir: str | Path, out: str | Path, top: int = 1,
               timeout: float = SIMPLIFY_SECONDS) -> list[dict[str, Any]]:
    """Export the ``top`` best entries of the run in ``run_dir`` into ``out``; their records, best first."""
    if not isinstance(top, int) or top < 1:
        raise ZcpError(f"--top must be at least 1, got {top!r}")
    run = read_run(run_dir)
    out = _out_dir(out)
    ranks = range(1, min(top, len(run.entries)) + 1)
    nodes = [_parse(run, r) for r in ranks]
    return [_write_entry(_record(node, run.entry(r)["expression"], forms, run.options, run, r), node, out)
            for r, node, forms in zip(ranks, nodes, _forms(nodes, timeout))]


def export_expression(expression: str, out: str | Path, seed: int = 0, signal: str = "pseudo_ce",
                      timeout: float = SIMPLIFY_SECONDS) -> dict[str, Any]:
    """Export one expression of the proxy language into ``out`` (``proxy_01.*``), scoring with ``seed``
    and backward ``signal`` by default (a campaign's defaults unless given); returns its record."""
    if signal not in SIGNALS:
        raise ZcpError(f"unknown backward signal {signal!r}; known: {', '.join(SIGNALS)}")
    try:
        node = parse(expression, REGISTRY, terminal_types())
    except ZcpError as exc:
        raise ZcpError(f"--expression: {exc}") from None
    out = _out_dir(out)
    options = {"seed": int(seed), "signal": signal, "curve_points": CURVE_POINTS}
    return _write_entry(_record(node, expression, _forms([node], timeout)[0], options), node, out)
