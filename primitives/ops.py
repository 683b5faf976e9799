"""The standard primitive set: pure tensor implementations (torch only, no sympy, no project imports
beyond the value types), so the terminal cache and exported proxies run the very same code.
:mod:`primitives.functions` registers them with their sympy forms; :data:`PRIMITIVES` maps every
name to its implementation.

Naming: a name's prefix is the type of its (first) argument: none for RowScalar (``log``, ``add``),
``n_`` for NetScalar, ``v_`` for Vector, ``m_`` for Matrix; ``layer_`` marks the reductions of a
RowScalar over the layers of each network (-> NetScalar). Elementwise operations exist on every type
and return their argument type; ``m_eig``/``m_svd``/``m_diag`` return Vectors, ``m_corr`` a Matrix,
the other matrix functions and the ``v_`` reductions a RowScalar on the same rows.

Protection (gplearn style; every output is finite for finite inputs and clamped into
[-BIG, BIG] = [-1e150, 1e150], so a product of two values cannot overflow):

- ``log(x)`` = log|x|, and 0 where |x| < TINY (1e-150);  ``sqrt(x)`` = sqrt|x|;
- ``exp(x)`` = exp(min(x, log BIG)), so at most BIG;
- ``reciprocal(x)`` = 1/x, and 0 where |x| < TINY (as gplearn's ``inv``);
- ``div(a, b)`` = a/b, and 1 where |b| < TINY (as gplearn's ``div``);
- ``m_cond`` = sigma_max/sigma_min, BIG for a singular (or zero) matrix;
- ``m_logdet`` = log|det| of the symmetrised matrix, -BIG (= clamped log 0) for a singular one;
- ``m_corr``: a constant row has correlation 0 with every row, itself included (as MeCo does);
- reductions of an empty Vector row or of a network without rows give 0.

Sentinel: NaN means "undefined". It is never produced from finite inputs; elementwise operations
keep it where it was, reductions spread it to the row or network it belongs to, and matrix functions
return NaN for a matrix holding one (its other matrices are unaffected).

Binary operations accept a network-rows operand with a layer-rows one (broadcast through
``rows.seg``); Vectors of different widths are padded to the wider, with mask = AND.
"""
from __future__ import annotations

import functools
import math
import operator
import weakref
from collections.abc import Callable

import torch

from primitives.types import BIG, DTYPE, TINY, Matrix, NetScalar, Rows, RowScalar, Value, Vector

_LOG_BIG = math.log(BIG)


def _clamp(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(-BIG, BIG)


UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "log": lambda x: torch.where(x.abs() < TINY, 0.0, torch.log(x.abs())),
    "sqrt": lambda x: torch.sqrt(x.abs()),
    "exp": lambda x: _clamp(torch.exp(x.clamp(max=_LOG_BIG))),
    "reciprocal": lambda x: _clamp(torch.where(x.abs() < TINY, 0.0, 1.0 / x)),
    "abs": torch.abs,
    "neg": torch.neg,
    "sigmoid": torch.sigmoid,
}
BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "add": lambda a, b: _clamp(a + b),
    "sub": lambda a, b: _clamp(a - b),
    "mul": lambda a, b: _clamp(a * b),
    "div": lambda a, b: _clamp(torch.where(b.abs() < TINY, 1.0, a / b)),
}
PREFIX = {RowScalar: "", NetScalar: "n_", Vector: "v_", Matrix: "m_"}
"""The name prefix of the elementwise operations on each type."""


def _common_rows(a: Rows, b: Rows) -> tuple[Rows, torch.Tensor | None, torch.Tensor | None]:
    """The rows of a binary result and, per operand, the row gather onto them (None: as it is)."""
    if a is b or (a.n == b.n and torch.equal(a.seg, b.seg)):
        return a, None, None
    if a.n == b.n and a.is_network:
        return b, b.seg, None
    if a.n == b.n and b.is_network:
        return a, None, a.seg
    raise ValueError(f"cannot combine {len(a.seg)} rows of {a.n} networks with {len(b.seg)} rows of {b.n}:"
                     " different layer layouts")


