"""Building blocks of the NAS-Bench-201 / NATS-Bench networks (structure of the official models).

All ReLUs are ``nn.ReLU`` modules (never in-place) so that forward hooks see every activation.
"""
from __future__ import annotations

import torch
import torch.nn as nn

CELL_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

# A cell genotype: for each of the nodes 1..3, the (op, input node) pairs summed into it.
Genotype = tuple[tuple[tuple[str, int], ...], ...]


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv2d (no bias) -> BatchNorm2d: the benchmark's only parametric op."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Zero(nn.Module):
    """The 'none' op: a zero tensor of the input's shape (stride-1 cells only)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def cell_op(name: str, c_in: int, c_out: int) -> nn.Module:
    """One edge op of a stride-1 cell mapping ``c_in`` to ``c_out`` channels.

    Widths differ only on edges leaving the input of an SSS cell; there a ``skip_connect`` is the
    official FactorizedReduce at stride 1: a 1x1 conv and a BN, no ReLU (the official module owns
    a ReLU that its stride-1 forward never calls). Only ops that occur in official networks with
    ``c_in != c_out`` are offered for it.
    """
    if name == "nor_conv_3x3":
        return ReLUConvBN(c_in, c_out, 3, 1)
    if name == "nor_conv_1x1":
        return ReLUConvBN(c_in, c_out, 1, 1)
    if name == "skip_connect":
        if c_in == c_out:
            return nn.Identity()
        return nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
    if c_in != c_out:
        raise ValueError(f"cell op {name!r} with {c_in} -> {c_out} channels occurs in no official network")
    if name == "none":
        return Zero()
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown cell op {name!r}")


class Cell(nn.Module):
    """A DAG cell: node j = sum of op(node i) over its incoming edges; output = last node."""

    def __init__(self, genotype: Genotype, c_in: int, c_out: int) -> None:
        super().__init__()
        self.inputs = [[src for _, src in node] for node in genotype]
        self.edges = nn.ModuleList(
            nn.ModuleList(cell_op(op, c_in if src == 0 else c_out, c_out) for op, src in node)
            for node in genotype
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for sources, ops in zip(self.inputs, self.edges):
            nodes.append(sum(op(nodes[src]) for op, src in zip(ops, sources)))
        return nodes[-1]


class ResNetBlock(nn.Module):
    """Stride-2 residual block between stages: two ReLUConvBN plus avg-pool + 1x1 conv shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class TinyNetwork(nn.Module):
    """Stem, three stages of cells separated by residual blocks, BN-ReLU, global pool, classifier.

    ``widths`` gives the channels of the stem and of every cell / block in order; ``reductions``
    marks which entries are stride-2 residual blocks. Both spaces use this macro skeleton.
    """

    def __init__(self, genotype: Genotype, widths: list[int], reductions: list[bool], num_classes: int,
                 stem_width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, stem_width, 3, padding=1, bias=False), nn.BatchNorm2d(stem_width))
        layers: list[nn.Module] = []
        c_prev = stem_width
        for width, reduce in zip(widths, reductions):
            if reduce:
                layers.append(ResNetBlock(c_prev, width))
            else:
                layers.append(Cell(genotype, c_prev, width))
            c_prev = width
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU())
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lastact(self.cells(self.stem(x)))
        return self.classifier(self.global_pooling(out).flatten(1))

