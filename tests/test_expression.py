"""The expression language: parse / print round trips, rejection of bad text, evaluation, memo, sympy."""
from __future__ import annotations

import functools
import math
import random
from collections import Counter

import pytest
import sympy
import torch
from deap import gp

from evaluation.errors import ZcpError
from primitives.expression import (MAX_DEPTH, EvaluationError, Node, apply, constant, evaluate, parse,
                                   random_expression, terminal, terminals_of, to_string, to_sympy)
from primitives.registry import BIG, Primitive, Registry, default_registry
from primitives.types import DTYPE, Matrix, NetScalar, Rows, RowScalar, Vector

REG = default_registry()
TERMS = {"code_kernel": Matrix, "chan_corr": Matrix, "act_sv": Vector, "chan_corr_eig": Vector,
         "act_norm": RowScalar, "logit_std": RowScalar, "curv": NetScalar}
COUNTS = [1, 3, 7]


def make_env(seed: int = 0) -> dict:
    """Terminal values of three networks with 1, 3 and 7 layers; some entries are 0 or +-1e150."""
    g = torch.Generator().manual_seed(seed)
    layers, nets = Rows.from_counts(COUNTS), Rows.networks(len(COUNTS))

    def rand(*shape: int) -> torch.Tensor:
        x = torch.randn(*shape, generator=g, dtype=DTYPE)
        pick = torch.rand(*shape, generator=g)
        return torch.where(pick < 0.1, 0.0, torch.where(pick > 0.95, BIG * x.sign(), x))

    mask = torch.arange(5) < torch.randint(0, 6, (11, 1), generator=g)
    return {"code_kernel": Matrix(rand(3, 4, 4), nets), "chan_corr": Matrix(rand(11, 4, 4), layers),
            "act_sv": Vector(torch.where(mask, rand(11, 5), 0.0), mask, layers),
            "chan_corr_eig": Vector(rand(3, 4), torch.ones(3, 4, dtype=torch.bool), nets),
            "act_norm": RowScalar(rand(11), layers), "logit_std": RowScalar(rand(3), nets), "curv": NetScalar(rand(3))}


def _depth(node: Node) -> int:
    return 1 + max((_depth(c) for c in node.children), default=0)


RNG = random.Random(0)
TEXTS = [random_expression(REG, TERMS, RNG, max_depth=7) for _ in range(150)]
TREES = [parse(text, REG, TERMS) for text in TEXTS]


def test_round_trip_on_random_trees() -> None:
    assert max(_depth(t) for t in TREES) == 7 and any("." in text for text in TEXTS)  # deep, with constants
    for text, tree in zip(TEXTS, TREES):
        assert to_string(tree) == text and parse(to_string(tree), REG, TERMS) == tree
        assert terminals_of(tree) <= set(TERMS) and _depth(tree) <= 7


def test_terminals_of() -> None:
    tree = parse("n_add(layer_sum(mul(0.5, act_norm)), n_mul(curv, layer_max(v_min(m_eig(chan_corr)))))", REG, TERMS)
    assert terminals_of(tree) == {"act_norm", "curv", "chan_corr"}


def test_round_trip_on_deap_strings() -> None:
    """Strings printed by DEAP's typed GP over the registry parse back to the same text."""
    pset = gp.PrimitiveSetTyped("proxy", list(TERMS.values()), NetScalar)
    pset.renameArguments(**{f"ARG{i}": name for i, name in enumerate(TERMS)})
    for p in REG.primitives.values():
        pset.addPrimitive(p.fn, list(p.args), p.ret, name=p.name)
    rng = random.Random(0)
    for e in REG.ephemerals.values():
        pset.addEphemeralConstant(f"test_{e.name}", functools.partial(e.gen, rng), e.type)
    random.seed(1)  # DEAP's generators draw from the global random module
    texts = [str(gp.PrimitiveTree(gp.genHalfAndHalf(pset, 1, 5))) for _ in range(150)]
    assert any("." in t for t in texts)  # constants were printed and parsed
    for text in texts:
        assert to_string(parse(text, REG, TERMS)) == text


def test_random_trees_evaluate_to_finite_scores() -> None:
    env, memo = make_env(), {}
    for tree in TREES:
        out = evaluate(tree, env, memo)
        assert out.shape == (3,) and out.dtype == DTYPE and torch.isfinite(out).all(), to_string(tree)
    for tree in TREES[:20]:
        assert torch.equal(evaluate(tree, env), evaluate(tree, env, memo))


