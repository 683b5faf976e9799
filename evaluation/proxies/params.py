"""#params: the number of parameters of the network.

Baseline of ZiCo (ICLR 2023) Table 3 (NATS-TSS CIFAR-10 Kendall tau 0.57); the papers read it from
the benchmark (``get_cost_info``), which counts the same parameters this builder creates (checked
for all 15,625 TSS networks by ``zcp bench check``).

Formula: sum of ``p.numel()`` over ``model.parameters()``. No labels, no data, no forward pass.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from evaluation.proxies.base import register


@register("params", labels=False)
def params(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, gen: torch.Generator) -> float:
    return float(sum(p.numel() for p in model.parameters()))
