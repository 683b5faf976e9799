"""grasp: gradient signal preservation, -W * (H g) summed over all weights.

Paper: Wang et al., "Picking Winning Tickets Before Training by Preserving Gradient Flow", ICLR
2020; as a NAS proxy: Abdelfattah et al., ICLR 2021 (SamsungLabs/zero-cost-nas
``measures/grasp.py``, T=1, one iteration). Published NATS-TSS CIFAR-10 Kendall tau 0.37 (ZiCo,
ICLR 2023, Table 1).

Formula: g = dL/dW (no graph); Hg = d<dL/dW, g>/dW (Hessian-gradient product by double
backward); score = ``sum_l sum -W_l * (H g)_l`` over Conv2d / Linear weights, signed (the official
code negates it on purpose). L = mean cross-entropy with the true labels. Needs labels.
Cost: 2 forwards + 1 backward + 1 double backward. Train mode.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from evaluation.proxies.base import cross_entropy, layers, register, zero_grads


@register("grasp", labels=True)
def grasp(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> float:
    weights = [m.weight for m in layers(model)]
    for w in weights:
        w.requires_grad_(True)
    zero_grads(model)
    g = torch.autograd.grad(cross_entropy(model(images), labels), weights, allow_unused=True)
    g = [torch.zeros_like(w) if gi is None else gi.detach() for w, gi in zip(weights, g)]
    grad_f = torch.autograd.grad(cross_entropy(model(images), labels), weights, create_graph=True, allow_unused=True)
    z = sum((gf * gi).sum() for gf, gi in zip(grad_f, g) if gf is not None)
    if not isinstance(z, torch.Tensor) or not z.requires_grad:
        return 0.0  # no weight reaches the loss twice: the Hessian-gradient product is zero
    z.backward()
    return sum(float(-(w.detach().double() * w.grad.double()).sum()) for w in weights if w.grad is not None)