def _gather(x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    return x if index is None else x[index]


def _widen(x: torch.Tensor, width: int, fill: float | bool) -> torch.Tensor:
    return torch.cat([x, x.new_full((x.shape[0], width - x.shape[1]), fill)], 1)


def _keep_nan(out: torch.Tensor, inputs: list[torch.Tensor]) -> torch.Tensor:
    nan = functools.reduce(operator.or_, (x.isnan() for x in inputs))
    return torch.where(nan, math.nan, out)


def _elementwise(f: Callable[..., torch.Tensor], t: type, arity: int) -> Callable[..., Value]:
    """Lift a tensor function to ``arity`` values of type ``t``, aligning rows and Vector widths."""
    def apply(*xs: Value) -> Value:
        if t is NetScalar:
            data = [x.data for x in xs]
            return NetScalar(_keep_nan(f(*data), data))
        rows, *index = (xs[0].rows, None) if arity == 1 else _common_rows(xs[0].rows, xs[1].rows)
        data = [_gather(x.data, i) for x, i in zip(xs, index)]
        if t is not Vector:
            return t(_keep_nan(f(*data), data), rows)
        width = max(d.shape[1] for d in data)
        data = [_widen(d, width, 0.0) for d in data]
        mask = functools.reduce(operator.and_, (_widen(_gather(x.mask, i), width, False) for x, i in zip(xs, index)))
        return Vector(torch.where(mask, _keep_nan(f(*data), data), 0.0), mask, rows)
    return (lambda x: apply(x)) if arity == 1 else (lambda a, b: apply(a, b))


# ----------------------------------------------------------------------------- matrices

def _scaled(m: Matrix) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A/s, s, bad): each matrix over its largest |entry| (s = 1 for a zero matrix), so LAPACK
    never sees huge or tiny numbers; matrices with a NaN (``bad``) are zeroed here."""
    bad = m.data.isnan().flatten(1).any(1)
    a = torch.where(bad[:, None, None], 0.0, m.data)
    s = a.abs().flatten(1).amax(1)
    s = torch.where(s > 0, s, 1.0)
    return a / s[:, None, None], s, bad


def _sym(a: torch.Tensor) -> torch.Tensor:
    return (a + a.transpose(-1, -2)) / 2


def _per_row(m: Matrix, out: torch.Tensor, bad: torch.Tensor) -> RowScalar:
    return RowScalar(_clamp(torch.where(bad, math.nan, out)), m.rows)


def _spectrum(m: Matrix, values: torch.Tensor, bad: torch.Tensor) -> Vector:
    values = _clamp(torch.where(bad[:, None], math.nan, values))
    return Vector(values, torch.ones_like(values, dtype=torch.bool), m.rows)


def m_eig(m: Matrix) -> Vector:
    """Eigenvalues of (A+A^T)/2, ascending."""
    a, s, bad = _scaled(m)
    return _spectrum(m, torch.linalg.eigvalsh(_sym(a)) * s[:, None], bad)


_SINGULAR: weakref.WeakKeyDictionary[Matrix, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = \
    weakref.WeakKeyDictionary()


def _singular(m: Matrix) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(singular values of A/s, s, bad) of :func:`_scaled`, computed once per Matrix (values are immutable):
    ``m_svd``, ``m_nuc``, ``m_spec`` and ``m_cond`` of a cached terminal share one SVD in a whole run."""
    found = _SINGULAR.get(m)
    if found is None:
        a, s, bad = _scaled(m)
        found = _SINGULAR[m] = (torch.linalg.svdvals(a), s, bad)
    return found


def m_svd(m: Matrix) -> Vector:
    """Singular values, descending."""
    sv, s, bad = _singular(m)
    return _spectrum(m, sv * s[:, None], bad)


def m_fro(m: Matrix) -> RowScalar:
    """Frobenius norm."""
    a, s, bad = _scaled(m)
    return _per_row(m, torch.linalg.matrix_norm(a) * s, bad)


def m_nuc(m: Matrix) -> RowScalar:
    """Nuclear norm (sum of singular values)."""
    sv, s, bad = _singular(m)
    return _per_row(m, sv.sum(-1) * s, bad)


def m_spec(m: Matrix) -> RowScalar:
    """Spectral norm (largest singular value)."""
    sv, s, bad = _singular(m)
    return _per_row(m, sv[:, 0] * s, bad)


def m_cond(m: Matrix) -> RowScalar:
    """Condition number sigma_max/sigma_min; 1e150 when singular."""
    sv, _, bad = _singular(m)
    return _per_row(m, torch.where(sv[:, -1] > 0, sv[:, 0] / sv[:, -1], BIG), bad)


def m_trace(m: Matrix) -> RowScalar:
    """Trace."""
    return RowScalar(_clamp(m.data.diagonal(dim1=-2, dim2=-1).sum(-1)), m.rows)


def m_logdet(m: Matrix) -> RowScalar:
    """Log|det| of (A+A^T)/2 (sign ignored, as NASWOT); -1e150 when singular."""
    a, s, bad = _scaled(m)
    logabs = torch.linalg.slogdet(_sym(a)).logabsdet
    out = torch.where(torch.isinf(logabs), -BIG, logabs + a.shape[-1] * torch.log(s))
    return _per_row(m, out, bad)


