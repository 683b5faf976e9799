"""Campaigns with several search targets: robust fitness (several search kinds, disjoint subsets) and
cross-space campaigns (TSS + SSS, one language, one hall of fame); held-out disjointness, serial ==
Ray, resume, export to both spaces, and the bad configs of both."""
import json

import numpy as np
import pytest
import torch

from evaluation.cache import load_cache
from evaluation.errors import ZcpError
from evaluation.evaluators import Evaluator
from evaluation.images import load_batch
from evaluation.paths import resolve_paths
from evaluation.samples import read_sample
from evaluation.spaces import get_space
from experiments import campaign, heldout, transfer
from experiments.config import parse_config
from gp.engine import Evolution
from gp.export import export_run, load_proxy
from primitives.expression import evaluate, parse
from primitives.functions import REGISTRY
from primitives.terminals import terminal_types
from tests.campaigns import assert_one_line_config_error, interrupt_at, tiny_config, write_table_without

ROBUST = ['sample.search_kind=["random", "stratified"]', "sample.search_n=[24, 20]", "sample.subsets=2", "sample.bins=4"]
ROBUST_TARGETS = ["cifar10/random/subset1of2", "cifar10/random/subset2of2",
                  "cifar10/stratified/subset1of2", "cifar10/stratified/subset2of2"]
GOALS = {"cifar10/random": 0.5, "cifar10/stratified": 0.7}
GOAL_SETTINGS = [*ROBUST, 'campaign.goals={"cifar10/random" = 0.5, "cifar10/stratified" = 0.7}']
CROSS = ['campaign.space=["tss", "sss"]']
GENERATIONS = 4


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("targets")


def _start(tmp, out, overrides, backend="serial"):
    (tmp / out).mkdir()
    config = tiny_config(tmp / out, tmp / "caches", generations=GENERATIONS, population=16, backend=backend)
    return campaign.start(config, tmp / out / "run", progress=False, overrides=overrides)


@pytest.fixture(scope="module")
def robust(tmp):
    return tmp / "robust" / "run", _start(tmp, "robust", ROBUST)


@pytest.fixture(scope="module")
def goals(tmp):
    return tmp / "goals" / "run", _start(tmp, "goals", GOAL_SETTINGS)


@pytest.fixture(scope="module")
def cross(tmp):
    return tmp / "cross" / "run", _start(tmp, "cross", CROSS)


def _log(run_dir):
    lines = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "seconds"} for line in lines]


def test_robust_fitness_is_the_minimum_and_the_log_names_the_limiting_target(robust):
    run_dir, record = robust
    for entry in record["entries"]:
        assert list(entry["search_targets"]) == ROBUST_TARGETS
        assert entry["fitness"] == pytest.approx(min(entry["search_targets"].values()))
        assert set(entry["heldout"]) == {"cifar10"}
    log = _log(run_dir)
    assert [line["generation"] for line in log] == list(range(GENERATIONS + 1))
    for line in log:
        assert list(line["targets"]) == ROBUST_TARGETS
        assert line["limiting"] == min(line["targets"], key=line["targets"].get)
        assert line["best"] == pytest.approx(line["targets"][line["limiting"]])
    assert record["search_n"] == [24, 20] and record["heldout_n"] == [12]  # one size per search kind


def test_goals_make_the_fitness_the_worst_margin_and_the_log_names_its_target(goals):
    run_dir, record = goals
    goal = {t: GOALS[t.rsplit("/", 1)[0]] for t in ROBUST_TARGETS}  # subsets share their sample's goal
    for entry in record["entries"]:
        margins = {t: v - goal[t] for t, v in entry["search_targets"].items()}
        assert entry["fitness"] == pytest.approx(min(margins.values()) + 0.7)
    for line in _log(run_dir):
        margins = {t: v - goal[t] for t, v in line["targets"].items()}
        assert line["limiting"] == min(margins, key=margins.get)
        assert line["best"] == pytest.approx(margins[line["limiting"]] + 0.7)
    assert 'goals = {"cifar10/random" = 0.5, "cifar10/stratified" = 0.7}' in (run_dir / "config.toml").read_text()


