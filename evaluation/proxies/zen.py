"""Zen-score: log expected feature change under a small input perturbation, corrected by BN scales.

Paper: Lin et al., "Zen-NAS: A Zero-Shot NAS for High-Performance Image Recognition", ICCV 2021
(official code idstcv/ZenNAS ``ZeroShotProxy/compute_zen_score.py``; NB201 port in
cvlab-yonsei/AZ-NAS). Published NATS-TSS CIFAR-10 Kendall tau 0.29 (ZiCo, ICLR 2023, Table 1).

Formula, per repeat: re-initialise (Conv2d / Linear weights ~ N(0, 1), biases 0, norm layers 1 / 0);
x, e ~ N(0, 1) of the batch's shape; f = the feature map before global pooling, as the official
``forward_pre_GAP``: the input of the last ``AdaptiveAvgPool`` call; for a model that pools functionally
(NB101's ``x.mean((2, 3))``), the last output of a module call with more than 2 dimensions if it is 4-D
(functional operations after that call, such as a ``torch.relu``, are not seen); else (a transformer's
tokens, an MLP) the input of the last Conv2d / Linear call; Delta = mean over samples of
sum |f(x) - f(x + 0.01 e)|; score = ``log Delta + sum_BN log sqrt(mean running_var)``, where the
running variance is the momentum-blended value after the two forward passes in train mode (as in
the official code, which never calls eval()), blended with PyTorch's default momentum 0.1 whatever the
model's own (the official networks use the default; with N(0, 1) weights the batch variances are large,
so the momentum m adds about log(m) / 2 per BN layer: NB101's TF-faithful 0.003 would take 2.9 per BN layer
from cells with more convolutions); BN layers without running statistics are skipped.
Averaged over ``repeats`` (ZenNAS: 32 with batch 16; AZ-NAS's NB201 port: 1 with batch 64, the
default here). No labels, no data (only the batch shape). Cost: 2 forwards per repeat.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from evaluation.proxies.base import init_weights, layers, nan, randn_like, register

POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool1d)
BN_MOMENTUM = 0.1  # PyTorch's default, the official networks'


def _pre_pool_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The feature map before global pooling for input ``x`` (module docstring); only the last candidate
    of each kind is held, so the forward's other activations are freed as usual."""
    last: dict[str, torch.Tensor] = {}

    def keep(kind: str, value: object) -> None:
        if torch.is_tensor(value) and (kind != "map" or value.dim() > 2):
            last[kind] = value

    pools = [m for m in model.modules() if isinstance(m, POOLS)]
    handles = [m.register_forward_pre_hook(lambda m, inputs: keep("pool", inputs[0])) for m in pools]
    if not pools:
        handles += [m.register_forward_hook(lambda m, inputs, out: keep("map", out)) for m in model.modules()]
        handles += [m.register_forward_pre_hook(lambda m, inputs: keep("layer", inputs[0])) for m in layers(model)]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    if "pool" in last:
        return last["pool"]
    return last["map"] if "map" in last and last["map"].dim() == 4 else last["layer"]


@register("zen", labels=False)
def zen(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, gen: torch.Generator,
        repeats: int = 1, mixup: float = 1e-2) -> float:
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None]
    momenta = [m.momentum for m in bns]
    scores = []
    try:
        for m in bns:
            m.momentum = BN_MOMENTUM
        with torch.no_grad():
            for _ in range(repeats):  # as in the official code, running statistics carry over between repeats
                init_weights(model, gen, "gaussian")
                x, e = randn_like(images, gen), randn_like(images, gen)
                f1 = _pre_pool_features(model, x)
                f2 = _pre_pool_features(model, x + mixup * e)
                delta = float((f1 - f2).abs().reshape(f1.shape[0], -1).sum(1).mean())
                if not delta > 0:
                    return nan("zen", "the perturbation does not change the features (Delta = 0)")
                bn = sum(math.log(math.sqrt(float(m.running_var.mean()))) for m in bns)
                scores.append(math.log(delta) + bn)
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
    return sum(scores) / len(scores)
