"""Fitness of candidate proxies: rank correlation between their scores and ground-truth accuracy.

Sign convention: fitness is the correlation as measured, never flipped. A proxy that ranks networks
backwards gets a negative fitness and loses; to use an anti-correlated expression, evolution must
find its ``n_neg(...)`` explicitly, which then shows in the reported expression. Scores with a NaN
or infinity, constant scores, and expressions that fail to parse or evaluate get :data:`WORST`,
which is below every possible correlation.

Optional second objective, proxy cost: with ``cost_weight`` w > 0 a valid candidate's fitness is
its correlation minus w times the forward and backward passes its terminals need per network
(:func:`~primitives.terminals.passes_needed`); reports always show the raw correlations.

Per-candidate time limit: parsing bounds a tree's size (``MAX_NODES``, ``MAX_DEPTH``), and
evaluation checks a deadline of ``time_limit`` seconds (all targets together) before every
primitive call, so a candidate can overrun by one primitive at most; an overrun scores WORST. The
check is a clock read, so it works the same in the serial backend and inside Ray actors (no signals,
no threads).

Several targets: a candidate is scored on each :class:`Target` (a dataset's cache, a search sample
of some kind, a subset of one, another search space's cache) and the correlations combine with
``min`` (the proxy must work everywhere) or ``mean``. Targets that share a cache share its values
(``env``): the expression is evaluated once per cache, and a subset target correlates its rows only.

Goals (goal attainment, for ``min``): the targets' correlations need not be comparable (on a stratified
sample every proxy ranks better than on a random one, so a plain ``min`` only ever sees the random
tau). With a goal g_t per target the fitness is ``min_t (tau_t - g_t) + max_t g_t``: the worst margin
to the goals, shifted by a constant so that it reads on the tau scale of the target with the highest
goal and never falls below -1 (so failures stay below it, cost penalty included). Which candidates win
depends on the goals only through their differences.

Many related candidates (e.g. the single-terminal expressions of gp/single.py) can share their common
subtrees: ``share_subtrees=True`` keeps every subtree value of one call's candidates, per cache, until
the call returns (the scores are the same; memory grows with the distinct subtrees of that call).
Evolution's offspring share subtrees with their ancestors of earlier generations, so a fitness made
with ``memo_bytes`` > 0 also keeps subtree values *across* calls, in a :class:`SubtreeMemo` per cache,
all of them together bounded by that many bytes (the values cheapest to compute again per byte go
first). The scores are the same either way; only the time changes.
"""
from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from scipy import stats

from evaluation.cache import Cache
from evaluation.errors import ZcpError
from evaluation.parallel import release_memory
from primitives.expression import Node, evaluate, parse, terminals_of
from primitives.functions import REGISTRY
from primitives.terminals import passes_needed, terminal_types
from primitives.types import Value, value_bytes

WORST = -2.0
METRICS = ("kendall", "spearman")
COMBINE = ("min", "mean")
MAX_COST_WEIGHT = 0.1
"""Keeps a penalised fitness above WORST: 1 + 0.1 x 5 passes < 2."""
TIME_LIMIT = 10.0
RELEASE_EVERY = 100
"""With a memo kept across calls, the heap pages freed are given back to the OS after every this many
candidates: the memo's long-lived values pin glibc's heap otherwise (replaying 3,000 candidates of a
run with a 512 MiB memo, RSS grew from 1.4 to 4.2 GiB without this, and stayed at 1.9 GiB with it)."""
T = TypeVar("T")
Memos = dict[int, MutableMapping[str, Value]]
"""Per cache (``id`` of its env): subtree text -> value, shared by the candidates of one call (or of
every call: :class:`SubtreeMemo`)."""


def options_problem(metric: str, combine: str, cost_weight: float, time_limit: float,
                    goals: Sequence[float] = ()) -> str | None:
    """What is wrong with these fitness options (one line), or None: shared by :class:`Fitness` and
    the campaign config, so both refuse the same values with the same words."""
    for key, value, known in (("metric", metric, METRICS), ("combine", combine, COMBINE)):
        if value not in known:
            return f"{key} {value!r} is not one of {', '.join(known)}"
    if goals and combine != "min":
        return f"goals need combine = 'min' (goal attainment maximises the worst margin), got {combine!r}"
    bad = [g for g in goals if not -1.0 <= g <= 1.0]
    if bad:
        return f"a goal is a correlation in [-1, 1], got {bad[0]!r}"
    if not 0.0 <= cost_weight <= MAX_COST_WEIGHT:
        return f"cost_weight must be in [0, {MAX_COST_WEIGHT}], got {cost_weight}"
    if not time_limit > 0:
        return f"time_limit must be > 0 seconds, got {time_limit!r}"
    return None


