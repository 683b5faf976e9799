"""``zcp score`` / ``compare`` / ``search`` end to end on 6 networks with a tiny batch, the score cache,
and the one-line errors for bad input."""
import csv
import dataclasses
import json
import os
import signal

import numpy as np
import pytest
import torch

import evaluation.scoring as scoring
from evaluation.code_digest import code_digest
from evaluation.samples import make_sample, read_sample, subsample, write_sample
from evaluation.spaces import get_space
from evaluation.errors import ZcpError
from evaluation.proxies import proxy_names
from experiments.cli import main

PROXY_FILE = '''
import torch

def score(model, inputs, **options):
    """Sum of the logits of the first input (an exported-style proxy)."""
    with torch.no_grad():
        return float(model(inputs[:1]).sum()) * options.get("scale", 1.0)
'''


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def sample6(tmp_path):
    path = tmp_path / "six.json"
    write_sample(make_sample(get_space("tss"), "random", 6, 0, split="all"), path)
    return path


def _common(sample, tmp_path, *extra):
    return ["--space", "tss", "--dataset", "cifar10", "--sample", str(sample), "--batch-size", "8",
            "--backend", "serial", "--score-cache", str(tmp_path / "scores"), *extra]


def test_score_writes_one_row_per_network_and_reuses_the_cache(capsys, tmp_path, sample6, data_dir, monkeypatch):
    out = tmp_path / "naswot.csv"
    code, stdout, err = run(capsys, "score", "--proxy", "naswot", *_common(sample6, tmp_path, "--out", str(out)))
    assert code == 0, err
    rows = list(csv.DictReader(out.open()))
    assert [int(r["index"]) for r in rows] == list(read_sample(sample6).indices)
    assert all(not np.isnan(float(r["score"])) and float(r["seconds"]) > 0 for r in rows)  # -inf: singular kernel

    def fail(*args):
        raise AssertionError("a cached network was scored again")

    monkeypatch.setattr(scoring, "_score_one", fail)
    code, _, err = run(capsys, "score", "--proxy", "naswot", *_common(sample6, tmp_path, "--out", str(tmp_path / "again.csv")))
    assert code == 0, err
    assert (tmp_path / "again.csv").read_text() == out.read_text()


def test_a_new_network_is_the_only_one_scored(tmp_path, sample6, data_dir, monkeypatch):
    sample = read_sample(sample6)
    first = scoring.score_sample("params", sample, "cifar10", tmp_path, batch_size=8)
    wider = make_sample(get_space("tss"), "random", 7, 1, split="all")
    seen = []
    real = scoring._score_one
    monkeypatch.setattr(scoring, "_score_one", lambda index, shared: seen.append(index) or real(index, shared))
    scoring.score_sample("params", sample, "cifar10", tmp_path, batch_size=8)
    assert seen == []
    both = scoring.score_sample("params", wider, "cifar10", tmp_path, batch_size=8)
    assert set(seen) == set(wider.indices) - set(sample.indices)
    common = {i: v for i, v in zip(first.indices, first.values)}
    assert all(common[i] == v for i, v in zip(both.indices, both.values) if i in common)


def test_serial_ray_and_process_scores_are_identical(tmp_path, sample6, data_dir):
    import ray

    sample = read_sample(sample6)
    serial = scoring.score_sample("zico", sample, "cifar10", tmp_path / "a", batch_size=8)
    try:
        parallel = scoring.score_sample("zico", sample, "cifar10", tmp_path / "b", batch_size=8, backend="ray", workers=2)
    finally:
        ray.shutdown()
    processes = scoring.score_sample("zico", sample, "cifar10", tmp_path / "c", batch_size=8, backend="processes",
                                     workers=2)
    assert np.array_equal(serial.values, parallel.values) and np.array_equal(serial.values, processes.values)


def test_an_error_in_a_local_process_is_the_same_one_line(tmp_path, sample6, data_dir):
    bad = tmp_path / "bad.py"
    bad.write_text("def score(model, inputs, **options):\n    raise ValueError('no good')\n")
    with pytest.raises(ZcpError, match="no good"):
        scoring.score_sample(str(bad), read_sample(sample6), "cifar10", tmp_path, batch_size=8, backend="processes",
                             workers=2)


