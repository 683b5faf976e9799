"""The GP engine: safe generation, limits, text round trips, determinism, resume, hall of fame."""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from deap import gp

from evaluation.errors import ZcpError
from gp.config import GPConfig
from gp.engine import Evolution
from gp.halloffame import HallOfFame, canonical_form
from gp.operators import Operators, generate
from gp.pset import build_pset, from_text, text_size, to_text
from primitives.expression import parse, to_string
from primitives.functions import REGISTRY
from primitives.ops import layer_sum
from primitives.terminals import terminal_types
from primitives.types import NetScalar, RowScalar, Vector

TYPES = terminal_types()
PSET = build_pset(REGISTRY, TYPES)
SMALL = GPConfig(population=20, generations=5, hall_of_fame=8, max_height=6, max_size=20)


def fake_fitness(texts: list[str]) -> list[float]:
    """Deterministic in the text alone (in every process): a hash in [0, 1) minus a size penalty."""
    return [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) / 2**32 - 0.01 * t.count("(") for t in texts]


def run(config: GPConfig = SMALL, evaluate=fake_fitness, steps: int = 5) -> Evolution:
    engine = Evolution(REGISTRY, TYPES, config, evaluate)
    engine.initialise()
    for _ in range(steps):
        engine.step()
    return engine


def round_trips(text: str) -> bool:
    return to_string(parse(text, REGISTRY, TYPES)) == text and to_text(from_text(text, PSET)) == text


def test_generation_never_fails_on_the_full_language() -> None:
    ops = Operators(PSET, GPConfig())
    for seed in range(300):
        random.seed(seed)
        text = ops.random_text()
        tree = from_text(text, PSET)
        assert to_text(tree) == text and tree.height <= GPConfig().init_max_depth and len(tree) <= GPConfig().max_size
        for t in (NetScalar, RowScalar, Vector):  # the subtree generator of mutation, every shape
            generate(PSET, 0, 3, t, method=random.choice((gp.genFull, gp.genGrow)))


def test_index_error_is_retried_and_impossible_sets_fail_clearly() -> None:
    # RowScalar has a terminal but no primitive: DEAP fails whenever the drawn height exceeds 1
    pset = gp.PrimitiveSetTyped("t", [], NetScalar)
    pset.addPrimitive(layer_sum, [RowScalar], NetScalar, name="layer_sum")
    pset.addTerminal("params", NetScalar, name="params")
    pset.addTerminal("snip", RowScalar, name="snip")
    failures = 0
    for seed in range(100):
        random.seed(seed)
        try:
            gp.genFull(pset, 1, 3)
        except IndexError:
            failures += 1
        random.seed(seed)
        tree = gp.PrimitiveTree(generate(pset, 1, 3, method=gp.genFull))
        assert str(tree) == "layer_sum(snip)"
    assert failures > 20
    vector_only = gp.PrimitiveSetTyped("v", [], NetScalar)
    vector_only.addPrimitive(lambda v: v, [Vector], NetScalar, name="f")
    with pytest.raises(ZcpError, match="could not generate"):
        generate(vector_only, 1, 2)


def test_limits_round_trips_and_one_evaluation_per_expression() -> None:
    seen: list[str] = []

    def evaluate(texts: list[str]) -> list[float]:
        for text in texts:
            tree = from_text(text, PSET)
            assert tree.height <= SMALL.max_height and len(tree) <= SMALL.max_size and text_size(text) == len(tree)
        seen.extend(texts)
        return fake_fitness(texts)

    engine = run(evaluate=evaluate, steps=8)
    assert len(seen) == len(set(seen)) == len(engine.memo)
    assert all(round_trips(t) for t in seen)
    assert any("." in t for t in seen)  # constants took part (and printed as plain floats)
    assert set(engine.population) <= set(seen) and len(engine.population) == SMALL.population
    assert engine.fitnesses == fake_fitness(engine.population)


def test_offspring_are_new_expressions() -> None:
    """A converging population still spends each generation on expressions not evaluated before."""
    config = dataclasses.replace(SMALL, population=60, tournament_size=7)
    engine = Evolution(REGISTRY, TYPES, config, fake_fitness)
    engine.initialise()
    for _ in range(10):
        known = set(engine.memo)
        stats = engine.step()
        bred = engine.population[config.elitism:]
        assert len(set(bred)) == len(bred) and not set(bred) & known
        assert stats["evaluations"] == len(bred) and stats["diversity"] == 1.0


def test_same_seed_same_run_and_different_seeds_differ() -> None:
    a, b = run(), run()
    assert a.population == b.population and a.hall_of_fame.entries() == b.hall_of_fame.entries()
    assert a.state() == b.state()
    other = run(dataclasses.replace(SMALL, seed=1))
    assert other.population != a.population


def test_resume_from_json_at_every_generation_equals_the_uninterrupted_run() -> None:
    engine = Evolution(REGISTRY, TYPES, SMALL, fake_fitness)
    engine.initialise()
    states = [json.dumps(engine.state())]
    stats = []
    for _ in range(5):
        stats.append(engine.step())
        states.append(json.dumps(engine.state()))
    for k in range(5):
        resumed = Evolution.from_state(json.loads(states[k]), REGISTRY, TYPES, SMALL, fake_fitness)
        got = resumed.step()
        assert json.dumps(resumed.state()) == states[k + 1]
        assert {**got, "seconds": 0} == {**stats[k], "seconds": 0}


