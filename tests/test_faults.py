"""Worker faults: Ray workers killed (SIGKILL) in the middle of a cache build or of a generation.

The work is resubmitted to another worker, the result equals the serial one, and the user sees one
warning line, not Ray's paragraphs. One small local Ray session (2 CPUs) serves the whole module.
Only Ray workers that descend from this test process are ever killed.
"""
import os
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from evaluation.cache import build_cache, load_cache
from evaluation.errors import ZcpError
from evaluation.evaluators import Evaluator, Payload
from evaluation.fitness import WORST
from evaluation import parallel
from evaluation.parallel import run_tasks, start_ray
from primitives.expression import random_expression
from primitives.functions import REGISTRY
from primitives.terminals import terminal_types
from tests.test_cache import FAST, SAMPLE

WARNING = "zcp: warning: a Ray worker died"


@pytest.fixture(scope="module")
def ray_session():
    import ray

    start_ray(2)
    yield
    ray.shutdown()


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _my_ray_workers(title: str) -> list[int]:
    """Pids of processes titled ``title`` (Ray sets ``ray::<task>`` while one runs) below this process."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")[0].decode().strip()
        except OSError:
            continue
        pid = int(entry.name)
        if cmdline == title:
            ancestor = pid
            while ancestor > 1 and ancestor != os.getpid():
                ancestor = _parent(ancestor)
            if ancestor == os.getpid():
                found.append(pid)
    return found


class Killer(threading.Thread):
    """Kills the first of this process's Ray workers seen running ``title``, once."""

    def __init__(self, title: str) -> None:
        super().__init__(daemon=True)
        self.title, self.killed, self.stop = title, None, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.killed is None:
            for pid in _my_ray_workers(self.title):
                os.kill(pid, signal.SIGKILL)
                self.killed = pid
                return
            time.sleep(0.005)


def _one_warning(capfd) -> None:
    out, err = capfd.readouterr()
    lines = [line for line in err.splitlines() + out.splitlines() if line.strip()]
    assert lines and lines[0].startswith(WARNING), lines
    assert len(lines) == 1, "expected one warning line, got:\n" + "\n".join(lines)


def test_cache_build_retries_a_killed_task(ray_session, tmp_path, capfd):
    args = dict(batch_size=8, seed=0, terminals=FAST, image_source="gaussian", progress=False)
    build_cache(SAMPLE, "cifar10", tmp_path / "serial", backend="serial", **args)
    capfd.readouterr()
    killer = Killer("ray::_call")
    killer.start()
    build_cache(SAMPLE, "cifar10", tmp_path / "ray", backend="ray", workers=2, **args)
    killer.stop.set()
    assert killer.killed, "no task was seen running"
    _one_warning(capfd)
    a, b = load_cache(tmp_path / "serial").arrays, load_cache(tmp_path / "ray").arrays
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def payload(tmp_path_factory):
    out = tmp_path_factory.mktemp("cache")
    build_cache(SAMPLE, "cifar10", out, batch_size=8, seed=0, terminals=FAST, backend="serial",
                image_source="gaussian", progress=False)
    arrays = load_cache(out).arrays
    return Payload(("cifar10",), (arrays,), (np.arange(len(SAMPLE.indices), dtype=np.float64),), FAST,
                   "kendall", "min")


def test_actor_killed_mid_generation_is_replaced(ray_session, payload, capfd):
    rng = random.Random(0)
    texts = [random_expression(REGISTRY, terminal_types(FAST), rng, 7) for _ in range(600)]
    expected = Evaluator(payload)(texts)
    evaluator = Evaluator(payload, "ray", workers=2)
    try:
        evaluator(texts[:2])  # actors up
        capfd.readouterr()
        killer = Killer("ray::_Actor.score")
        killer.start()
        for _ in range(5):  # a generation is short: repeat it until the kill lands inside one
            assert evaluator(texts) == expected
            if killer.killed:
                break
        killer.stop.set()
        assert killer.killed, "no actor was seen scoring"
        _one_warning(capfd)
        assert evaluator(texts) == expected  # the pool is whole again
    finally:
        evaluator.close()


@pytest.mark.slow
def test_the_time_limit_holds_inside_ray_actors(ray_session, payload):
    quick = Payload(payload.names, payload.arrays, payload.accuracies, payload.terminals, "kendall", "min",
                    time_limit=1e-9)
    evaluator = Evaluator(quick, "ray", workers=2)
    try:  # every candidate with a primitive runs past a nanosecond
        assert evaluator(["n_neg(params)", "layer_sum(snip)", "n_add(params, depth)"]) == [WORST] * 3
    finally:
        evaluator.close()


@pytest.mark.slow
def test_work_that_kills_every_worker_gives_up_with_one_line(ray_session, capfd, monkeypatch):
    monkeypatch.setattr(parallel, "RETRIES", 1)  # two deaths, not four: each costs a worker start
    def _always_dies(item: int, shared: object) -> int:  # local: shipped by value to the workers
        if item == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return item

    with pytest.raises(ZcpError, match="died 2 times running the same task") as info:
        list(run_tasks(_always_dies, range(3), backend="ray", workers=2))
    assert "\n" not in str(info.value)
    _one_warning(capfd)
