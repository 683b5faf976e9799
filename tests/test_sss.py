"""NATS-Bench size search space: channel-string validation, official index order, official networks."""
from __future__ import annotations

import itertools

import pytest
import torch

from evaluation.errors import ZcpError
from evaluation.spaces import get_space
from evaluation.spaces.sss import CANDIDATES, SSS, parse_channels

DATASETS = ("cifar10", "cifar100", "ImageNet16-120")

# Parameter counts (sum of p.numel()) of the official networks, produced by the official model code:
# xautodl 1.0.0 `get_cell_based_tiny_net({'name': 'infer.shape.tiny', 'channels': arch, 'genotype':
# <best TSS cell>, 'num_classes': n})` (DynamicShapeTinyNet), per dataset (cifar10, cifar100,
# ImageNet16-120). Cross-checks: 8:8:8:16:40 on cifar10 (index 12) = 0.067378 M in the official
# NATS-Bench notebooks (issue-21.ipynb, create-query-sss.ipynb, read from the real archive).
EXPECTED_PARAMS = {
    "8:8:8:8:8": (11714, 12524, 12704),
    "64:64:64:64:64": (713674, 719524, 720824),
    "8:8:8:16:40": (67378, 71068, 71888),
    "8:8:16:40:40": (107826, 111516, 112336),
    "16:40:56:24:40": (242138, 245828, 246648),
    "8:16:24:32:64": (198050, 203900, 205200),
    "64:56:48:40:32": (451466, 454436, 455096),
    "64:8:64:8:64": (441226, 447076, 448376),
    "8:64:8:64:8": (110882, 111692, 111872),
    "32:32:32:32:32": (179690, 182660, 183320),
    "24:48:16:56:8": (128850, 129660, 129840),
    "40:16:64:24:48": (319042, 323452, 324432),
    "56:16:24:32:64": (345842, 351692, 352992),
    "56:48:56:48:24": (413362, 415612, 416112),
    "8:48:16:32:48": (156674, 161084, 162064),
    "40:16:16:16:8": (103298, 104108, 104288),
}


def test_registered_as_sss() -> None:
    assert get_space("sss") is SSS
    assert SSS.name == "sss" and SSS.size == 32768


def test_official_order_round_trip() -> None:
    # Official order: traverse_net in AutoDL-Projects exps/NATS-Bench/main-sss.py (no shuffle).
    expected = [":".join(map(str, c)) for c in itertools.product(CANDIDATES, repeat=5)]
    assert [SSS.arch_str(i) for i in range(SSS.size)] == expected
    assert all(SSS.index_of(arch) == i for i, arch in enumerate(expected))


def test_known_indices() -> None:
    assert SSS.arch_str(0) == "8:8:8:8:8"
    assert SSS.arch_str(12) == "8:8:8:16:40"  # api.get_net_config(12, ...) in the official notebook
    assert SSS.arch_str(32767) == "64:64:64:64:64"


@pytest.mark.parametrize("index", [-1, 32768, True, 1.0])
def test_bad_index(index: object) -> None:
    with pytest.raises(ZcpError, match="outside the sss space"):
        SSS.arch_str(index)  # type: ignore[arg-type]


@pytest.mark.parametrize("arch", sorted(EXPECTED_PARAMS))
def test_param_counts_match_official(arch: str) -> None:
    for dataset, expected in zip(DATASETS, EXPECTED_PARAMS[arch]):
        net = SSS.build(arch, dataset)
        assert sum(p.numel() for p in net.parameters()) == expected, (arch, dataset)


def test_build_by_index_equals_build_by_string() -> None:
    torch.manual_seed(0)
    a = SSS.build(12, "cifar10").state_dict()
    torch.manual_seed(0)
    b = SSS.build("8:8:8:16:40", "cifar10").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("dataset,classes,size", [("cifar10", 10, 32), ("cifar100", 100, 32),
                                                  ("ImageNet16-120", 120, 16)])
@pytest.mark.parametrize("arch", ["8:8:8:8:8", "64:8:40:16:24"])
def test_forward_gives_finite_logits(arch: str, dataset: str, classes: int, size: int) -> None:
    torch.manual_seed(0)
    net = SSS.build(arch, dataset)
    with torch.no_grad():
        logits = net(torch.randn(2, 3, size, size))
    assert logits.shape == (2, classes)
    assert torch.isfinite(logits).all()


def test_unknown_dataset() -> None:
    with pytest.raises(ZcpError, match="unknown dataset 'cifar10-valid'"):
        SSS.build(0, "cifar10-valid")


@pytest.mark.parametrize("arch,problem", [
    ("8:16:24:32", "expected 5 channel counts separated by ':', got 4"),
    ("8:16:24:32:64:8", "expected 5 channel counts separated by ':', got 6"),
    ("", "expected 5 channel counts separated by ':', got 1"),
    ("8-16-24-32-64", "expected 5 channel counts separated by ':', got 1"),
    ("8:16::32:64", "channel count '' is not a plain integer"),
    ("8:16:x:32:64", "channel count 'x' is not a plain integer"),
    ("8:16:24.0:32:64", "channel count '24.0' is not a plain integer"),
    ("8:16:-8:32:64", "channel count '-8' is not a plain integer"),
    ("8:+16:24:32:64", "channel count '\\+16' is not a plain integer"),
    ("08:16:24:32:64", "channel count '08' is not a plain integer"),
    ("8:16:24:32:٦٤", "channel count '٦٤' is not a plain integer"),
    ("8:16:12:32:64", "channel count 12 is not one of 8, 16, 24, 32, 40, 48, 56, 64"),
    ("0:16:24:32:64", "channel count 0 is not one of"),
    ("8:16:24:32:72", "channel count 72 is not one of"),
    (" 8:16:24:32:64", "contains whitespace"),
    ("8:16:24:32:64\n", "contains whitespace"),
    ("8: 16:24:32:64", "contains whitespace"),
])
def test_malformed_strings(arch: str, problem: str) -> None:
    for call in (parse_channels, SSS.index_of, lambda a: SSS.build(a, "cifar10")):
        with pytest.raises(ZcpError, match=f"^malformed SSS architecture .*: {problem}") as err:
            call(arch)
        assert repr(arch) in str(err.value) and "\n" not in str(err.value)


def test_non_string_arch() -> None:
    with pytest.raises(ZcpError, match="channel string like '8:16:24:32:64', got NoneType"):
        SSS.index_of(None)  # type: ignore[arg-type]