def test_other_users_of_random_change_nothing() -> None:
    quiet = run()
    engine = Evolution(REGISTRY, TYPES, SMALL, fake_fitness)
    random.seed(123)
    engine.initialise()
    for _ in range(5):
        random.random()
        before = random.getstate()
        engine.step()
        assert random.getstate() == before  # and the engine leaves the caller's stream alone
    assert engine.state() == quiet.state()


def test_same_run_in_another_process() -> None:
    """Class addresses and string hashes differ between processes; the run must not."""
    script = textwrap.dedent(f"""
        import hashlib, json
        _shift = [object() for _ in range(30000)]  # moves the heap, so classes land elsewhere
        from gp.config import GPConfig
        from gp.engine import Evolution
        from primitives.functions import REGISTRY
        from primitives.terminals import terminal_types
        {textwrap.indent(inspect.getsource(fake_fitness), ' ' * 8).strip()}
        e = Evolution(REGISTRY, terminal_types(), GPConfig(**{dataclasses.asdict(SMALL)!r}), fake_fitness)
        e.initialise()
        for _ in range(5):
            e.step()
        print(json.dumps(e.state()))
    """)
    env = {**os.environ, "PYTHONHASHSEED": "4321"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).resolve().parents[1], check=True).stdout
    assert json.loads(out) == json.loads(json.dumps(run().state()))


def test_worst_values_keep_the_run_going() -> None:
    def harsh(texts: list[str]) -> list[float]:
        return [-2.0 if "m_" in t or "v_" in t else f for t, f in zip(texts, fake_fitness(texts))]

    engine = run(evaluate=harsh, steps=6)
    assert engine.generation == 6 and len(engine.population) == SMALL.population
    assert -2.0 in engine.memo.values()
    assert all(e["fitness"] > -2.0 for e in engine.hall_of_fame.entries())


def test_hall_of_fame_merges_equivalent_expressions() -> None:
    hof = HallOfFame(3, lambda t: canonical_form(t, REGISTRY, TYPES))
    hof.update([("n_add(params, flops)", 0.5), ("n_add(flops, params)", 0.5), ("layer_sum(add(snip, fan_in))", 0.4),
                ("layer_sum(add(fan_in, snip))", 0.45), ("n_mul(2.0, params)", 0.1)], generation=1)
    assert [e["expression"] for e in hof.entries()] == ["n_add(flops, params)", "layer_sum(add(fan_in, snip))",
                                                         "n_mul(2.0, params)"]
    hof.update([("n_mul(params, 2.0)", 0.3), ("depth", 0.05), ("flops", 0.9)], generation=2)
    entries = hof.entries()
    assert [(e["expression"], e["generation"], e["size"]) for e in entries] == [
        ("flops", 2, 1), ("n_add(flops, params)", 1, 3), ("layer_sum(add(fan_in, snip))", 1, 4)]
    assert entries[1]["canonical"] == "flops + params"
    again = HallOfFame.from_state(json.loads(json.dumps(hof.state())), 3, lambda t: canonical_form(t, REGISTRY, TYPES))
    assert again.entries() == entries


@pytest.mark.parametrize("text", ["__import__('os').system('touch MARKER')", "eval('params')", "params; import os",
                                  "n_add(params, __import__)", "lambda: 0", "n_add(params, flops) + 1", "1e999"])
def test_from_text_rejects_hostile_text(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ZcpError):
        from_text(text, PSET)
    assert not (tmp_path / "MARKER").exists()


def test_misuse_is_refused() -> None:
    with pytest.raises(ValueError, match="elitism"):
        GPConfig(population=4, elitism=4)
    with pytest.raises(RuntimeError, match="initialise"):
        Evolution(REGISTRY, TYPES, SMALL, fake_fitness).step()
    with pytest.raises(ZcpError, match="non-finite"):
        Evolution(REGISTRY, TYPES, SMALL, lambda texts: [float("nan")] * len(texts)).initialise()


def test_initial_expressions_open_generation_zero() -> None:
    seeds = ("layer_sum(v_min(chan_corr_eig))", "n_mul(params, 2)")
    engine = Evolution(REGISTRY, TYPES, dataclasses.replace(SMALL, initial_expressions=seeds), fake_fitness)
    engine.initialise()
    assert engine.population[:2] == ["layer_sum(v_min(chan_corr_eig))", "n_mul(params, 2.0)"]
    assert len(engine.population) == SMALL.population
    deep = "n_log(" * 10 + "params" + ")" * 10
    with pytest.raises(ZcpError, match="exceeds max_height"):
        Evolution(REGISTRY, TYPES, dataclasses.replace(SMALL, initial_expressions=(deep,)), fake_fitness).initialise()
    with pytest.raises(ValueError, match="fewer initial_expressions"):
        dataclasses.replace(SMALL, population=2, elitism=1, initial_expressions=("params", "flops"))
