"""The terminal cache: build, resume after kill -9, refuse mixed or damaged caches, serial == Ray."""
import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from evaluation.cache import MANIFEST, PACKED, SHARDS, build_cache, load_cache, recheck_cache
from evaluation.errors import ZcpError
from evaluation.samples import make_sample, write_sample
from evaluation.spaces import get_space
from experiments.cli import main

SAMPLE = make_sample(get_space("tss"), "random", 4, 7)
FAST = ("act_sv", "chan_corr_eig", "snip", "code_kernel", "params", "depth")


def _build(out, **kw):
    args = dict(batch_size=8, seed=0, terminals=FAST, backend="serial", image_source="gaussian", progress=False)
    return build_cache(SAMPLE, "cifar10", out, **(args | kw))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("cache")
    _build(out)
    return out


def test_build_and_load(built):
    cache = load_cache(built, space="tss", dataset="cifar10", seed=0)
    assert cache.indices.tolist() == list(SAMPLE.indices)
    assert not (built / SHARDS).exists()
    env = cache.env()
    assert set(env) == set(FAST)
    assert env["code_kernel"].data.shape == (4, 8, 8)
    assert env["params"].data.shape == (4,) and (env["depth"].data > 0).all()


def test_rebuilding_a_complete_cache_does_nothing(built):
    stamp = (built / PACKED).stat().st_mtime_ns
    _build(built)
    assert (built / PACKED).stat().st_mtime_ns == stamp


def test_refuses_to_mix_caches_made_differently(built):
    with pytest.raises(ZcpError, match="made differently: seed is 0 there, 1 here"):
        _build(built, seed=1)
    with pytest.raises(ZcpError, match="batch_size is 8 there, 16 here"):
        _build(built, batch_size=16)
    with pytest.raises(ZcpError, match="is for dataset='cifar10', not 'cifar100'"):
        load_cache(built, dataset="cifar100")
    with pytest.raises(ZcpError, match="is for space='tss', not 'sss'"):
        load_cache(built, space="sss")


def test_damaged_caches_are_one_line_errors(built, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    manifest = json.loads((built / MANIFEST).read_text())
    (copy / MANIFEST).write_text(json.dumps(manifest))
    shutil.copytree(built / PACKED, copy / PACKED)
    (copy / PACKED / "act_sv.npy").write_bytes((built / PACKED / "act_sv.npy").read_bytes()[:1000])
    with pytest.raises(ZcpError, match="act_sv.npy is truncated or corrupt"):
        load_cache(copy)
    (copy / MANIFEST).write_text(json.dumps(manifest | {"format": "zcp-cache/0"}))
    with pytest.raises(ZcpError, match="has format 'zcp-cache/0'"):
        load_cache(copy)
    (copy / MANIFEST).write_text("{")
    with pytest.raises(ZcpError, match="unreadable"):
        load_cache(copy)
    (copy / MANIFEST).write_text(json.dumps(manifest))
    (copy / PACKED / "act_sv.npy").unlink()
    with pytest.raises(ZcpError, match="does not match its manifest \\(missing act_sv"):
        load_cache(copy)
    with pytest.raises(ZcpError, match="not a terminal cache"):
        load_cache(tmp_path)


def test_incomplete_cache_says_how_to_finish(tmp_path, built):
    (tmp_path / MANIFEST).write_text((built / MANIFEST).read_text())
    with pytest.raises(ZcpError, match="incomplete"):
        load_cache(tmp_path)


def test_cli_build_and_info(tmp_path, capsys):
    sample = write_sample(make_sample(get_space("tss"), "random", 2, 1), tmp_path / "s.json")
    code = main(["cache", "build", "--space", "tss", "--dataset", "cifar10", "--sample", str(sample), "--batch-size",
                 "4", "--images", "gaussian", "--backend", "serial", "--out", str(tmp_path / "c")])
    assert code == 0
    assert main(["cache", "info", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "cache of 2 tss networks" in out and "2 tss networks, dataset cifar10" in out and "48 terminals" in out
    assert main(["cache", "info", str(tmp_path)]) == 2
    assert main(["cache", "build", "--space", "sss", "--dataset", "cifar10", "--sample", str(sample),
                 "--out", str(tmp_path / "d")]) == 2
    assert "from space 'tss', not 'sss'" in capsys.readouterr().err
    assert main(["cache", "build", "--space", "tss", "--dataset", "cifar10", "--sample", str(sample),
                 "--terminals", "act_sv,bogus", "--out", str(tmp_path / "e")]) == 2
    assert "unknown terminal(s) bogus" in capsys.readouterr().err


def test_serial_and_ray_give_identical_caches(built, tmp_path):
    import ray

    try:
        _build(tmp_path, backend="ray", workers=2)
    finally:
        ray.shutdown()
    a, b = load_cache(built).arrays, load_cache(tmp_path).arrays
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_serial_and_local_processes_give_identical_caches(built, tmp_path):
    _build(tmp_path, backend="processes", workers=2)
    a, b = load_cache(built).arrays, load_cache(tmp_path).arrays
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_resume_after_kill_9_equals_uninterrupted(built, tmp_path):
    sample = write_sample(SAMPLE, tmp_path / "s.json")
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "experiments.cli", "cache", "build", "--space", "tss", "--dataset", "cifar10",
           "--sample", str(sample), "--batch-size", "8", "--images", "gaussian", "--backend", "serial",
           "--terminals", ",".join(FAST), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / SHARDS).glob("*.npz")) if (out / SHARDS).exists() else []) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / PACKED).exists(), "the build finished before it could be killed"
    _build(out)
    a, b = load_cache(built).arrays, load_cache(out).arrays
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cache_built_on_cuda_equals_the_cpu_one(tmp_path):
    """Same weights (built on the CPU, then moved) and exact kernels (no TF32): every terminal agrees
    up to floating-point order, relative to the terminal's scale."""
    _build(tmp_path / "cpu", device="cpu", terminals=None)
    _build(tmp_path / "cuda", device="cuda", terminals=None)
    a, b = load_cache(tmp_path / "cpu").arrays, load_cache(tmp_path / "cuda").arrays
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a if a[k].dtype.kind != "f")
    far = {k: float(np.nanmax(np.abs(a[k] - b[k]) / (np.abs(a[k]) + 1e-6))) for k in a
           if a[k].dtype.kind == "f"
           and not np.allclose(a[k], b[k], rtol=1e-4, atol=1e-5 * np.abs(a[k][np.isfinite(a[k])]).max(initial=1.0),
                               equal_nan=True)}
    assert not far, f"terminals that differ on CUDA (max relative difference): {far}"


