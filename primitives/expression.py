"""The expression language: parse, print, evaluate and simplify proxy expressions.

Text is DEAP's ``str(tree)`` over registry names, e.g. ``layer_sum(log(v_min(chan_corr_eig)))``,
with numeric literals for constants (``mul(0.5, x)``). The parser is a tokenizer plus a type-directed
recursive descent (a literal takes the scalar type its slot expects; the root is a NetScalar); it
never evaluates text. Constants print as ``repr(float)``, which is what DEAP prints for an ephemeral,
so ``to_string(parse(s)) == s`` for every string DEAP produces.
"""
from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import sympy
import torch

from evaluation.errors import ZcpError
from primitives.registry import SCALAR_TYPES, Primitive, Registry
from primitives.types import BIG, NetScalar, Rows, Value, clamp_value, constant_value

MAX_DEPTH = 200
MAX_NODES = 10_000  # bounds the work and memory of one expression, whatever its text
_TOKEN = re.compile(r"(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
                    r"|(?P<punct>[(),])|(?P<space>\s+)")


class EvaluationError(ZcpError):
    """An expression could not be evaluated (a primitive raised or returned the wrong type)."""


class TimeLimitExceeded(EvaluationError):
    """An expression ran past its deadline (checked before every primitive call)."""


@dataclass(frozen=True)
class Node:
    """A typed expression tree: a primitive call, a terminal, or a constant (``value`` set).

    ``name`` is the primitive or terminal name, or the literal text of a constant; ``text`` is the
    expression string of the whole subtree (the memo key of :func:`evaluate`).
    """

    name: str
    type: type
    children: tuple[Node, ...] = ()
    value: float | None = None
    prim: Primitive | None = field(default=None, compare=False, repr=False)
    text: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        args = ", ".join(c.text for c in self.children)
        object.__setattr__(self, "text", f"{self.name}({args})" if self.prim else self.name)


def constant(value: float, type_: type) -> Node:
    """A constant of a scalar type; it must be finite and within [-1e150, 1e150]."""
    if type_ not in SCALAR_TYPES:
        raise ZcpError(f"a number cannot be a {type_.__name__}")
    if not math.isfinite(value) or abs(value) > BIG:
        raise ZcpError(f"constant {value!r} is outside [-{BIG:g}, {BIG:g}]")
    return Node(repr(float(value)), type_, value=float(value))


def terminal(name: str, type_: type) -> Node:
    """A terminal (an input whose value :func:`evaluate` takes from its env)."""
    return Node(name, type_)


def apply(prim: Primitive, children: tuple[Node, ...] | list[Node]) -> Node:
    """A call of ``prim``; checks the number and the types of the children."""
    if len(children) != len(prim.args):
        raise ZcpError(f"{prim.name!r} takes {len(prim.args)} argument(s), got {len(children)}")
    for i, (child, want) in enumerate(zip(children, prim.args)):
        if child.type is not want:
            raise ZcpError(f"argument {i + 1} of {prim.name!r} must be {want.__name__}, got {child.type.__name__}")
    return Node(prim.name, prim.ret, tuple(children), prim=prim)


def to_string(node: Node) -> str:
    """The expression text of ``node`` (DEAP's format); parsing it gives ``node`` back."""
    return node.text


def terminals_of(node: Node) -> frozenset[str]:
    """The names of the terminals ``node`` reads (so only those need computing or loading)."""
    if node.value is not None:
        return frozenset()
    if node.prim is None:
        return frozenset([node.name])
    return frozenset().union(*(terminals_of(c) for c in node.children))


def random_expression(registry: Registry, terminals: Mapping[str, type], rng: random.Random,
                      max_depth: int = 6) -> str:
    """A random well-typed NetScalar expression with at most ``max_depth`` nodes on any root-to-leaf
    path (grown: a branch may end early in a terminal or an ephemeral constant)."""
    return to_string(_random_tree(registry, terminals, rng, NetScalar, max_depth))


def _random_tree(registry: Registry, terminals: Mapping[str, type], rng: random.Random, t: type, depth: int) -> Node:
    leaves = [name for name, tt in terminals.items() if tt is t]
    consts = [e for e in registry.ephemerals.values() if e.type is t]
    prims = [p for p in registry.primitives.values() if p.ret is t]
    if depth <= 1 or not prims or ((leaves or consts) and rng.random() < 0.3):
        if consts and (not leaves or rng.random() < 0.3):
            return constant(rng.choice(consts).gen(rng), t)
        if leaves:
            return terminal(rng.choice(leaves), t)
        raise ZcpError(f"no terminal or ephemeral constant of type {t.__name__}")
    prim = rng.choice(prims)
    return apply(prim, [_random_tree(registry, terminals, rng, a, depth - 1) for a in prim.args])


