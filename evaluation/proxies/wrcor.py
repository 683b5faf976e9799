"""WRCor: log-determinant of layer-weighted correlations of ReLU inputs and their gradients.

Paper: Jing et al., "Zero-Shot Neural Architecture Search with Weighted Response Correlation",
arXiv 2507.08841, 2025 (code kunjing96/ZSNAS-WRCor, measure ``act_grad_cor_weighted``; read only in
an unattributed copy). Published NATS-TSS CIFAR-10 Spearman rho 0.812 (Table 2, secondary notes).

Formula: for every call of an ``nn.ReLU`` module inside block i (``model.cells[i]`` in NATS
networks, else the model's i-th child) weight w = 2^i; ReLUs outside the cells (NATS: the final
BN-ReLU) get 2^(number of cells). A = |corrcoef| of the ReLU inputs across samples (N x N), G =
|corrcoef| of the loss gradient w.r.t. those inputs (= gradient of the output masked by input > 0);
matrices with an undefined entry (a constant row) are skipped, as the code skips NaN; K = sum w (A + G) (float64); score = ``log |det K|``.
Needs labels (cross-entropy). Cost: 1 forward + 1 backward. Train mode, default init, batch 64.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from evaluation.errors import ZcpError
from evaluation.proxies.base import cross_entropy, register, zero_grads
from primitives.layers import ACTIVATION_TYPES, corr


def _weights(model: nn.Module) -> dict[nn.Module, float]:
    cells = getattr(model, "cells", None)
    groups = list(cells) if isinstance(cells, nn.Sequential) else list(model.children())
    weight = {m: 2.0 ** len(groups) for m in model.modules() if isinstance(m, ACTIVATION_TYPES)}
    for i, group in enumerate(groups):
        for m in group.modules():
            if isinstance(m, ACTIVATION_TYPES):
                weight[m] = 2.0**i
    return weight


@register("wrcor", labels=True)
def wrcor(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> float:
    weight = _weights(model)
    if not weight:
        raise ZcpError("WRCor needs nn.ReLU modules; the model has none")
    n = images.shape[0]
    kernel = torch.zeros((n, n), dtype=torch.float64)

    def add(w: float, matrix: torch.Tensor) -> None:
        nonlocal kernel
        if bool((matrix.diagonal() > 0.5).all()):  # a constant row has no correlation: the code skips the term
            kernel = kernel + w * matrix.abs().cpu()

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        w, x = weight[module], inputs[0].detach()
        add(w, corr(x.reshape(n, -1)))
        if output.requires_grad:
            positive = x > 0
            output.register_hook(lambda g: add(w, corr((g * positive).reshape(n, -1))))

    handles = [m.register_forward_hook(hook) for m in weight]
    zero_grads(model)
    try:
        cross_entropy(model(images), labels).backward()
    finally:
        for h in handles:
            h.remove()
    return float(np.linalg.slogdet(kernel.numpy())[1])
