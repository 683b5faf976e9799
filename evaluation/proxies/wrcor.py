"""WRCor: log-determinant of layer-weighted correlations of ReLU inputs and their gradients.

Paper: Jing et al., "Zero-Shot Neural Architecture Search with Weighted Response Correlation",
arXiv 2507.08841, 2025 (code kunjing96/ZSNAS-WRCor, measure ``act_grad_cor_weighted``; read only in
an unattributed copy). Published NATS-TSS CIFAR-10 Spearman rho 0.812 (Table 2, secondary notes).

Formula: for every activation unit (a ReLU-like activation, module or functional; see
``primitives/layers.py``) called while block i runs (``model.cells[i]`` in NATS networks, else the
model's i-th child) weight w = 2^i; units outside the cells (NATS: the final BN-ReLU) get
2^(number of cells). A = |corrcoef| of the ReLU inputs across samples (N x N), G =
|corrcoef| of the loss gradient w.r.t. those inputs (= gradient of the output masked by input > 0);
matrices with an undefined entry (a constant row) are skipped, as the code skips NaN; K = sum w (A + G) (float64); score = ``log |det K|``.
Needs labels (cross-entropy). Cost: 1 forward + 1 backward. Train mode, default init, batch 64.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn

from evaluation.errors import ZcpError
from evaluation.proxies.base import cross_entropy, register, zero_grads
from primitives.layers import ActivationUnits, corr


def _groups(model: nn.Module) -> list[nn.Module]:
    cells = getattr(model, "cells", None)
    return list(cells) if isinstance(cells, nn.Sequential) else list(model.children())


@register("wrcor", labels=True)
def wrcor(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> float:
    groups = _groups(model)
    weights = [2.0 ** len(groups)]  # a stack: the weight of the block running now on top
    n = images.shape[0]
    kernel = torch.zeros((n, n), dtype=torch.float64)

    def add(w: float, matrix: torch.Tensor) -> None:
        nonlocal kernel
        if bool((matrix.diagonal() > 0.5).all()):  # a constant row has no correlation: the code skips the term
            kernel = kernel + w * matrix.abs().cpu()

    def on_unit(x: torch.Tensor) -> Callable[[torch.Tensor], None]:
        w, positive = weights[-1], x > 0
        add(w, corr(x.reshape(n, -1)))

        def after(output: torch.Tensor) -> None:
            if output.requires_grad:
                output.register_hook(lambda g: add(w, corr((g * positive).reshape(n, -1))))
        return after

    def enter(w: float) -> Callable[..., None]:
        return lambda module, inputs: weights.append(w)

    def leave(module: nn.Module, inputs: object, output: object) -> None:
        weights.pop()

    handles = [h for i, g in enumerate(groups)
               for h in (g.register_forward_pre_hook(enter(2.0**i)), g.register_forward_hook(leave))]
    zero_grads(model)
    units = ActivationUnits(on_unit)
    try:
        with units:
            logits = model(images)
        cross_entropy(logits, labels).backward()
    finally:
        for h in handles:
            h.remove()
    if units.units == 0:
        raise ZcpError("WRCor needs ReLU-like activations (modules or functional); the model calls none")
    return float(np.linalg.slogdet(kernel.numpy())[1])
