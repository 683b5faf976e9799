"""The evolution loop: initialise, then one ``step()`` per generation, resumable from plain JSON.

Individuals are held as expression strings and rebuilt as DEAP trees for each generation's
variation, so a run resumed from :meth:`Evolution.state` computes exactly what the uninterrupted run
computes. DEAP draws from the global ``random``: the engine swaps its own generator state in for the
breeding of a generation and puts the caller's state back after, so results depend on
``config.seed`` only and other users of ``random`` neither disturb nor are disturbed by it.
"""
from __future__ import annotations

import functools
import math
import random
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from evaluation.errors import ZcpError
from gp.config import GPConfig
from gp.halloffame import HallOfFame, canonical_form
from gp.operators import Operators
from gp.pset import build_pset, from_text, text_size
from primitives.expression import parse
from primitives.registry import Registry

__all__ = ["Evolution", "GPConfig", "best_distinct"]

Evaluate = Callable[[list[str]], Sequence[float]]
T = TypeVar("T")


def best_distinct(texts: Iterable[str], fitness: Mapping[str, float], k: int) -> list[str]:
    """The ``k`` best distinct expressions of ``texts`` (ties: smaller, then alphabetical)."""
    return sorted(set(texts), key=lambda t: (-fitness[t], text_size(t), t))[:k]


class Evolution:
    """A GP run over ``registry`` and ``terminal_types`` scored by ``evaluate`` (higher is better).

    ``evaluate(texts)`` returns one finite float per text; the caller maps failures to a worst value.
    Each distinct expression is evaluated at most once per run (``memo``).
    """

    def __init__(self, registry: Registry, terminal_types: Mapping[str, type], config: GPConfig,
                 evaluate: Evaluate) -> None:
        self.config = config
        self.pset = build_pset(registry, terminal_types)
        self._ops = Operators(self.pset, config)
        self._evaluate = evaluate
        self._canonical = functools.partial(canonical_form, registry=registry, terminals=self.pset.terminal_types)
        self.generation = -1
        """The last completed generation: 0 after :meth:`initialise`, -1 before."""
        self.population: list[str] = []
        self.fitnesses: list[float] = []
        self.memo: dict[str, float] = {}
        self.hall_of_fame = HallOfFame(config.hall_of_fame, self._canonical)
        self._rng = random.Random(config.seed).getstate()

    def initialise(self) -> dict[str, Any]:
        """Generation 0: random distinct trees (ramped half-and-half), evaluated; returns its stats."""
        start = time.perf_counter()
        texts, rng = self._own_random(lambda: self._ops.initial(self.config.population))
        return self._advance(texts, rng, 0, start)

    def step(self) -> dict[str, Any]:
        """One generation: elites carried over, the rest bred from the population; returns its stats
        (generation, best, median, mean_size, diversity, evaluations, seconds)."""
        if self.generation < 0:
            raise RuntimeError("initialise() (or from_state()) must come before step()")
        start = time.perf_counter()

        def breed() -> list[str]:
            parents = [from_text(text, self.pset) for text in self.population]
            for ind, fitness in zip(parents, self.fitnesses):
                ind.fitness.values = (fitness,)
            elites = self._elites()
            return elites + self._ops.breed(parents, self.config.population - len(elites), self.memo)

        texts, rng = self._own_random(breed)
        return self._advance(texts, rng, self.generation + 1, start)

    def _own_random(self, fn: Callable[[], T]) -> tuple[T, tuple]:
        """``fn()`` run on the engine's generator state, and that state after it (committed by
        :meth:`_advance` only once the generation is complete, so a failed step changes nothing)."""
        outer = random.getstate()
        random.setstate(self._rng)
        try:
            return fn(), random.getstate()
        finally:
            random.setstate(outer)

    def _elites(self) -> list[str]:
        """The ``elitism`` best distinct expressions (ties: smaller, then alphabetical)."""
        return best_distinct(self.population, self.memo, self.config.elitism)

    def _advance(self, texts: list[str], rng: tuple, generation: int, start: float) -> dict[str, Any]:
        """Evaluate the unseen expressions of ``texts``, make it the population, update the hall of fame."""
        new = [t for t in dict.fromkeys(texts) if t not in self.memo]
        scores = [float(s) for s in self._evaluate(new)] if new else []
        if len(scores) != len(new):
            raise ZcpError(f"evaluate returned {len(scores)} fitnesses for {len(new)} expressions")
        bad = [t for t, s in zip(new, scores) if not math.isfinite(s)]
        if bad:
            raise ZcpError(f"evaluate returned a non-finite fitness for {bad[0]!r}: map failures to a worst value")
        self.memo.update(zip(new, scores))
        self.population, self.fitnesses = texts, [self.memo[t] for t in texts]
        self.generation, self._rng = generation, rng
        self.hall_of_fame.update(zip(new, scores), generation)
        return {"generation": generation, "best": max(self.fitnesses), "median": statistics.median(self.fitnesses),
                "mean_size": statistics.fmean(map(text_size, texts)), "diversity": len(set(texts)) / len(texts),
                "evaluations": len(new), "seconds": round(time.perf_counter() - start, 3)}

    def state(self) -> dict[str, Any]:
        """Everything :meth:`from_state` needs, as plain JSON values (no pickles)."""
        version, internal, gauss = self._rng
        return {"generation": self.generation, "population": list(self.population),
                "fitnesses": list(self.fitnesses), "memo": dict(self.memo),
                "hall_of_fame": self.hall_of_fame.state(), "random": [version, list(internal), gauss]}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], registry: Registry, terminal_types: Mapping[str, type],
                   config: GPConfig, evaluate: Evaluate) -> Evolution:
        """The engine saved by :meth:`state`; its next :meth:`step` equals the uninterrupted run's.

        Every expression of the population and the hall of fame is parsed against the primitive set
        (never run); a malformed state is a ZcpError naming the problem."""
        engine = cls(registry, terminal_types, config, evaluate)
        try:
            engine._restore(state)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ZcpError(f"engine state is malformed ({type(exc).__name__}: {exc})") from None
        return engine

    def _restore(self, state: Mapping[str, Any]) -> None:
        population, fitnesses = [str(t) for t in state["population"]], [float(f) for f in state["fitnesses"]]
        if len(population) != len(fitnesses) or not population:
            raise ZcpError("engine state: population and fitnesses differ in length or are empty")
        for text in population:
            from_text(text, self.pset)  # fails early, naming the problem, if the language changed
        memo = {str(k): float(v) for k, v in state["memo"].items()}
        for text in memo.keys() - set(population):
            parse(text, self.pset.registry, self.pset.terminal_types)  # text only, never run
        if not all(map(math.isfinite, memo.values())) or any(memo.get(t) != f for t, f in zip(population, fitnesses)):
            raise ZcpError("engine state: a fitness is not finite or differs from the memo")
        version, internal, gauss = state["random"]
        self._rng = (int(version), tuple(int(x) for x in internal), None if gauss is None else float(gauss))
        self.generation, self.population, self.fitnesses, self.memo = int(state["generation"]), population, fitnesses, memo
        self.hall_of_fame = HallOfFame.from_state(state["hall_of_fame"], self.config.hall_of_fame, self._canonical)
