"""snip: connection sensitivity summed over all weights.

Paper: Lee et al., "SNIP: Single-shot Network Pruning based on Connection Sensitivity", ICLR 2019;
as a NAS proxy: Abdelfattah et al., ICLR 2021 (SamsungLabs/zero-cost-nas ``measures/snip.py``).
Published NATS-TSS CIFAR-10 Kendall tau 0.46 (ZiCo, ICLR 2023, Table 3).

Formula: ``sum_l sum |W_l * dL/dW_l|`` over Conv2d / Linear weights (equal to |dL/dmask| of a mask
of ones, which is what the official code differentiates), L = mean cross-entropy with the true
labels. Needs labels. Cost: 1 forward + 1 backward. Train mode.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from evaluation.proxies.base import cross_entropy, layers, register, zero_grads


@register("snip", labels=True)
def snip(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> float:
    zero_grads(model)
    cross_entropy(model(images), labels).backward()
    return sum(float((m.weight.detach().double() * m.weight.grad.double()).abs().sum())
               for m in layers(model) if m.weight.grad is not None)
