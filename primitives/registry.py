"""One registry of the proxy language: primitives and ephemeral constants.

A primitive is pure tensor math on the value types of :mod:`primitives.types` (float64, vectorised
over the rows of many networks). :meth:`Registry.register` checks every entry when it is added: the
arity of the implementation and of its sympy form, the types, and that on edge inputs of its
argument types (zeros, 1e150, 1e-150, negative, mixed, on layer and on network rows, with a NaN) it
returns its declared type, well shaped, finite and within [-BIG, BIG], except NaN in networks whose
inputs had a NaN. NaN is the language's one sentinel: "undefined", mapped to worst fitness later.

The GP engine reads the registry through :attr:`Registry.primitives` and :attr:`Registry.ephemerals`
(read-only mappings of frozen entries: names, arg and return types). The terminals (the language's
inputs, with their types) are catalogued in :mod:`primitives.terminals`.
"""
from __future__ import annotations

import inspect
import itertools
import math
import random
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import sympy
import torch

from evaluation.errors import ZcpError
from primitives.types import BIG, DTYPE, TINY, TYPES, Matrix, NetScalar, Rows, RowScalar, Value, Vector

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SCALAR_TYPES = (RowScalar, NetScalar)
"""The types that numeric literals and ephemeral constants may have."""


class RegistrationError(ZcpError):
    """A primitive, terminal or ephemeral constant that breaks the registry's rules."""


@dataclass(frozen=True)
class Primitive:
    """``fn(*values) -> value`` with ``args`` types and ``ret`` type; ``sym`` builds its sympy form."""

    name: str
    fn: Callable[..., Value]
    args: tuple[type, ...]
    ret: type
    sym: Callable[..., sympy.Expr]
    doc: str


@dataclass(frozen=True)
class Ephemeral:
    """A random constant of a scalar type: ``gen(rng)`` returns a Python float."""

    name: str
    type: type
    gen: Callable[[random.Random], float]
    doc: str


def bad_networks(value: Value, n: int) -> torch.Tensor:
    """(n,) bool: the networks with a non-finite entry anywhere in their rows of ``value``."""
    if isinstance(value, NetScalar):
        return ~torch.isfinite(value.data)
    finite = torch.isfinite(value.data)
    bad_rows = ~(finite.flatten(1).all(1) if finite.ndim > 1 else finite)
    out = torch.zeros(n, dtype=torch.bool, device=value.data.device)
    out[value.rows.seg[bad_rows]] = True
    return out


def shape_problem(value: Value, n: int) -> str | None:
    """What is wrong with the dtype or shapes of ``value`` for ``n`` networks, or None."""
    if value.data.dtype != DTYPE:
        return f"dtype {value.data.dtype} instead of {DTYPE}"
    if isinstance(value, NetScalar):
        return None if value.data.shape == (n,) else f"data shape {tuple(value.data.shape)} instead of ({n},)"
    rows = len(value.rows.seg)
    want = {RowScalar: (rows,), Vector: (rows, value.data.shape[-1]),
            Matrix: (rows, value.data.shape[-1], value.data.shape[-1])}[type(value)]
    if value.rows.n != n or value.data.shape != want:
        return f"data shape {tuple(value.data.shape)} over {rows} rows of {value.rows.n} networks"
    if isinstance(value, Vector) and (value.mask.dtype != torch.bool or value.mask.shape != value.data.shape):
        return "Vector mask is not a bool tensor shaped like its data"
    return None


class Registry:
    """Primitives and ephemeral constants under unique names."""

    def __init__(self) -> None:
        self._primitives: dict[str, Primitive] = {}
        self._ephemerals: dict[str, Ephemeral] = {}

    @property
    def primitives(self) -> Mapping[str, Primitive]:
        """Read-only name -> primitive (for the GP engine: ``args`` and ``ret`` types)."""
        return MappingProxyType(self._primitives)

    @property
    def ephemerals(self) -> Mapping[str, Ephemeral]:
        """Read-only name -> ephemeral constant generator."""
        return MappingProxyType(self._ephemerals)

    def register(self, name: str, fn: Callable[..., Value], args: Iterable[type], ret: type,
                 sym: Callable[..., sympy.Expr], doc: str) -> Primitive:
        """Check a primitive (see the module docstring) and add it; RegistrationError names it if bad."""
        prim = Primitive(name, fn, tuple(args), ret, sym, doc)
        self._check_name(name, "primitive")
        for t in (*prim.args, ret):
            if t not in TYPES:
                raise RegistrationError(f"primitive {name!r}: type {t!r} is not one of primitives.types.TYPES")
        for what, f in (("implementation", fn), ("sympy form", sym)):
            if not _accepts(f, len(prim.args)):
                raise RegistrationError(f"primitive {name!r}: its {what} does not take {len(prim.args)} argument(s)")
        try:
            form = sym(*sympy.symbols(f"x0:{len(prim.args)}"))
        except Exception as e:
            raise RegistrationError(f"primitive {name!r}: sympy form raised {type(e).__name__}: {e}") from e
        if not isinstance(form, sympy.Basic):
            raise RegistrationError(f"primitive {name!r}: sympy form returned {type(form).__name__},"
                                    " not a sympy expression")
        for label, values in _edge_cases(prim.args):
            problem = _check_output(prim, values)
            if problem:
                raise RegistrationError(f"primitive {name!r} on {label} inputs: {problem}")
        self._primitives[name] = prim
        return prim

    def add_ephemeral(self, name: str, type_: type, gen: Callable[[random.Random], float], doc: str) -> Ephemeral:
        """Add a random-constant generator for a scalar type; it must return a finite Python float."""
        self._check_name(name, "ephemeral constant")
        if type_ not in SCALAR_TYPES:
            raise RegistrationError(f"ephemeral constant {name!r}: type must be RowScalar or NetScalar, got {type_!r}")
        for seed in range(8):
            v = gen(random.Random(seed))
            if type(v) is not float or not math.isfinite(v) or abs(v) > BIG:
                raise RegistrationError(f"ephemeral constant {name!r}: generated {v!r}, not a finite float in range")
        self._ephemerals[name] = Ephemeral(name, type_, gen, doc)
        return self._ephemerals[name]

    def _check_name(self, name: str, kind: str) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise RegistrationError(f"{kind} name {name!r} is not an ASCII identifier")
        if name in self._primitives or name in self._ephemerals:
            raise RegistrationError(f"{kind} name {name!r} is already registered")


