"""The experiment scripts (held-out report, transfer matrix, ablation table) on tiny campaigns."""
import json
import shutil

import pytest

from evaluation.errors import ZcpError
from evaluation.evaluators import Evaluator
from experiments import ablation, campaign, campaigns, heldout, transfer
from gp.single import single_terminal_expressions
from primitives.functions import REGISTRY
from primitives.terminals import terminal_types
from tests.campaigns import tiny_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("heldout")
    config = tiny_config(tmp, tmp / "caches", generations=2, population=16)
    dirs = []
    for seed in (0, 1):
        campaign.start(config, tmp / f"s{seed}", progress=False, overrides=[f"gp.seed={seed}"])
        dirs.append(tmp / f"s{seed}")
    return tmp, dirs


def test_report_scores_both_protocols_with_intervals(runs):
    tmp, dirs = runs
    result = heldout.report(dirs, tmp / "out", stratified_n=10, resamples=50, zoo=["params"], scores_dir=tmp / "scores")
    zoo = heldout.zoo_name("params")
    assert set(result["random"]["cifar10"]) == {"evolved (seed 0)", "evolved (seed 1)", *campaign.BASELINES, zoo,
                                                 heldout.SINGLE_BEST, heldout.SINGLE_MAX}
    for protocol in ("random", "stratified"):  # the live zoo proxy and the cached terminal count the same
        table = result[protocol]["cifar10"]
        assert table[zoo]["kendall"] == table["#params"]["kendall"] and table[zoo]["n"] == table["#params"]["n"]
    assert list((tmp / "scores").glob("params-*.json"))
    for protocol in ("random", "stratified"):  # each evolved proxy against the zoo proxy, on the same resamples
        table, pairs = result[protocol]["cifar10"], result["paired"][protocol]["cifar10"]
        assert [(p["proxy"], p["reference"]) for p in pairs] == [("evolved (seed 0)", zoo), ("evolved (seed 1)", zoo)]
        for p in pairs:
            assert p["difference"] == pytest.approx(table[p["proxy"]]["kendall"] - table[zoo]["kendall"], abs=1e-12)
            assert p["interval"][0] <= p["interval"][1] and 0 <= p["not_above"] <= 1
    text = (tmp / "out" / "results.md").read_text()
    assert f"## Paired differences against {zoo} on cifar10, stratified held-out (Kendall tau)" in text
    assert f"| evolved (seed 1) | {result['paired']['random']['cifar10'][1]['difference']:+.3f} [" in text
    for protocol, n in (("random", 12), ("stratified", 10)):
        for cell in result[protocol]["cifar10"].values():
            assert cell["n"] <= n
            lo, hi = cell["kendall_ci"]
            assert lo <= cell["kendall"] + 1e-9 and cell["kendall"] - 1e-9 <= hi or cell["kendall"] == -2.0
    assert json.loads((tmp / "out" / "results.json").read_text())["cost"][0]["networks"] == 24
    assert "stratified held-out" in (tmp / "out" / "results.md").read_text()
    assert (tmp / "out" / "fitness.png").stat().st_size > 0 and (tmp / "out" / "scatter.png").stat().st_size > 0


def test_single_terminal_rows_bound_every_single_terminal_baseline(runs, tmp_path):
    tmp, dirs = runs
    result = heldout.report(dirs, tmp_path / "out", stratified_n=10, resamples=20, track_energy=False)
    single = result["single_terminal"]
    assert single["count"] == 2 * (2 + 2 * 5 + 25 + 30)  # tests/campaigns.py TERMS: 2 network, 2 layer, 1 vector, 1 matrix
    # the ranking is the campaign's own search fitness (its evaluator on the search caches), best first
    prepared = campaign.prepare(campaign.load_config(dirs[0] / "config.toml"), dirs[0], splits=("search",))
    scorer = Evaluator(campaign.search_payload(campaign.load_config(dirs[0] / "config.toml"), prepared))
    ranked = [row["expression"] for row in single["by_search_fitness"]]
    assert [row["search_fitness"] for row in single["by_search_fitness"]] == scorer(ranked)
    assert single["by_search_fitness"][0]["search_fitness"] >= max(scorer(list(campaign.BASELINES.values())))
    assert result["expressions"][heldout.SINGLE_BEST] == ranked[0]
    assert "evolved_search_targets" not in single  # one search target: its fitness is the target's
    for protocol in ("random", "stratified"):
        table = result[protocol]["cifar10"]
        # every baseline is a single-terminal expression: the held-out maximum bounds them all
        bound = table[heldout.SINGLE_MAX]
        assert all(bound["kendall"] >= table[name]["kendall"] for name in (*campaign.BASELINES, heldout.SINGLE_BEST))
        assert bound["n"] == table["#params"]["n"] and bound["expression"] in sum(
            single_terminal_expressions(REGISTRY, terminal_types(prepared.terminals)).values(), [])
    text = (tmp_path / "out" / "results.md").read_text()
    assert f"| {heldout.SINGLE_BEST} | `{ranked[0]}` |" in text
    assert f"| {heldout.SINGLE_MAX} | `{result['random']['cifar10'][heldout.SINGLE_MAX]['expression']}` |" in text


