"""The primitive registry and the standard set: contracts on hypothesis inputs, references, checks."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import sympy
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sympy.core.function import AppliedUndef

from primitives.registry import (BIG, TINY, RegistrationError, Registry, Value, bad_networks, check_reachability,
                                 default_registry, shape_problem)
from primitives.types import DTYPE, TYPES, Matrix, NetScalar, Rows, RowScalar, Vector

REG = default_registry()
P = {name: prim.fn for name, prim in REG.primitives.items()}
NAN = math.nan
SPECIAL = [0.0, -0.0, BIG, -BIG, TINY, -TINY, 1.0, -1.0, 1e-300, NAN]
CONTRACT = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))


def _is_elementwise(name: str) -> bool:
    prim = REG.primitives[name]
    return not prim.sym(*sympy.symbols(f"x0:{len(prim.args)}")).atoms(AppliedUndef)


ELEMENTWISE = sorted(n for n in REG.primitives if _is_elementwise(n))


def make(t: type, rows: Rows, data: np.ndarray, lengths: np.ndarray | None = None) -> Value:
    """A value of type ``t``; a Vector keeps the first ``lengths[r]`` entries of row r (padding zeroed)."""
    x = torch.tensor(data, dtype=DTYPE)
    if t is NetScalar:
        return NetScalar(x)
    if t is Vector:
        mask = torch.arange(x.shape[1]) < torch.as_tensor(lengths)[:, None]
        return Vector(torch.where(mask, x, 0.0), mask, rows)
    return t(x, rows)


@st.composite
def arguments(draw: st.DrawFn, types: tuple[type, ...]) -> list:
    """Values of ``types`` over one random ragged layout: each on layer or network rows, with entries
    mixing zeros, +-1e150, +-1e-150, NaN and normal numbers at a random scale."""
    counts = draw(st.lists(st.integers(0, 4), min_size=1, max_size=4))
    layer, net = Rows.from_counts(counts), Rows.networks(len(counts))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    specials = draw(st.lists(st.sampled_from(SPECIAL), max_size=4))
    scale = draw(st.sampled_from([0.0, TINY, 1e-5, 1.0, 1e5, BIG]))
    share = draw(st.sampled_from([0.0, 0.3, 1.0])) if specials else 0.0
    side = draw(st.integers(1, 4))
    values = []
    for t in types:
        rows = layer if t is NetScalar or draw(st.booleans()) else net
        r = len(rows.seg)
        width = draw(st.integers(1, 4))
        shape = {NetScalar: (rows.n,), RowScalar: (r,), Vector: (r, width), Matrix: (r, side, side)}[t]
        data = np.clip(rng.standard_normal(shape) * scale, -BIG, BIG)
        data = np.where(rng.random(shape) < share, rng.choice(specials or [0.0], size=shape), data)
        values.append(make(t, rows, data, rng.integers(0, shape[-1] + 1, size=r) if t is Vector else None))
    return values


@pytest.mark.parametrize("name", sorted(REG.primitives))
def test_contract_on_hypothesis_inputs(name: str) -> None:
    """Declared type, consistent shapes on the widest rows, in range, NaN only in NaN-fed networks."""
    prim = REG.primitives[name]

    @CONTRACT
    @given(arguments(prim.args))
    def check(values: list) -> None:
        n = len(values[0].data) if isinstance(values[0], NetScalar) else values[0].rows.n
        out = prim.fn(*values)
        assert isinstance(out, prim.ret)
        assert shape_problem(out, n) is None
        if not isinstance(out, NetScalar):  # the layer rows when an argument has them, else network rows
            layers = [v.rows for v in values if not isinstance(v, NetScalar) and not v.rows.is_network]
            assert len(out.rows.seg) == (len(layers[0].seg) if layers else n)
        if isinstance(out, Vector):
            assert (out.data[~out.mask] == 0).all()
        tainted = torch.stack([bad_networks(v, n) for v in values]).any(0)
        assert not (bad_networks(out, n) & ~tainted).any()
        finite = out.data[torch.isfinite(out.data)]
        assert finite.numel() == 0 or finite.abs().max() <= BIG

    check()


def _samples(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Magnitudes in [0.1, 10] with random signs: away from every protection threshold."""
    return rng.choice([-1.0, 1.0], size=shape) * 10 ** rng.uniform(-1, 1, size=shape)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_sympy_form_matches_implementation(name: str) -> None:
    prim = REG.primitives[name]
    rng = np.random.default_rng(0)
    rows = Rows.from_counts([1, 3, 7])
    shape = {NetScalar: (3,), RowScalar: (11,), Vector: (11, 3), Matrix: (11, 3, 3)}[prim.args[0]]
    arrays = [_samples(rng, shape) for _ in prim.args]
    values = [make(t, rows, a, np.full(11, 3)) for t, a in zip(prim.args, arrays)]
    symbols = sympy.symbols(f"x0:{len(prim.args)}")
    expected = sympy.lambdify(symbols, prim.sym(*symbols), "numpy")(*arrays)
    np.testing.assert_allclose(prim.fn(*values).data.numpy(), np.broadcast_to(expected, shape), rtol=1e-12)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_keeps_nan_where_it_was(name: str) -> None:
    prim = REG.primitives[name]
    rng = np.random.default_rng(1)
    rows = Rows.from_counts([1, 3, 7])
    shape = {NetScalar: (3,), RowScalar: (11,), Vector: (11, 3), Matrix: (11, 3, 3)}[prim.args[0]]
    arrays = [np.where(rng.random(shape) < 0.3, NAN, rng.choice([0.0, BIG, -TINY], size=shape)) for _ in prim.args]
    out = prim.fn(*[make(t, rows, a, np.full(11, 3)) for t, a in zip(prim.args, arrays)]).data.numpy()
    assert np.array_equal(np.isnan(out), np.logical_or.reduce([np.isnan(a) for a in arrays]))


