"""synflow: synaptic flow of the network with |weights| on an all-ones input (log-scaled).

Paper: Tanaka et al., "Pruning neural networks without any data by iteratively conserving synaptic
flow", NeurIPS 2020; as a NAS proxy: Abdelfattah et al., ICLR 2021 (SamsungLabs/zero-cost-nas
``measures/synflow.py``, registered with bn=False). Published NATS-TSS CIFAR-10 Kendall tau 0.54
(ZiCo, ICLR 2023, Table 3).

Formula: on a float64 copy of the network with every BatchNorm removed and every parameter and
buffer replaced by its absolute value, R = sum of the logits of one all-ones input;
score = ``log( sum_l sum |W_l * dR/dW_l| )`` over Conv2d / Linear weights. The official score is
the sum itself; its log has the same ranking and stays in range (NB201 sums reach 1e40).
Difference from the official NB201 model: Samsung's reduction blocks keep their BN even for synflow
(a quirk of its model code); here every BN is removed, as its docstring intends.
Option ``batchnorm="train"`` keeps every BN, in train mode, as Samsung's ``synflow_bn`` registration
does (``bn=True``); on one all-ones sample BN then normalises over positions that differ only at the
borders. Published SSS tables that disagree with this project's synflow are compared with it in the
README. No labels, no data (the batch only gives the input shape). Cost: 1 forward + 1 backward of 1 sample.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from evaluation.errors import ZcpError
from evaluation.proxies.base import layers, nan, register
from primitives.passes import linearised


@register("synflow", labels=False)
def synflow(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, gen: torch.Generator,
            batchnorm: str = "drop") -> float:
    if batchnorm not in ("drop", "train"):
        raise ZcpError(f"synflow option batchnorm must be 'drop' or 'train', not {batchnorm!r}")
    net = linearised(model, keep_batchnorm=batchnorm == "train")
    net(torch.ones((1, *images.shape[1:]), dtype=torch.float64, device=images.device)).sum().backward()
    total = sum(float((m.weight.detach() * m.weight.grad).abs().sum()) for m in layers(net) if m.weight.grad is not None)
    if not total > 0:
        return nan("synflow", f"the synaptic flow is {total} (no path from input to output carries weight)")
    return math.log(total)