def test_goal_attainment_ranks_by_the_worst_margin_and_keeps_failures_worst():
    from evaluation.fitness import WORST, Fitness, Target, combined, limiting

    goals = (0.77, 0.83)
    balanced, random_side, stratified_side = (0.770, 0.850), (0.786, 0.823), (0.751, 0.873)
    assert combined(balanced, goals=goals) == pytest.approx(0.83)
    assert combined(balanced, goals=goals) > combined(random_side, goals=goals) > combined(stratified_side, goals=goals)
    assert combined(random_side) > combined(balanced) and combined(stratified_side, "mean") > combined(balanced, "mean")
    assert limiting(random_side, goals) == 1 and limiting(random_side) == 0
    assert combined((-1.0, -1.0), goals=(1.0, -1.0)) == -1.0  # the floor: above WORST and any cost penalty
    assert combined((0.9, WORST), goals=goals) == WORST and combined((0.9, WORST), "mean") == pytest.approx(-0.55)
    two = [Target(name, {}, np.zeros(3)) for name in ("a", "b")]
    with pytest.raises(ZcpError, match="1 goals for 2 targets"):
        Fitness(two, [], goals=(0.5,))


def _samples(run_dir):
    return {p.stem: read_sample(p) for p in (run_dir / "samples").glob("*.json")}


def test_heldout_networks_are_disjoint_from_every_search_sample(robust, cross):
    for run_dir, kinds, spaces in ((robust[0], ("random", "stratified"), ("tss",)), (cross[0], ("random",), ("tss", "sss"))):
        samples = _samples(run_dir)
        assert set(samples) == {f"cifar10-{split}-{space}-{kind}" for space in spaces
                                for split, kind in [*(("search", k) for k in kinds), ("heldout", "random")]}
        for space in spaces:
            held = set(samples[f"cifar10-heldout-{space}-random"].indices)
            for kind in kinds:
                search = samples[f"cifar10-search-{space}-{kind}"]
                assert search.space == space and search.split == "search" and not held & set(search.indices)
    rows = campaign.subset_rows(23, 3, seed=0)
    assert sorted(np.concatenate(rows).tolist()) == list(range(23)) and [len(r) for r in rows] == [8, 8, 7]
    assert all(np.array_equal(a, b) for a, b in zip(rows, campaign.subset_rows(23, 3, seed=0)))


def test_a_robust_campaign_gives_the_same_result_serial_and_on_ray(goals, tmp):
    """With goals, which the Ray evaluators must receive too."""
    import ray

    try:
        record = _start(tmp, "goals-ray", GOAL_SETTINGS, backend="ray")
    finally:
        ray.shutdown()
    assert record["entries"] == goals[1]["entries"]
    assert _log(tmp / "goals-ray" / "run") == _log(goals[0])


def test_a_resumed_robust_campaign_equals_an_uninterrupted_one(robust, tmp, monkeypatch):
    interrupt_at(monkeypatch, Evolution, 2)
    with pytest.raises(KeyboardInterrupt, match="zcp resume"):
        _start(tmp, "robust-resumed", ROBUST)
    monkeypatch.undo()
    run_dir = tmp / "robust-resumed" / "run"
    assert json.loads((run_dir / "hall_of_fame.json").read_text())["generation"] == 2
    assert campaign.resume(run_dir, progress=False)["entries"] == robust[1]["entries"]
    assert _log(run_dir) == _log(robust[0])


