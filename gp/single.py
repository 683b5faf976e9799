"""Single-terminal expressions: every way the language turns one terminal alone into a network score.

They are the bar below any evolved proxy (issue 18): a proxy that does not beat the best of them has
found nothing a one-terminal reading could not. The list is derived from the registry's type
signatures and the run's terminal set, so new primitives and terminals are covered without edits.

Rule. A *cast* is a registry primitive with one argument whose return type differs from it: the
reductions (``v_min``: Vector -> RowScalar, ``layer_sum``: RowScalar -> NetScalar, ``m_logdet``:
Matrix -> RowScalar) and the matrix-to-vector maps (``m_eig``). Type-preserving unary primitives
(the elementwise ``log``, ``sqrt``, ... and ``m_corr``) are not casts. For each terminal T, the
expressions are all chains ``c_k(... c_1(T))`` of casts that end in NetScalar with the fewest casts
possible from T's type (breadth-first over types; a NetScalar terminal is its own chain, k = 0).
With the standard registry: NetScalar terminals as they are; RowScalar ``layer_*(T)`` (5); Vector
``layer_*(v_*(T))`` (25); Matrix ``layer_*(m_*(T))`` over the six Matrix -> RowScalar functions (30;
``m_eig``/``m_svd``/``m_diag`` chains are one cast longer, so not shortest).

Sign. Fitness is the signed correlation (evaluation/fitness.py): an anti-correlated reading scores
negative, and the GP must write the negation. When the registry holds a one-step negation of a
NetScalar (a NetScalar -> NetScalar primitive whose sympy form is ``-x``; ``n_neg`` in the standard
set), every chain also appears negated, ``n_neg(chain)``, because the language reaches it in one
node. Without such a primitive only the plain chains are listed. With the 48 ``@base`` terminals
that gives 2 x 676 = 1,352 expressions.
"""
from __future__ import annotations

from collections.abc import Mapping

import sympy

from primitives.registry import Primitive, Registry
from primitives.types import NetScalar


def casts(registry: Registry) -> list[Primitive]:
    """The registry's one-argument primitives that change the type, in name order."""
    return [p for _, p in sorted(registry.primitives.items()) if len(p.args) == 1 and p.args[0] is not p.ret]


def negation(registry: Registry) -> Primitive | None:
    """The first (by name) NetScalar -> NetScalar primitive whose sympy form is ``-x``, or None."""
    x = sympy.Symbol("x")
    for _, p in sorted(registry.primitives.items()):
        if p.args == (NetScalar,) and p.ret is NetScalar and sympy.simplify(p.sym(x) + x) == 0:
            return p
    return None


def _chains(start: type, steps: list[Primitive]) -> list[list[Primitive]]:
    """Every shortest cast chain from ``start`` to NetScalar (innermost cast first); [] if none."""
    frontier: list[tuple[type, list[Primitive]]] = [(start, [])]
    while frontier:
        done = [chain for t, chain in frontier if t is NetScalar]
        if done:
            return done
        frontier = [(p.ret, [*chain, p]) for t, chain in frontier for p in steps if p.args[0] is t
                    and p.ret not in {start, *(q.ret for q in chain)}]  # no chain revisits a type
    return []


def single_terminal_expressions(registry: Registry, terminal_types: Mapping[str, type]) -> dict[str, list[str]]:
    """Terminal name -> its single-terminal expressions (the module docstring's rule): the plain chains,
    then their negations if the registry has one; terminals in name order. Every string parses with
    the same registry and terminals; a terminal no cast chain reaches NetScalar from gets []."""
    steps, neg = casts(registry), negation(registry)
    out = {}
    for name, type_ in sorted(terminal_types.items()):
        plain = []
        for chain in _chains(type_, steps):
            text = name
            for p in chain:
                text = f"{p.name}({text})"
            plain.append(text)
        out[name] = plain + ([f"{neg.name}({text})" for text in plain] if neg else [])
    return out
