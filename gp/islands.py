"""The island model: ``config.islands`` populations (each an :class:`~gp.engine.Evolution`) evolving
apart, with ring migration, one shared memo and one hall of fame, serially or on Ray actors.

- ``population`` is the total over the islands, split as evenly as possible; island ``i`` draws from
  its own seed, derived from the run's seed (:func:`island_seed`).
- One :meth:`Islands.step` is one generation on every island. Its newly evaluated expressions then
  join one shared memo (in island order) that every island learns, so no island evaluates an
  expression another has scored; only two islands meeting the same new expression in the same
  generation both evaluate it (counted as ``duplicates`` in the log line).
- After every ``migration_interval``-th generation, island ``i`` sends its ``migrants`` best distinct
  expressions to island ``i + 1`` (a ring), where they replace the worst individuals (those it holds
  already are skipped).
- Islands live in :class:`IslandHost` objects: one in this process (backend 'serial'), or
  ``min(workers, islands)`` Ray actors, island ``i`` on actor ``i % actors``. A host builds its
  registry, terminal types and fitness once from ``setup`` (a picklable zero-argument callable; on Ray
  it travels once through the object store), then exchanges only expression strings, fitnesses and
  plain-JSON states with the driver. Every random choice is made inside an island from its own
  generator, so serial and Ray runs are identical.
- :meth:`Islands.state` holds the shared memo once and every island's state without it; a run
  resumed from it equals the uninterrupted run. A Ray actor that dies is replaced, all hosts are put
  back to the last completed generation, and that generation is run again (one warning line).
"""
from __future__ import annotations

import functools
import hashlib
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from itertools import count, islice
from typing import Any

from evaluation.errors import ZcpError
from evaluation.parallel import WorkerDeaths, start_ray, worker_faults
from gp.config import GPConfig
from gp.engine import Evaluate, Evolution, best_distinct
from gp.halloffame import HallOfFame, canonical_form
from gp.pset import text_size
from primitives.expression import parse
from primitives.registry import Registry

__all__ = ["IslandHost", "Islands", "island_configs", "island_seed"]

Setup = Callable[[], tuple[Registry, Mapping[str, type], Evaluate]]
ISLAND_STATS = ("best", "median", "mean_size", "diversity", "evaluations")


def island_seed(seed: int, island: int) -> int:
    """The seed of ``island`` in a run seeded ``seed`` (a hash: islands' streams are unrelated)."""
    return int.from_bytes(hashlib.sha256(f"zcp-island:{seed}:{island}".encode()).digest()[:8], "big")


def island_configs(config: GPConfig) -> list[GPConfig]:
    """One single-population config per island: the total population split as evenly as possible."""
    size, extra = divmod(config.population, config.islands)
    return [replace(config, population=size + (i < extra), seed=island_seed(config.seed, i), islands=1)
            for i in range(config.islands)]


def _immigrate(island: Evolution, texts: Sequence[str]) -> None:
    """Put ``texts`` (already in the island's memo) in place of the worst individuals (lowest fitness,
    then largest, then alphabetically first); texts the island holds already are skipped."""
    present = set(island.population)
    incoming = [t for t in texts if t not in present]
    pop, fit = list(island.population), list(island.fitnesses)
    worst = sorted(range(len(pop)), key=lambda i: (fit[i], -text_size(pop[i]), pop[i]))
    for i, text in zip(worst, incoming):
        pop[i], fit[i] = text, island.memo[text]
    island.population, island.fitnesses = pop, fit


