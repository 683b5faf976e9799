"""The island model (gp/islands.py): split, migration, one memo, determinism, resume, serial == Ray,
a dead actor, a tiny island campaign, and the config error for more islands than individuals."""
from __future__ import annotations

import dataclasses
import json
from collections import Counter

import pytest

from evaluation.errors import ZcpError
from experiments import campaign, heldout
from experiments.campaigns import CONFIGS
from experiments.config import load_config
from gp.config import GPConfig
from gp.engine import Evolution
from gp.islands import Islands, island_configs
from primitives.functions import REGISTRY
from primitives.terminals import terminal_types
from tests.campaigns import assert_one_line_config_error, interrupt_at, tiny_config
from gp.pset import text_size
from tests.test_gp import SMALL, fake_fitness

TYPES = terminal_types()
ISLANDS = dataclasses.replace(SMALL, population=62, islands=3, migration_interval=2, migrants=2)
ISLAND_KEYS = ["gp.islands=3", "gp.migration_interval=2", "gp.migrants=2"]


class Counted:
    """fake_fitness that records every expression it scores."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, texts: list[str]) -> list[float]:
        self.seen.extend(texts)
        return fake_fitness(texts)


def _setup(evaluate=fake_fitness):
    return lambda: (REGISTRY, TYPES, evaluate)


def _run(config: GPConfig = ISLANDS, steps: int = 6, evaluate=fake_fitness) -> tuple[Islands, list[dict]]:
    engine = Islands(REGISTRY, TYPES, config, _setup(evaluate))
    lines = [engine.initialise()] + [engine.step() for _ in range(steps)]
    return engine, lines


def _no_seconds(line: dict) -> dict:
    return {k: v for k, v in line.items() if k != "seconds"}


def test_population_is_split_over_islands_with_their_own_seeds() -> None:
    configs = island_configs(ISLANDS)
    assert [c.population for c in configs] == [21, 21, 20] and all(c.islands == 1 for c in configs)
    assert len({c.seed for c in configs}) == 3 and ISLANDS.seed not in {c.seed for c in configs}
    assert {c.seed for c in island_configs(dataclasses.replace(ISLANDS, seed=1))}.isdisjoint(c.seed for c in configs)
    engine, lines = _run(steps=0)
    assert [len(s["population"]) for s in engine.state()["islands"]] == [21, 21, 20]
    assert lines[0]["generation"] == 0 and len(lines[0]["islands"]) == 3


def test_one_memo_and_log_lines() -> None:
    counted = Counted()
    engine, lines = _run(evaluate=counted)
    duplicates = Counter(counted.seen)
    # an expression is scored again only when two islands met it first in the same generation
    assert len(counted.seen) == len(engine.memo) + sum(line["duplicates"] for line in lines)
    assert sum(n - 1 for n in duplicates.values()) == sum(line["duplicates"] for line in lines)
    assert sum(line["evaluations"] for line in lines) == len(engine.memo)
    for line in lines:
        assert {"best", "median", "mean_size", "diversity", "evaluations", "duplicates", "migrated"} <= set(line)
        assert line["best"] == max(i["best"] for i in line["islands"]) and 0 < line["diversity"] <= 1
    assert [line["migrated"] for line in lines] == [False, False, True, False, True, False, True]
    best = max(engine.memo, key=lambda t: (engine.memo[t], -len(t)))
    assert engine.hall_of_fame.entries()[0]["fitness"] == engine.memo[best]


def test_migrants_replace_the_worst_of_the_next_island() -> None:
    engine, _ = _run(steps=1)
    state = json.loads(json.dumps(engine.state()))
    assert engine.step()["migrated"]  # generation 2
    # the same generation without migration: the populations the migrants left and arrived in
    still = Islands.from_state(state, REGISTRY, TYPES, dataclasses.replace(ISLANDS, migrants=0), _setup())
    assert not still.step()["migrated"]
    bred, got = still.state()["islands"], engine.state()["islands"]
    for i in range(3):
        sender, island = bred[(i - 1) % 3], bred[i]
        fitness = dict(zip(sender["population"], sender["fitnesses"]))
        best = sorted(set(sender["population"]), key=lambda t: (-fitness[t], text_size(t), t))[:2]
        incoming = [t for t in best if t not in island["population"]]
        pop, fit = island["population"], island["fitnesses"]
        worst = sorted(range(len(pop)), key=lambda j: (fit[j], -text_size(pop[j]), pop[j]))
        expected = list(pop)
        for j, text in zip(worst, incoming):
            expected[j] = text
        assert got[i]["population"] == expected and got[i]["fitnesses"] == [engine.memo[t] for t in expected]
        assert got[i]["random"] == island["random"]  # migration draws no random numbers


def test_same_seed_same_run_other_seed_differs_and_islands_1_is_evolution() -> None:
    a, lines_a = _run()
    b, lines_b = _run()
    assert a.state() == b.state() and list(map(_no_seconds, lines_a)) == list(map(_no_seconds, lines_b))
    c, _ = _run(dataclasses.replace(ISLANDS, seed=1))
    assert c.state()["memo"] != a.state()["memo"]
    with pytest.raises(ValueError, match="islands >= 2"):
        Islands(REGISTRY, TYPES, SMALL, _setup())
    # islands = 1 (the default) leaves a config, and so a run, exactly as before the island model
    assert GPConfig().islands == 1 and dataclasses.replace(SMALL, islands=1) == SMALL


def test_ray_islands_join_on_the_configured_node_address(monkeypatch) -> None:
    """A cached campaign starts Ray first in the island engine: it must join on [parallel]
    node_ip_address like the cache build and the evaluator do."""
    calls = []

    def fake_start_ray(*args, **kwargs):
        calls.append((args, kwargs))
        raise RuntimeError("stop here")

    monkeypatch.setattr("gp.islands.start_ray", fake_start_ray)
    with pytest.raises(RuntimeError, match="stop here"):
        Islands(REGISTRY, TYPES, ISLANDS, _setup(), "ray", 2, "10.0.0.1:6379", "10.0.0.5")
    with pytest.raises(RuntimeError, match="stop here"):
        Islands.from_state({}, REGISTRY, TYPES, ISLANDS, _setup(), "ray", 2, "10.0.0.1:6379", "10.0.0.5")
    assert calls == [((2, "10.0.0.1:6379"), {"node_ip": "10.0.0.5"})] * 2


def test_resume_from_json_at_every_generation_equals_the_uninterrupted_run() -> None:
    engine = Islands(REGISTRY, TYPES, ISLANDS, _setup())
    engine.initialise()
    states, lines = [json.dumps(engine.state())], []
    for _ in range(5):
        lines.append(engine.step())
        states.append(json.dumps(engine.state()))
    for k in range(5):
        resumed = Islands.from_state(json.loads(states[k]), REGISTRY, TYPES, ISLANDS, _setup())
        assert _no_seconds(resumed.step()) == _no_seconds(lines[k])
        assert json.dumps(resumed.state()) == states[k + 1]


def test_malformed_island_state_is_one_line() -> None:
    engine, _ = _run(steps=1)
    good = engine.state()
    for bad, match in [({**good, "islands": good["islands"][:2]}, "holds 2 islands, the config 3"),
                       ({**good, "memo": {"__import__('os')": 0.1}}, "unexpected character"),
                       ({k: v for k, v in good.items() if k != "memo"}, "island state is malformed"),
                       ({**good, "islands": [{"population": ["params"]}] * 3}, "malformed")]:
        with pytest.raises(ZcpError, match=match) as info:
            Islands.from_state(bad, REGISTRY, TYPES, ISLANDS, _setup())
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("text,match", [
    ("[gp]\npopulation = 4\nislands = 5\n", r"\[gp\] islands \(5\) is larger than population \(4, the total"),
    ("[gp]\npopulation = 10\nislands = 0\n", "islands must be >= 1"),
    ("[gp]\npopulation = 10\nislands = 6\n", "population must be at least 2 per island"),
    ("[gp]\npopulation = 40\nislands = 4\nmigrants = 10\n", "need 0 <= migrants < population \\(per island\\)"),
    ("[gp]\nislands = 2\nmigration_interval = 0\n", "migration_interval must be >= 1"),
])
def test_bad_island_configs_are_one_line_errors(text, match):
    assert_one_line_config_error(text, match)


# ------------------------------------------------------------------------ tiny island campaigns

@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("caches")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cache_dir):
    """A tiny serial island campaign: 3 islands, 24 individuals in all, 6 generations."""
    tmp = tmp_path_factory.mktemp("run")
    record = campaign.start(tiny_config(tmp, cache_dir, generations=6), tmp / "run", progress=False,
                            overrides=ISLAND_KEYS)
    return tmp / "run", record


def _log(run_dir) -> list[dict]:
    return [_no_seconds(json.loads(line)) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_tiny_island_campaign(finished):
    run_dir, record = finished
    log = _log(run_dir)
    assert [line["generation"] for line in log] == list(range(7)) and all(len(line["islands"]) == 3 for line in log)
    assert record["status"] == "finished" and record["evaluations"] == sum(line["evaluations"] for line in log)
    assert set(record["entries"][0]["heldout"]["cifar10"]) == {"kendall", "spearman"}
    checkpoint = json.loads((run_dir / "checkpoint.json").read_text())["engine"]
    assert len(checkpoint["islands"]) == 3 and "memo" not in checkpoint["islands"][0]


def test_fitness_png_has_diversity_and_tree_size_panels(finished, tmp_path):
    import matplotlib.pyplot as plt

    panels = []
    real_savefig = plt.Figure.savefig

    def savefig(fig, path, *args, **kwargs):
        if str(path).endswith("fitness.png"):
            panels.extend(ax.get_ylabel() for ax in fig.axes)
        return real_savefig(fig, path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plt.Figure, "savefig", savefig)
        heldout.report([finished[0]], tmp_path / "out", stratified_n=6, resamples=20, scores_dir=tmp_path / "s")
    assert panels == ["search fitness (Kendall tau)", "diversity (distinct expressions / population)",
                      "mean tree size (nodes)"]
    assert (tmp_path / "out" / "fitness.png").stat().st_size > 0


def test_interrupted_island_campaign_resumes_to_the_same_result(finished, tmp_path, cache_dir, monkeypatch):
    interrupt_at(monkeypatch, Islands, 3)
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt, match="keeps the checkpoint of generation 3"):
        campaign.start(tiny_config(tmp_path, cache_dir, generations=6), run_dir, progress=False, overrides=ISLAND_KEYS)
    monkeypatch.undo()
    record = campaign.resume(run_dir, progress=False)
    assert record["entries"] == finished[1]["entries"] and _log(run_dir) == _log(finished[0])


def test_serial_and_ray_islands_are_identical_also_after_an_actor_dies(tmp_path, cache_dir, capfd):
    import ray

    config = load_config(tiny_config(tmp_path, cache_dir, generations=6), ISLAND_KEYS)
    prepared = campaign.prepare(config, tmp_path / "p", progress=False, splits=("search",))
    payload = campaign.search_payload(config, prepared)
    types = terminal_types(prepared.terminals)
    serial = Islands(REGISTRY, types, config.gp, payload.evolution_setup)
    try:
        on_ray = Islands(REGISTRY, types, config.gp, payload.evolution_setup, "ray", 2)
        assert len(on_ray._hosts) == 2  # islands 0 and 2 on one actor, island 1 on the other
        for generation in range(5):
            if generation == 3:
                ray.kill(on_ray._hosts[1])
            a = serial.initialise() if generation == 0 else serial.step()
            b = on_ray.initialise() if generation == 0 else on_ray.step()
            assert _no_seconds(a) == _no_seconds(b) and serial.state() == on_ray.state()
        assert capfd.readouterr().err.count("a Ray worker died") == 1
        on_ray.close()
    finally:
        ray.shutdown()


def test_islands_1_campaign_uses_one_population(finished, tmp_path, cache_dir):
    config = load_config(tiny_config(tmp_path, cache_dir))
    prepared = campaign.prepare(config, tmp_path / "p", progress=False, splits=("search",))
    payload = campaign.search_payload(config, prepared)
    engine, _, close = campaign._engine(config, payload, terminal_types(prepared.terminals))
    close()
    assert type(engine) is Evolution


def test_the_islands_protocol_config_has_a_50k_budget():
    config = load_config(CONFIGS / "tss-cifar10-islands.toml")
    gp = config.gp
    assert gp.islands == 4 and config.sample.search_n == 1000
    assert gp.population + gp.generations * (gp.population - gp.islands * gp.elitism) >= 50_000