def test_a_cross_space_campaign_searches_and_reports_both_spaces(cross, tmp):
    run_dir, record = cross
    names = ["tss/cifar10", "sss/cifar10"]
    for entry in record["entries"]:
        assert list(entry["search_targets"]) == names and list(entry["heldout"]) == names
        assert entry["fitness"] == pytest.approx(min(entry["search_targets"].values()))
    assert all(line["limiting"] in names for line in _log(run_dir))
    assert record["search_n"] == [12, 12] and record["heldout_n"] == [12, 12]
    assert {p.name.rsplit("-", 1)[0] for p in (tmp / "caches").glob("cifar10-*-sss-*")} == \
        {"cifar10-search-sss-random", "cifar10-heldout-sss-random"}
    result = heldout.report([run_dir], tmp / "cross-report", stratified_n=10, resamples=20)
    for protocol in ("random", "stratified"):
        assert list(result[protocol]) == names
        assert all({heldout.SINGLE_BEST, heldout.SINGLE_MAX} <= set(result[protocol][name]) for name in names)
    # search fitness of the single-terminal expressions: the campaign's, the minimum over both spaces
    best = result["single_terminal"]["by_search_fitness"][0]
    config = campaign.load_config(run_dir / "config.toml")
    search = campaign.prepare(config, run_dir, splits=("search",))
    per_space = Evaluator(campaign.search_payload(config, search)).per_target([best["expression"]])[0]
    assert len(per_space) == 2 and best["search_fitness"] == min(per_space)
    # the evolved proxy's search fitness on each target, as its hall of fame recorded it
    seed = config.gp.seed
    targets = result["single_terminal"]["evolved_search_targets"]
    assert targets == {f"evolved (seed {seed})": record["entries"][0]["search_targets"]}
    text = (tmp / "cross-report" / "results.md").read_text()
    assert "sss/cifar10, stratified held-out" in text
    assert (f"Search fitness of evolved (seed {seed}) on each search target: tss/cifar10 "
            f"{targets[f'evolved (seed {seed})']['tss/cifar10']:.3f}, sss/cifar10 ") in text
    rows, matrix = transfer.transfer([run_dir])
    assert list(rows) == ["tss+sss cifar10 (seed 0)"] and list(matrix["tss+sss cifar10 (seed 0)"]) == names


def test_the_exported_cross_space_proxy_scores_both_spaces_networks(cross, tmp):
    run_dir, _ = cross
    exported = export_run(run_dir, tmp / "cross-exports", top=3, timeout=30)
    images = load_batch("cifar10", 4, 0, "gaussian").images
    for space in ("tss", "sss"):
        cache = load_cache(next((tmp / "caches").glob(f"cifar10-search-{space}-*")))
        torch.manual_seed(0)  # as the cache built it: the campaign's seed right before the build
        model = get_space(space).build(int(cache.indices[0]), "cifar10")
        for item in exported:
            text = item["expression"]
            in_campaign = evaluate(parse(text, REGISTRY, terminal_types(cache.manifest["terminals"])), cache.env())
            got = load_proxy(tmp / "cross-exports" / item["files"]["py"])(model, images)
            assert np.isfinite(got) and got == pytest.approx(float(in_campaign[0]), rel=1e-6), (space, text)