@pytest.mark.parametrize("text, fragment", [
    ("", "empty expression"),
    ("   ", "empty expression"),
    ("layer_sum(chan_corr)", "terminal 'chan_corr' is Matrix but RowScalar is expected at column 11"),
    ("v_min(act_sv)", "'v_min' returns RowScalar but NetScalar is expected at column 1"),
    ("act_norm", "terminal 'act_norm' is RowScalar but NetScalar is expected at column 1"),
    ("foo(curv)", "unknown primitive 'foo' at column 1"),
    ("layer_sum(bar)", "unknown name 'bar' at column 11"),
    ("layer_sum(log)", "primitive 'log' needs arguments at column 11"),
    ("layer_sum(add(act_norm))", "'add' takes 2 argument(s), got 1 at column 23"),
    ("layer_sum(log(act_norm, act_norm))", "'log' takes 1 argument(s), got more at column 23"),
    ("layer_sum()", "expected a name or a number but found ')' at column 11"),
    ("layer_sum(act_norm", "expected ')' but found the end at column 19"),
    ("layer_sum(act_norm))", "unexpected ')' after the expression at column 20"),
    ("layer_sum(act_norm) curv", "unexpected 'curv' after the expression at column 21"),
    ("n_add(curv curv)", "expected ',' but found 'curv' at column 12"),
    ("layer_sum(m_trace(0.5))", "a number cannot be a Matrix at column 19"),
    ("n_add(1e999, curv)", "outside [-1e+150, 1e+150] at column 7"),
    ("n_add(nan, curv)", "unknown name 'nan'"),
    ("n_neg(-curv)", "unexpected character '-' at column 7"),
    ("n_neg(curv)\nimport os", "unexpected 'import' after the expression at column 13"),
    ("n_neg(" * (MAX_DEPTH + 50) + "curv" + ")" * (MAX_DEPTH + 50), f"nested deeper than {MAX_DEPTH}"),
])
def test_bad_text_is_one_line_error(text: str, fragment: str) -> None:
    with pytest.raises(ZcpError) as info:
        parse(text, REG, TERMS)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_nesting_up_to_the_limit_parses() -> None:
    text = "n_neg(" * (MAX_DEPTH - 1) + "curv" + ")" * (MAX_DEPTH - 1)
    assert to_string(parse(text, REG, TERMS)) == text


def test_literals_take_the_slot_type() -> None:
    tree = parse("n_add(layer_sum(mul(0.5, act_norm)), -2.0)", REG, TERMS)
    assert tree.children[1] == constant(-2.0, NetScalar)
    assert tree.children[0].children[0].children[0] == constant(0.5, RowScalar)
    assert to_string(parse("n_mul(1e-05, 3.0)", REG, TERMS)) == "n_mul(1e-05, 3.0)"


HOSTILE = [
    "__import__('os').system('touch MARKER')",
    "exec(\"open('MARKER', 'w')\")",
    "exec(curv)",
    "layer_sum(exec)",
    "eval",
    "n_add(curv, __import__)",
    "curv; open('MARKER', 'w')",
    "lambda: open('MARKER', 'w')",
    "[c for c in ().__class__.__bases__]",
    "n_neg(curv)#",
    "n_neg(\x00curv)",
    "n_neg(cürv)",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_is_rejected_and_never_run(text: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ZcpError) as info:
        parse(text, REG, TERMS)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "MARKER").exists()


def test_non_string_is_rejected() -> None:
    with pytest.raises(ZcpError, match="must be a string"):
        parse(b"curv", REG, TERMS)  # type: ignore[arg-type]


def test_memo_reuses_shared_subtrees() -> None:
    calls: Counter = Counter()
    reg = Registry()
    for name in ("m_eig", "v_min", "log", "layer_sum", "layer_mean", "n_add"):
        p = REG.primitives[name]

        @functools.wraps(p.fn)
        def counted(*args, _fn=p.fn, _name=name):
            calls[_name] += 1
            return _fn(*args)
        reg.register(name, counted, p.args, p.ret, p.sym, p.doc)
    texts = ["layer_sum(log(v_min(m_eig(chan_corr))))", "layer_mean(log(v_min(m_eig(chan_corr))))",
             "n_add(layer_sum(v_min(m_eig(chan_corr))), curv)"]
    trees, env = [parse(t, reg, TERMS) for t in texts], make_env()
    calls.clear()
    plain = [evaluate(t, env) for t in trees]
    assert sum(calls.values()) == 12
    calls.clear()
    memo: dict = {}
    shared = [evaluate(t, env, memo) for t in trees]
    assert sum(calls.values()) == 7 and calls["m_eig"] == 1
    assert all(torch.equal(a, b) for a, b in zip(plain, shared))