def parse(text: str, registry: Registry, terminals: Mapping[str, type]) -> Node:
    """Parse ``text`` into a NetScalar-rooted tree over ``registry`` and the ``terminals`` (name -> type).

    Raises ZcpError, one line naming the problem and its column, on anything else.
    """
    if not isinstance(text, str):
        raise ZcpError(f"expression must be a string, got {type(text).__name__}")
    parser = _Parser(_tokenize(text), registry, terminals)
    if parser.peek()[0] == "end":
        raise ZcpError("empty expression")
    node = parser.expression(NetScalar, 1)
    kind, token, col = parser.peek()
    if kind != "end":
        raise ZcpError(f"unexpected {token!r} after the expression at column {col}")
    return node


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, 1-based column) tokens, ending with an ``end`` token."""
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ZcpError(f"unexpected character {text[pos]!r} at column {pos + 1}")
        if m.lastgroup != "space":
            tokens.append((m.lastgroup, m.group(), pos + 1))
        pos = m.end()
    tokens.append(("end", "", len(text) + 1))
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str, int]], registry: Registry, terminals: Mapping[str, type]) -> None:
        self.tokens, self.i, self.nodes = tokens, 0, 0
        self.registry, self.terminals = registry, terminals

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i]

    def take(self, want: str) -> None:
        kind, token, col = self.tokens[self.i]
        if token != want:
            found = "the end" if kind == "end" else repr(token)
            raise ZcpError(f"expected {want!r} but found {found} at column {col}")
        self.i += 1

    def expression(self, expected: type, depth: int) -> Node:
        kind, token, col = self.peek()
        if depth > MAX_DEPTH:
            raise ZcpError(f"expression nested deeper than {MAX_DEPTH} at column {col}")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ZcpError(f"expression has more than {MAX_NODES} nodes at column {col}")
        self.i += 1
        if kind == "number":
            try:
                return constant(float(token), expected)
            except ZcpError as e:
                raise ZcpError(f"{e} at column {col}") from None
        if kind != "name":
            found = "the end" if kind == "end" else repr(token)
            raise ZcpError(f"expected a name or a number but found {found} at column {col}")
        if self.peek()[1] != "(":
            return self._terminal(token, expected, col)
        prim = self.registry.primitives.get(token)
        if prim is None:
            raise ZcpError(f"unknown primitive {token!r} at column {col}")
        if prim.ret is not expected:
            raise ZcpError(f"{token!r} returns {prim.ret.__name__} but {expected.__name__} is expected at column {col}")
        self.take("(")
        children = []
        for j, arg in enumerate(prim.args):
            if j:
                if self.peek()[1] == ")":
                    raise ZcpError(f"{token!r} takes {len(prim.args)} argument(s), got {j} at column {self.peek()[2]}")
                self.take(",")
            children.append(self.expression(arg, depth + 1))
        if self.peek()[1] == ",":
            raise ZcpError(f"{token!r} takes {len(prim.args)} argument(s), got more at column {self.peek()[2]}")
        self.take(")")
        return apply(prim, children)

    def _terminal(self, name: str, expected: type, col: int) -> Node:
        if name in self.registry.primitives:
            raise ZcpError(f"primitive {name!r} needs arguments at column {col}")
        if name not in self.terminals:
            raise ZcpError(f"unknown name {name!r} at column {col}")
        if self.terminals[name] is not expected:
            raise ZcpError(f"terminal {name!r} is {self.terminals[name].__name__} but {expected.__name__}"
                           f" is expected at column {col}")
        return terminal(name, expected)


def evaluate(node: Node, env: Mapping[str, Value], memo: dict[str, Value] | None = None,
             deadline: float | None = None) -> torch.Tensor:
    """The (N,) float64 scores of the networks in ``env`` (terminal name -> value of many networks).

    Terminal values are clamped into [-1e150, 1e150]. ``memo`` (subtree text -> value) may be kept
    across many expressions over the same ``env`` so shared subtrees are computed once; it must be
    emptied when ``env`` changes. NaN entries mean "undefined". A failing primitive, a missing
    terminal or a wrong type raises EvaluationError; passing ``deadline`` (a ``time.monotonic()``
    value) raises TimeLimitExceeded when a primitive is about to start after it.
    """
    if node.type is not NetScalar:
        raise EvaluationError(f"the root of {_short(node.text)} is {node.type.__name__}, not NetScalar")
    n, device = _network_count(env)
    out = _evaluate(node, env, {} if memo is None else memo, Rows.networks(n, device), deadline)
    if out.data.shape != (n,):
        raise EvaluationError(f"{_short(node.text)} gave {tuple(out.data.shape)} scores for {n} networks")
    return out.data


def _network_count(env: Mapping[str, Value]) -> tuple[int, torch.device]:
    value = next(iter(env.values()), None)
    if value is None:
        raise EvaluationError("the environment has no terminal values: the number of networks is unknown")
    return (len(value.data) if isinstance(value, NetScalar) else value.rows.n), value.data.device


def _evaluate(node: Node, env: Mapping[str, Value], memo: dict[str, Value], networks: Rows,
              deadline: float | None) -> Value:
    if node.value is not None:
        return constant_value(node.value, node.type, networks)
    if node.text in memo:
        return memo[node.text]
    if node.prim is None:
        if node.name not in env:
            raise EvaluationError(f"terminal {node.name!r} has no value in the environment")
        value = env[node.name]
        if not isinstance(value, node.type):
            raise EvaluationError(f"terminal {node.name!r} holds a {type(value).__name__}, not a {node.type.__name__}")
        value = clamp_value(value)
    else:
        args = [_evaluate(c, env, memo, networks, deadline) for c in node.children]
        if deadline is not None and time.monotonic() > deadline:
            raise TimeLimitExceeded(f"time limit exceeded before {node.name} in {_short(node.text)}")
        try:
            value = node.prim.fn(*args)
        except Exception as e:  # any failure of a primitive is this expression's failure
            detail = str(e).splitlines()[0] if str(e) else ""
            raise EvaluationError(f"{node.name} failed in {_short(node.text)}: {type(e).__name__}: {detail}") from e
        if not isinstance(value, node.type):
            raise EvaluationError(f"{node.name} returned {type(value).__name__}, not {node.type.__name__}"
                                  f" in {_short(node.text)}")
    memo[node.text] = value
    return value


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def to_sympy(node: Node) -> sympy.Expr:
    """The sympy form of ``node``: terminals are Symbols, constants Floats, primitives their sym form."""
    if node.value is not None:
        return sympy.Float(node.value)
    if node.prim is None:
        return sympy.Symbol(node.name)
    return node.prim.sym(*(to_sympy(c) for c in node.children))
