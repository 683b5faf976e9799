"""The official NAS-Bench-101 network in PyTorch (``nasbench/lib/model_builder.py``, ``base_ops.py``).

stem: 3x3 conv (128 channels) + BN + ReLU; 3 stacks of 3 cells; before stacks 2 and 3 a 2x2 max
pool (stride 2) and the channel count doubles (128, 256, 512); global average pool; dense layer to
the classes. Inside a cell, vertex ``t`` sums its inputs: earlier interior vertices truncated to its
channel count (the first channels), and the cell input through a 1x1 conv-BN-ReLU projection; the
output vertex concatenates the interior vertices that feed it and adds a projection of the cell
input if there is an input-output edge (or is only that projection). Convolutions have no bias and
'same' padding; BatchNorm as the TF original (decay 0.997, i.e. PyTorch momentum 0.003; eps 1e-5).
Initialisation as the TF original: convolutions ``variance_scaling_initializer()`` (truncated normal,
fan-in, scale 1), the dense layer Glorot uniform with zero bias, BN weight 1 and bias 0.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from evaluation.spaces.nb101.spec import vertex_channels

STEM_CHANNELS, STACKS, CELLS_PER_STACK = 128, 3, 3
BN_MOMENTUM, BN_EPS = 1 - 0.997, 1e-5
_TRUNC_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2] (TF's correction)


class ConvBnRelu(nn.Module):
    """conv (no bias, 'same' padding) -> BatchNorm -> ReLU, as ``base_ops.conv_bn_relu``."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU()
        std = math.sqrt(1.0 / (in_channels * kernel * kernel)) / _TRUNC_STD
        nn.init.trunc_normal_(self.conv.weight, std=std, a=-2 * std, b=2 * std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class MaxPool3x3(nn.MaxPool2d):
    """The cell's 3x3 max pool (stride 1, 'same' padding); without gradients on the CPU, a faster kernel.

    PyTorch's CPU kernel for this pool on NCHW tensors is as slow as a 3x3 convolution of the same
    width, so a forward pass without gradients (most proxy and cache passes) takes the maximum of
    shifted views instead: bitwise the same values, about 1.4x faster over random NB101 networks
    (``python -m experiments.bench.nb101_pool``). Whenever a gradient may flow, or off the CPU, this
    is ``nn.MaxPool2d`` itself, so gradients keep its choice of the maximum among ties."""

    def __init__(self) -> None:
        super().__init__(3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or (torch.is_grad_enabled() and x.requires_grad):
            return super().forward(x)
        h, w = x.shape[-2:]
        p = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
        rows = torch.maximum(torch.maximum(p[..., :w], p[..., 1:w + 1]), p[..., 2:])
        return torch.maximum(torch.maximum(rows[..., :h, :], rows[..., 1:h + 1, :]), rows[..., 2:, :])


def make_op(op: str, channels: int) -> nn.Module:
    """A vertex op on ``channels`` channels (its input already has that many)."""
    if op == "maxpool3x3":
        return MaxPool3x3()
    return ConvBnRelu(channels, channels, 3 if op == "conv3x3-bn-relu" else 1)


class Cell(nn.Module):
    """One NAS-Bench-101 module on a pruned cell ``(matrix, ops)``."""

    def __init__(self, matrix: np.ndarray, ops: tuple[str, ...], in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.matrix = matrix.astype(bool)
        n = len(ops)
        self.channels = vertex_channels(in_channels, out_channels, matrix)
        self.projections = nn.ModuleDict()
        self.ops = nn.ModuleList([nn.Identity()])  # vertex 0 (input) has no op
        for t in range(1, n - 1):
            if self.matrix[0, t]:
                self.projections[str(t)] = ConvBnRelu(in_channels, self.channels[t], 1)
            self.ops.append(make_op(ops[t], self.channels[t]))
        if self.matrix[0, n - 1]:
            self.projections[str(n - 1)] = ConvBnRelu(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.channels)
        values = [x]
        for t in range(1, n - 1):
            inputs = [values[s][:, :self.channels[t]] for s in range(1, t) if self.matrix[s, t]]
            if self.matrix[0, t]:
                inputs.append(self.projections[str(t)](x))
            values.append(self.ops[t](sum(inputs[1:], inputs[0])))
        concat = [values[t] for t in range(1, n - 1) if self.matrix[t, n - 1]]
        if not concat:
            return self.projections[str(n - 1)](x)
        out = torch.cat(concat, dim=1) if len(concat) > 1 else concat[0]
        if self.matrix[0, n - 1]:
            out = out + self.projections[str(n - 1)](x)
        return out


class NB101Network(nn.Module):
    """The whole network for one cell; ``forward(x)`` returns logits (N, num_classes)."""

    def __init__(self, matrix: np.ndarray, ops: tuple[str, ...], num_classes: int = 10) -> None:
        super().__init__()
        self.stem = ConvBnRelu(3, STEM_CHANNELS, 3)
        layers: list[nn.Module] = []
        channels = STEM_CHANNELS
        for stack in range(STACKS):
            in_channels = channels
            if stack > 0:
                layers.append(nn.MaxPool2d(2, stride=2))
                channels *= 2
            for _ in range(CELLS_PER_STACK):
                layers.append(Cell(matrix, ops, in_channels, channels))
                in_channels = channels
        self.cells = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)
        nn.init.xavier_uniform_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.cells(self.stem(x)).mean(dim=(2, 3)))
