"""Dextr: feature-map conditioning fused with the extrinsic curvature of the output.

Paper: Asthana et al., "Dextr: Zero-Shot Neural Architecture Search with Singular Value
Decomposition and Extrinsic Curvature", TMLR 2025 (official code rohanasthana/Dextr,
``NASBench201/correlation/NAS_Bench_201.py`` and ``no_free_lunch_architectures/length.py``).
Published NATS-TSS CIFAR-10 Spearman rho 0.90 (Table 1, via secondary notes; 'cifar10-valid').

Formula: S = log(1 + sum_modules sigma_min / sigma_max) of the first sample's output of every
module as a (channels x positions) matrix (MeCo's hooks; NaN ratios count 0). Curvature: one point
x(theta) = u1 cos(theta) + u2 sin(theta) at theta = 0 on a unit circle in a random 2-D plane of a
(1, C, ``curve_size``, ``curve_size``) input (official NB201 scorer: 1 point at 64 x 64); for each
output c, v_c = d out_c / d theta and a_c = d v_c / d theta by autograd; kappa =
sqrt(|v|^2 |a|^2 - (v.a)^2) / |v|^3; K = log(1 + kappa). Score = ``S K / (S + K)``; if kappa or the
fused value is not finite, the score is S (the official fallback). No labels.
Cost: 1 forward of 1 image + 1 forward of the curve point + 2 x classes autograd passes. Train mode.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from evaluation.proxies.base import register
from evaluation.proxies.meco import per_module
from primitives.layers import singular_values


def _ratio(rows: torch.Tensor) -> float:
    sv = singular_values(rows)
    ratio = float(sv[-1] / sv[0]) if len(sv) else math.nan
    return ratio if math.isfinite(ratio) else 0.0


def extrinsic_curvature(model: nn.Module, shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> float:
    """Curvature of the logits along a random unit circle of inputs, at angle 0 (autograd derivatives)."""
    basis = torch.linalg.svd(torch.randn(math.prod(shape), 2, generator=gen), full_matrices=False)[0]
    theta = torch.zeros(1, requires_grad=True)
    x = (basis[:, 0] * torch.cos(theta) + basis[:, 1] * torch.sin(theta)).reshape(1, *shape)
    out = model(x.to(device))[0]
    v, a = [], []
    for c in range(out.shape[0]):
        vc = torch.autograd.grad(out[c], theta, create_graph=True)[0]
        ac = torch.autograd.grad(vc, theta, retain_graph=True, allow_unused=True)[0] if vc.requires_grad else None
        v.append(vc.detach())
        a.append(torch.zeros_like(vc) if ac is None else ac.detach())
    v, a = torch.cat(v).double(), torch.cat(a).double()
    vv, aa, va = (v * v).sum(), (a * a).sum(), (v * a).sum()
    return float(torch.sqrt((vv * aa - va**2).clamp_min(0)) / vv**1.5)


@register("dextr", labels=False)
def dextr(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, gen: torch.Generator,
          curve_size: int = 64) -> float:
    s = math.log1p(per_module(model, images, _ratio))
    kappa = extrinsic_curvature(model, (images.shape[1], curve_size, curve_size), gen, images.device)
    k = math.log1p(kappa) if math.isfinite(kappa) else math.nan
    fused = s * k / (s + k) if math.isfinite(k) and s + k != 0 else math.nan
    return fused if math.isfinite(fused) else s