def m_corr(m: Matrix) -> Matrix:
    """Pearson correlation of the rows; 0 for a constant row."""
    a, _, bad = _scaled(m)
    c = a - a.mean(-1, keepdim=True)
    c = c / torch.where(c.abs().amax(-1, keepdim=True) > 0, c.abs().amax(-1, keepdim=True), 1.0)
    norm = torch.linalg.vector_norm(c, dim=-1)
    outer = norm[:, :, None] * norm[:, None, :]
    corr = torch.where(outer > 0, (c @ c.transpose(-1, -2)) / torch.where(outer > 0, outer, 1.0), 0.0)
    return Matrix(torch.where(bad[:, None, None], math.nan, corr.clamp(-1.0, 1.0)), m.rows)


def m_diag(m: Matrix) -> Vector:
    """Diagonal."""
    d = m.data.diagonal(dim1=-2, dim2=-1)
    return Vector(d.clone(), torch.ones_like(d, dtype=torch.bool), m.rows)


# ----------------------------------------------------------------------------- vector reductions

def _filled(v: Vector, fill: float) -> torch.Tensor:
    return torch.where(v.mask, v.data, fill)


def _count(v: Vector) -> torch.Tensor:
    return v.mask.sum(1).to(DTYPE)


def v_sum(v: Vector) -> RowScalar:
    """Sum of the entries (0 for an empty row)."""
    return RowScalar(_clamp(_filled(v, 0.0).sum(1)), v.rows)


def v_mean(v: Vector) -> RowScalar:
    """Mean of the entries (0 for an empty row)."""
    return RowScalar(_filled(v, 0.0).sum(1) / _count(v).clamp(min=1), v.rows)


def v_min(v: Vector) -> RowScalar:
    """Smallest entry (0 for an empty row)."""
    return RowScalar(torch.where(v.mask.any(1), _filled(v, math.inf).amin(1), 0.0), v.rows)


def v_max(v: Vector) -> RowScalar:
    """Largest entry (0 for an empty row)."""
    return RowScalar(torch.where(v.mask.any(1), _filled(v, -math.inf).amax(1), 0.0), v.rows)


def v_std(v: Vector) -> RowScalar:
    """Population standard deviation of the entries (0 for an empty row)."""
    scale = _filled(v, 0.0).abs().amax(1, keepdim=True)
    x = _filled(v, 0.0) / torch.where(scale > 0, scale, 1.0)  # scaled so squares cannot overflow
    count = _count(v).clamp(min=1)
    mean = x.sum(1, keepdim=True) / count[:, None]
    var = torch.where(v.mask, (x - mean) ** 2, 0.0).sum(1) / count
    return RowScalar(torch.sqrt(var) * scale[:, 0], v.rows)


# ----------------------------------------------------------------------------- layer reductions

def _layer_sum(x: RowScalar, data: torch.Tensor) -> torch.Tensor:
    return torch.zeros(x.rows.n, dtype=DTYPE, device=data.device).index_add_(0, x.rows.seg, data)


def _layer_extreme(x: RowScalar, how: str) -> NetScalar:
    out = torch.zeros(x.rows.n, dtype=DTYPE, device=x.data.device)
    return NetScalar(out.scatter_reduce_(0, x.rows.seg, x.data, how, include_self=False))


def layer_sum(x: RowScalar) -> NetScalar:
    """Sum over the layers of each network."""
    return NetScalar(_clamp(_layer_sum(x, x.data)))


def layer_mean(x: RowScalar) -> NetScalar:
    """Mean over the layers of each network (0 without layers)."""
    counts = torch.bincount(x.rows.seg, minlength=x.rows.n).to(DTYPE)
    return NetScalar(_layer_sum(x, x.data) / counts.clamp(min=1))


def layer_min(x: RowScalar) -> NetScalar:
    """Minimum over the layers of each network (0 without layers)."""
    return _layer_extreme(x, "amin")


def layer_max(x: RowScalar) -> NetScalar:
    """Maximum over the layers of each network (0 without layers)."""
    return _layer_extreme(x, "amax")


def layer_wsum(x: RowScalar) -> NetScalar:
    """Depth-weighted sum over the layers: sum of pos * x, pos in [0, 1]."""
    return NetScalar(_clamp(_layer_sum(x, x.rows.pos * x.data)))


NAMED = (m_eig, m_svd, m_fro, m_nuc, m_spec, m_cond, m_trace, m_logdet, m_corr, m_diag,
         v_sum, v_mean, v_min, v_max, v_std, layer_sum, layer_mean, layer_min, layer_max, layer_wsum)
"""The primitives that are not elementwise; their annotations are their language types."""


def standard_set() -> dict[str, Callable[..., Value]]:
    """Name -> implementation of every standard primitive, in registration order."""
    ops: dict[str, Callable[..., Value]] = {}
    for t, prefix in PREFIX.items():
        ops.update({prefix + name: _elementwise(f, t, 1) for name, f in UNARY.items()})
        ops.update({prefix + name: _elementwise(f, t, 2) for name, f in BINARY.items()})
    ops.update({fn.__name__: fn for fn in NAMED})
    return ops


PRIMITIVES = standard_set()