class IslandHost:
    """Some islands of a run, in one process (the driver, or a Ray actor holding the fitness payload).

    ``setup`` returns (registry, terminal types, evaluate); a Ray actor gets ``[object ref of setup]``."""

    def __init__(self, setup: Setup | list, configs: Mapping[int, GPConfig]) -> None:
        if isinstance(setup, list):
            import ray

            setup = ray.get(setup[0])
        self._registry, self._types, self._evaluate = setup()
        self._islands = {i: Evolution(self._registry, self._types, c, self._evaluate) for i, c in configs.items()}

    def initialise(self) -> dict[int, dict[str, Any]]:
        """Generation 0 of every island (see :meth:`step`)."""
        return self._run(Evolution.initialise)

    def step(self) -> dict[int, dict[str, Any]]:
        """One generation of every island: its stats, new (expression, fitness) pairs and population."""
        return self._run(Evolution.step)

    def _run(self, method: Callable[[Evolution], dict[str, Any]]) -> dict[int, dict[str, Any]]:
        out = {}
        for i, island in self._islands.items():
            known = len(island.memo)
            stats = method(island)
            out[i] = {"stats": stats, "new": list(islice(island.memo.items(), known, None)),
                      "population": list(island.population), "fitnesses": list(island.fitnesses)}
        return out

    def settle(self, scored: Sequence[tuple[str, float]], immigrants: Mapping[int, Sequence[str]]) -> dict[int, dict]:
        """Learn what every island scored this generation, take in the immigrants; returns :meth:`states`."""
        for i, island in self._islands.items():
            for text, fitness in scored:
                island.memo.setdefault(text, fitness)
            _immigrate(island, immigrants.get(i, ()))
        return self.states()

    def states(self) -> dict[int, dict[str, Any]]:
        """Each island's :meth:`Evolution.state` without its memo (the run keeps one shared memo)."""
        return {i: {k: v for k, v in island.state().items() if k != "memo"} for i, island in self._islands.items()}

    def restore(self, states: Mapping[int, Mapping[str, Any]], memo: Mapping[str, float]) -> None:
        """Put this host's islands back to their ``states`` (from :meth:`states`) with the shared ``memo``."""
        for i in self._islands:
            state = states[i]
            own = dict(zip(state["population"], state["fitnesses"]))
            island = Evolution.from_state({**state, "memo": own}, self._registry, self._types,
                                          self._islands[i].config, self._evaluate)
            island.memo = {**memo, **own}
            self._islands[i] = island