def test_compare_writes_tables_and_plots(capsys, tmp_path, sample6, data_dir):
    proxy_file = tmp_path / "logit_sum.py"
    proxy_file.write_text(PROXY_FILE)
    out = tmp_path / "report"
    subset = write_sample(subsample(read_sample(sample6), 6, 1), tmp_path / "subset.json")  # the same six networks
    code, stdout, err = run(capsys, "compare", "--proxies", f"params,naswot,az_nas,{proxy_file}", "--bootstrap", "50",
                            "--paired", "az_nas.expressivity,params", *_common(subset, tmp_path, "--out", str(out)))
    assert code == 0, err
    assert "6 networks (uniform subset (seed 1) of a random sample of 6 drawn with seed 0)" in stdout
    rows = {r["proxy"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert set(rows) == {"params", "naswot", "logit_sum", "az_nas", "az_nas.expressivity", "az_nas.progressivity",
                         "az_nas.trainability", "az_nas.complexity"}
    for r in rows.values():
        assert int(r["n"]) == 6 and float(r["kendall_lo"]) <= float(r["kendall_hi"])
        assert 0.0 <= float(r["top10"]) <= 1.0
    assert "| params | 6 |" in (out / "results.md").read_text() and "| params | 6 |" in stdout
    assert (out / "kendall.png").read_bytes()[:4] == b"\x89PNG"
    assert all((out / "scatter" / f"{name}.png").is_file() for name in rows)
    per_network = list(csv.DictReader((out / "scores.csv").open()))  # every row's score of every network
    sample = read_sample(subset)
    assert [int(r["index"]) for r in per_network] == list(sample.indices)
    assert [r["arch"] for r in per_network] == list(sample.archs)
    naswot = scoring.score_sample("naswot", sample, "cifar10", tmp_path / "scores", batch_size=8)
    assert [float(r["naswot"]) for r in per_network] == list(naswot.values)
    assert set(per_network[0]) == {"index", "arch", "accuracy", *rows}
    pairs = list(csv.DictReader((out / "paired.csv").open()))
    tau = {name: float(r["kendall"]) for name, r in rows.items()}
    for ref in ("az_nas.expressivity", "params"):
        mine = [r for r in pairs if r["reference"] == ref]
        assert [r["proxy"] for r in mine] == [name for name in rows if name != ref]
        for r in mine:
            assert float(r["kendall_difference"]) == pytest.approx(tau[r["proxy"]] - tau[ref], abs=2e-4)  # 4-digit CSVs
    assert len(pairs) == 2 * (len(rows) - 1)
    assert stdout.index("## Paired differences against az_nas.expressivity") < stdout.index(
        "## Paired differences against params (Kendall tau)")


def _compare(capsys, sample, tmp_path, cache, out, *extra, proxies="params,naswot,az_nas"):
    return run(capsys, "compare", "--proxies", proxies, "--bootstrap", "20",
               *_common(sample, tmp_path, "--score-cache", str(tmp_path / cache), "--out", str(tmp_path / out), *extra))


def test_scores_of_an_earlier_compare_stand_in_once_some_are_found_equal(capsys, tmp_path, sample6, data_dir,
                                                                         monkeypatch):
    proxy_file = tmp_path / "logit_sum.py"
    proxy_file.write_text(PROXY_FILE)
    proxies = f"params,naswot,az_nas,{proxy_file}"
    half = write_sample(subsample(read_sample(sample6), 3, 1), tmp_path / "half.json")
    assert _compare(capsys, half, tmp_path, "a", "half", proxies=proxies)[0] == 0
    assert _compare(capsys, sample6, tmp_path, "b", "direct", proxies=proxies)[0] == 0
    seen = []
    real = scoring._score_one
    monkeypatch.setattr(scoring, "_score_one", lambda index, shared: seen.append(index) or real(index, shared))
    code, stdout, err = _compare(capsys, sample6, tmp_path, "c", "merged", "--scores-from",
                                 str(tmp_path / "half" / "scores.csv"), proxies=proxies)
    assert code == 0, err
    # every proxy scores the three new networks and two of the file's, first; az_nas re-aggregates all six
    halves = set(read_sample(half).indices)
    assert len(seen) == 4 * 5 and all(len(set(seen[k:k + 5]) & halves) == 2 for k in range(0, 20, 5))
    assert all(seen[k + 2] not in halves for k in range(0, 20, 5))
    assert (tmp_path / "merged" / "scores.csv").read_text() == (tmp_path / "direct" / "scores.csv").read_text()
    merged = list(csv.DictReader((tmp_path / "merged" / "results.csv").open()))
    direct = list(csv.DictReader((tmp_path / "direct" / "results.csv").open()))
    assert [{k: v for k, v in r.items() if k != "seconds_per_network"} for r in merged] == \
           [{k: v for k, v in r.items() if k != "seconds_per_network"} for r in direct]
    assert all(float(r["seconds_per_network"]) > 0 for r in merged)
    assert "az_nas: 1 of 6 networks' scores taken from" in stdout and "all equal within 1e-06" in stdout
    assert not any(json.loads(f.read_text())["scores"].keys() & {str(i) for i in halves} - set(map(str, seen))
                   for f in (tmp_path / "c").glob("*.json"))  # taken scores never enter the cache


def test_scores_made_with_other_settings_are_refused(capsys, tmp_path, sample6, data_dir):
    assert _compare(capsys, sample6, tmp_path, "a", "first")[0] == 0
    made = str(tmp_path / "first" / "scores.csv")
    code, _, err = _compare(capsys, sample6, tmp_path, "b", "o", "--scores-from", made, "--batch-size", "4")
    error = err.strip().splitlines()[-1]  # after the progress lines of params, which batch size leaves equal
    assert code == 2 and error.startswith(f"zcp: error: naswot: network {read_sample(sample6).indices[0]} scores")
    assert "but {'value'" in error and "made with other settings" in error
    code, _, err = _compare(capsys, sample6, tmp_path, "b", "o", "--scores-from", made, "--dataset", "cifar100")
    assert code == 2 and "there but" in err and "in the cifar100 ground truth (another dataset?)" in err
    edited = tmp_path / "edited.csv"
    lines = (tmp_path / "first" / "scores.csv").read_text().splitlines()
    header = lines[0].split(",")
    fields = lines[6].split(",")
    fields[header.index("params")] = "1.5"
    edited.write_text("\n".join([*lines[:6], ",".join(fields)]) + "\n")
    code, _, err = _compare(capsys, sample6, tmp_path, "a", "o", "--scores-from", str(edited))  # checked on the cache
    assert code == 2 and f"params: network {fields[0]} scores" in err and f"{{'value': 1.5}} in {edited}" in err
    edited.write_text("index,arch,params\n1,|x|,one\n")
    code, _, err = _compare(capsys, sample6, tmp_path, "a", "o", "--scores-from", str(edited))
    assert code == 2 and err.strip() == f"zcp: error: {edited}: line 2 is malformed (could not convert string to float: 'one')"
    edited.write_text("arch,params\n")
    code, _, err = _compare(capsys, sample6, tmp_path, "a", "o", "--scores-from", str(edited))
    assert code == 2 and f"{edited} is not a per-network scores file" in err
    code, _, err = _compare(capsys, sample6, tmp_path, "a", "o", "--scores-from", str(tmp_path / "none.csv"))
    assert code == 2 and err.strip() == f"zcp: error: scores file {tmp_path / 'none.csv'} does not exist"
    code, _, err = _compare(capsys, sample6, tmp_path, "a", "o", "--scores-from", made, "--recheck", "0")
    assert code == 2 and "--recheck must be >= 1 (got 0)" in err


def test_all_expands_to_the_zoo():
    from experiments.commands.proxies import _expand, proxy_names

    assert _expand("all,x.py,params") == [*proxy_names(), "x.py"]


def test_search_reports_picked_pool_best_and_space_best(capsys, tmp_path, data_dir):
    code, stdout, err = run(capsys, "search", "--proxy", "params", "--space", "tss", "--dataset", "cifar10",
                            "--pool", "5", "--trials", "2", "--batch-size", "8", "--backend", "serial",
                            "--score-cache", str(tmp_path))
    assert code == 0, err
    assert stdout.count("trial ") == 2
    summary = stdout.strip().splitlines()[-1]
    assert "2 trials of 5 random networks: picked" in summary and "space best 94.37%" in summary


def test_score_with_an_option_changes_the_cache_key(capsys, tmp_path, sample6, data_dir):
    proxy_file = tmp_path / "p.py"
    proxy_file.write_text(PROXY_FILE)
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert run(capsys, "score", "--proxy", str(proxy_file), *_common(sample6, tmp_path, "--out", str(a)))[0] == 0
    assert run(capsys, "score", "--proxy", str(proxy_file), "--option", "scale=2",
               *_common(sample6, tmp_path, "--out", str(b)))[0] == 0
    sa = [float(r["score"]) for r in csv.DictReader(a.open())]
    sb = [float(r["score"]) for r in csv.DictReader(b.open())]
    assert np.allclose(sb, 2 * np.array(sa))
    report = tmp_path / "report"
    assert run(capsys, "compare", "--proxies", str(proxy_file), "--option", "scale=2", "--bootstrap", "20",
               *_common(sample6, tmp_path, "--out", str(report)))[0] == 0
    assert (report / "results.md").read_text().splitlines()[0].endswith("batch 8, seed 0, scale=2")


@pytest.mark.parametrize("argv, message", [
    (["score", "--proxy", "nope"], "unknown proxy 'nope'; known: az_nas, dextr, fisher"),
    (["score", "--proxy", "snip", "--images", "gaussian"], "proxy snip needs labels, but gaussian images of cifar10 have none"),
    (["score", "--proxy", "/nonexistent/p.py"], "exported proxy /nonexistent/p.py does not exist"),
    (["compare", "--proxies", ","], "--proxies names no proxy"),
    (["score", "--proxy", "params", "--option", "novalue"], "--option 'novalue' must read KEY=VALUE"),
    (["score", "--proxy", "synflow", "--option", "batchnorm=eval"],
     "synflow option batchnorm must be 'drop' or 'train', not 'eval'"),
])
def test_bad_input_is_one_line(capsys, tmp_path, sample6, data_dir, argv, message):
    code, _, err = run(capsys, *argv, *_common(sample6, tmp_path, "--out", str(tmp_path / "o")))
    assert code == 2
    assert err.strip() == f"zcp: error: {err.strip()[len('zcp: error: '):]}" and message in err
    assert len(err.strip().splitlines()) == 1


def test_an_unknown_paired_reference_is_refused_before_any_scoring(capsys, tmp_path, sample6, data_dir):
    code, _, err = run(capsys, "compare", "--proxies", "params,az_nas", "--paired", "params,zico",
                       *_common(sample6, tmp_path, "--out", str(tmp_path / "o")))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.strip() == ("zcp: error: --paired 'zico' is not one of the compared proxies (params, az_nas, "
                           "az_nas.expressivity, az_nas.progressivity, az_nas.trainability, az_nas.complexity)")
    assert not (tmp_path / "scores").exists() and not (tmp_path / "o").exists()


def test_a_sample_from_another_space_is_refused(capsys, tmp_path, data_dir):
    path = tmp_path / "sss.json"
    write_sample(make_sample(get_space("sss"), "random", 3, 0, split="all"), path)
    code, _, err = run(capsys, "score", "--proxy", "params", *_common(path, tmp_path, "--out", str(tmp_path / "o")))
    assert code == 2 and err.strip() == f"zcp: error: sample file {path} is from space 'sss', not 'tss'"


def test_a_proxy_file_without_score_is_refused(capsys, tmp_path, sample6, data_dir):
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    code, _, err = run(capsys, "score", "--proxy", str(bad), *_common(sample6, tmp_path, "--out", str(tmp_path / "o")))
    assert code == 2 and "defines no score(model, inputs) function" in err


def test_a_corrupt_score_cache_is_named(capsys, tmp_path, sample6, data_dir):
    assert run(capsys, "score", "--proxy", "params", *_common(sample6, tmp_path, "--out", str(tmp_path / "o")))[0] == 0
    cached = next((tmp_path / "scores").glob("params-*.json"))
    cached.write_text(json.dumps({"format": "zcp-scores/1", "spec": {}, "scores": {}}))
    code, _, err = run(capsys, "score", "--proxy", "params", *_common(sample6, tmp_path, "--out", str(tmp_path / "o")))
    assert code == 2 and f"score cache {cached} was made for other settings" in err


def test_a_cache_write_keeps_what_another_run_wrote_meanwhile(tmp_path):
    spec = scoring.ScoreSpec("params@x", "tss", "cifar10", "npz", 8, 0, "c0de")
    path = tmp_path / "params.json"
    scoring._write_cache(path, spec, {"1": {"value": 1.0, "seconds": 0.1}})  # another run's checkpoint
    mine = {"2": {"value": 2.0, "seconds": 0.1}}
    scoring._write_cache(path, spec, mine)
    assert set(json.loads(path.read_text())["scores"]) == {"1", "2"} and set(mine) == {"1", "2"}


def test_a_bad_device_is_refused_before_any_work(capsys, tmp_path, sample6, data_dir):
    code, _, err = run(capsys, "compare", "--proxies", "params", "--device", "tpu",
                       *_common(sample6, tmp_path, "--out", str(tmp_path / "o")))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "argument --device: unknown device 'tpu'; use auto, cpu, cuda or cuda:N" in err
    assert not (tmp_path / "o").exists()


def _die(index, shared):
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_local_process_that_dies_is_one_line():
    from evaluation.parallel import run_tasks

    with pytest.raises(ZcpError, match=r"a local worker process died \(killed, or out of memory\?\) on "):
        list(run_tasks(_die, [1, 2], backend="processes", workers=1))


def test_the_cache_key_covers_every_setting_and_the_code():
    spec = scoring.ScoreSpec("params:x", "tss", "cifar10", "npz", 8, 0, "c0de")
    others = [dataclasses.replace(spec, **{k: v}) for k, v in [
        ("proxy", "params:y"), ("space", "sss"), ("dataset", "cifar100"), ("image_source", "gaussian"),
        ("batch_size", 16), ("seed", 1), ("inputs_code", "c0df"), ("options", (("k", 1),)), ("device", "cuda")]]
    assert len({spec.key(), *(o.key() for o in others)}) == 1 + len(others)


def test_editing_the_code_a_zoo_proxy_uses_changes_its_cache_key(tmp_path, sample6, data_dir, monkeypatch):
    # a corrected zoo proxy (once: zen's NB101 fix), or a corrected helper it shares, must not read old scores
    sample = read_sample(sample6)
    first = scoring.score_sample("params", sample, "cifar10", tmp_path, batch_size=8)
    assert first.scored == 6 and scoring.resolve("params")[1] != scoring.resolve("flops")[1]
    assert scoring.resolve("params")[1] == f"params:{code_digest('evaluation.proxies.params')}"
    assert scoring.score_sample("params", sample, "cifar10", tmp_path, batch_size=8).scored == 0
    real = scoring.code_digest
    edited = lambda changed: lambda *roots: real(*roots) + ("!" if changed in roots else "")  # noqa: E731
    monkeypatch.setattr(scoring, "code_digest", edited("evaluation.proxies.params"))
    again = scoring.score_sample("params", sample, "cifar10", tmp_path, batch_size=8)
    assert again.scored == 6 and again.values.tolist() == first.values.tolist()
    monkeypatch.setattr(scoring, "code_digest", edited("evaluation.images"))
    assert scoring.score_sample("params", sample, "cifar10", tmp_path, batch_size=8).scored == 6
    assert len(list(tmp_path.glob("params-*.json"))) == 3


def test_cuda_scores_are_cached_apart_and_read_without_a_gpu(tmp_path, sample6, data_dir, monkeypatch):
    sample = read_sample(sample6)
    on_cpu = scoring.score_sample("params", sample, "cifar10", tmp_path, batch_size=8, device="cpu")
    identity = scoring.resolve("params")[1]
    spec = scoring.ScoreSpec(identity, "tss", "cifar10", "npz", 8, 0, scoring.inputs_code("tss"), device="cuda")
    made_on_gpu = {str(i): {"value": 1.0 + k, "seconds": 0.1} for k, i in enumerate(sample.indices)}
    scoring._write_cache(tmp_path / f"params-{spec.key()}.json", spec, made_on_gpu)
    monkeypatch.setattr(scoring, "_score_one", lambda *a: pytest.fail("a cached network was scored again"))
    read = scoring.score_sample("params", sample, "cifar10", tmp_path, batch_size=8, device="cuda")
    assert read.values.tolist() == [1.0 + k for k in range(6)] != on_cpu.values.tolist()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_is_one_line(capsys, tmp_path, sample6, data_dir):
    code, _, err = run(capsys, "score", "--proxy", "params", "--device", "cuda",
                       *_common(sample6, tmp_path, "--out", str(tmp_path / "o")))
    assert code == 2 and err.strip() == "zcp: error: device 'cuda' was asked for, but this machine has no CUDA device"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("proxy", proxy_names())
def test_every_zoo_proxy_scores_on_cuda(proxy, tmp_path, sample6, data_dir):
    """On CUDA the networks get CUDA's initial weights, so scores differ from the CPU's; they must be
    finite where the CPU's are, and deterministic."""
    sample = read_sample(sample6)
    cpu = scoring.score_sample(proxy, sample, "cifar10", tmp_path / "cpu", batch_size=8, device="cpu")
    cuda = scoring.score_sample(proxy, sample, "cifar10", tmp_path / "cuda", batch_size=8, device="cuda")
    again = scoring.score_sample(proxy, sample, "cifar10", tmp_path / "again", batch_size=8, device="cuda")
    assert np.array_equal(np.isfinite(cpu.values), np.isfinite(cuda.values)), (cpu.values, cuda.values)
    assert np.allclose(cuda.values, again.values, rtol=1e-5, equal_nan=True)
    print(proxy, "cpu", cpu.values.tolist(), "cuda", cuda.values.tolist())
