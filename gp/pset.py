"""The DEAP primitive set of a registry and terminal set, and safe conversion of trees to and from text.

Text is DEAP's ``str(tree)``, which is also the expression language of :mod:`primitives.expression`.
:func:`from_text` never uses ``PrimitiveTree.from_string`` (it ``eval``s unknown tokens): it parses
with the type-directed parser and builds the node list from the parsed tree.
"""
from __future__ import annotations

import functools
import random
from collections.abc import Callable, Mapping

from deap import gp

from evaluation.errors import ZcpError
from gp.creator import Individual
from primitives.expression import parse
from primitives.registry import Registry, check_reachability
from primitives.types import NetScalar


class ProxySet(gp.PrimitiveSetTyped):
    """A typed primitive set rooted at NetScalar that keeps the registry and terminals it was built
    from, so that text is parsed against exactly the language the trees are made of."""

    def __init__(self, registry: Registry, terminal_types: Mapping[str, type]) -> None:
        super().__init__("proxy", [], NetScalar)
        self.registry = registry
        self.terminal_types = dict(sorted(terminal_types.items()))


def _draw(gen: Callable[[random.Random], float]) -> float:
    # DEAP draws from the global generator; the random module's functions are that Random's bound
    # methods, so the module stands in for it.
    return float(gen(random))


def build_pset(registry: Registry, terminal_types: Mapping[str, type]) -> ProxySet:
    """The primitive set of every registry primitive, terminal and ephemeral constant (added in name
    order, so the run does not depend on mapping order). Raises if a needed type is unreachable."""
    check_reachability(registry, terminal_types.values())
    clash = sorted(set(terminal_types) & (set(registry.primitives) | set(registry.ephemerals)))
    if clash:
        raise ZcpError(f"terminal name(s) {', '.join(clash)} clash with registry names")
    pset = ProxySet(registry, terminal_types)
    for name, prim in sorted(registry.primitives.items()):
        pset.addPrimitive(prim.fn, list(prim.args), prim.ret, name=name)
    for name, type_ in pset.terminal_types.items():
        pset.addTerminal(name, type_, name=name)
    for name, eph in sorted(registry.ephemerals.items()):
        pset.addEphemeralConstant(name, functools.partial(_draw, eph.gen), eph.type)
    return pset


def to_text(tree: gp.PrimitiveTree) -> str:
    """The expression string of ``tree`` (``str(tree)``; constants print as ``repr(float)``)."""
    return str(tree)


def from_text(text: str, pset: ProxySet) -> Individual:
    """The individual whose ``str()`` is (the normalised) ``text``; ZcpError if it does not parse.

    Constants become plain ``gp.Terminal``s holding the float with the slot's type: they print as
    ``repr(float)`` like DEAP's ephemerals, and every operator treats them alike."""
    nodes = []
    stack = [parse(text, pset.registry, pset.terminal_types)]
    while stack:  # pre-order, as DEAP stores trees
        node = stack.pop()
        if node.value is not None:
            nodes.append(gp.Terminal(node.value, False, node.type))
        else:
            nodes.append(pset.mapping[node.name])
            stack.extend(reversed(node.children))
    return Individual(nodes)


def text_size(text: str) -> int:
    """The number of nodes of a well-formed expression string, without parsing it.

    A call with k arguments writes one '(' and k-1 commas, so nodes = 1 + '(' count + ',' count."""
    return 1 + text.count("(") + text.count(",")
