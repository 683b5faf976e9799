"""Ray clusters: bad addresses in one line, a real multi-node cluster bound to 127.0.0.1 whose nodes
cannot import the project, runs on it bit-identical to serial ones, GPU placement, a node dying.

Cluster nodes are separate ``ray start`` processes (evaluation.cluster.LocalCluster) with a private
temp dir and ports, killed by the fixture even when a test fails. They run a Python that has the
dependencies but not the project (a venv whose only link is to the dependencies' site-packages), so
everything a worker imports from the project arrives through Ray's runtime environment.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import pytest
import ray
from ray import cloudpickle

from evaluation import cluster as ec
from evaluation.cache import build_cache, load_cache
from evaluation.errors import ZcpError
from evaluation.evaluators import Evaluator, Payload
from evaluation.parallel import run_tasks, start_ray
from evaluation.samples import make_sample, write_sample
from evaluation.spaces import get_space
from experiments.cli import main
from tests.campaigns import tiny_config

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = make_sample(get_space("tss"), "random", 6, 11)
TERMS = ("params", "code_kernel", "chan_corr_eig", "snip")
BUILD = ["--space", "tss", "--dataset", "cifar10", "--batch-size", "4", "--images", "gaussian", "--seed", "0",
         "--terminals", ",".join(TERMS)]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("zcp: error: ") and "\n" not in err, err
    return err


# ---------------------------------------------------------------- bad addresses (no cluster needed)

@pytest.mark.parametrize("address, message", [
    ("nonsense", "malformed Ray address 'nonsense': expected HOST:PORT"),
    ("10.0.0.1:99999", "malformed Ray address '10.0.0.1:99999'"),
    ("10.0.0.1:", "malformed Ray address"),
    ("ray://10.0.0.1:10001", "Ray Client addresses (ray://10.0.0.1:10001) are not supported"),
])
def test_malformed_address_is_one_line(address, message, tmp_path, capsys):
    write_sample(SAMPLE, tmp_path / "s.json")
    assert main(["cache", "build", *BUILD, "--sample", str(tmp_path / "s.json"), "--out", str(tmp_path / "c"),
                 "--address", address]) == 2
    assert message in _one_line(capsys)


def test_unreachable_address_is_one_line_within_seconds(tmp_path, capsys):
    write_sample(SAMPLE, tmp_path / "s.json")
    port = _closed_port()
    start = time.monotonic()
    assert main(["cache", "build", *BUILD, "--sample", str(tmp_path / "s.json"), "--out", str(tmp_path / "c"),
                 "--address", f"127.0.0.1:{port}"]) == 2
    assert time.monotonic() - start < 10
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}: Connection refused" in _one_line(capsys)


def test_address_auto_without_a_cluster_is_one_line(monkeypatch):
    monkeypatch.setattr(ec, "bootstrap_address", lambda: None)
    with pytest.raises(ZcpError, match="--address auto: no running Ray cluster"):
        ec.join("auto")


def test_bad_node_address_and_gpu_share_are_refused():
    with pytest.raises(ZcpError, match="malformed node address 'here': expected an IP address"):
        ec.join("127.0.0.1:1", node_ip="here")
    with pytest.raises(ValueError, match="gpus_per_task must be 0, a fraction below 1 or a whole number"):
        ec.gpu_share(1.5)
    assert ec.gpu_share(0.25) == 0.25 and ec.gpu_share(2) == 2.0


def test_version_mismatch_names_both_versions_in_one_line():
    # Ray's own message (ray._private.utils.check_version_info), as a cluster of another version raises it
    raw = RuntimeError("Version mismatch: The cluster was started with:\n    Ray: 2.9.3\n    Python: 3.10.12\n"
                       "This process on node 10.0.0.5 was started with:\n    Ray: 2.60.0\n    Python: 3.11.7\n")
    err = str(ec.init_error(raw, "10.0.0.1:6379"))
    assert err == ("the Ray cluster at 10.0.0.1:6379 runs Ray 2.9.3 on Python 3.10.12, this driver Ray 2.60.0 on "
                   "Python 3.11.7: install the same versions on both")


# ---------------------------------------------------------------- a real cluster

@pytest.fixture(scope="session")
def bare_python(tmp_path_factory) -> str:
    """A Python with the dependencies (torch, ray, numpy, ...) but without the project."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # a plain path line: the dependencies' .pth files (the project's editable install) are not run
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    check = "import ray, torch\ntry:\n import evaluation\nexcept ImportError:\n print('ok')"
    probe = subprocess.run([python, "-c", check],
                           capture_output=True, text=True, cwd=venv,
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert probe.stdout.strip() == "ok", probe.stderr
    return python


def _driver_env() -> dict[str, str]:
    """Environment of a zcp driver process: the project on its path."""
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _zcp(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.cli", *args], cwd=cwd, env=_driver_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def joined(monkeypatch, tmp_path):
    """Run the test's driver from a folder without the project (Ray adds the driver's cwd to workers'
    path) and leave Ray shut down afterwards."""
    monkeypatch.chdir(tmp_path)
    ray.shutdown()
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def cluster(bare_python):
    """Head (1 CPU) + a node with one logical GPU (1 CPU) + a plain node (1 CPU), all on 127.0.0.1."""
    with ec.LocalCluster(python=bare_python) as c:
        c.start_head(num_cpus=1)
        c.add_node(num_cpus=1, num_gpus=1)
        c.add_node(num_cpus=1)
        yield c


def _probe(item: int, shared: object) -> dict:
    """Where a task ran and what it imported (shipped by value: workers cannot import the tests)."""
    import importlib.util
    import sys

    spec = importlib.util.find_spec("evaluation")
    return {"node": ray.get_runtime_context().get_node_id(), "gpus": list(ray.get_gpu_ids()),
            "python": sys.executable, "evaluation": spec.origin if spec else None}


cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def serial_cache(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serial") / "cache"
    build_cache(SAMPLE, "cifar10", out, batch_size=4, seed=0, terminals=TERMS, backend="serial",
                image_source="gaussian", progress=False)
    return out


def _same_cache(a: Path, b: Path) -> None:
    x, y = load_cache(a).arrays, load_cache(b).arrays
    assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


def test_local_run_beside_a_cluster_starts_its_own_ray_and_auto_joins_it(bare_python, serial_cache, joined,
                                                                         monkeypatch, tmp_path, capsys):
    """The CI variant (the multi-node runs are slow tests): a cluster on 127.0.0.1 that `ray start`
    left on the machine (found as Ray finds one, through RAY_TMPDIR). A local run starts its own Ray
    instance and says so, where Ray's init would join that cluster and fail; `--address auto` joins
    it on purpose. Both builds equal the serial one."""
    build = dict(batch_size=4, seed=0, terminals=TERMS, backend="ray", image_source="gaussian", progress=False)
    with ec.LocalCluster(python=bare_python) as c:
        c.start_head(num_cpus=1)
        monkeypatch.setenv("RAY_TMPDIR", str(c.root))
        build_cache(SAMPLE, "cifar10", tmp_path / "local", workers=1, **build)
        assert capsys.readouterr().err.strip() == (
            f"zcp: note: a Ray cluster runs on this machine ({c.address}); this run starts its own local Ray "
            f"instance (to use that cluster: --address auto)")
        ray.shutdown()
        build_cache(SAMPLE, "cifar10", tmp_path / "auto", address="auto", **build)
        assert capsys.readouterr().err.strip() == f"zcp: joined the Ray cluster at {c.address}: 1 node(s), 1 CPUs, 0 GPUs"
        ray.shutdown()
    _same_cache(serial_cache, tmp_path / "local")
    _same_cache(serial_cache, tmp_path / "auto")


@pytest.mark.slow
def test_workers_cannot_import_the_project_but_run_the_shipped_code(cluster, bare_python, joined):
    start_ray(address=cluster.address)
    seen = [r for _, r in run_tasks(_probe, range(6), backend="ray")]
    assert {r["python"] for r in seen} == {bare_python}
    assert all(r["evaluation"] and "runtime_resources" in r["evaluation"] and str(ROOT) not in r["evaluation"]
               for r in seen), seen


@pytest.mark.slow
def test_cache_build_and_campaign_on_the_cluster_equal_serial(cluster, serial_cache, tmp_path):
    write_sample(SAMPLE, tmp_path / "s.json")
    done = _zcp(["cache", "build", *BUILD, "--sample", str(tmp_path / "s.json"), "--out", str(tmp_path / "c"),
                 "--address", cluster.address], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "zcp: joined the Ray cluster at 127.0.0.1:" in done.stderr and "3 node(s)" in done.stderr
    _same_cache(serial_cache, tmp_path / "c")

    runs = {}
    for backend in ("serial", "ray"):
        (tmp_path / backend).mkdir()
        config = tiny_config(tmp_path / backend, tmp_path / f"caches-{backend}", generations=3, backend=backend,
                             population=16)
        if backend == "ray":
            config.write_text(config.read_text() + f'workers = 3\naddress = "{cluster.address}"\n')
        done = _zcp(["evolve", str(config), "--out", str(tmp_path / backend / "run")], tmp_path)
        assert done.returncode == 0, done.stderr
        runs[backend] = json.loads((tmp_path / backend / "run" / "hall_of_fame.json").read_text())
    assert runs["ray"]["entries"] == runs["serial"]["entries"]


@pytest.mark.slow
def test_tasks_and_actors_asking_for_gpus_land_on_the_gpu_node(cluster, serial_cache, joined, tmp_path):
    start_ray(address=cluster.address)
    gpu_node = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU"))
    seen = [r for _, r in run_tasks(_probe, range(4), backend="ray", gpus_per_task=0.5)]
    assert {r["node"] for r in seen} == {gpu_node} and all(r["gpus"] == [0] for r in seen)
    plain = [r for _, r in run_tasks(_probe, range(4), backend="ray")]
    assert all(r["gpus"] == [] for r in plain)

    build_cache(SAMPLE, "cifar10", tmp_path / "c", batch_size=4, seed=0, terminals=TERMS, backend="ray",
                image_source="gaussian", progress=False, gpus_per_task=0.5, device="cpu")
    _same_cache(serial_cache, tmp_path / "c")

    cache = load_cache(serial_cache)
    payload = Payload(("cifar10",), (cache.arrays,), (np.linspace(0, 1, len(SAMPLE.indices)),), TERMS, "kendall",
                      "min")
    texts = ["params", "layer_sum(v_min(chan_corr_eig))", "n_mul(params, snip)"]
    with pytest.raises(ZcpError, match=r"2 fitness actors of 1 CPU and 0.5 GPU each do not fit the Ray cluster "
                                       r"\(room for 1\)"):  # the GPU node has one CPU: never a hang
        Evaluator(payload, "ray", workers=2, gpus_per_actor=0.5)
    evaluator = Evaluator(payload, "ray", workers=1, gpus_per_actor=0.5)
    try:
        assert evaluator(texts) == Evaluator(payload)(texts)
        assert ray.available_resources().get("GPU", 0) == 0.5  # the actor holds half of the one GPU
    finally:
        evaluator.close()
    with pytest.raises(ZcpError, match="no node of the Ray cluster offers 1 CPU and 2 GPU for a task"):
        next(run_tasks(_probe, range(1), backend="ray", gpus_per_task=2))


PROXY_FILE = '''
import torch

def score(model, inputs, **options):
    """Sum of the logits of the first input (an exported-style proxy)."""
    with torch.no_grad():
        return float(model(inputs[:1]).sum())
'''


@pytest.mark.slow
def test_an_exported_proxy_file_travels_with_the_job_not_as_a_driver_path(cluster, joined, monkeypatch, tmp_path):
    from evaluation import scoring

    proxy = tmp_path / "driver-only" / "logit_sum.py"
    proxy.parent.mkdir()
    proxy.write_text(PROXY_FILE)
    kw = dict(batch_size=4, image_source="gaussian")
    serial = scoring.score_sample(str(proxy), SAMPLE, "cifar10", tmp_path / "scores-serial", **kw)
    real = scoring.run_tasks

    def without_the_file(*args, **kwargs):  # the file is gone before any worker could read it
        proxy.unlink()
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "run_tasks", without_the_file)
    remote = scoring.score_sample(str(proxy), SAMPLE, "cifar10", tmp_path / "scores-ray", backend="ray",
                                  address=cluster.address, **kw)
    assert np.array_equal(serial.values, remote.values)


@pytest.mark.slow
def test_driver_address_outside_the_cluster_is_one_line_within_seconds(cluster, tmp_path):
    write_sample(SAMPLE, tmp_path / "s.json")
    start = time.monotonic()
    done = _zcp(["cache", "build", *BUILD, "--sample", str(tmp_path / "s.json"), "--out", str(tmp_path / "c"),
                 "--address", cluster.address, "--node-ip-address", "192.0.2.123"], tmp_path)
    assert done.returncode == 2 and time.monotonic() - start < 30  # includes the interpreter's start
    err = done.stderr.strip()
    assert "\n" not in err and err.startswith(
        f"zcp: error: the Ray cluster at {cluster.address} has no node on this machine's address 192.0.2.123 "
        f"(its nodes: 127.0.0.1)"), err


@pytest.mark.slow
def test_a_cluster_of_another_version_is_one_line_naming_both(cluster, joined, monkeypatch):
    from ray._private import utils

    monkeypatch.setattr(utils, "compute_version_info", lambda: ("2.9.3", "3.10.12"))  # this driver, disguised
    with pytest.raises(ZcpError) as err:
        start_ray(address=cluster.address)
    ray_version, python = ray.__version__, ".".join(map(str, sys.version_info[:3]))
    assert str(err.value) == (f"the Ray cluster at {cluster.address} runs Ray {ray_version} on Python {python}, "
                              f"this driver Ray 2.9.3 on Python 3.10.12: install the same versions on both")


@pytest.mark.slow
def test_a_node_dying_mid_build_is_retried_elsewhere_with_the_same_result(bare_python, tmp_path):
    sample = make_sample(get_space("tss"), "random", 16, 12)
    write_sample(sample, tmp_path / "s.json")
    build_cache(sample, "cifar10", tmp_path / "serial", batch_size=4, seed=0, terminals=TERMS, backend="serial",
                image_source="gaussian", progress=False)
    with ec.LocalCluster(python=bare_python) as c:
        c.start_head(num_cpus=0)  # all work on the two nodes below
        doomed = c.add_node(num_cpus=1)
        c.add_node(num_cpus=1)
        proc = subprocess.Popen([sys.executable, "-m", "experiments.cli", "cache", "build", *BUILD, "--sample",
                                 str(tmp_path / "s.json"), "--out", str(tmp_path / "c"), "--address", c.address],
                                cwd=tmp_path, env=_driver_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            shards = tmp_path / "c" / "shards"
            deadline = time.monotonic() + 180
            while not (shards.exists() and any(shards.glob("*.npz"))) and proc.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            c.kill_node(doomed)
            _, err = proc.communicate(timeout=240)
        finally:
            proc.kill()
    assert proc.returncode == 0, err
    assert "zcp: warning: a Ray worker died" in err and "retried on another worker" in err, err
    _same_cache(tmp_path / "serial", tmp_path / "c")