def rank_correlation(scores: np.ndarray, truth: np.ndarray, metric: str = "kendall") -> float:
    """Kendall tau-b or Spearman rho of ``scores`` against ``truth``; WORST if undefined."""
    scores = np.asarray(scores, dtype=np.float64)
    if not np.all(np.isfinite(scores)) or np.ptp(scores) == 0:
        return WORST
    fn = stats.kendalltau if metric == "kendall" else stats.spearmanr
    value = float(fn(scores, truth)[0])
    return value if np.isfinite(value) else WORST


@dataclass(frozen=True)
class Target:
    """What a fitness correlates against: the language values of a cache (``env``), which of its
    networks count (``rows``, cache positions; None = all) and their accuracies, in that order."""

    name: str
    env: Mapping[str, object]
    accuracy: np.ndarray
    rows: np.ndarray | None = None


def cache_accuracy(cache: Cache, accuracy_by_index: np.ndarray) -> np.ndarray:
    """The accuracies of a cache's networks, in cache order, from ground truth indexed by official index."""
    accuracy = np.asarray(accuracy_by_index, dtype=np.float64)[cache.indices]
    if np.isnan(accuracy).any():
        raise ZcpError(f"ground truth lacks {cache.manifest['dataset']} accuracy for "
                       f"{int(np.isnan(accuracy).sum())} networks of cache {cache.path}")
    return accuracy


def make_target(cache: Cache, accuracy_by_index: np.ndarray, name: str | None = None) -> Target:
    """Pair a cache with ground truth indexed by official architecture index (named by its dataset
    unless ``name`` is given)."""
    return Target(name or cache.manifest["dataset"], cache.env(), cache_accuracy(cache, accuracy_by_index))


class SubtreeMemo(MutableMapping[str, Value]):
    """Subtree text -> value, holding at most ``max_bytes`` of values (:func:`~primitives.types.value_bytes`).

    Eviction is GreedyDual-Size (Cao and Irani, 1997): a value's priority is ``floor + seconds / bytes``,
    where ``seconds`` runs from the lookup that missed it to its store (what computing it again costs)
    and ``floor`` is the priority of the last value evicted, so values left unused age; a hit renews the
    priority. Cheap large values (a clamped terminal matrix) therefore go before costly small ones (the
    spectrum of one). A value larger than a quarter of ``max_bytes`` is not kept (it would flush the rest).
    """

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.perf_counter) -> None:
        self.max_bytes, self.bytes, self._clock, self._floor = max_bytes, 0, clock, 0.0
        self._values: dict[str, tuple[Value, float]] = {}  # text -> (value, seconds per byte)
        self._priority: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []  # (priority, text), with stale entries skipped on pop
        self._missed: dict[str, float] = {}  # text -> when its lookup missed

    def __contains__(self, text: object) -> bool:
        if text in self._values:
            return True
        if len(self._missed) > 10_000:  # lookups of failed evaluations that were never stored
            self._missed.clear()
        self._missed[str(text)] = self._clock()
        return False

    def __getitem__(self, text: str) -> Value:
        value, worth = self._values[text]
        self._renew(text, worth)
        return value

    def __setitem__(self, text: str, value: Value) -> None:
        now = self._clock()
        seconds, size = now - self._missed.pop(text, now), value_bytes(value)
        if size > self.max_bytes // 4:
            return
        if text in self._values:
            del self[text]
        worth = seconds / max(size, 1)
        self._values[text] = value, worth
        self.bytes += size
        self._renew(text, worth)
        while self.bytes > self.max_bytes:
            priority, victim = heapq.heappop(self._heap)
            if self._priority.get(victim) == priority:
                self._floor = priority
                del self[victim]

    def _renew(self, text: str, worth: float) -> None:
        self._priority[text] = self._floor + worth
        heapq.heappush(self._heap, (self._priority[text], text))
        if len(self._heap) > 4 * len(self._priority) + 64:
            self._heap = sorted((p, t) for t, p in self._priority.items())  # a sorted list is a heap

    def __delitem__(self, text: str) -> None:
        value, _ = self._values.pop(text)
        del self._priority[text]
        self.bytes -= value_bytes(value)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def combined(values: Sequence[float], combine: str = "min", goals: Sequence[float] = ()) -> float:
    """The correlations on the targets as one fitness (module docstring); with goals, WORST if any is."""
    if goals:
        if WORST in values:
            return WORST
        return float(min(v - g for v, g in zip(values, goals, strict=True)) + max(goals))
    return float(min(values) if combine == "min" else np.mean(values))


