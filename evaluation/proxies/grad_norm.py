"""grad_norm: sum over layers of the Frobenius norm of the loss gradient of the weight.

Paper: Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021 (official code
SamsungLabs/zero-cost-nas, ``measures/grad_norm.py``). Published NATS-TSS CIFAR-10 Kendall tau 0.46
(ZiCo, ICLR 2023, Table 3).

Formula: ``sum_l ||dL/dW_l||_F`` over Conv2d / Linear weights W_l, L = mean cross-entropy of the
batch against its true labels (a sum of per-layer norms, not the global norm). Needs labels.
Cost: 1 forward + 1 backward. Train mode (BN batch statistics), weights as initialised.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from evaluation.proxies.base import cross_entropy, layers, register, zero_grads


@register("grad_norm", labels=True)
def grad_norm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> float:
    zero_grads(model)
    cross_entropy(model(images), labels).backward()
    return sum(float(torch.linalg.vector_norm(m.weight.grad.double())) for m in layers(model) if m.weight.grad is not None)
