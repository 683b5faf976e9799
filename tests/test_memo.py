"""The subtree memo a fitness keeps across calls: bounded, cheapest to recompute per byte evicted first,
and invisible in the scores (also when two caches share one fitness and when the bound forces evictions)."""
import random

import numpy as np
import pytest
import torch

from evaluation.cache import build_cache, load_cache
from evaluation.fitness import Fitness, SubtreeMemo, Target
from evaluation.samples import make_sample
from evaluation.spaces import get_space
from primitives.expression import random_expression
from primitives.functions import REGISTRY
from primitives.terminals import terminal_types
from primitives.types import DTYPE, NetScalar, Rows, Vector, value_bytes

TERMS = ("code_kernel", "chan_corr_eig", "chan_sv", "act_std", "curvature", "params")


def _scalar(n: int) -> NetScalar:
    return NetScalar(torch.zeros(n, dtype=DTYPE))  # n x 8 bytes


def test_value_bytes_counts_data_and_mask():
    rows = Rows.networks(3)
    vector = Vector(torch.zeros(3, 4, dtype=DTYPE), torch.ones(3, 4, dtype=torch.bool), rows)
    assert value_bytes(vector) == 3 * 4 * 8 + 3 * 4 and value_bytes(_scalar(5)) == 40


class Clock:
    """A clock the test moves, so the seconds between a lookup miss and the store are chosen."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _compute(memo: SubtreeMemo, clock: Clock, text: str, value: NetScalar, seconds: float) -> None:
    assert text not in memo  # the miss, as evaluate() looks it up
    clock.now += seconds
    memo[text] = value


def test_memo_evicts_the_cheapest_per_byte_within_its_bound():
    clock = Clock()
    memo = SubtreeMemo(max_bytes=400, clock=clock)
    _compute(memo, clock, "costly", _scalar(10), 8.0)  # 80 bytes each from here on
    _compute(memo, clock, "cheap", _scalar(10), 0.1)
    _compute(memo, clock, "middle", _scalar(10), 1.0)
    _compute(memo, clock, "middle2", _scalar(10), 1.0)
    assert memo.bytes == 320 and len(memo) == 4
    _compute(memo, clock, "new", _scalar(10), 0.5)  # 400 bytes: fits
    _compute(memo, clock, "newer", _scalar(10), 0.5)  # 480: the cheapest per byte goes
    assert "cheap" not in memo and memo.bytes == 400
    for _ in range(3):
        memo["middle"]  # hits renew a value's priority above those of values left unused
        _compute(memo, clock, f"filler{_}", _scalar(10), 1.5)
    assert "middle" in memo and "costly" in memo and "middle2" not in memo and memo.bytes <= 400
    _compute(memo, clock, "big", _scalar(13), 100.0)  # 104 bytes > 400 / 4: not kept, nothing evicted
    assert "big" not in memo and memo.bytes <= 400
    before = memo.bytes
    memo["costly"] = _scalar(5)  # a stored text replaced: its bytes are recounted
    assert memo.bytes == before - 40 and memo["costly"].data.shape == (5,)


@pytest.fixture(scope="module")
def targets(tmp_path_factory):
    """Two caches of different TSS networks (two envs in one fitness)."""
    out = []
    for seed in (11, 12):
        sample = make_sample(get_space("tss"), "random", 6, seed)
        path = tmp_path_factory.mktemp(f"memo{seed}")
        build_cache(sample, "cifar10", path, batch_size=8, seed=3, terminals=TERMS, backend="serial",
                    image_source="gaussian", progress=False)
        cache = load_cache(path)
        out.append(Target(f"cache{seed}", cache.env(), np.random.default_rng(seed).random(6)))
    return out


@pytest.mark.parametrize("memo_bytes", [1 << 30, 20_000])  # ample, and small enough to evict
def test_scores_with_the_memo_equal_scores_without(targets, memo_bytes):
    rng = random.Random(0)
    texts = [random_expression(REGISTRY, terminal_types(TERMS), rng, max_depth=5) for _ in range(120)]
    texts += texts[:30]  # repeated subtrees across calls are where the memo answers
    plain = Fitness(targets, TERMS, combine="mean")
    kept = Fitness(targets, TERMS, combine="mean", memo_bytes=memo_bytes)
    for start in range(0, len(texts), 50):  # several calls, as generations
        batch = texts[start:start + 50]
        assert kept.values(batch) == plain.values(batch)
    memos = list(kept.memos.values())
    assert len(memos) == 2 and all(0 < m.bytes <= memo_bytes // 2 for m in memos)
    assert sum(map(len, memos)) > 0 and plain.memos is None


def test_heap_pages_are_released_every_hundred_candidates_only_with_a_kept_memo(targets, monkeypatch):
    import evaluation.fitness as fitness_module

    calls = []
    monkeypatch.setattr(fitness_module, "release_memory", lambda: calls.append(1))
    texts = ["params", "curvature", "n_add(params, curvature)"] * 84  # 252 candidates
    kept = Fitness(targets, TERMS, memo_bytes=1 << 20)
    kept(texts)
    assert len(calls) == 2
    kept(texts, share_subtrees=True)  # a memo of this call only: nothing pinned
    Fitness(targets, TERMS).values(texts)
    assert len(calls) == 2
