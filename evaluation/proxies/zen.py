"""Zen-score: log expected feature change under a small input perturbation, corrected by BN scales.

Paper: Lin et al., "Zen-NAS: A Zero-Shot NAS for High-Performance Image Recognition", ICCV 2021
(official code idstcv/ZenNAS ``ZeroShotProxy/compute_zen_score.py``; NB201 port in
cvlab-yonsei/AZ-NAS). Published NATS-TSS CIFAR-10 Kendall tau 0.29 (ZiCo, ICLR 2023, Table 1).

Formula, per repeat: re-initialise (Conv2d / Linear weights ~ N(0, 1), biases 0, norm layers 1 / 0);
x, e ~ N(0, 1) of the batch's shape; f = the feature map before global pooling (the input of the
last ``AdaptiveAvgPool`` call, else of the last Conv2d / Linear call); Delta = mean over samples of
sum |f(x) - f(x + 0.01 e)|; score = ``log Delta + sum_BN log sqrt(mean running_var)``, where the
running variance is the momentum-blended value after the two forward passes in train mode (as in
the official code, which never calls eval()); BN layers without running statistics are skipped.
Averaged over ``repeats`` (ZenNAS: 32 with batch 16; AZ-NAS's NB201 port: 1 with batch 64, the
default here). No labels, no data (only the batch shape). Cost: 2 forwards per repeat.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from evaluation.proxies.base import init_weights, layers, nan, randn_like, register

POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool1d)


def _pre_pool_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the last global-pooling call (else of the last layer call) for input ``x``."""
    seen: list[torch.Tensor] = []
    pools = [m for m in model.modules() if isinstance(m, POOLS)] or layers(model)
    handles = [m.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0])) for m in pools]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return seen[-1]


@register("zen", labels=False)
def zen(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, gen: torch.Generator,
        repeats: int = 1, mixup: float = 1e-2) -> float:
    scores = []
    with torch.no_grad():
        for _ in range(repeats):  # as in the official code, running statistics carry over between repeats
            init_weights(model, gen, "gaussian")
            x, e = randn_like(images, gen), randn_like(images, gen)
            f1 = _pre_pool_features(model, x)
            f2 = _pre_pool_features(model, x + mixup * e)
            delta = float((f1 - f2).abs().reshape(f1.shape[0], -1).sum(1).mean())
            if not delta > 0:
                return nan("zen", "the perturbation does not change the features (Delta = 0)")
            bn = sum(math.log(math.sqrt(float(m.running_var.mean())))
                     for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                     and m.running_var is not None)
            scores.append(math.log(delta) + bn)
    return sum(scores) / len(scores)