@pytest.mark.parametrize("name, args, expected", [
    ("log", [0.0], 0.0), ("log", [1e-151], 0.0), ("log", [-math.e], 1.0), ("log", [TINY], math.log(TINY)),
    ("sqrt", [-4.0], 2.0), ("exp", [BIG], BIG), ("exp", [-BIG], 0.0),
    ("reciprocal", [0.0], 0.0), ("reciprocal", [-1e-151], 0.0), ("reciprocal", [TINY], BIG),
    ("div", [5.0, 0.0], 1.0), ("div", [BIG, TINY], BIG), ("div", [-BIG, 0.5], -BIG),
    ("mul", [BIG, -BIG], -BIG), ("add", [BIG, BIG], BIG), ("sub", [-BIG, BIG], -BIG),
    ("sigmoid", [-BIG], 0.0), ("sigmoid", [0.0], 0.5), ("abs", [-2.0], 2.0), ("neg", [2.0], -2.0),
])
def test_protection_rules(name: str, args: list[float], expected: float) -> None:
    rows = Rows.networks(1)
    out = P[name](*[RowScalar(torch.tensor([a], dtype=DTYPE), rows) for a in args]).data.item()
    assert out == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------- structural references

COUNTS = [1, 3, 7]
LAYERS = Rows.from_counts(COUNTS)


def _matrices(n: int = 4, seed: int = 0) -> tuple[np.ndarray, Matrix]:
    a = np.random.default_rng(seed).standard_normal((sum(COUNTS), n, n))
    return a, Matrix(torch.tensor(a), LAYERS)


@pytest.mark.parametrize("name, reference", [
    ("m_eig", lambda a: np.linalg.eigvalsh((a + a.T) / 2)),
    ("m_svd", lambda a: np.linalg.svd(a, compute_uv=False)),
    ("m_diag", np.diag),
    ("m_fro", lambda a: np.linalg.norm(a, "fro")),
    ("m_nuc", lambda a: np.linalg.norm(a, "nuc")),
    ("m_spec", lambda a: np.linalg.norm(a, 2)),
    ("m_cond", np.linalg.cond),
    ("m_trace", np.trace),
    ("m_logdet", lambda a: np.linalg.slogdet((a + a.T) / 2)[1]),
    ("m_corr", np.corrcoef),
])
def test_matrix_functions_match_numpy(name: str, reference) -> None:
    a, m = _matrices()
    out = P[name](m)
    assert out.rows is m.rows
    np.testing.assert_allclose(out.data.numpy(), np.stack([reference(x) for x in a]), rtol=1e-10, atol=1e-12)


def test_singular_value_functions_share_one_svd_per_matrix(monkeypatch) -> None:
    import primitives.ops as ops
    calls = []
    monkeypatch.setattr(ops.torch.linalg, "svdvals", lambda a: calls.append(a) or torch.linalg.svd(a).S)
    a, m = _matrices(seed=2)
    first = {name: P[name](m).data for name in ("m_svd", "m_nuc", "m_spec", "m_cond")}
    assert len(calls) == 1
    assert all(torch.equal(P[name](m).data, value) for name, value in first.items()) and len(calls) == 1
    np.testing.assert_allclose(P["m_nuc"](Matrix(m.data * 2, LAYERS)).data.numpy(), 2 * first["m_nuc"].numpy())
    assert len(calls) == 2  # another Matrix, another SVD