@pytest.mark.parametrize("name", ["#params", "MeCo (layers)"])
def test_a_known_single_terminal_expression_scores_as_its_baseline(runs, tmp_path, monkeypatch, name):
    tmp, dirs = runs
    text = campaign.BASELINES[name]
    monkeypatch.setattr(heldout, "single_terminal_expressions", lambda registry, types: {"only": [text]})
    result = heldout.report(dirs[:1], tmp_path / "out", stratified_n=10, resamples=20, track_energy=False)
    assert result["expressions"][heldout.SINGLE_BEST] == result["random"]["cifar10"][heldout.SINGLE_MAX]["expression"] == text
    for protocol in ("random", "stratified"):
        table = result[protocol]["cifar10"]
        for row in (heldout.SINGLE_BEST, heldout.SINGLE_MAX):
            assert table[row]["kendall"] == table[name]["kendall"] and table[row]["n"] == table[name]["n"]


def test_unknown_zoo_proxy_is_refused_before_any_work(runs, tmp_path):
    with pytest.raises(ZcpError, match="unknown proxy 'zicoo'"):
        heldout.report(runs[1], tmp_path / "out", zoo=["zicoo"])
    assert not (tmp_path / "out").exists()


def test_runs_of_different_campaigns_are_refused(runs, tmp_path):
    tmp, dirs = runs
    other = tmp_path / "other"
    campaign.start(tmp / "c.toml", other, progress=False, overrides=["sample.heldout_n=11"])
    with pytest.raises(ZcpError, match="more than \\[gp\\]"):
        heldout.report([dirs[0], other], tmp_path / "out")


def test_set_overrides_and_bad_settings(runs, tmp_path):
    tmp, dirs = runs
    assert campaign.load_config(dirs[1] / "config.toml").gp.seed == 1
    with pytest.raises(ZcpError, match="SECTION.KEY=VALUE"):
        campaign.load_config(dirs[0] / "config.toml", ["gpseed=1"])
    with pytest.raises(ZcpError, match="unknown key gp.sed"):
        campaign.load_config(dirs[0] / "config.toml", ["gp.sed=1"])


def test_transfer_matrix_scores_every_proxy_on_every_dataset(runs, tmp_path):
    tmp, dirs = runs
    config = tmp / "c.toml"
    campaign.start(config, tmp_path / "c100", progress=False, overrides=['campaign.datasets=["cifar100"]'])
    rows, matrix = transfer.transfer([dirs[0], tmp_path / "c100"])
    assert list(rows) == ["cifar10 (seed 0)", "cifar100 (seed 0)"]
    assert all(set(cells) == {"cifar10", "cifar100"} for cells in matrix.values())
    assert all(-1 <= v <= 1 for cells in matrix.values() for v in cells.values())
    assert "tau on cifar100" in transfer.markdown(rows, matrix)
    rows, matrix = transfer.transfer([dirs[0], tmp_path / "c100", dirs[1]], split="search")
    assert list(rows) == ["cifar10 (seed 0)", "cifar100 (seed 0)", "cifar10 (seed 1)"]
    assert all(set(cells) == {"cifar10/random", "cifar100/random"} for cells in matrix.values())
    own = campaign.read_hall_of_fame(dirs[0])["entries"][0]  # on its own search sample: its search fitness
    assert matrix["cifar10 (seed 0)"]["cifar10/random"] == pytest.approx(own["fitness"])
    shutil.copytree(dirs[0], tmp_path / "again")
    assert list(transfer.transfer([dirs[0], tmp_path / "again"])[0]) == [f"cifar10 (seed 0), {dirs[0].name}",
                                                                            "cifar10 (seed 0), again"]
    with pytest.raises(ZcpError, match="unknown split 'train'"):
        transfer.transfer([dirs[0]], split="train")


def test_ablation_levers_name_how_several_search_targets_combine():
    def levers(name):
        return ablation.levers(campaign.load_config(campaigns.CONFIGS / f"{name}.toml"))
    assert levers("tss-cifar10") == "search random; @base"
    assert levers("tss-cifar10-robust") == "search random + stratified, min; @base"
    assert levers("tss-cifar10-robust-mean") == "search random + stratified, mean; @base"
    assert levers("tss-cifar10-robust-islands") == "search random + stratified, min; @base; 4 islands"
    assert levers("cross-cifar10") == levers("tss-multi") == "search random, min; @base"


