"""A discovered proxy as a Python callable ``f(model, inputs, **options) -> float``.

From a hall of fame (:class:`Proxy`: the expression evaluated by the language's own evaluator, as in
the campaign) or from an exported file (its ``score``). Both run :func:`primitives.proxy.score_network`,
so a proxy scores a network the same way whichever form it is loaded from. The options are those of
:func:`primitives.terminals.compute_terminals` (``labels``, ``signal``, ``seed``, ``curve_points``);
a hall-of-fame proxy defaults to the options its campaign used.
"""
from __future__ import annotations

import importlib.util
import itertools
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from evaluation.errors import ZcpError
from gp.export.run import read_run
from primitives.expression import evaluate, parse, terminals_of
from primitives.functions import REGISTRY
from primitives.proxy import score_network
from primitives.terminals import terminal_types
from primitives.types import Value

OPTIONS = ("labels", "signal", "seed", "curve_points", "output")
_loaded = itertools.count()


class Proxy:
    """An expression of the proxy language as a callable on one network and a batch of inputs."""

    def __init__(self, expression: str, options: Mapping[str, Any] | None = None) -> None:
        self.node = parse(expression, REGISTRY, terminal_types())
        self.expression = expression
        self.terminals = tuple(sorted(terminals_of(self.node)))
        self.options = _checked(options or {})

    def __call__(self, model: nn.Module, inputs: torch.Tensor, **options: Any) -> float:
        """The score of ``model`` on ``inputs`` (options override the defaults; see the module doc)."""
        return score_network(model, inputs, self.terminals, self._program, **(self.options | _checked(options)))

    def _program(self, env: Mapping[str, Value]) -> torch.Tensor:
        return evaluate(self.node, env)

    def __repr__(self) -> str:
        return f"Proxy({self.expression!r})"


def _checked(options: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r}; known: {', '.join(OPTIONS)}")
    return dict(options)


def load_exported(path: str | Path) -> Callable[..., float]:
    """The ``score`` function of an exported proxy file (importing it runs its top level: defines only)."""
    path = Path(path)
    if not path.is_file():
        raise ZcpError(f"exported proxy {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"zcp_exported_{next(_loaded)}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a damaged or foreign file: say which, in one line
        del sys.modules[spec.name]
        raise ZcpError(f"{path} is not a loadable exported proxy ({type(exc).__name__}: {exc})") from None
    if not callable(getattr(module, "score", None)):
        raise ZcpError(f"{path} defines no score(model, inputs) function: not an exported proxy")
    return module.score


def load_proxy(source: str | Path, rank: int = 1) -> Callable[..., float]:
    """A proxy from an exported ``.py`` file, or entry ``rank`` (1 = best) of a run's hall of fame."""
    if Path(source).suffix == ".py":
        return load_exported(source)
    run = read_run(source)
    return Proxy(run.entry(rank)["expression"], run.options)
