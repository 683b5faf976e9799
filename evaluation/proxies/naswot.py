"""NASWOT: log-determinant of the Hamming kernel of ReLU binary codes.

Paper: Mellor et al., "Neural Architecture Search without Training", ICML 2021 (official code
BayesWatch/nas-without-training, ``score_networks.py``, ``hooklogdet``). Published NATS-TSS
CIFAR-10 Kendall tau 0.58 (ZiCo, ICLR 2023, Table 3; the official code was run there).

Formula: for every activation unit (a ReLU-like activation, module or functional; see
``primitives/layers.py``) the code of each
sample is c = (input > 0); K = sum over calls of ``c c^T + (1-c)(1-c)^T`` (N x N, float64);
score = ``log |det K|`` (slogdet, sign ignored). No labels.
Cost: 1 forward. The official code first runs a Jacobian forward + backward only to mark which
ReLUs the backward pass reaches; in networks where every ReLU feeds the output (all NATS networks:
even a 'none' edge multiplies by zero inside the graph) that changes nothing, so it is skipped.
Official setting: batch 128, default init, train mode; the network's class count does not matter.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from evaluation.errors import ZcpError
from evaluation.proxies.base import register
from primitives.layers import Recorder, code_kernel


def code_kernel_sum(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """NASWOT's kernel of ``images`` summed over all activation units (float64 numpy)."""
    kernel = np.zeros((images.shape[0], images.shape[0]))

    def on_unit(x: torch.Tensor) -> None:
        kernel[:] += code_kernel(x).cpu().numpy()

    with torch.no_grad(), Recorder(model, lambda *_: None, on_unit=on_unit) as rec:
        model(images)
    if rec.units == 0:
        raise ZcpError("the model calls no ReLU-like activation (nn.ReLU / GELU / SiLU / LeakyReLU or F.relu, "
                       "torch.relu, x.relu(), F.gelu, F.silu, F.leaky_relu): NASWOT needs them")
    return kernel


@register("naswot", labels=False)
def naswot(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, gen: torch.Generator) -> float:
    return float(np.linalg.slogdet(code_kernel_sum(model, images))[1])