def test_ablation_row_is_the_best_search_fitness_seed_of_the_report(runs, tmp_path, capsys):
    tmp, dirs = runs
    result = heldout.report(dirs, tmp_path / "base", stratified_n=10, resamples=20, track_energy=False)
    fitness = result["single_terminal"]["evolved_search_fitness"]
    best = f"evolved (seed {max((0, 1), key=fitness.__getitem__)})"
    row = ablation.row(tmp_path / "base", None)
    assert row["levers"] == "search random; @base" and row["seeds"] == 2 and row["evaluations"] > 0
    for protocol in ablation.PROTOCOLS:
        cell = result[protocol]["cifar10"][best]
        assert row[protocol][:2] == (cell["kendall"], cell["kendall_ci"])
    text = ablation.markdown([row, row])
    assert text.count("+0.000 / +0.000") == 2 and "`base`" in text
    capsys.readouterr()
    assert ablation.main([str(tmp_path / "base"), "--part", "sss/cifar10", "--out", str(tmp_path / "a.md")]) == 2
    assert capsys.readouterr().err.strip() == ("ablation: error: " + str(tmp_path / "base")
                                               + " has no held-out part 'sss/cifar10' (it has cifar10)")
    with pytest.raises(ZcpError, match="holds no readable results.json"):
        ablation.row(tmp_path, None)


def test_ablation_reads_the_configs_the_report_records_not_the_run_folders(runs, tmp_path):
    tmp, dirs = runs
    report = tmp_path / "base"
    heldout.report(dirs, report, stratified_n=10, resamples=20, track_energy=False)
    expected = ablation.row(report, None)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for run in dirs:  # results/ is committed, runs/ is not: the table must survive a new machine
        run.rename(moved / run.name)
    try:
        assert ablation.row(report, None) == expected
        old = json.loads((report / "results.json").read_text())
        del old["configs"]  # a report written before results.json recorded its configs
        (report / "results.json").write_text(json.dumps(old))
        with pytest.raises(ZcpError, match="records no configs and reports .*, which is not here"):
            ablation.row(report, None)
    finally:
        for run in dirs:
            (moved / run.name).rename(run)


def test_campaigns_runs_each_seed_once_and_resumes(runs, tmp_path, monkeypatch):
    tmp, _ = runs
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny.toml").write_text((tmp / "c.toml").read_text())
    monkeypatch.setattr(campaigns, "CONFIGS", tmp_path / "configs")
    dirs = campaigns.run_seeds("tiny", [0, 3], [], tmp_path / "runs")
    assert [campaign.load_config(d / "config.toml").gp.seed for d in dirs] == [0, 3]
    before = (dirs[1] / "hall_of_fame.json").stat().st_mtime_ns
    assert campaigns.run_seeds("tiny", [3], [], tmp_path / "runs") == [dirs[1]]
    assert (dirs[1] / "hall_of_fame.json").stat().st_mtime_ns == before
    with pytest.raises(ZcpError, match="no campaign config nope.toml"):
        campaigns.run_seeds("nope", [0], [], tmp_path / "runs")


def test_damaged_or_empty_halls_of_fame_are_one_line(runs, tmp_path, capsys):
    tmp, dirs = runs
    broken = tmp_path / "broken"
    shutil.copytree(dirs[0], broken)
    (broken / campaign.HOF).write_text('{"status": "finis')
    with pytest.raises(ZcpError, match="has no readable hall_of_fame.json"):
        heldout.report([broken], tmp_path / "out")
    assert transfer.main([str(broken), "--out", str(tmp_path / "t.md")]) == 2
    assert capsys.readouterr().err.startswith("transfer: error: ")
    (broken / campaign.HOF).write_text('{"status": "running", "entries": []}')
    with pytest.raises(ZcpError, match="hall of fame has no entries"):
        transfer.transfer([broken])
    with pytest.raises(ZcpError, match="is not finished"):
        heldout.report([broken], tmp_path / "out")
    stale = tmp_path / "runs" / "quickstart-s0"
    shutil.copytree(broken, stale)
    (stale / campaign.HOF).write_text("not json")
    with pytest.raises(ZcpError, match="has no readable hall_of_fame.json"):
        campaigns.run_seeds("quickstart", [0], [], tmp_path / "runs")


def test_ctrl_c_message_says_how_to_go_on(runs, tmp_path):
    tmp, dirs = runs
    assert campaign._interrupted(dirs[0]) == f"{dirs[0]} keeps the checkpoint of generation 2: continue with `zcp resume {dirs[0]}`"
    assert campaign._interrupted(tmp_path).startswith("no generation was finished")


@pytest.mark.parametrize("path", sorted(campaigns.CONFIGS.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_config_loads(path):
    """A config the README or a results folder names must not fail at its first line when run."""
    config = campaign.load_config(path)
    assert config.campaign.datasets and config.gp.population > 0
