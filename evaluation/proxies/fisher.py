"""fisher: Fisher information of each output channel's activation, summed over the weights.

Paper: Theis et al., "Faster gaze prediction with dense networks and Fisher pruning", 2018; Turner
et al., "BlockSwap", ICLR 2020; as a NAS proxy: Abdelfattah et al., ICLR 2021
(SamsungLabs/zero-cost-nas ``measures/fisher.py``, mode 'channel'). Published NATS-TSS CIFAR-10
Kendall tau 0.40 (ZiCo, ICLR 2023, Table 1).

Formula: for every Conv2d / Linear output a with gradient g = dL/da, per sample n and channel k
s_nk = sum over positions of a*g, F_k = 1/2 mean_n s_nk^2. The official code broadcasts |F_k| to
every weight of output channel k before summing, so score = ``sum_l sum_k |F_k| * fan_in_l``.
L = mean cross-entropy with the true labels. Needs labels. Cost: 1 forward + 1 backward. Train mode.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from evaluation.proxies.base import cross_entropy, register, zero_grads
from primitives.layers import LayerRecord, Recorder


@register("fisher", labels=True)
def fisher(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> float:
    outputs: dict[int, torch.Tensor] = {}
    total = 0.0

    def on_layer(record: LayerRecord, activation: torch.Tensor, output: torch.Tensor) -> None:
        outputs[id(record)] = output

    def on_grad(record: LayerRecord, grad: torch.Tensor) -> None:
        nonlocal total
        a, g = outputs.pop(id(record)).double(), grad.double()
        s = (a * g).reshape(a.shape[0], a.shape[1], -1).sum(2)
        total += float((0.5 * s.pow(2).mean(0)).abs().sum()) * record.module.weight[0].numel()

    zero_grads(model)
    with Recorder(model, on_layer, on_grad):
        cross_entropy(model(images), labels).backward()
    return total
