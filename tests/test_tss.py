import numpy as np
import pytest
import torch

from evaluation.check import count_params, matches
from evaluation.datasets import DATASETS
from evaluation.errors import ZcpError
from evaluation.spaces import get_space
from evaluation.spaces.tss import TSS, parse_arch

# Official parameter counts (cifar10 networks) from the benchmark, so the builder is checked even
# where the shared table is absent.
KNOWN_CIFAR10_PARAMS = {0: 129306, 1: 802426, 2: 559386, 3: 73306}


def test_official_index_order_matches_every_row(tss_rows):
    assert TSS.size == len(tss_rows) == 15625
    for row in tss_rows:
        index = int(row["index"])
        assert TSS.arch_str(index) == row["arch"]
        assert TSS.index_of(row["arch"]) == index


def test_known_first_architectures_without_the_table():
    assert TSS.arch_str(0) == "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
    for index, params in KNOWN_CIFAR10_PARAMS.items():
        assert count_params("tss", index, "cifar10") == params


def test_round_trip_all_indices():
    assert all(TSS.index_of(TSS.arch_str(i)) == i for i in range(TSS.size))


def test_parameter_counts_match_benchmark_on_a_sample(tss_rows):
    rng = np.random.default_rng(0)
    for index in rng.choice(len(tss_rows), 40, replace=False):
        row = tss_rows[index]
        for dataset in DATASETS:
            built = count_params("tss", int(index), dataset)
            assert matches(built, float(row[f"{dataset}_params_M"])), (index, dataset, built)


@pytest.mark.slow
def test_parameter_counts_match_benchmark_everywhere(tss_rows):
    from evaluation.check import check_params
    for dataset in DATASETS:
        expected = np.array([float(r[f"{dataset}_params_M"]) for r in tss_rows])
        bad = [m for _, m in check_params("tss", dataset, expected, list(range(TSS.size))) if m]
        assert not bad, bad[:5]


@pytest.mark.parametrize("dataset,size,classes", [("cifar10", 32, 10), ("cifar100", 32, 100), ("ImageNet16-120", 16, 120)])
def test_forward_gives_logits(dataset, size, classes):
    torch.manual_seed(0)
    model = get_space("tss").build(1, dataset)
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, classes) and torch.isfinite(out).all()


def test_build_by_string_equals_build_by_index():
    arch = TSS.arch_str(123)
    torch.manual_seed(1)
    a = TSS.build(arch, "cifar10")
    torch.manual_seed(1)
    b = TSS.build(123, "cifar10")
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(a(x), b(x))


def test_none_edges_zero_the_path():
    # Node 3 fed only by 'none' edges: the cells output zeros, so logits equal the classifier bias.
    model = TSS.build("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|", "cifar10").eval()
    cell = model.cells[0]
    assert torch.equal(cell(torch.randn(2, 16, 8, 8)), torch.zeros(2, 16, 8, 8))


@pytest.mark.parametrize("bad,match", [
    ("", "3 nodes"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", "3 nodes"),
    ("|conv~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|", "unknown op 'conv'"),
    ("|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|", "must read nor_conv_3x3~0"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|+|none~0|none~1|none~2|", "node 2 needs 2 inputs"),
    ("nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|", "node 1"),
    ("|nor_conv_3x3|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|", "must read"),
])
def test_malformed_strings_are_one_line_errors(bad, match):
    with pytest.raises(ZcpError, match=match) as info:
        parse_arch(bad)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("index", [-1, 15625, "3", True])
def test_index_out_of_space(index):
    with pytest.raises(ZcpError, match="outside the tss space"):
        TSS.arch_str(index)


def test_unknown_space_and_dataset():
    with pytest.raises(ZcpError, match="unknown search space 'nb201'"):
        get_space("nb201")
    with pytest.raises(ZcpError, match="cifar10-valid"):
        TSS.build(0, "cifar10-valid")
