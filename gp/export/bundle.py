"""The source of an exported proxy file: the project's own torch-only code plus the compiled expression.

One implementation, not copies: the file carries the text of the modules that the terminal cache and
the language run (:data:`LIBRARY`: value types, primitive implementations, layer hooks, terminals,
the one-network runtime), with their imports of each other removed, so an exported proxy computes
exactly what a campaign computed. :func:`library_source` refuses (RuntimeError, a developer error) a
module that imports anything but torch, numpy and the standard library, or two modules that define
the same top-level name. The expression becomes straight-line Python, one statement per distinct
subtree, over the names of :data:`primitives.ops.PRIMITIVES` and :data:`primitives.terminals.TERMINALS`
with constants written by ``repr(float)``: generated from the parsed tree, never from the user's text.
"""
from __future__ import annotations

import ast
import functools
import importlib
import sys
from pathlib import Path

from primitives.expression import Node
from primitives.ops import PRIMITIVES
from primitives.terminals import TERMINALS

LIBRARY = ("primitives.types", "primitives.ops", "primitives.layers", "primitives.passes", "primitives.terminals",
           "primitives.proxy")
ALLOWED = {"torch", "numpy"} | set(sys.stdlib_module_names)


def _imported_roots(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name.split(".")[0] for a in node.names]
    if isinstance(node, ast.ImportFrom):
        return [(node.module or "").split(".")[0]] if node.level == 0 else ["."]
    return []


def _defined(node: ast.stmt) -> set[str]:
    """Top-level names a statement binds (imports excluded: several modules may import torch)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
        node, (ast.AnnAssign, ast.AugAssign, ast.For)) else []
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _module_body(name: str, seen: dict[str, str]) -> str:
    """``name``'s source without its docstring, ``__future__`` import and imports of LIBRARY modules."""
    path = Path(importlib.import_module(name).__file__)
    lines = path.read_text().splitlines()
    drop: set[int] = set()
    for node in ast.parse("\n".join(lines)).body:
        roots = _imported_roots(node)
        docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and node.lineno == 1
        if docstring or roots == ["__future__"] or (isinstance(node, ast.ImportFrom) and node.module in LIBRARY):
            drop.update(range(node.lineno - 1, node.end_lineno))
            continue
        bad = [r for r in roots if r not in ALLOWED]
        if bad:
            raise RuntimeError(f"{path} imports {bad[0]}: exported proxies may import only torch, numpy and the stdlib")
        for defined in _defined(node):
            if seen.setdefault(defined, name) != name:
                raise RuntimeError(f"{name} and {seen[defined]} both define {defined!r}: rename one")
    kept = "\n".join(line for i, line in enumerate(lines) if i not in drop).strip("\n")
    return f"# {'-' * 30} {name.replace('.', '/')}.py\n\n{kept}\n"


@functools.cache
def library_source() -> str:
    """The LIBRARY modules, in dependency order, as one module's text (no docstring, no __future__)."""
    seen: dict[str, str] = {}
    return "\n\n".join(_module_body(name, seen) for name in LIBRARY)


def compile_program(node: Node) -> str:
    """``def _program(env)``: the expression as straight-line calls, shared subtrees computed once."""
    lines: list[str] = []
    names: dict[str, str] = {}

    def emit(n: Node) -> str:
        if n.text in names:
            return names[n.text]
        if n.value is not None:
            code = f"constant_value({float(n.value)!r}, {n.type.__name__}, networks)"
        elif n.prim is None:
            if n.name not in TERMINALS:
                raise ValueError(f"{n.name!r} is not a terminal")
            code = f"clamp_value(env[{n.name!r}])"
        else:
            if n.name not in PRIMITIVES:
                raise ValueError(f"{n.name!r} is not a standard primitive: it cannot be exported")
            code = f"PRIMITIVES[{n.name!r}]({', '.join(emit(c) for c in n.children)})"
        names[n.text] = var = f"v{len(names)}"
        lines.append(f"    {var} = {code}")
        return var

    root = emit(node)
    return "\n".join(["def _program(env):", '    """The expression on the collated terminals of one network."""',
                      "    networks = Rows.networks(1)", *lines, f"    return {root}.data", ""])
