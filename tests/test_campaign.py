"""Campaigns end to end: resume after kill -9 equals an uninterrupted run, serial == Ray, bad configs."""
import json
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from evaluation.errors import ZcpError
from evaluation.fitness import WORST, Fitness, Target, rank_correlation
from experiments import campaign
from experiments.config import parse_config
from tests.campaigns import assert_one_line_config_error, tiny_config, without_progress


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("caches")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cache_dir):
    tmp = tmp_path_factory.mktemp("run")
    record = campaign.start(tiny_config(tmp, cache_dir, generations=30), tmp / "run", progress=False)
    return tmp / "run", record


def test_run_directory_and_report(finished):
    run_dir, record = finished
    assert {"config.toml", "log.jsonl", "checkpoint.json", "hall_of_fame.json"} <= {p.name for p in run_dir.iterdir()}
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [line["generation"] for line in log] == list(range(31))
    assert {"best", "median", "mean_size", "diversity", "seconds"} <= set(log[0])
    hof = json.loads((run_dir / "hall_of_fame.json").read_text())
    assert hof["status"] == "finished" and hof == record
    best = hof["entries"][0]
    assert {"expression", "canonical", "fitness", "heldout"} <= set(best)
    assert set(best["heldout"]["cifar10"]) == {"kendall", "spearman"}
    assert "#params" in hof["baselines"] and "NASWOT" in hof["baselines"]


def test_resume_after_kill_9_equals_uninterrupted(finished, tmp_path, cache_dir):
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "experiments.cli", "evolve", str(tiny_config(tmp_path, cache_dir, generations=30)),
           "--out", str(run_dir)]
    stop_at = random.Random(0).randint(3, 20)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        try:
            if json.loads((run_dir / "checkpoint.json").read_text())["engine"]["generation"] >= stop_at:
                break
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((run_dir / "hall_of_fame.json").read_text())["status"] == "running", "killed too late"
    record = campaign.resume(run_dir, progress=False)
    uninterrupted = finished[1]
    assert record["entries"] == uninterrupted["entries"]
    assert (run_dir / "log.jsonl").read_text().count("\n") == 31


def test_serial_and_ray_give_the_same_hall_of_fame(finished, tmp_path, cache_dir):
    import ray

    try:
        record = campaign.start(tiny_config(tmp_path, cache_dir, generations=30, backend="ray"), tmp_path / "ray",
                                progress=False)
    finally:
        ray.shutdown()
    assert record["entries"] == finished[1]["entries"]


def test_the_subtree_memo_changes_time_not_results(finished, tmp_path, cache_dir):
    config = tiny_config(tmp_path, cache_dir, generations=30)
    config.write_text(config.read_text() + "memo_mib = 0\n")
    record = campaign.start(config, tmp_path / "no-memo", progress=False)
    assert record["entries"] == finished[1]["entries"]
    assert parse_config("[parallel]\nmemo_mib = 0\n").digest() == parse_config("").digest()


def test_resume_refuses_a_changed_config(finished, tmp_path):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(finished[0], run_dir)
    text = (run_dir / "config.toml").read_text().replace("population = 24", "population = 25")
    (run_dir / "config.toml").write_text(text)
    with pytest.raises(ZcpError, match="changed since the checkpoint"):
        campaign.resume(run_dir)
    with pytest.raises(ZcpError, match="already holds a campaign"):
        campaign.start(run_dir / "config.toml", run_dir)
    with pytest.raises(ZcpError, match="nothing to resume"):
        campaign.resume(tmp_path)


