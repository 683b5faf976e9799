"""Crash and resume: kill -9 at random times (seeded), checksummed checkpoints, disk full / permission denied.

After every kill, each file on disk is whole (it parses, its checksum holds) and the resumed run
equals an uninterrupted one. tests/test_cache.py and tests/test_campaign.py hold the kill tests at
fixed points; these draw the kill time from a seed.
"""
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from evaluation.cache import PACKED, SHARDS, load_cache
from evaluation.errors import ZcpError
from evaluation.samples import make_sample, write_sample
from evaluation.spaces import get_space
from experiments import campaign
from experiments.checkpoint import read_checkpoint, write_checkpoint
from experiments.cli import main
from experiments.config import load_config
from tests.campaigns import tiny_config, without_progress
from tests.test_cache import FAST

SAMPLE = make_sample(get_space("tss"), "random", 6, 11)
GENERATIONS = 12


def _kill_after(cmd: list[str], seconds: float, out: Path) -> None:
    """Run ``cmd`` (which writes ``out``) and SIGKILL it after ``seconds``. If it finished first (the
    machine is faster now than when the time bounds were measured), clear ``out`` and try again at
    half the time, so every test does kill a running process."""
    for _ in range(6):
        shutil.rmtree(out, ignore_errors=True)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        seconds /= 2
    pytest.fail(f"{cmd[3:5]} always finished before the kill")


@pytest.fixture(scope="module")
def startup() -> float:
    """Seconds a ``zcp`` process needs before it does any work (imports): kills land after it."""
    return _timed_run([sys.executable, "-m", "experiments.cli", "--help"])


def _kill_time(seed: int, startup: float, seconds: float) -> float:
    return startup + random.Random(seed).uniform(0.0, 0.6 * (seconds - startup))


