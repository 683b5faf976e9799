"""Fuzzing the language: random trees of the whole primitive set on a small cache, and the time limit."""
import math
import random
import time

import numpy as np
import pytest

from evaluation.cache import build_cache, load_cache
from evaluation.errors import ZcpError
from evaluation.fitness import WORST, Fitness, Target
from evaluation.samples import make_sample
from evaluation.spaces import get_space
from primitives.expression import MAX_NODES, parse, random_expression
from primitives.functions import REGISTRY
from primitives.terminals import terminal_types

NETWORKS = 5


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Every label-free terminal of five networks (batch 8, Gaussian images): the whole language has values."""
    out = tmp_path_factory.mktemp("fuzz")
    build_cache(make_sample(get_space("tss"), "random", NETWORKS, 3), "cifar10", out, batch_size=8, seed=0,
                terminals=("@base", "@zoo"), backend="serial", image_source="gaussian", progress=False)
    return load_cache(out)


def _fitness(cache, **kw) -> Fitness:
    terminals = tuple(cache.manifest["terminals"])
    return Fitness([Target("cifar10", cache.env(), np.arange(NETWORKS, dtype=np.float64))], terminals, **kw)


def _fuzz(cache, n: int, seed: int) -> None:
    fitness = _fitness(cache, time_limit=5.0)
    types = terminal_types(fitness.types)
    rng = random.Random(seed)
    counts = {"worst": 0, "scored": 0}
    for _ in range(n):
        text = random_expression(REGISTRY, types, rng, max_depth=rng.randint(2, 8))
        start = time.monotonic()
        [value] = fitness([text])
        assert time.monotonic() - start < 6.0, f"{text} ran past its time limit"
        assert math.isfinite(value) and (value == WORST or -1.0 <= value <= 1.0), (text, value)
        counts["worst" if value == WORST else "scored"] += 1
    assert counts["scored"] > n // 2, counts  # the fuzzer reaches real scores, not only failures


def test_1000_random_trees_never_crash_or_hang(cache):
    _fuzz(cache, 1000, seed=0)


@pytest.mark.slow
def test_10000_random_trees_never_crash_or_hang(cache):
    _fuzz(cache, 10_000, seed=1)


def test_a_slow_candidate_scores_worst_after_its_time_limit(cache):
    real = REGISTRY.primitives["n_log"]
    original = real.fn

    def slow(x):
        time.sleep(0.2)
        return original(x)

    chain = "params"
    for _ in range(20):  # twenty slow primitives in a row: 4 s without the guard
        chain = f"n_log(n_abs({chain}))"
    fitness = _fitness(cache, time_limit=0.5)
    object.__setattr__(real, "fn", slow)  # registry primitives are frozen: patched in place, restored below
    try:
        start = time.monotonic()
        assert fitness([chain]) == [WORST]
        assert time.monotonic() - start < 1.5  # the limit plus at most one primitive
        assert _fitness(cache, time_limit=60.0)(["n_log(n_abs(params))"])[0] != WORST
    finally:
        object.__setattr__(real, "fn", original)


def test_huge_trees_are_refused_by_the_parser():
    wide = "n_add(params, params)"
    while wide.count("(") < MAX_NODES:  # a balanced tree: shallow, but more than MAX_NODES nodes
        wide = f"n_add({wide}, {wide})"
    with pytest.raises(ZcpError, match=f"more than {MAX_NODES} nodes"):
        parse(wide, REGISTRY, terminal_types())
    with pytest.raises(ZcpError, match="nested deeper than"):
        parse("n_abs(" * 300 + "params" + ")" * 300, REGISTRY, terminal_types())