def test_matrix_functions_are_scale_robust_and_protected() -> None:
    a, m = _matrices(seed=1)
    huge = Matrix(m.data * 1e140, LAYERS)
    np.testing.assert_allclose(P["m_eig"](huge).data.numpy(), P["m_eig"](m).data.numpy() * 1e140, rtol=1e-10)
    np.testing.assert_allclose(P["m_logdet"](Matrix(m.data * 1e-100, LAYERS)).data.numpy(),
                               P["m_logdet"](m).data.numpy() + 4 * math.log(1e-100), rtol=1e-10)
    np.testing.assert_allclose(P["m_corr"](huge).data.numpy(), np.stack([np.corrcoef(x) for x in a]), atol=1e-10)
    singular = Matrix(torch.tensor([[[1.0, 2.0], [2.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]], dtype=DTYPE), Rows.networks(2))
    assert P["m_logdet"](singular).data.tolist() == [-BIG, -BIG]
    assert P["m_cond"](singular).data[1].item() == BIG and P["m_cond"](singular).data[0].item() > 1e15
    corr = P["m_corr"](singular).data  # constant rows correlate 0 with everything, themselves included
    assert torch.equal(corr[1], torch.zeros(2, 2, dtype=DTYPE))


def test_nan_matrix_only_spoils_its_own_row() -> None:
    a, m = _matrices()
    data = m.data.clone()
    data[2, 0, 1] = NAN
    for name in ("m_eig", "m_svd", "m_logdet", "m_cond", "m_corr"):
        out, ref = P[name](Matrix(data, LAYERS)).data, P[name](m).data
        assert out[2].isnan().all()
        keep = torch.arange(len(data)) != 2
        assert torch.allclose(out[keep], ref[keep])


def _garbage_vector() -> tuple[list[list[float]], Vector]:
    """Rows of lengths 3, 0, 5, 1 and 2 whose padding holds garbage (1e100 and NaN)."""
    rng = np.random.default_rng(3)
    lengths = [3, 0, 5, 1, 2]
    data = np.where(rng.random((5, 5)) < 0.5, 1e100, NAN)
    rows = [list(rng.standard_normal(k)) for k in lengths]
    for r, real in enumerate(rows):
        data[r, :len(real)] = real
    mask = torch.arange(5) < torch.tensor(lengths)[:, None]
    return rows, Vector(torch.tensor(data), mask, Rows.from_counts([2, 3]))


@pytest.mark.parametrize("name, reference", [
    ("v_sum", np.sum), ("v_mean", np.mean), ("v_min", np.min), ("v_max", np.max), ("v_std", np.std),
])
def test_vector_reductions_ignore_padding(name: str, reference) -> None:
    rows, v = _garbage_vector()
    expected = [reference(r) if r else 0.0 for r in rows]
    np.testing.assert_allclose(P[name](v).data.numpy(), expected, rtol=1e-12, atol=1e-15)


def test_elementwise_vector_ops_ignore_padding() -> None:
    _, v = _garbage_vector()
    out = P["v_log"](v)
    assert torch.equal(out.mask, v.mask) and torch.isfinite(out.data).all()
    assert (out.data[~v.mask] == 0).all()


@pytest.mark.parametrize("name, reference", [
    ("layer_sum", lambda x, p: x.sum()), ("layer_mean", lambda x, p: x.mean()), ("layer_min", lambda x, p: x.min()),
    ("layer_max", lambda x, p: x.max()), ("layer_wsum", lambda x, p: (x * p).sum()),
])
def test_layer_reductions_per_network(name: str, reference) -> None:
    counts = [1, 3, 0, 7]
    rows = Rows.from_counts(counts)
    x = np.random.default_rng(4).standard_normal(sum(counts))
    bounds = np.cumsum([0, *counts])
    expected = [reference(x[s:e], np.linspace(0, 1, e - s) if e - s > 1 else np.zeros(e - s)) if e > s else 0.0
                for s, e in zip(bounds[:-1], bounds[1:])]
    np.testing.assert_allclose(P[name](RowScalar(torch.tensor(x), rows)).data.numpy(), expected, rtol=1e-12)


# ----------------------------------------------------------------------------- broadcasting

def test_network_rows_broadcast_onto_layer_rows() -> None:
    net, layer = Rows.networks(3), LAYERS
    a = torch.tensor([1.0, 10.0, 100.0], dtype=DTYPE)
    b = torch.arange(11, dtype=DTYPE)
    for out in (P["add"](RowScalar(a, net), RowScalar(b, layer)), P["add"](RowScalar(b, layer), RowScalar(a, net))):
        assert out.rows is layer and torch.equal(out.data, a[layer.seg] + b)
    mats = P["m_mul"](Matrix(a[:, None, None].expand(3, 2, 2), net), Matrix(torch.ones(11, 2, 2, dtype=DTYPE), layer))
    assert torch.equal(mats.data[:, 0, 0], a[layer.seg])


def test_vectors_of_different_widths_pad_with_and_mask() -> None:
    rows = Rows.networks(2)
    a = Vector(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 0.0]], dtype=DTYPE),
               torch.tensor([[True, True, True], [True, True, False]]), rows)
    b = Vector(torch.tensor([[10.0], [20.0]], dtype=DTYPE), torch.tensor([[True], [False]]), rows)
    out = P["v_add"](a, b)
    assert out.mask.tolist() == [[True, False, False], [False, False, False]]
    assert out.data.tolist() == [[11.0, 0.0, 0.0], [0.0, 0.0, 0.0]]