def _timed_run(cmd: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start


# ------------------------------------------------------------------------------------------ cache

def _cache_cmd(sample: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "experiments.cli", "cache", "build", "--space", "tss", "--dataset", "cifar10",
            "--sample", str(sample), "--batch-size", "8", "--images", "gaussian", "--backend", "serial",
            "--terminals", ",".join(FAST), "--out", str(out)]


@pytest.fixture(scope="module")
def reference_cache(tmp_path_factory):
    """The uninterrupted build (a subprocess, so its duration bounds the kill times)."""
    tmp = tmp_path_factory.mktemp("cache")
    sample = write_sample(SAMPLE, tmp / "s.json")
    seconds = _timed_run(_cache_cmd(sample, tmp / "ref"))
    return sample, load_cache(tmp / "ref").arrays, seconds


def _shards_are_whole(out: Path) -> None:
    for shard in (out / SHARDS).glob("*.npz") if (out / SHARDS).exists() else []:
        with np.load(shard, allow_pickle=False) as data:
            assert set(FAST) <= set(data.files), shard


def _kill_and_resume_cache(reference_cache, startup, tmp_path, seed):
    sample, expected, seconds = reference_cache
    out = tmp_path / f"killed{seed}"
    _kill_after(_cache_cmd(sample, out), _kill_time(seed, startup, seconds), out)
    _shards_are_whole(out)
    assert main(_cache_cmd(sample, out)[3:]) == 0
    got = load_cache(out).arrays
    assert got.keys() == expected.keys() and all(np.array_equal(got[k], expected[k]) for k in got)
    assert not [p.name for p in out.rglob(".*")], "temporary files left behind"


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_cache_killed_at_random_times_resumes_to_the_same_cache(reference_cache, startup, tmp_path, seed):
    _kill_and_resume_cache(reference_cache, startup, tmp_path, seed)


# --------------------------------------------------------------------------------------- campaign

def _config(tmp_path: Path, cache_dir: str) -> Path:
    return tiny_config(tmp_path, cache_dir, generations=GENERATIONS)


def _evolve_cmd(config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "experiments.cli", "evolve", str(config), "--out", str(out)]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An uninterrupted campaign run in this process (it also builds the shared caches)."""
    tmp, caches = tmp_path_factory.mktemp("run"), tmp_path_factory.mktemp("caches")
    start = time.monotonic()
    record = campaign.start(_config(tmp, str(caches)), tmp / "run", progress=False)
    return tmp / "run", record, caches, time.monotonic() - start


@pytest.fixture(scope="module")
def reference_seconds(finished, startup, tmp_path_factory) -> float:
    """How long the same campaign takes as a ``zcp`` process once its caches exist (bounds kill times)."""
    tmp = tmp_path_factory.mktemp("timed")
    return _timed_run(_evolve_cmd(_config(tmp, str(finished[2])), tmp / "run"))


def _files_are_whole(run_dir: Path) -> None:
    """Every file a killed campaign left is complete: it parses and, for the checkpoint, its checksum holds."""
    if (run_dir / "config.toml").exists():
        load_config(run_dir / "config.toml")
    if (run_dir / "checkpoint.json").exists():
        read_checkpoint(run_dir / "checkpoint.json")
    for name in ("hall_of_fame.json", *(f"samples/{p.name}" for p in (run_dir / "samples").glob("*.json"))):
        if (run_dir / name).exists():
            json.loads((run_dir / name).read_text())
    if (run_dir / "log.jsonl").exists():
        [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def _kill_and_resume_campaign(tmp_path: Path, kill_at: float, caches: str, expected: dict) -> None:
    run_dir = tmp_path / "killed"
    _kill_after(_evolve_cmd(_config(tmp_path, caches), run_dir), kill_at, run_dir)
    _files_are_whole(run_dir)
    if (run_dir / "config.toml").exists():
        record = campaign.resume(run_dir, progress=False)
    else:  # killed before anything was written: the user runs the same command again
        record = campaign.start(_config(tmp_path, caches), run_dir, progress=False)
    assert record["entries"] == expected["entries"]
    assert record["baselines"] == expected["baselines"]
    assert [json.loads(line)["generation"] for line in (run_dir / "log.jsonl").read_text().splitlines()] == \
        list(range(GENERATIONS + 1))
    assert not [p.name for p in run_dir.glob(".*")], "temporary files left behind"


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_campaign_killed_at_random_times_resumes_to_the_same_result(finished, reference_seconds, startup, tmp_path,
                                                                     seed):
    _, expected, caches, _ = finished
    _kill_and_resume_campaign(tmp_path, _kill_time(seed, startup, reference_seconds), str(caches), expected)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [4, 5, 6])
def test_campaign_killed_at_random_times_with_its_own_caches(finished, startup, tmp_path, seed):
    """Caches inside the run directory: a kill may also land in the middle of a cache build."""
    _, expected, _, seconds = finished
    _kill_and_resume_campaign(tmp_path, _kill_time(seed, startup, startup + seconds), "", expected)


def _copy(run: Path, tmp_path: Path) -> Path:
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def _resume_error(capsys, run_dir: Path) -> str:
    assert main(["resume", str(run_dir)]) == 2
    err = without_progress(capsys.readouterr().err)
    assert err.startswith("zcp: error: ") and err.count("\n") == 1, err
    return err


def test_a_damaged_checkpoint_is_one_line_and_never_used(finished, tmp_path, capsys):
    run_dir = _copy(finished[0], tmp_path)
    path = run_dir / "checkpoint.json"
    good = path.read_text()
    path.write_text(good.replace('"generation": 12', '"generation": 11', 1))
    assert "fails its checksum" in _resume_error(capsys, run_dir)
    path.write_text(good[: len(good) // 2])
    assert "is not valid JSON" in _resume_error(capsys, run_dir)
    path.write_text(json.dumps({"engine": {}}))
    assert "is not a zcp checkpoint" in _resume_error(capsys, run_dir)
    path.write_text(good)
    record = read_checkpoint(path)
    write_checkpoint(path, record | {"engine": {"population": ["params"]}})  # checksum right, content wrong
    assert "is refused: engine state is malformed" in _resume_error(capsys, run_dir)


@pytest.mark.parametrize("where", ["population", "hall_of_fame"])
def test_a_checkpoint_holding_python_code_is_refused(finished, tmp_path, monkeypatch, capsys, where):
    run_dir = _copy(finished[0], tmp_path)
    monkeypatch.chdir(tmp_path)
    record = read_checkpoint(run_dir / "checkpoint.json")
    code = "__import__('os').system('touch MARKER')"
    if where == "population":
        record["engine"]["population"][0] = code
    else:
        record["engine"]["hall_of_fame"][0]["expression"] = code
    write_checkpoint(run_dir / "checkpoint.json", record)  # the checksum holds: only parsing stands in the way
    assert "checkpoint.json is refused: unexpected character" in _resume_error(capsys, run_dir)
    assert not (tmp_path / "MARKER").exists()


# ------------------------------------------------------------------------------ disk full, denied

def _fail_nth_write(monkeypatch, name: str, n: int, code: int) -> None:
    """The n-th atomic write of ``name`` fails with ``code``: a full disk when its data is flushed
    (``fsync``), a denied permission when its temporary file is created (``mkstemp``)."""
    seen = []

    def fail() -> None:
        seen.append(1)
        if len(seen) == n:
            raise OSError(code, os.strerror(code))

    if code == errno.ENOSPC:
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{name}."):
                fail()
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
    else:
        real_mkstemp = tempfile.mkstemp

        def mkstemp(*args, **kwargs):
            if kwargs.get("prefix") == f".{name}.":
                fail()
            return real_mkstemp(*args, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_disk_full_or_denied_keeps_the_last_good_checkpoint(finished, tmp_path, monkeypatch, capsys, code):
    _, expected, caches, _ = finished
    run_dir = tmp_path / "run"
    _fail_nth_write(monkeypatch, "checkpoint.json", 6, code)  # generation 5's checkpoint cannot be written
    assert main(["evolve", str(_config(tmp_path, str(caches))), "--out", str(run_dir)]) == 2
    err = without_progress(capsys.readouterr().err)
    assert err == f"zcp: error: cannot write {run_dir / 'checkpoint.json'}: {os.strerror(code)}\n"
    assert read_checkpoint(run_dir / "checkpoint.json")["engine"]["generation"] == 4
    assert not [p.name for p in run_dir.glob(".*")]
    monkeypatch.undo()
    assert campaign.resume(run_dir, progress=False)["entries"] == expected["entries"]


def test_disk_full_during_a_cache_build_is_one_line_and_resumable(tmp_path, monkeypatch, capsys):
    sample = write_sample(SAMPLE, tmp_path / "s.json")
    _fail_nth_write(monkeypatch, f"{SAMPLE.indices[2]}.npz", 1, errno.ENOSPC)
    assert main(_cache_cmd(sample, tmp_path / "c")[3:]) == 2
    err = without_progress(capsys.readouterr().err)
    assert err.startswith("zcp: error: cannot write ") and "No space left on device" in err and err.count("\n") == 1
    assert len(list((tmp_path / "c" / SHARDS).glob("*.npz"))) == 2 and not (tmp_path / "c" / PACKED).exists()
    monkeypatch.undo()
    assert main(_cache_cmd(sample, tmp_path / "c")[3:]) == 0


def test_an_unwritable_run_directory_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("")
    assert main(["evolve", str(_config(tmp_path, "")), "--out", str(tmp_path / "file" / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zcp: error: cannot write ") and err.count("\n") == 1, err


def test_read_checkpoint_names_a_missing_file(tmp_path):
    with pytest.raises(ZcpError, match="checkpoint .* does not exist"):
        read_checkpoint(tmp_path / "checkpoint.json")
