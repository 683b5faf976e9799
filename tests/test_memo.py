"""The subtree memo a fitness keeps across calls: bounded, least recently used first, and invisible in
the scores (also when two caches share one fitness and when the bound forces evictions)."""
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


def test_memo_keeps_the_recently_used_within_its_bound():
    memo = SubtreeMemo(max_bytes=400)
    for name in "abcd":
        memo[name] = _scalar(10)  # 80 bytes each
    assert memo.bytes == 320 and list(memo) == ["a", "b", "c", "d"]
    memo["a"]  # read: now the most recently used
    memo["e"], memo["f"] = _scalar(10), _scalar(10)  # 480 bytes: the least recently used (b) goes
    assert list(memo) == ["c", "d", "a", "e", "f"] and memo.bytes == 400
    memo["big"] = _scalar(13)  # 104 bytes > 400 / 4: not kept, nothing evicted
    assert "big" not in memo and len(memo) == 5
    memo["c"] = _scalar(5)  # a stored text replaced: its bytes are recounted
    assert memo.bytes == 360 and list(memo)[-1] == "c"


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