@pytest.mark.parametrize("text,match", [
    ("[sample]\nsearch_kind = 'strata'\n", "search_kind 'strata' is not one of random, stratified, quantile"),
    ("[sample]\nsearch_kind = ['random', 'random']\n", "search_kind names 'random' twice"),
    ("[sample]\nsearch_kind = []\n", "sample.search_kind must be a name or a non-empty list of names"),
    ("[sample]\nheldout_kind = 'best'\n", "heldout_kind 'best' is not one of"),
    ("[sample]\nsubsets = 0\n", "subsets must be >= 1"),
    ("[sample]\nsearch_n = 50\nsubsets = 6\n", "subsets = 6 needs search_n >= 60 \\(at least 10 networks per subset\\)"),
    ("[sample]\nsearch_n = 7900\n", "sample.search_n = 7900: a random sample cannot hold more than the 7813 "
                                    "networks of the tss search split"),
    ("[sample]\nsearch_kind = ['stratified', 'random']\nsearch_n = [9000, 7900]\n",
     "sample.search_n = 7900: a random sample cannot hold more than the 7813"),
    ("[sample]\nsearch_kind = ['random', 'stratified']\nsearch_n = [200, 100, 50]\n",
     "search_n lists 3 sizes for 2 search kinds \\(random, stratified\\): give one size, or one per kind"),
    ("[sample]\nsearch_n = [200, 'many']\n", "sample.search_n must be a whole number or a non-empty list of them"),
    ("[sample]\nsearch_n = 20.5\n", "sample.search_n must be a whole number or a non-empty list of them, got 20.5"),
    ("[sample]\nsearch_kind = ['random', 'stratified']\nsearch_n = [100, 50]\nsubsets = 6\n",
     "subsets = 6 needs search_n >= 60 \\(at least 10 networks per subset\\), got 50"),
    ("[campaign]\nspace = ['sss']\n[sample]\nheldout_n = 20000\n", "more than the 16384 networks of the sss heldout"),
    ("[campaign]\nspace = ['tss', 'nb201']\n", "unknown search space 'nb201'"),
    ("[campaign]\nspace = ['tss', 'tss']\n", "space names 'tss' twice"),
    ("[campaign]\nspace = 3\n", "campaign.space must be a name or a non-empty list of names, got 3"),
    ("[campaign]\ncombine = 'mean'\ngoals = {cifar10 = 0.7}\n", "goals need combine = 'min'"),
    ("[campaign]\ngoals = {cifar10 = 1.5}\n", "a goal is a correlation in \\[-1, 1\\], got 1.5"),
    ("[campaign]\ngoals = {cifar10 = 'high'}\n", "campaign.goals must be a table of numbers"),
    ("[campaign]\ngoals = {cifar100 = 0.7}\n", "campaign.goals names 'cifar100', which is not a search sample of "
                                               "this campaign \\(its search samples: cifar10\\)"),
    ("[sample]\nsearch_kind = ['random', 'stratified']\n[campaign]\ngoals = {'cifar10/random' = 0.7}\n",
     "campaign.goals lacks 'cifar10/stratified'"),
])
def test_bad_target_configs_are_one_line_errors(text, match):
    assert_one_line_config_error(text, match)


def test_target_configs_round_trip_and_old_configs_read_unchanged():
    config = parse_config("[campaign]\nspace = ['tss', 'sss']\n[sample]\nsearch_kind = ['random', 'quantile']\n"
                          "search_n = 40\nsubsets = 4\n")
    assert config.campaign.spaces == ("tss", "sss") and config.sample.search_kinds == ("random", "quantile")
    assert parse_config(config.to_toml()) == config
    plain = parse_config("[campaign]\nspace = 'tss'\n")
    assert plain.campaign.space == "tss" and plain.sample.search_kind == "random" and plain.sample.subsets == 1
    assert parse_config("[campaign]\nspace = ['tss']\n") == plain  # a one-name list is the name
    assert parse_config("[sample]\nsearch_n = 5\n").sample.search_n == 5  # no subsets: no minimum size
    per_kind = parse_config("[sample]\nsearch_kind = ['random', 'stratified']\nsearch_n = [200, 100]\n")
    assert per_kind.sample.search_sizes == (200, 100) and parse_config(per_kind.to_toml()) == per_kind
    assert parse_config("[sample]\nsearch_kind = ['random', 'stratified']\nsearch_n = [200]\n").sample.search_sizes == \
        (200, 200) == parse_config("[sample]\nsearch_kind = ['random', 'stratified']\n").sample.search_sizes
    # a stratified sample larger than its split can give is drawn short, with a note: not a config error
    assert parse_config("[sample]\nsearch_kind = 'stratified'\nsearch_n = 9000\n").sample.search_n == 9000
    with_goals = parse_config("[sample]\nsearch_kind = ['random', 'stratified']\n[campaign]\n"
                              "goals = {'cifar10/random' = 0.77, 'cifar10/stratified' = 1}\n")
    assert with_goals.campaign.goals == {"cifar10/random": 0.77, "cifar10/stratified": 1.0}
    assert parse_config(with_goals.to_toml()) == with_goals
    # runs made before goals existed keep their digest (this is the default config's, from before), so they resume
    assert parse_config("").digest() == "aa6466bb9ecf5ada" != parse_config("[campaign]\ngoals = {cifar10 = 0.7}\n").digest()