def limiting(values: Sequence[float], goals: Sequence[float] = ()) -> int:
    """The target that limits a ``min`` (with goals: the one with the smallest margin)."""
    return int(np.argmin(np.subtract(values, goals) if goals else values))


class Fitness:
    """Scores expression strings on one or more targets; see the module docstring (``goals``: one per
    target, or none; ``memo_bytes``: the subtree memos kept across calls, shared equally by the caches;
    0 = none)."""

    def __init__(self, targets: Sequence[Target], terminals: Sequence[str], metric: str = "kendall",
                 combine: str = "min", cost_weight: float = 0.0, time_limit: float = TIME_LIMIT,
                 memo_bytes: int = 0, goals: Sequence[float] = ()) -> None:
        problem = options_problem(metric, combine, cost_weight, time_limit, goals)
        if goals and len(goals) != len(targets):
            problem = f"{len(goals)} goals for {len(targets)} targets"
        if problem:
            raise ZcpError(problem)
        self.targets, self.metric, self.combine, self.goals = list(targets), metric, combine, tuple(goals)
        self.cost_weight, self.time_limit = cost_weight, time_limit
        self.types = terminal_types(terminals)
        envs = {id(t.env) for t in self.targets}
        self.memos: Memos | None = {e: SubtreeMemo(memo_bytes // len(envs)) for e in envs} if memo_bytes else None

    def scores(self, text: str, time_limit: float | None = None) -> list[np.ndarray]:
        """The candidate's raw scores on each target (raises ZcpError if it cannot be evaluated or
        runs past ``time_limit`` seconds)."""
        return self._scores(parse(text, REGISTRY, self.types), time_limit)

    def _scores(self, node: Node, time_limit: float | None, memos: Memos | None = None) -> list[np.ndarray]:
        deadline = None if time_limit is None else time.monotonic() + time_limit
        by_env: dict[int, np.ndarray] = {}  # one evaluation per cache, whatever its number of targets
        out = []
        for t in self.targets:
            if id(t.env) not in by_env:
                memo = None if memos is None else memos.setdefault(id(t.env), {})
                by_env[id(t.env)] = evaluate(node, t.env, memo, deadline).numpy()
            out.append(by_env[id(t.env)] if t.rows is None else by_env[id(t.env)][t.rows])
        return out

    def __call__(self, texts: Sequence[str], share_subtrees: bool = False) -> list[float]:
        return self._each(texts, share_subtrees, self._fitness)

    def values(self, texts: Sequence[str], share_subtrees: bool = False) -> list[list[float]]:
        """Each candidate's raw correlation on each target (WORST everywhere when it fails): which
        target limits a candidate."""
        return self._each(texts, share_subtrees, lambda text, memos: self._values(text, memos)[0])

    def _each(self, texts: Sequence[str], share_subtrees: bool, score: Callable[[str, Memos | None], T]) -> list[T]:
        memos = {} if share_subtrees else self.memos
        out = []
        for i, text in enumerate(texts, 1):
            out.append(score(text, memos))
            if memos is self.memos is not None and i % RELEASE_EVERY == 0:
                release_memory()
        return out

    def _values(self, text: str, memos: Memos | None = None) -> tuple[list[float], Node | None]:
        try:
            node = parse(text, REGISTRY, self.types)
            scores = self._scores(node, self.time_limit, memos)
        except Exception:  # a failing candidate must not stop a campaign
            return [WORST] * len(self.targets), None
        return [rank_correlation(s, t.accuracy, self.metric) for s, t in zip(scores, self.targets)], node

    def _fitness(self, text: str, memos: Memos | None = None) -> float:
        """Correlations combined over targets, minus the pass cost when asked; WORST when it fails."""
        values, node = self._values(text, memos)
        value = combined(values, self.combine, self.goals)
        if value == WORST or not self.cost_weight:
            return value
        return value - self.cost_weight * passes_needed(terminals_of(node))
