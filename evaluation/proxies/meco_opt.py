"""MeCo_opt: MeCo on a random subset of 8 channels per module, scaled by channels / 8.

Paper: Jiang et al., NeurIPS 2023 (Eq. 13; official code HamsterMimi/MeCo). No published NATS-TSS
number was found (the paper reports it for NATS-SSS, where plain MeCo is negatively correlated).

Formula: as MeCo, but per module draw ``channels=8`` distinct rows at random (from the run's seed;
the official script uses Python's unseeded ``random.sample``), P = their correlation;
score = ``sum_modules (C / 8) * lambda_min(P)``. Modules with fewer than 8 rows use all rows (the
official code would raise there; no NATS tensor has fewer than 10). No labels. Cost: 1 forward of 1
sample. Train mode, default init.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from evaluation.proxies.base import register
from evaluation.proxies.meco import per_module
from primitives.layers import corr, spectrum


@register("meco_opt", labels=False)
def meco_opt(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, gen: torch.Generator,
             channels: int = 8) -> float:
    def reduce(rows: torch.Tensor) -> float:
        c = rows.shape[0]
        if c <= channels:
            return float(spectrum(corr(rows))[-1])
        pick = torch.randperm(c, generator=gen)[:channels].to(rows.device)
        return float(spectrum(corr(rows[pick]))[-1]) * c / channels

    return per_module(model, images, reduce)