def test_different_layer_layouts_do_not_combine() -> None:
    x = RowScalar(torch.zeros(3, dtype=DTYPE), Rows.from_counts([1, 2]))
    y = RowScalar(torch.zeros(3, dtype=DTYPE), Rows.from_counts([2, 1]))
    with pytest.raises(ValueError, match="layouts"):
        P["add"](x, y)


# ----------------------------------------------------------------------------- registration checks

def _ident(x: RowScalar) -> RowScalar:
    return RowScalar(x.data.clone(), x.rows)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(fn=lambda x, y: x), "does not take 1 argument"),
    (dict(sym=lambda x, y: x), "sympy form does not take"),
    (dict(sym=lambda x: 1.0), "not a sympy expression"),
    (dict(fn=lambda x: RowScalar(torch.log(x.data), x.rows)), "non-finite output"),
    (dict(fn=lambda x: RowScalar(x.data * 10, x.rows)), "outside"),
    (dict(fn=lambda x: NetScalar(x.data)), "returned NetScalar, declared RowScalar"),
    (dict(fn=lambda x: RowScalar(x.data[:1], x.rows)), "data shape"),
    (dict(fn=lambda x: RowScalar(x.data.float(), x.rows)), "dtype"),
    (dict(fn=lambda x: 1 / 0), "raised ZeroDivisionError"),
    (dict(args=(float,)), "is not one of"),
    (dict(name="bad-name"), "not an ASCII identifier"),
    (dict(name="log"), "already registered"),
])
def test_registration_rejects_bad_entries(kwargs: dict, fragment: str) -> None:
    reg = Registry()
    reg.register("log", _ident, (RowScalar,), RowScalar, sympy.log, "a good entry")
    entry = dict(name="bad", fn=_ident, args=(RowScalar,), ret=RowScalar, sym=lambda x: x, doc="") | kwargs
    with pytest.raises(RegistrationError, match=fragment) as info:
        reg.register(**entry)
    assert repr(entry["name"]) in str(info.value) and "\n" not in str(info.value)
    assert list(reg.primitives) == ["log"]


def test_registry_views_are_read_only_and_declarations_checked() -> None:
    reg = Registry()
    reg.register("ident", _ident, (RowScalar,), RowScalar, lambda x: x, "identity: NaN in, NaN out is fine")
    with pytest.raises(TypeError):
        reg.primitives["other"] = reg.primitives["ident"]  # type: ignore[index]
    for call, fragment in [
        (lambda: reg.add_ephemeral("ident", RowScalar, lambda r: 1.0, ""), "already registered"),
        (lambda: reg.add_ephemeral("c", Matrix, lambda r: 1.0, ""), "RowScalar or NetScalar"),
        (lambda: reg.add_ephemeral("c", RowScalar, lambda r: 1, ""), "not a finite float"),
        (lambda: reg.add_ephemeral("c", RowScalar, lambda r: np.float64(1.0), ""), "not a finite float"),
        (lambda: reg.add_ephemeral("c", NetScalar, lambda r: NAN, ""), "not a finite float"),
    ]:
        with pytest.raises(RegistrationError, match=fragment):
            call()


def test_default_ephemerals_give_short_floats() -> None:
    rng = random.Random(5)
    for eph in REG.ephemerals.values():
        v = eph.gen(rng)
        assert type(v) is float and -2 <= v <= 2 and repr(v) == repr(round(v, 2))
    assert {e.type for e in REG.ephemerals.values()} == {RowScalar, NetScalar}


def test_reachability() -> None:
    check_reachability(REG, [Matrix, Vector])
    with pytest.raises(RegistrationError, match="Matrix is unreachable: no terminal"):
        check_reachability(REG, [Vector])
    reg = Registry()
    reg.register("layer_sum", P["layer_sum"], (RowScalar,), NetScalar, sympy.Function("layer_sum"), "")
    with pytest.raises(RegistrationError, match="RowScalar is unreachable: no primitive returns it"):
        check_reachability(reg, TYPES)
