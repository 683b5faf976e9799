"""FLOPs: multiply-accumulates of all Conv2d / Linear calls for one input sample.

Baseline of ZiCo (ICLR 2023) Table 3 (NATS-TSS CIFAR-10 Kendall tau 0.54). The papers read MFLOPs
from the benchmark (``get_cost_info``), which also counts BN, pooling and additions; those add a
few per cent and change the ranking little. Also AZ-NAS's complexity component.

Formula: sum over layer calls of (output elements per sample) x (weight fan-in). One forward pass
of the first sample; no labels.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from evaluation.proxies.base import register
from primitives.layers import LayerRecord, Recorder


def count_flops(model: nn.Module, images: torch.Tensor) -> float:
    """Multiply-accumulates per sample of every Conv2d / Linear call (one forward of ``images[:1]``)."""
    total = 0.0

    def on_layer(record: LayerRecord, activation: torch.Tensor, output: torch.Tensor) -> None:
        nonlocal total
        total += output[0].numel() * record.module.weight[0].numel()

    was_training = model.training
    model.eval()  # a single sample: BatchNorm1d refuses batch statistics of one value
    with torch.no_grad(), Recorder(model, on_layer):
        model(images[:1])
    model.train(was_training)
    return total


@register("flops", labels=False)
def flops(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, gen: torch.Generator) -> float:
    return count_flops(model, images)