def test_a_search_sample_drawn_too_short_for_its_subsets_is_one_line(tmp):
    # the low-accuracy bins of the TSS search split are short: 1,000 stratified give about 530 networks
    config = parse_config("[sample]\nsearch_kind = 'stratified'\nsearch_n = 1000\nsubsets = 100\n")
    with pytest.raises(ZcpError, match=r"the stratified search sample of cifar10 holds \d+ networks \(short bins\): "
                                       "too few for 100 subsets of at least 10"):
        campaign.prepare(config, tmp / "short")
    assert not (tmp / "short" / "caches").exists()  # refused before any cache was built


def test_spaces_that_disagree_on_datasets_are_one_line(tmp):
    table = tmp / "sss-no-cifar100.csv"
    write_table_without(table, "sss", "cifar100")
    config = parse_config("[campaign]\nspace = ['tss', 'sss']\ndatasets = ['cifar10', 'cifar100']\n")
    paths = resolve_paths(sss_table=table)
    with pytest.raises(ZcpError, match=f"the sss ground truth \\(table {table}\\) has no cifar100 accuracy: "
                                       "the spaces tss, sss disagree on datasets"):
        campaign.campaign_truth(config, paths)
    assert set(campaign.campaign_truth(parse_config("[campaign]\nspace = ['tss', 'sss']\n"), paths)) == \
        {("tss", "cifar10"), ("sss", "cifar10")}


def test_every_shipped_config_loads_and_round_trips():
    from experiments.campaigns import CONFIGS
    from experiments.config import load_config

    names = {p.stem for p in CONFIGS.glob("*.toml")}
    assert {"tss-cifar10-robust", "cross-cifar10"} <= names
    for path in CONFIGS.glob("*.toml"):
        config = load_config(path)
        assert parse_config(config.to_toml()) == config, path
    assert load_config(CONFIGS / "cross-cifar10.toml").campaign.spaces == ("tss", "sss")
    assert load_config(CONFIGS / "tss-cifar10-robust.toml").sample.search_kinds == ("random", "stratified")


def test_subset_targets_share_one_evaluation_of_their_cache(monkeypatch):
    import evaluation.fitness as fit
    from evaluation.evaluators import Evaluator, Payload
    from evaluation.fitness import rank_correlation

    rows = 9
    packed = {"layers": np.ones(rows, dtype=np.int64), "params": np.random.default_rng(0).permutation(rows) * 1.0}
    accuracy = np.random.default_rng(1).normal(size=rows)
    parts = [np.array([0, 3, 4, 8]), np.array([1, 2, 5, 6, 7])]
    payload = Payload(("a/1", "a/2", "b"), (packed, packed), (accuracy[parts[0]], accuracy[parts[1]], accuracy),
                      ("params",), "kendall", "min", sources=(0, 0, 1), rows=(parts[0], parts[1], None))
    calls = []
    real = fit.evaluate
    monkeypatch.setattr(fit, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    values = Evaluator(payload).per_target(["params"])[0]
    assert len(calls) == 2  # once per cache, not once per target
    expected = [rank_correlation(packed["params"][r], accuracy[r]) for r in (*parts, np.arange(rows))]
    assert values == pytest.approx(expected) and Evaluator(payload)(["params"]) == [pytest.approx(min(expected))]
