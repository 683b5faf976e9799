import json

import numpy as np
import pytest

from evaluation.errors import ZcpError
from evaluation.samples import draw, make_sample, read_sample, split_indices, write_sample
from evaluation.spaces import get_space

TSS = get_space("tss")


def test_splits_are_disjoint_cover_the_space_and_depend_on_seed():
    search = split_indices(TSS.size, "search", 0)
    heldout = split_indices(TSS.size, "heldout", 0)
    assert not set(search) & set(heldout)
    assert len(search) + len(heldout) == TSS.size and len(heldout) == round(TSS.size / 2)
    assert not np.array_equal(heldout, split_indices(TSS.size, "heldout", 1))
    assert np.array_equal(heldout, split_indices(TSS.size, "heldout", 0))


@pytest.mark.parametrize("kind", ["random", "stratified", "quantile"])
def test_samples_stay_in_their_split_and_are_reproducible(kind):
    acc = np.random.default_rng(0).uniform(10, 95, TSS.size)
    a = make_sample(TSS, kind, 200, 3, "heldout", "cifar10", acc)
    b = make_sample(TSS, kind, 200, 3, "heldout", "cifar10", acc)
    assert a == b and len(a.indices) == 200 and len(set(a.indices)) == 200
    assert set(a.indices) <= set(split_indices(TSS.size, "heldout", 0))
    assert make_sample(TSS, kind, 200, 4, "heldout", "cifar10", acc).indices != a.indices


def test_stratified_takes_equal_counts_from_equal_width_bins():
    acc = np.concatenate([np.linspace(0, 9.9, 900), np.linspace(90, 100, 100)])  # skewed
    pool = np.arange(1000)
    chosen, notes = draw(pool, "stratified", 100, 0, acc, bins=10)
    counts = np.histogram(acc[chosen], bins=np.linspace(0, 100, 11))[0]
    assert counts.tolist() == [10, 0, 0, 0, 0, 0, 0, 0, 0, 10]
    assert len(notes) == 8 and "bin 1 has 0 < 10" in notes[0]


def test_quantile_takes_equal_counts_from_equal_count_bins():
    acc = np.random.default_rng(1).exponential(size=1000)
    chosen, notes = draw(np.arange(1000), "quantile", 100, 0, acc, bins=4)
    ranks = np.argsort(np.argsort(acc))[chosen]
    assert np.bincount(ranks // 250).tolist() == [25, 25, 25, 25] and not notes


def test_nan_accuracy_is_never_sampled_by_binned_kinds():
    acc = np.full(100, np.nan)
    acc[:50] = np.arange(50)
    chosen, _ = draw(np.arange(100), "stratified", 20, 0, acc, bins=5)
    assert chosen.max() < 50


def test_sample_file_round_trip(tmp_path):
    sample = make_sample(TSS, "random", 20, 0)
    path = write_sample(sample, tmp_path / "s.json")
    assert read_sample(path, "tss") == sample
    assert json.loads(path.read_text())["architectures"][0] == [sample.indices[0], sample.archs[0]]


def _tamper(tmp_path, edit):
    path = write_sample(make_sample(TSS, "random", 5, 0), tmp_path / "s.json")
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))
    return path


@pytest.mark.parametrize("edit,match", [
    (lambda r: r["architectures"].append([15625, "|x|"]), "not in the tss space"),
    (lambda r: r["architectures"].__setitem__(0, [r["architectures"][0][0], TSS.arch_str(0) if r["architectures"][0][0] else TSS.arch_str(1)]), "not in the tss space"),
    (lambda r: r["architectures"].append(r["architectures"][0]), "twice"),
    (lambda r: r.pop("seed"), "lacks field"),
    (lambda r: r.__setitem__("format", "other"), "not a zcp sample"),
    (lambda r: r.__setitem__("space", "nb201"), "unknown search space"),
    (lambda r: r.__setitem__("architectures", [["1", "x"]]), "not an \\[index, arch\\] pair"),
])
def test_bad_sample_files(tmp_path, edit, match):
    with pytest.raises(ZcpError, match=match):
        read_sample(_tamper(tmp_path, edit))


def test_sample_from_other_space_and_unreadable_files(tmp_path):
    path = write_sample(make_sample(get_space("sss"), "random", 5, 0), tmp_path / "s.json")
    with pytest.raises(ZcpError, match="from space 'sss', not 'tss'"):
        read_sample(path, "tss")
    with pytest.raises(ZcpError, match="does not exist"):
        read_sample(tmp_path / "missing.json")
    (tmp_path / "trunc.json").write_text(path.read_text()[:40])
    with pytest.raises(ZcpError, match="not valid JSON"):
        read_sample(tmp_path / "trunc.json")


@pytest.mark.parametrize("kwargs,match", [
    (dict(kind="bogus"), "unknown sample kind"),
    (dict(n=0), "sample size must be >= 1"),
    (dict(n=TSS.size), "cannot draw"),
    (dict(split="train"), "unknown split"),
    (dict(kind="stratified"), "needs ground-truth accuracy"),
])
def test_bad_sampler_arguments(kwargs, match):
    args = dict(kind="random", n=10, seed=0, split="heldout") | kwargs
    with pytest.raises(ZcpError, match=match):
        make_sample(TSS, **args)