def check_reachability(registry: Registry, terminal_types: Iterable[type]) -> None:
    """Raise unless every type a NetScalar tree can need has a leaf and a primitive returning it.

    Typed GP grows a subtree of type T from a primitive returning T and must end it in a leaf of
    type T (a terminal of ``terminal_types`` or an ephemeral constant); otherwise DEAP fails.
    """
    leaves = set(terminal_types) | {e.type for e in registry.ephemerals.values()}
    needed, todo = set(), [NetScalar]
    while todo:
        t = todo.pop()
        if t in needed:
            continue
        needed.add(t)
        todo.extend(a for p in registry.primitives.values() if p.ret is t for a in p.args)
    for t in sorted(needed, key=lambda t: t.__name__):
        if t not in leaves:
            raise RegistrationError(f"type {t.__name__} is unreachable: no terminal or ephemeral constant has it")
        if not any(p.ret is t for p in registry.primitives.values()):
            raise RegistrationError(f"type {t.__name__} is unreachable: no primitive returns it")


def default_registry() -> Registry:
    """The registry holding the standard primitive set of :mod:`primitives.functions`."""
    from primitives import functions  # registers the standard set on first import
    return functions.REGISTRY


def _accepts(f: Callable, k: int) -> bool:
    try:
        inspect.signature(f).bind(*range(k))
    except TypeError:
        return False
    except ValueError:  # no signature to inspect (some builtins): trust the declaration
        return True
    return True


# ----------------------------------------------------------------------------- edge inputs

_COUNTS = [1, 3, 0, 2]  # ragged layer counts, with a network that has no layer
_ROWS = {True: Rows.from_counts(_COUNTS), False: Rows.networks(len(_COUNTS))}
_KINDS = {
    "zeros": [0.0],
    "huge": [BIG],
    "tiny": [TINY],
    "negative": [-BIG, -1.5, -TINY],
    "mixed": [0.0, BIG, -TINY, -3.5, TINY, -BIG, 2.0, 0.25],
}


def _edge_value(t: type, kind: str, layer: bool, slot: int, nan: bool) -> Value:
    """A value of type ``t`` filled with the ``kind`` pattern; ``nan`` puts a NaN in network 0."""
    rows = _ROWS[layer]
    r = len(rows.seg)
    shape = {NetScalar: (len(_COUNTS),), RowScalar: (r,), Vector: (r, 4 - 2 * slot), Matrix: (r, 3, 3)}[t]
    pattern = torch.tensor(_KINDS[kind], dtype=DTYPE)
    data = pattern[torch.arange(math.prod(shape)) % len(pattern)].reshape(shape)
    if nan:
        data.view(-1)[0] = math.nan  # row 0 belongs to network 0 in both layouts
    if t is NetScalar:
        return NetScalar(data)
    if t is Vector:  # ragged lengths, including empty rows
        mask = torch.arange(shape[1]) < (torch.arange(r) * 3 % (shape[1] + 1))[:, None]
        mask[0, 0] = True
        return Vector(torch.where(mask, data, 0.0), mask, rows)
    return t(data, rows)


def _edge_cases(args: tuple[type, ...]) -> Iterator[tuple[str, list[Value]]]:
    """Every combination of kinds on layer rows, the mixed kind on every layout, and NaN per slot."""
    for kinds in itertools.product(_KINDS, repeat=len(args)):
        yield "/".join(kinds), [_edge_value(t, k, True, i, False) for i, (t, k) in enumerate(zip(args, kinds))]
    for layers in itertools.product((True, False), repeat=len(args)):
        label = "mixed " + "/".join("layer-row" if l else "network-row" for l in layers)
        yield label, [_edge_value(t, "mixed", l, i, False) for i, (t, l) in enumerate(zip(args, layers))]
    for j in range(len(args)):
        yield f"mixed with NaN in argument {j}", [_edge_value(t, "mixed", True, i, i == j) for i, t in enumerate(args)]


def _check_output(prim: Primitive, values: list[Value]) -> str | None:
    """What is wrong with ``prim``'s output on ``values``, or None."""
    n = len(_COUNTS)
    try:
        out = prim.fn(*values)
    except Exception as e:
        return f"raised {type(e).__name__}: {e}"
    if not isinstance(out, prim.ret):
        return f"returned {type(out).__name__}, declared {prim.ret.__name__}"
    problem = shape_problem(out, n)
    if problem:
        return problem
    tainted = torch.stack([bad_networks(v, n) for v in values]).any(0)
    if (bad_networks(out, n) & ~tainted).any():
        return "non-finite output where no input was NaN"
    finite = out.data[torch.isfinite(out.data)]
    if finite.numel() and finite.abs().max() > BIG:
        return f"output {finite.abs().max().item():g} outside [-{BIG:g}, {BIG:g}]"
    return None
