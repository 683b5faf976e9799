"""A campaign whose stderr is not a terminal prints one line per phase; the summary states the verdict."""
from evaluation.progress import tracked
from experiments import campaign
from experiments.commands.evolve import _summary, _verdict
from tests.campaigns import tiny_config


def test_campaign_prints_one_line_per_phase_when_not_a_terminal(tmp_path, capsys):
    record = campaign.start(tiny_config(tmp_path, tmp_path / "caches", generations=4, population=12),
                            tmp_path / "run", progress=None)  # pytest's stderr is not a terminal
    lines = capsys.readouterr().err.splitlines()
    assert all(line.startswith("zcp: ") for line in lines), lines
    text = "\n".join(lines)
    for phase in ("cifar10 search sample: 12 networks (random, seed 0)", "cifar10 search cache: 12 networks to build, 0 cached",
                  "cifar10 cache: 12 of 12 networks, ", "cifar10 heldout sample: 12 networks", "cifar10 heldout cache ready in", "generation 4/4: best search fitness",
                  "held-out report: the hall of fame and the baselines on 12 held-out networks"):
        assert phase in text, (phase, text)
    assert sum("generation " in line for line in lines) == 4  # every tenth of 4 generations: each one
    _summary(record)
    out = capsys.readouterr().out.splitlines()
    verdict = [line for line in out if line.startswith("held-out cifar10: the best proxy by search fitness")]
    assert len(verdict) == 1 and ("does NOT beat #params" in verdict[0] or "beats #params" in verdict[0])
    assert "and NASWOT (" in verdict[0]


def test_verdict_compares_the_best_by_search_fitness_with_params_and_naswot():
    def tau(t):
        return {"cifar10": {"kendall": t, "spearman": t}}
    record = {"generation": 1, "seconds_this_run": 1, "search_n": [1], "heldout_n": [1],
              "entries": [{"expression": "a", "fitness": 0.9, "heldout": tau(0.5)},
                          {"expression": "b", "fitness": 0.8, "heldout": tau(0.9)}],
              "baselines": {"#params": {"heldout": tau(0.4)}, "NASWOT": {"heldout": tau(0.6)}}}

    assert _verdict(record, ["cifar10"]) == [
        "held-out cifar10: the best proxy by search fitness (tau +0.500) does NOT beat #params (+0.400) and NASWOT (+0.600)"]
    record["baselines"]["NASWOT"] = {"heldout": tau(0.45)}
    assert "(tau +0.500) beats #params (+0.400) and NASWOT (+0.450)" in _verdict(record, ["cifar10"])[0]


def test_tracked_loops_print_a_line_per_tenth_to_a_log_and_nothing_when_told(capsys):
    assert list(tracked(range(25), 25, "naswot on cifar10")) == list(range(25))
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in lines] == [f"zcp: naswot on cifar10: {n} of 25 networks"
                                                     for n in (3, 6, 9, 12, 15, 18, 21, 24, 25)]
    assert list(tracked(range(5), 5, "x", show=False)) == list(range(5)) and capsys.readouterr().err == ""
