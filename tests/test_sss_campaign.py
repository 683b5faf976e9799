"""NATS-Bench SSS end to end (issue 18): a tiny SSS campaign through ``experiments.campaigns`` (search,
held-out report under both protocols, a zoo proxy on the same networks), the transfer matrix across
spaces, and stratified samples on the real SSS table, whose lowest accuracy bins are nearly empty."""
import json

import numpy as np
import pytest

from evaluation import report
from evaluation.groundtruth import load_ground_truth
from evaluation.samples import make_sample, read_sample, split_indices
from evaluation.spaces import get_space
from evaluation.spaces.sss import parse_channels
from experiments import campaign, campaigns, heldout, transfer
from experiments.config import load_config
from tests.campaigns import tiny_config


@pytest.fixture(scope="module")
def sss_truth(data_dir):
    if not (data_dir / "nats_sss_ground_truth.csv").exists():
        pytest.skip(f"no SSS ground-truth table in {data_dir}")
    return load_ground_truth("sss")


@pytest.fixture(scope="module")
def sss_campaign(tmp_path_factory, sss_truth):
    """``python -m experiments.campaigns tiny-sss --seeds 0 1 --stratified-n 10 --zoo params``, in a temporary folder."""
    tmp = tmp_path_factory.mktemp("sss")
    (tmp / "configs").mkdir()
    tiny_config(tmp / "configs", tmp / "caches", generations=2, population=16, space="sss").rename(
        tmp / "configs" / "tiny-sss.toml")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)  # the zoo's score cache lands in ./runs/scores
        mp.setattr(campaigns, "CONFIGS", tmp / "configs")
        code = campaigns.main(["tiny-sss", "--seeds", "0", "1", "--runs", str(tmp / "runs"), "--results",
                               str(tmp / "results"), "--stratified-n", "10", "--zoo", "params"])
    assert code == 0
    return tmp, [tmp / "runs" / f"tiny-sss-s{seed}" for seed in (0, 1)]


def test_tiny_sss_campaign_end_to_end(sss_campaign, sss_truth):
    tmp, dirs = sss_campaign
    for run_dir in dirs:
        assert load_config(run_dir / "config.toml").campaign.space == "sss"
        record = campaign.read_hall_of_fame(run_dir)
        assert record["status"] == "finished" and record["search_n"] == [12] and record["heldout_n"] == [12]
        assert -1 <= record["entries"][0]["fitness"] <= 1
        for split in ("search", "heldout"):
            sample = read_sample(run_dir / "samples" / f"cifar10-{split}-sss-random.json", "sss")
            assert all(len(parse_channels(a)) == 5 for a in sample.archs)
    caches = [json.loads(p.read_text()) for p in (tmp / "caches").glob("*/manifest.json")]
    assert caches and {c["space"] for c in caches} == {"sss"}
    result = json.loads((tmp / "results" / "tiny-sss" / "results.json").read_text())
    zoo = heldout.zoo_name("params")
    for protocol, n in (("random", 12), ("stratified", 10)):
        table = result[protocol]["cifar10"]
        assert {"evolved (seed 0)", "evolved (seed 1)", "#params", zoo, heldout.SINGLE_BEST, heldout.SINGLE_MAX} <= set(table)
        assert table[heldout.SINGLE_MAX]["kendall"] >= max(table[name]["kendall"] for name in campaign.BASELINES)
        assert table[zoo]["n"] == table["#params"]["n"] == n
        # the live zoo proxy on the same SSS networks ranks them exactly as the cached parameter count
        assert table[zoo]["kendall"] == pytest.approx(table["#params"]["kendall"])
    # on SSS the width decides much of the accuracy: #params ranks even 12 networks clearly positively
    assert result["random"]["cifar10"]["#params"]["kendall"] > 0.3
    assert result["stratified_notes"] == {"cifar10": []}  # 1 per bin: no bin of the held-out half is short


def test_transfer_matrix_across_spaces(sss_campaign, tmp_path):
    _, dirs = sss_campaign
    tss = tmp_path / "tss"
    campaign.start(tiny_config(tmp_path, tmp_path / "caches", generations=1, population=8), tss, progress=False)
    rows, matrix = transfer.transfer([dirs[0], tss])
    assert list(rows) == ["sss cifar10 (seed 0)", "tss cifar10 (seed 0)"]
    assert all(set(cells) == {"sss/cifar10", "tss/cifar10"} for cells in matrix.values())
    assert all(-1 <= v <= 1 for cells in matrix.values() for v in cells.values())
    assert "tau on sss/cifar10" in transfer.markdown(rows, matrix)
    single, _ = transfer.transfer(dirs)  # one space: columns and rows keep their plain dataset names
    assert list(single) == ["cifar10 (seed 0)", "cifar10 (seed 1)"]


@pytest.mark.parametrize("dataset,split,n,short", [
    ("cifar10", "all", 1000, {0: 1, 1: 8, 2: 10, 3: 52}),
    ("cifar10", "search", 1000, {0: 1, 1: 4, 2: 7, 3: 24, 4: 90}),
    ("cifar10", "heldout", 500, {0: 4, 1: 5, 2: 26}),
    ("cifar100", "heldout", 1000, {0: 15, 1: 43}),
    ("ImageNet16-120", "heldout", 1000, {0: 27, 1: 66}),
])
def test_stratified_sss_samples_take_all_of_short_bins(sss_truth, dataset, split, n, short):
    """Equal-width bins of SSS accuracy are very unequal: a short bin gives all it has, a note says so
    (and the held-out report lists it), the other bins give their full share, and the sample is smaller
    than asked."""
    accuracy = sss_truth.accuracy[dataset]
    sample = make_sample(get_space("sss"), "stratified", n, 0, split, dataset, accuracy)
    want = n // 10
    assert [note.split(" has ")[0] for note in sample.notes] == [f"bin {b}" for b in short]
    assert all(f"bin {b} has {k} < {want} architectures: took all of them" in sample.notes for b, k in short.items())
    assert len(sample.indices) == sum(short.values()) + want * (10 - len(short))
    pool = accuracy[split_indices(get_space("sss").size, split)]
    edges = np.linspace(pool.min(), pool.max(), 11)
    acc = accuracy[list(sample.indices)]
    counts = np.bincount(np.clip(np.searchsorted(edges, acc, side="right") - 1, 0, 9), minlength=10)
    assert counts.tolist() == [short.get(b, want) for b in range(10)]



def test_published_values_belong_to_the_reports_space_and_dataset(tmp_path):
    """`zcp compare` on SSS (or TSS CIFAR-100) must not print TSS CIFAR-10's published values."""
    rng = np.random.default_rng(0)
    truth = rng.normal(size=20)
    rows = [report.evaluate("params", truth + rng.normal(size=20), truth, 0.0, reps=10)]
    expected = {("sss", "cifar10"): "kendall 0.530 (ZiCo T3)", ("tss", "cifar10"): "kendall 0.570 (ZiCo T3)",
                ("tss", "cifar100"): "kendall 0.550 (ZiCo T1)", ("sss", "ImageNet16-120"): "kendall 0.650 (ZiCo T3)"}
    for where, text in expected.items():
        md = report.write_markdown(rows, tmp_path / "r.md", "t", where).read_text()
        csv_text = report.write_csv(rows, tmp_path / "r.csv", where).read_text()
        assert text in md and text in csv_text
        assert "| published (random samples or all networks) |" in md  # never a stratified protocol's value
        assert all(other not in md for other in expected.values() if other != text)
    assert "ZiCo" not in report.write_markdown(rows, tmp_path / "r.md", "t").read_text()