@pytest.mark.parametrize("text,match", [
    ("[campaign]\nspaces = 'tss'\n", "unknown key campaign.spaces"),
    ("[gpp]\n", "unknown section \\[gpp\\]"),
    ("[gp]\npopulation = 'many'\n", "gp.population must be int"),
    ("[gp]\npopulation = 1\n", "population must be at least 2"),
    ("[campaign]\ndatasets = ['cifar10-valid']\n", "unknown dataset 'cifar10-valid'"),
    ("[campaign]\nspace = 'nb201'\n", "unknown search space"),
    ("[campaign\n", "not valid TOML"),
    ("[campaign]\nmetric = 'pearson'\n", "\\[campaign\\] metric 'pearson' is not one of kendall, spearman"),
    ("[campaign]\ncombine = 'max'\n", "\\[campaign\\] combine 'max' is not one of min, mean"),
    ("[campaign]\ncost_weight = 1.0\n", "\\[campaign\\] cost_weight must be in \\[0, 0.1\\]"),
    ("[parallel]\nmemo_mib = -1\n", "\\[parallel\\] memo_mib must be >= 0 MiB, got -1"),
])
def test_bad_configs_are_one_line_errors(text, match):
    assert_one_line_config_error(text, match)


def test_failing_candidates_get_the_worst_fitness(monkeypatch):
    rows = 5
    from primitives.terminals import collate
    packed = {"layers": np.ones(rows, dtype=np.int64), "params": np.arange(rows, dtype=np.float64)}
    fitness = Fitness([Target("cifar10", collate(packed, ["params"]), np.arange(rows, dtype=np.float64))], ["params"])
    import evaluation.fitness as fit

    real = fit.evaluate
    monkeypatch.setattr(fit, "evaluate", lambda node, env, memo=None, deadline=None: (_ for _ in ()).throw(
        RuntimeError("boom")) if node.text.startswith("n_neg") else real(node, env, memo, deadline))
    assert fitness(["params", "n_neg(params)", "nonsense(", "n_mul(0.0, params)"]) == pytest.approx([1.0, WORST, WORST, WORST])
    assert rank_correlation(np.array([1.0, np.nan, 2.0]), np.arange(3)) == WORST
    assert rank_correlation(np.array([3.0, 2.0, 1.0]), np.arange(3)) == -1.0  # anti-correlated: never flipped


def test_cost_objective_subtracts_passes_from_valid_candidates():
    from primitives.terminals import collate, passes_needed

    assert passes_needed(["params"]) == 0
    assert passes_needed(["flops", "code_kernel"]) == 1  # real forward only
    assert passes_needed(["snip", "noise_act_std", "curvature"]) == 4  # real fwd+bwd, noise fwd, circle fwd
    rows = 5
    packed = {"layers": np.ones(rows, dtype=np.int64), "params": np.arange(rows, dtype=np.float64),
              "flops": np.arange(rows, dtype=np.float64)}
    target = Target("cifar10", collate(packed, ["params", "flops"]), np.arange(rows, dtype=np.float64))
    costly = Fitness([target], ["params", "flops"], cost_weight=0.05)
    assert costly(["params", "flops", "n_mul(0.0, flops)"]) == pytest.approx([1.0, 0.95, WORST])
    with pytest.raises(ZcpError, match="cost_weight"):
        Fitness([target], ["params"], cost_weight=0.5)


def test_ctrl_c_keeps_the_last_checkpoint_and_says_how_to_resume(finished, tmp_path, cache_dir):
    run_dir = tmp_path / "interrupted"
    # a real SIGINT, sent by the run to itself at generation 5 (polling for the checkpoint from here raced
    # the 0.6 s of evolution on busy cores), handled as in a terminal even where pytest runs with SIGINT
    # ignored, which a child inherits
    config = tiny_config(tmp_path, cache_dir, generations=30)
    code = ("import os, signal, sys\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "from gp.engine import Evolution\n"
            "step = Evolution.step\n"
            "def stop(self):\n"
            "    if self.generation == 5:\n"
            "        os.kill(os.getpid(), signal.SIGINT)\n"
            "    return step(self)\n"
            "Evolution.step = stop\n"
            "from experiments.cli import main\n"
            f"sys.exit(main(['evolve', {str(config)!r}, '--out', {str(run_dir)!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          timeout=180)
    assert proc.returncode == 130, proc.stderr[-500:]
    err = without_progress(proc.stderr)
    assert err.strip().count("\n") == 0 and "zcp resume" in err, err
    assert campaign.resume(run_dir, progress=False)["entries"] == finished[1]["entries"]
