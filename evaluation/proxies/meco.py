"""MeCo: sum over all modules of the minimum eigenvalue of one sample's channel correlation matrix.

Paper: Jiang et al., "MeCo: Zero-Shot NAS with One Data and Single Forward Pass via Minimum
Eigenvalue of Correlation", NeurIPS 2023 (official code HamsterMimi/MeCo,
``correlation/NAS_Bench_201.py``). Published NATS-TSS CIFAR-10 Spearman rho 0.894 (Table 1; the
paper's CIFAR-10 target is NATS's 'cifar10-valid' entry, see docs/proxies.md).

Formula: a forward hook on every module (``model.modules()``, the root and containers included);
the first sample of its output, as a (channels x positions) matrix, gives P = Pearson correlation
of its rows (undefined entries 0, float64); score = ``sum_modules lambda_min(P)``. A vector output
(pooled features, logits) is a (k x 1) matrix whose P is all zero, contributing 0, as in the code.
Official input: one real image (batch 1); here the first image of the batch is used.
No labels. Cost: 1 forward of 1 sample. Train mode (BN over that sample's positions), default init.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from evaluation.proxies.base import first_sample_rows, register
from primitives.layers import corr, spectrum


def per_module(model: nn.Module, images: torch.Tensor, reduce: Callable[[torch.Tensor], float]) -> float:
    """Sum over every module call of ``reduce(rows)``, rows = its first output sample as (C, positions)."""
    total = 0.0

    def hook(module: nn.Module, inputs: object, output: object) -> None:
        nonlocal total
        rows = first_sample_rows(output)
        if rows is not None:
            total += reduce(rows)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(images[:1])
    finally:
        for h in handles:
            h.remove()
    return total


@register("meco", labels=False)
def meco(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, gen: torch.Generator) -> float:
    return per_module(model, images, lambda rows: float(spectrum(corr(rows))[-1]))
