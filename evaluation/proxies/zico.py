"""ZiCo: inverse coefficient of variation of the weight gradients over mini-batches.

Paper: Li et al., "ZiCo: Zero-shot NAS via Inverse Coefficient of Variation on Gradients", ICLR
2023 (official code SLDGroup/ZiCo ``ZeroShotProxy/compute_zico.py``). Published NATS-TSS CIFAR-10
Kendall tau 0.61 (Table 3).

Formula (paper Eq. 15, as the official code computes it): the batch is split into ``splits``
mini-batches (paper: 2 batches of 128); after the forward and backward of each, the weight
gradient of every Conv2d / Linear layer is stored. The code never zeroes gradients between
mini-batches, so the stored values are running sums g1, g1+g2, ...; this is reproduced. Per weight
element m = mean_b |g_b|, s = population std_b of the signed g_b; per layer S_l = sum of m / s over
elements with s != 0; score = ``sum_l log S_l`` over layers with S_l != 0 (float64).
Needs labels (cross-entropy). Cost: ``splits`` forwards + backwards. Train mode, default init.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from evaluation.errors import ZcpError
from evaluation.proxies.base import cross_entropy, layers, register, zero_grads


@register("zico", labels=True)
def zico(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator, splits: int = 2) -> float:
    if images.shape[0] < splits:
        raise ZcpError(f"ZiCo splits the batch into {splits} mini-batches: a batch of {images.shape[0]} is too small")
    modules = layers(model)
    grads: list[list[np.ndarray]] = [[] for _ in modules]
    zero_grads(model)
    for x, y in zip(images.chunk(splits), labels.chunk(splits)):
        cross_entropy(model(x), y).backward()
        for store, m in zip(grads, modules):
            if m.weight.grad is not None:
                store.append(m.weight.grad.detach().double().cpu().numpy().ravel())
    total = 0.0
    for store in grads:
        if not store:
            continue
        g = np.stack(store)
        s = g.std(0)
        keep = s != 0
        ratio = float(np.sum(np.abs(g).mean(0)[keep] / s[keep]))
        if ratio != 0:
            total += math.log(ratio)
    return total
