"""Score batches of expression strings serially or on long-lived Ray actors holding the caches.

The payload (packed cache arrays, and each target's cache, rows and accuracies) is put in Ray's object store once;
each actor builds its :class:`~evaluation.fitness.Fitness` from it when it starts and then receives
only lists of strings. A batch is split into contiguous chunks, one per actor, and reassembled in
order, so serial and Ray evaluation return identical lists. An actor that dies is restarted by Ray
and its chunk resubmitted to the next actor (one warning line; see :class:`~evaluation.parallel.WorkerDeaths`).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from evaluation.cluster import check_resources
from evaluation.fitness import TIME_LIMIT, Fitness, Target
from evaluation.parallel import WorkerDeaths, start_ray, worker_faults
from primitives.functions import REGISTRY
from primitives.registry import Registry
from primitives.terminals import collate, terminal_types


@dataclass(frozen=True)
class Payload:
    """Everything a fitness evaluator needs, as plain arrays (cheap to ship once).

    Target i is named ``names[i]``, scores cache ``sources[i]`` (its packed ``arrays``), at rows
    ``rows[i]`` (None = all) with accuracies ``accuracies[i]``. Empty ``sources`` and ``rows``: one
    target per cache, all of its rows. ``memo_mib``: the subtree memo each evaluator keeps across
    batches, all caches together (:class:`~evaluation.fitness.SubtreeMemo`; 0 = none). ``goals``: one
    per target for goal attainment (:mod:`evaluation.fitness`), or none."""

    names: tuple[str, ...]
    arrays: tuple[dict[str, np.ndarray], ...]
    accuracies: tuple[np.ndarray, ...]
    terminals: tuple[str, ...]
    metric: str
    combine: str
    cost_weight: float = 0.0
    time_limit: float = TIME_LIMIT
    sources: tuple[int, ...] = ()
    rows: tuple[np.ndarray | None, ...] = ()
    memo_mib: int = 0
    goals: tuple[float, ...] = ()

    def fitness(self) -> Fitness:
        envs = [collate(a, self.terminals) for a in self.arrays]
        sources = self.sources or range(len(self.names))
        rows = self.rows or (None,) * len(self.names)
        targets = [Target(n, envs[s], acc, r) for n, s, acc, r in zip(self.names, sources, self.accuracies, rows)]
        return Fitness(targets, self.terminals, self.metric, self.combine, self.cost_weight, self.time_limit,
                       self.memo_mib << 20, self.goals)

    def evolution_setup(self) -> tuple[Registry, dict[str, type], Evaluator]:
        """What an island host (gp/islands.py) evolves with: the registry, the terminal types and a
        serial evaluator of this payload (built where the host runs, e.g. inside a Ray actor)."""
        return REGISTRY, terminal_types(self.terminals), Evaluator(self)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with one torch thread, as every Ray actor does, so scores agree bit for bit."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _chunks(items: Sequence[str], k: int) -> list[list[str]]:
    size = -(-len(items) // k)
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


class Evaluator:
    """``evaluator(texts) -> fitnesses``, ``evaluator.per_target(texts)`` -> raw correlations per target;
    ``backend`` 'serial' or 'ray' (``workers`` actors, each holding one CPU and ``gpus_per_actor`` GPUs)."""

    def __init__(self, payload: Payload, backend: str = "serial", workers: int = 1, address: str | None = None,
                 gpus_per_actor: float = 0.0, node_ip: str | None = None) -> None:
        self.backend, self.workers = backend, max(1, workers)
        if backend == "serial":
            self._fitness = payload.fitness()
            return
        import ray

        start_ray(self.workers, address, node_ip=node_ip)
        check_resources(gpus_per_actor, self.workers)
        actor = ray.remote(num_cpus=1, num_gpus=gpus_per_actor, max_restarts=-1, max_task_retries=0)(_Actor)
        self._deaths = WorkerDeaths("chunk of candidates")
        # Every call carries the reference (inside a list, so Ray passes the reference, not the
        # payload): an actor, also one Ray restarted, fetches the payload on its first call.
        self._payload = [ray.put(payload)]
        self._actors = [actor.remote() for _ in range(self.workers)]

    def __call__(self, texts: Sequence[str]) -> list[float]:
        return self._map(texts, per_target=False)

    def per_target(self, texts: Sequence[str]) -> list[list[float]]:
        """Each candidate's raw correlation on each target (:meth:`Fitness.values`)."""
        return self._map(texts, per_target=True)

    def _map(self, texts: Sequence[str], per_target: bool) -> list:
        if not texts:
            return []
        if self.backend == "serial":
            with one_thread():  # as on the actors: identical results
                return self._fitness.values(texts) if per_target else self._fitness(texts)
        import ray

        chunks = _chunks(texts, len(self._actors))
        refs = [a.score.remote(self._payload, c, per_target) for a, c in zip(self._actors, chunks)]
        parts = []
        for i, (ref, chunk) in enumerate(zip(refs, chunks)):
            attempts = 1
            while True:
                try:
                    parts.append(ray.get(ref))
                    break
                except worker_faults() as exc:
                    self._deaths.retry(attempts, exc)
                    ref = self._actors[(i + attempts) % len(self._actors)].score.remote(self._payload, chunk, per_target)
                    attempts += 1
        return [f for part in parts for f in part]

    def close(self) -> None:
        if self.backend == "ray":
            import ray

            for a in self._actors:
                ray.kill(a)
            self._actors = []


class _Actor:
    def __init__(self) -> None:
        import torch

        torch.set_num_threads(1)
        self.fitness: Fitness | None = None

    def score(self, payload: list, texts: list[str], per_target: bool = False) -> list:
        if self.fitness is None:
            import ray

            self.fitness = ray.get(payload[0]).fitness()
        return self.fitness.values(texts) if per_target else self.fitness(texts)