class Islands:
    """The island engine, with :class:`~gp.engine.Evolution`'s interface (``initialise``, ``step``,
    ``state``, ``from_state``, ``generation``, ``memo``, ``hall_of_fame``) plus :meth:`close`."""

    def __init__(self, registry: Registry, terminal_types: Mapping[str, type], config: GPConfig, setup: Setup,
                 backend: str = "serial", workers: int = 1, address: str | None = None,
                 node_ip: str | None = None) -> None:
        if config.islands < 2:
            raise ValueError("Islands needs config.islands >= 2 (one population is gp.engine.Evolution)")
        self.config, self._setup = config, setup
        self._configs = dict(enumerate(island_configs(config)))
        self._canonical = functools.partial(canonical_form, registry=registry, terminals=dict(terminal_types))
        self._registry, self._types = registry, dict(terminal_types)
        self.generation = -1
        """The last completed generation: 0 after :meth:`initialise`, -1 before."""
        self.memo: dict[str, float] = {}
        self.hall_of_fame = HallOfFame(config.hall_of_fame, self._canonical)
        self._states: dict[int, dict[str, Any]] | None = None  # islands after the last completed generation
        self._ray = backend == "ray"
        self._hosts: list[Any] = []
        if self._ray:
            import ray

            start_ray(workers, address, node_ip=node_ip)
            self._actor = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(IslandHost)
            self._setup_ref = [ray.put(setup)]
            self._deaths = WorkerDeaths("island generation")
            self._actors = max(1, min(workers, config.islands))
        self._start_hosts()

    def _start_hosts(self) -> None:
        """(Re)start the hosts, put back to the last completed generation if there is one."""
        self.close()
        if not self._ray:
            self._hosts = [IslandHost(self._setup, self._configs)]
        else:
            n = self._actors
            self._hosts = [self._actor.remote(self._setup_ref, {i: c for i, c in self._configs.items() if i % n == h})
                           for h in range(n)]
        if self._states is not None:
            self._call("restore", self._states, self.memo)

    def _call(self, method: str, *args: Any) -> dict[int, Any]:
        """``method(*args)`` on every host (in parallel on Ray); the results merged by island."""
        if not self._ray:
            return getattr(self._hosts[0], method)(*args)
        import ray

        refs = [getattr(host, method).remote(*args) for host in self._hosts]
        try:
            parts = ray.get(refs)
        except ray.exceptions.RayTaskError as exc:  # raised by the island code itself: its own one-line error
            raise (exc.cause if isinstance(exc.cause, Exception) else exc) from None
        merged: dict[int, Any] = {}
        for part in parts:
            merged.update(part or {})
        return dict(sorted(merged.items()))

    def initialise(self) -> dict[str, Any]:
        """Generation 0 on every island; returns the log line (see :meth:`step`)."""
        return self._generation("initialise")

    def step(self) -> dict[str, Any]:
        """One generation on every island, then the shared memo, hall of fame and (every
        ``migration_interval`` generations) migration; returns the log line: Evolution's stats over all
        islands together, ``duplicates``, ``migrated`` and ``islands`` (each island's stats)."""
        if self.generation < 0:
            raise RuntimeError("initialise() (or from_state()) must come before step()")
        return self._generation("step")

    def _generation(self, method: str) -> dict[str, Any]:
        start = time.perf_counter()
        for attempt in count(1):
            try:
                results = self._call(method)
                generation = self.generation + 1
                scored: dict[str, float] = {}
                for r in results.values():
                    for text, fitness in r["new"]:
                        scored.setdefault(text, fitness)
                immigrants = self._migrants(results, generation)
                states = self._call("settle", list(scored.items()), immigrants)
                break
            except (worker_faults() if self._ray else ()) as exc:
                self._deaths.retry(attempt, exc)
                self._start_hosts()
        self.memo.update(scored)
        self.hall_of_fame.update(scored.items(), generation)
        self._states, self.generation = states, generation
        texts = [t for r in results.values() for t in r["population"]]
        fitnesses = [f for r in results.values() for f in r["fitnesses"]]
        return {"generation": generation, "best": max(fitnesses), "median": statistics.median(fitnesses),
                "mean_size": statistics.fmean(map(text_size, texts)), "diversity": len(set(texts)) / len(texts),
                "evaluations": len(scored), "duplicates": sum(len(r["new"]) for r in results.values()) - len(scored),
                "migrated": bool(immigrants), "seconds": round(time.perf_counter() - start, 3),
                "islands": [{k: r["stats"][k] for k in ISLAND_STATS} for r in results.values()]}

    def _migrants(self, results: Mapping[int, Mapping[str, Any]], generation: int) -> dict[int, list[str]]:
        """Island -> the expressions it receives after ``generation`` (empty between migrations)."""
        c = self.config
        if generation == 0 or generation % c.migration_interval or not c.migrants:
            return {}
        n = len(results)
        return {(i + 1) % n: best_distinct(r["population"], dict(zip(r["population"], r["fitnesses"])), c.migrants)
                for i, r in results.items()}

    def state(self) -> dict[str, Any]:
        """Everything :meth:`from_state` needs, as plain JSON values: the shared memo once, the hall of
        fame and every island's state without its memo."""
        if self._states is None:
            raise RuntimeError("initialise() must come before state()")
        return {"generation": self.generation, "memo": dict(self.memo), "hall_of_fame": self.hall_of_fame.state(),
                "islands": [self._states[i] for i in sorted(self._states)]}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], registry: Registry, terminal_types: Mapping[str, type],
                   config: GPConfig, setup: Setup, backend: str = "serial", workers: int = 1,
                   address: str | None = None, node_ip: str | None = None) -> Islands:
        """The engine saved by :meth:`state`; its next :meth:`step` equals the uninterrupted run's.
        Every expression is parsed against the primitive set (never run); a malformed state is a ZcpError."""
        engine = cls(registry, terminal_types, config, setup, backend, workers, address, node_ip)
        try:
            engine._restore(state)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            engine.close()
            raise ZcpError(f"island state is malformed ({type(exc).__name__}: {exc})") from None
        except BaseException:
            engine.close()
            raise
        return engine

    def _restore(self, state: Mapping[str, Any]) -> None:
        islands = list(state["islands"])
        if len(islands) != self.config.islands:
            raise ZcpError(f"island state holds {len(islands)} islands, the config {self.config.islands}")
        memo = {str(k): float(v) for k, v in state["memo"].items()}
        for text in memo:
            parse(text, self._registry, self._types)  # text only, never run
        self.memo, self._states = memo, dict(enumerate(islands))
        self.hall_of_fame = HallOfFame.from_state(state["hall_of_fame"], self.config.hall_of_fame, self._canonical)
        self.generation = int(state["generation"])
        self._call("restore", self._states, self.memo)
        self._states = self._call("states")  # as the islands hold them (ZcpError above if one is malformed)

    def close(self) -> None:
        """Stop the Ray actors (a no-op for serial hosts)."""
        if self._ray and self._hosts:
            import ray

            for host in self._hosts:
                ray.kill(host)
        self._hosts = []
