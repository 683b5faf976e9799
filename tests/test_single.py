"""Single-terminal expressions (gp/single.py): derived from the registry's type signatures, every
terminal covered, every string a type-correct tree of the campaign's primitive set."""
from collections import Counter

import pytest
from deap import gp

from gp.pset import build_pset, from_text
from gp.single import casts, negation, single_terminal_expressions
from primitives.expression import parse, terminals_of
from primitives.functions import REGISTRY
from primitives.ops import PRIMITIVES
from primitives.registry import Registry
from primitives.terminals import GROUPS, terminal_types
from primitives.types import Matrix, NetScalar, RowScalar, Vector


@pytest.mark.parametrize("group", ["base", "all"])
def test_every_terminal_gets_type_correct_single_terminal_trees(group):
    types = terminal_types(GROUPS[group])
    pset = build_pset(REGISTRY, types)
    singles = single_terminal_expressions(REGISTRY, types)
    assert list(singles) == sorted(types)
    for name, texts in singles.items():
        assert texts and len(set(texts)) == len(texts)
        for text in texts:
            tree = gp.PrimitiveTree.from_string(text, pset)  # DEAP's own typed parser: a well-typed tree
            assert str(tree) == text and tree.root.ret is NetScalar
            assert from_text(text, pset) == tree
            assert terminals_of(parse(text, REGISTRY, types)) == {name}


def test_the_standard_registry_gives_the_documented_shortest_chains():
    singles = single_terminal_expressions(REGISTRY, terminal_types(GROUPS["base"]))
    per_type = Counter(terminal_types(GROUPS["base"]).values())
    expected = 2 * (per_type[NetScalar] + 5 * per_type[RowScalar] + 25 * per_type[Vector] + 30 * per_type[Matrix])
    assert sum(map(len, singles.values())) == expected == 1352  # the module docstring's count
    assert singles["params"] == ["params", "n_neg(params)"]
    assert "layer_sum(v_min(chan_corr_eig))" in singles["chan_corr_eig"]  # MeCo (layers)
    assert "layer_sum(m_logdet(code_kernel))" in singles["code_kernel"]  # NASWOT
    assert "n_neg(layer_wsum(v_std(weight_sv)))" in singles["weight_sv"]
    assert not any("m_eig(" in t for t in singles["code_kernel"])  # one cast longer than m_logdet: not shortest
    assert not any("log(" in t or "m_corr(" in t for texts in singles.values() for t in texts)  # not casts
    assert negation(REGISTRY).name == "n_neg"
    assert {p.name for p in casts(REGISTRY)} >= {"m_eig", "m_logdet", "v_min", "layer_sum"}


def _registry(names: list[str]) -> Registry:
    """A registry of some standard primitives (their declared types taken from the standard one)."""
    registry = Registry()
    for name in names:
        prim = REGISTRY.primitives[name]
        registry.register(name, PRIMITIVES[name], prim.args, prim.ret, prim.sym, prim.doc)
    return registry


def test_the_rule_follows_the_registry_not_a_list():
    types = {"k": Matrix, "spectrum": Vector, "s": RowScalar}
    # no Matrix -> RowScalar primitive: the matrix goes through m_eig; no one-step negation: no negated forms
    small = _registry(["m_eig", "v_min", "v_max", "layer_sum", "n_sub", "log"])
    assert negation(small) is None
    assert single_terminal_expressions(small, types) == {
        "k": ["layer_sum(v_max(m_eig(k)))", "layer_sum(v_min(m_eig(k)))"],
        "s": ["layer_sum(s)"],
        "spectrum": ["layer_sum(v_max(spectrum))", "layer_sum(v_min(spectrum))"]}
    # a Matrix -> RowScalar primitive makes the matrix chains shorter; n_neg adds the negations
    more = _registry(["m_eig", "m_trace", "v_min", "layer_sum", "n_neg"])
    assert single_terminal_expressions(more, {"k": Matrix}) == {
        "k": ["layer_sum(m_trace(k))", "n_neg(layer_sum(m_trace(k)))"]}
    # a terminal no cast chain takes to a network score gets none
    assert single_terminal_expressions(_registry(["layer_sum"]), {"spectrum": Vector}) == {"spectrum": []}