def _made_by_other_code(built, folder):
    shutil.copytree(built, folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps(manifest | {"code_version": "old"}))
    return manifest


def test_a_cache_made_by_other_code_is_adopted_once_a_recheck_gives_its_numbers(built, tmp_path, capsys):
    copy = tmp_path / "copy"
    manifest = _made_by_other_code(built, copy)
    with pytest.raises(ZcpError, match="made by other code \\('old'.*`zcp cache recheck"):
        load_cache(copy)
    with pytest.raises(ZcpError, match="code_version is 'old' there, .*; `zcp cache recheck"):
        _build(copy)
    assert main(["cache", "recheck", str(copy), "--networks", "4"]) == 0  # every network: each one's rows
    assert "4 networks run again" in capsys.readouterr().out
    assert json.loads((copy / MANIFEST).read_text()) == manifest
    assert recheck_cache(copy) == 0
    a, b = load_cache(built).arrays, load_cache(copy).arrays
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name, entry, position", [("snip", 0, 0), ("act_sv", -1, -1), ("code_kernel", (2, 0, 1), 2)])
def test_a_recheck_refuses_a_cache_this_code_does_not_reproduce(built, tmp_path, name, entry, position):
    """A changed entry of a per-layer, spectrum or kernel terminal is found and named with its network."""
    copy = tmp_path / "copy"
    _made_by_other_code(built, copy)
    values = np.load(copy / PACKED / f"{name}.npy")
    values[entry] *= 1 + 1e-5
    np.save(copy / PACKED / f"{name}.npy", values)
    with pytest.raises(ZcpError, match=f"terminal {name} of network {SAMPLE.indices[position]} differs"):
        recheck_cache(copy, networks=4)
    assert json.loads((copy / MANIFEST).read_text())["code_version"] == "old"


def test_a_recheck_of_a_damaged_or_incomplete_cache_is_one_line(built, tmp_path):
    copy = tmp_path / "copy"
    manifest = _made_by_other_code(built, copy)
    (copy / MANIFEST).write_text(json.dumps({k: v for k, v in manifest.items() if k not in ("seed", "signal")}
                                            | {"code_version": "old"}))
    with pytest.raises(ZcpError, match="lacks seed, signal: rebuild the cache"):
        recheck_cache(copy)
    shutil.rmtree(copy / PACKED)
    (copy / MANIFEST).write_text(json.dumps(manifest | {"code_version": "old"}))
    with pytest.raises(ZcpError, match="is incomplete and was made by other code: delete it and build it again"):
        recheck_cache(copy)
