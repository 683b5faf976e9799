"""The standard primitive set, registered into the default registry (``REGISTRY``).

The implementations (and the protection rules they follow) live in :mod:`primitives.ops`, which
imports only torch, so that exported proxies can carry them; this module adds what only the
language needs: each primitive's types, sympy form and doc, and the ephemeral constants.
Elementwise operations are named by their argument type's prefix (``PREFIX``); the others declare
their types in their annotations and are opaque sympy functions.
"""
from __future__ import annotations

import operator
import random
import typing
from collections.abc import Callable

import sympy

from primitives.ops import BINARY, NAMED, PREFIX, PRIMITIVES, UNARY
from primitives.registry import Registry
from primitives.types import NetScalar, RowScalar

REGISTRY = Registry()

_SYMPY: dict[str, tuple[Callable, str]] = {
    "log": (lambda x: sympy.log(sympy.Abs(x)), "log|x|; 0 where |x| < 1e-150"),
    "sqrt": (lambda x: sympy.sqrt(sympy.Abs(x)), "sqrt|x|"),
    "exp": (sympy.exp, "exp(x), input clipped at log(1e150)"),
    "reciprocal": (lambda x: 1 / x, "1/x; 0 where |x| < 1e-150"),
    "abs": (sympy.Abs, "|x|"),
    "neg": (operator.neg, "-x"),
    "sigmoid": (lambda x: 1 / (1 + sympy.exp(-x)), "1/(1+exp(-x))"),
    "add": (operator.add, "a+b"),
    "sub": (operator.sub, "a-b"),
    "mul": (operator.mul, "a*b"),
    "div": (operator.truediv, "a/b; 1 where |b| < 1e-150"),
}

for _t, _prefix in PREFIX.items():
    for _name in (*UNARY, *BINARY):
        _sym, _doc = _SYMPY[_name]
        REGISTRY.register(_prefix + _name, PRIMITIVES[_prefix + _name], (_t,) * (1 if _name in UNARY else 2), _t,
                          _sym, f"elementwise {_doc}")
for _fn in NAMED:
    _hints = typing.get_type_hints(_fn)
    _ret = _hints.pop("return")
    REGISTRY.register(_fn.__name__, _fn, tuple(_hints.values()), _ret, sympy.Function(_fn.__name__),
                      (_fn.__doc__ or "").strip())


def _constant(rng: random.Random) -> float:
    """A constant in [-2, 2] with two decimals, so that printed trees stay short."""
    return round(rng.uniform(-2.0, 2.0), 2)


REGISTRY.add_ephemeral("const", RowScalar, _constant, "random constant in [-2, 2] (per-row scalar)")
REGISTRY.add_ephemeral("n_const", NetScalar, _constant, "random constant in [-2, 2] (network scalar)")
