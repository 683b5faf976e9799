"""Digest of the project code a cached result depends on, so that a cache keyed by it never serves
results of older code and no version number has to be bumped by hand.

A module's code is its own syntax tree and, transitively, that of every project module it imports
(import statements read from the source, those inside functions included). Editing a helper that a
zoo proxy shares with others (``primitives/layers.py``, say) changes the key of every score cache
that uses it; editing an unrelated module (a report, the CLI), a comment, a docstring or the layout
changes none.
"""
from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import inspect
from functools import cache
from pathlib import Path

PACKAGES = ("evaluation", "primitives", "gp")


def _file(module: str, packages: tuple[str, ...]) -> Path | None:
    """The source file of project module ``module``, or None (not a project module, or a name that
    ``from package.module import name`` imports from a module)."""
    top, *rest = module.split(".")
    if top not in packages:
        return None
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), *rest)
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(source: str) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def project_modules(*roots: str, packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Source of each project module that ``roots`` import, directly or not, by name, and of the roots
    themselves (any importable module: a user's own proxy module too)."""
    found = {root: Path(inspect.getsourcefile(importlib.import_module(root))).read_text() for root in roots}
    todo = [name for source in found.values() for name in _imports(source)]
    while todo:
        module = todo.pop()
        path = _file(module, packages)
        if module in found or path is None:
            continue
        found[module] = path.read_text()
        todo += _imports(found[module])
    return found


def _code(source: str) -> str:
    """The syntax tree of ``source`` without docstrings, as text: what running it depends on."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


@cache
def code_digest(*roots: str, packages: tuple[str, ...] = PACKAGES) -> str:
    """Short digest of the code of ``roots`` and the project modules they import (see the module docstring)."""
    sources = project_modules(*roots, packages=packages)
    text = "\n".join(f"{name}\n{_code(sources[name])}" for name in sorted(sources))
    return hashlib.sha256(text.encode()).hexdigest()[:12]