def test_naswot_like_logdet_of_a_hand_made_kernel() -> None:
    kernels = torch.tensor([[[3.0, 1.0], [1.0, 3.0]], [[2.0, 0.0], [0.0, 5.0]]], dtype=DTYPE)
    env = {"code_kernel": Matrix(kernels, Rows.networks(2))}
    out = evaluate(parse("layer_sum(m_logdet(code_kernel))", REG, TERMS), env)
    assert out.tolist() == pytest.approx([math.log(8.0), math.log(10.0)], rel=1e-14)


def test_dextr_like_fusion_of_a_hand_made_env() -> None:
    """S = log(1 + sum of 1/cond), K = log(1 + curv), score = S*K/(S+K)."""
    mats = torch.diag_embed(torch.tensor([[4.0, 1.0], [1.0, 1.0], [2.0, 1.0]], dtype=DTYPE))
    env = {"chan_corr": Matrix(mats, Rows.from_counts([1, 2])),
           "curv": NetScalar(torch.tensor([3.0, 1.0], dtype=DTYPE))}
    s = "n_log(n_add(1.0, layer_sum(reciprocal(m_cond(chan_corr)))))"
    k = "n_log(n_add(1.0, curv))"
    out = evaluate(parse(f"n_div(n_mul({s}, {k}), n_add({s}, {k}))", REG, TERMS), env)
    S, K = [math.log(1.25), math.log(2.5)], [math.log(4.0), math.log(2.0)]
    assert out.tolist() == pytest.approx([a * b / (a + b) for a, b in zip(S, K)], rel=1e-14)


def test_nan_sentinel_stays_in_its_network_and_terminals_are_clamped() -> None:
    env = make_env()
    data = env["act_norm"].data.clone()
    data[5] = math.nan  # a layer of network 2 (rows 4..10)
    data[0] = math.inf
    env["act_norm"] = RowScalar(data, env["act_norm"].rows)
    out = evaluate(parse("layer_sum(act_norm)", REG, TERMS), env)
    assert out[0].item() == BIG and torch.isfinite(out[1]) and out[2].isnan()


def _env_rows() -> dict:
    return {"curv": NetScalar(torch.ones(2, dtype=DTYPE)),
            "act_norm": RowScalar(torch.ones(3, dtype=DTYPE), Rows.from_counts([1, 2])),
            "logit_std": RowScalar(torch.ones(3, dtype=DTYPE), Rows.from_counts([2, 1]))}


def test_evaluation_failures_are_clear_errors() -> None:
    boom = Primitive("boom", lambda x: (_ for _ in ()).throw(RuntimeError("kaput\nsecond line")), (NetScalar,),
                     NetScalar, sympy.Function("boom"), "always fails")
    liar = Primitive("liar", lambda x: RowScalar(x.data, Rows.networks(len(x.data))), (NetScalar,), NetScalar,
                     sympy.Function("liar"), "returns the wrong type")
    env = _env_rows()
    cases = [
        (apply(boom, [terminal("curv", NetScalar)]), env, "boom failed in boom(curv): RuntimeError: kaput"),
        (apply(liar, [terminal("curv", NetScalar)]), env, "liar returned RowScalar, not NetScalar"),
        (parse("layer_sum(add(act_norm, logit_std))", REG, TERMS), env, "different layer layouts"),
        (parse("layer_sum(act_sv_missing)", REG, {"act_sv_missing": RowScalar}), env, "has no value"),
        (parse("layer_sum(v_sum(act_sv))", REG, TERMS), {"act_sv": env["act_norm"]}, "holds a RowScalar, not a Vector"),
        (terminal("act_norm", RowScalar), env, "not NetScalar"),
        (parse("n_neg(curv)", REG, TERMS), {}, "number of networks is unknown"),
    ]
    for node, e, fragment in cases:
        with pytest.raises(EvaluationError) as info:
            evaluate(node, e)
        assert fragment in str(info.value) and "\n" not in str(info.value)


def test_to_sympy() -> None:
    tree = parse("layer_sum(log(v_min(chan_corr_eig)))", REG, TERMS)
    x = sympy.Symbol("chan_corr_eig")
    v_min, layer_sum = sympy.Function("v_min"), sympy.Function("layer_sum")
    assert to_sympy(tree) == layer_sum(sympy.log(sympy.Abs(v_min(x))))
    total = layer_sum(sympy.Symbol("act_norm"))
    expr = to_sympy(parse("n_add(n_mul(0.5, layer_sum(act_norm)), layer_sum(act_norm))", REG, TERMS))
    assert sympy.simplify(expr - 1.5 * total) == 0
    assert to_sympy(parse("n_div(curv, n_sigmoid(curv))", REG, TERMS)).free_symbols == {sympy.Symbol("curv")}
