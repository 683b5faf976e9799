"""Comparison metrics against hand-computed values; nested samples."""
import math

import numpy as np
import pytest

from evaluation.errors import ZcpError
from evaluation.proxies import PROXIES
from evaluation.report import PUBLISHED, bootstrap, metrics, paired, top_precision
from evaluation.samples import described, make_sample, subsample
from evaluation.spaces import SPACES, get_space, space_datasets


def test_top_precision_counts_the_shared_top_tenth():
    truth = np.arange(20, dtype=float)  # true top 2: rows 19 and 18
    scores = np.zeros(20)
    scores[[19, 3]] = [5.0, 4.0]  # the proxy's top 2: rows 19 and 3
    assert top_precision(scores, truth) == 0.5


def test_non_finite_scores_rank_last_and_pearson_uses_the_finite_ones():
    truth = np.array([1.0, 2.0, 3.0, 4.0])
    m = metrics(np.array([np.nan, 2.0, 3.0, 4.0]), truth)
    assert m["kendall"] == pytest.approx(1.0) and m["spearman"] == pytest.approx(1.0)
    assert m["pearson"] == pytest.approx(1.0)
    m = metrics(np.array([np.inf, 2.0, 3.0, 4.0]), truth)  # +inf is not "best": it is broken
    assert m["kendall"] == pytest.approx(1.0)


def test_constant_scores_have_no_rank_correlation():
    m = metrics(np.ones(5), np.arange(5.0))
    assert math.isnan(m["kendall"]) and math.isnan(m["pearson"])


def test_bootstrap_interval_brackets_a_strong_correlation():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=300)
    scores = truth + 0.5 * rng.normal(size=300)
    lo, hi = bootstrap(scores, truth, reps=200)["kendall"]
    assert lo < metrics(scores, truth)["kendall"] < hi and hi - lo < 0.2
    assert bootstrap(scores, truth, reps=50, seed=1) == bootstrap(scores, truth, reps=50, seed=1)


def test_a_paired_interval_sees_a_small_lead_that_marginal_intervals_hide():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=300)
    shared = truth + 0.8 * rng.normal(size=300)  # both proxies misrank the same networks
    reference, better = shared + 0.3 * rng.normal(size=300), shared + 0.05 * rng.normal(size=300)
    lead = metrics(better, truth)["kendall"] - metrics(reference, truth)["kendall"]
    p = paired("better", better, "ref", reference, truth, reps=300)
    assert p.difference == pytest.approx(lead) and 0 < p.interval[0] < lead < p.interval[1] and p.not_above < 0.025
    assert bootstrap(better, truth, reps=300)["kendall"][0] < metrics(reference, truth)["kendall"]  # overlap
    same = paired("copy", reference, "ref", reference, truth, reps=50)
    assert same.difference == 0 and same.interval == (0.0, 0.0) and same.not_above == 1.0
    worse = paired("ref", reference, "better", better, truth, reps=300)
    assert worse.interval == pytest.approx((-p.interval[1], -p.interval[0])) and worse.not_above > 0.975
    broken = paired("nan", np.full(300, np.nan), "ref", reference, truth, reps=20)  # constant: no tau at all
    assert math.isnan(broken.difference) and math.isnan(broken.interval[0]) and math.isnan(broken.not_above)


def test_subsample_is_nested_and_says_how_it_was_drawn():
    big = make_sample(get_space("tss"), "random", 50, 0, split="all")
    small = subsample(big, 10, 3)
    assert set(small.indices) <= set(big.indices) and len(small.indices) == 10
    assert small.archs == tuple(get_space("tss").arch_str(i) for i in small.indices)
    assert "uniform subset (seed 3) of a random sample of 50" in small.notes[-1]
    assert described(big) == "random sample, seed 0"
    strata = make_sample(get_space("tss"), "stratified", 50, 0, "all", "cifar10", np.linspace(0, 90, 15625), bins=5)
    assert described(subsample(strata, 10, 2)) == "uniform subset (seed 2) of a stratified sample of 50 drawn with seed 0"
    assert described(subsample(subsample(strata, 20, 1), 10, 2)).startswith("uniform subset (seed 1) of a stratified")
    with pytest.raises(ZcpError, match="1..50 architectures"):
        subsample(big, 51, 0)


def test_a_subsample_grows_around_an_earlier_one_and_stays_uniform():
    big = make_sample(get_space("tss"), "random", 60, 0, split="all")
    small = subsample(big, 10, 3)
    grown = subsample(big, 25, 4, keep=small)
    assert set(small.indices) < set(grown.indices) <= set(big.indices) and len(grown.indices) == 25
    assert grown.notes[-1].endswith("holding the 10 of the subset drawn with seed 3")
    assert set(subsample(big, 30, 5, keep=grown).indices) > set(grown.indices)  # grows again
    hits = np.zeros(len(big.indices))  # every network not kept is drawn equally often
    for seed in range(400):
        hits += np.isin(big.indices, subsample(big, 25, seed, keep=small).indices)
    rest = ~np.isin(big.indices, small.indices)
    assert (hits[~rest] == 400).all() and abs(hits[rest].mean() - 400 * 15 / 50) < 1e-9
    assert hits[rest].min() > 80 and hits[rest].max() < 160
    with pytest.raises(ZcpError, match="no uniform subset of this random sample of 60"):
        subsample(big, 25, 4, keep=make_sample(get_space("tss"), "random", 10, 0, split="all"))
    elsewhere = subsample(make_sample(get_space("tss"), "random", 60, 0, split="heldout"), 10, 3)
    with pytest.raises(ZcpError, match="holds 10 tss architectures outside this tss sample"):
        subsample(big, 25, 4, keep=elsewhere)
    with pytest.raises(ZcpError, match="keeping 10 architectures needs more than that, got 10"):
        subsample(big, 10, 4, keep=small)


def test_every_published_value_names_a_zoo_proxy_a_space_and_a_dataset():
    for (space, dataset), entries in PUBLISHED.items():
        assert dataset in space_datasets(get_space(space)), (space, dataset)
        for proxy, (metric, value, source) in entries.items():
            assert proxy.split(".")[0] in PROXIES and metric in ("kendall", "spearman"), proxy
            assert -1 <= value <= 1 and source, proxy
    assert set(SPACES) == {space for space, _ in PUBLISHED}
