"""AZ-NAS: expressivity, progressivity, trainability and complexity, assembled by log-rank aggregation.

Paper: Lee & Ham, "AZ-NAS: Assembling Zero-Cost Proxies for Network Architecture Search", CVPR
2024 (official code cvlab-yonsei/AZ-NAS ``NB201/ZeroShotProxy/compute_az_nas_score.py``,
``NB201/custom/tss_model.py``, ``NB201/tss_general.ipynb``). Published NATS-TSS CIFAR-10 Kendall
tau 0.741 (Table 1, all 15,625 networks); components alone 0.569 (E), 0.521 (P), 0.349 (T), 0.578 (C).

Per network (``Proxy.score`` returns the four components): re-initialise (Kaiming-normal fan-in for
Conv2d / Linear, biases 0, norm layers 1 / 0); one forward of Gaussian inputs of the batch's shape
(the official driver gives AZ-NAS noise, batch 64); features f_0..f_L = the outputs of the blocks
(``[stem, *cells]`` in NATS networks: 18 maps; else the model's children with 4-D outputs).
- expressivity E = sum_l h_l, h_l = entropy of the normalised eigenvalues of the channel covariance
  of f_l reshaped to (N H W, C) and centred: h = -sum p log(p + 1e-8);
- progressivity P = min_l (h_l - h_{l-1});
- trainability T = mean over consecutive pairs of -sigma - 1/(sigma + 1e-6) + 2, sigma = largest
  singular value of g_in^T g_out / (N H W), where g_out is Rademacher noise shaped like f_l and
  g_in = d<f_l, g_out>/d f_{l-1} (pixel-unshuffled when the resolution halves); an identity block
  (g_in == g_out) makes T = -inf, as in the official code;
- complexity C = FLOPs (the official code reads them from the benchmark; counted from the model here).
Set level (``Proxy.aggregate``): AZ = sum over components of log(rank / M), ranks ascending with
ties averaged over the M networks scored together; so AZ-NAS only ranks a set, never one network.
No labels. Cost: 1 forward + 1 local backward per block pair + 1 forward of 1 sample (FLOPs).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.stats import rankdata

from evaluation.errors import ZcpError
from evaluation.proxies.base import blocks, init_weights, nan, randn_like, register
from evaluation.proxies.flops import count_flops

COMPONENTS = ("expressivity", "progressivity", "trainability", "complexity")


def _entropy(f: torch.Tensor) -> float:
    x = f.detach().double().permute(0, 2, 3, 1).reshape(-1, f.shape[1])
    x = x - x.mean(0)
    eig = torch.linalg.eigvalsh(x.T @ x / x.shape[0])
    p = eig / eig.sum()
    return float(-(p * torch.log(p + 1e-8)).sum())


def _trainability(prev: torch.Tensor, cur: torch.Tensor, gen: torch.Generator) -> float:
    g_out = (torch.randint(0, 2, cur.shape, generator=gen) * 2 - 1).to(cur.device, cur.dtype)
    g_in = torch.autograd.grad(cur, prev, g_out, retain_graph=True, allow_unused=True)[0]
    if g_in is None:
        return float("nan")
    if g_in.shape == g_out.shape and torch.equal(g_in, g_out):
        return float("-inf")
    if g_in.shape[-1] != g_out.shape[-1]:
        g_in = F.pixel_unshuffle(g_in, g_in.shape[-1] // g_out.shape[-1])
    a = g_in.double().permute(0, 2, 3, 1).reshape(-1, g_in.shape[1])
    b = g_out.double().permute(0, 2, 3, 1).reshape(-1, g_out.shape[1])
    sigma = float(torch.linalg.matrix_norm(a.T @ b / a.shape[0], ord=2))
    return -sigma - 1.0 / (sigma + 1e-6) + 2.0


def aggregate(components: Mapping[str, np.ndarray]) -> np.ndarray:
    """AZ-NAS score of each network of a set: sum over components of log(rank / M)."""
    total = 0.0
    for name in COMPONENTS:
        values = np.nan_to_num(np.asarray(components[name], dtype=np.float64), nan=-np.inf)
        total = total + np.log(rankdata(values) / len(values))
    return np.asarray(total, dtype=np.float64)


@register("az_nas", labels=False, components=COMPONENTS, aggregate=aggregate)
def az_nas(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None,
           gen: torch.Generator) -> dict[str, float]:
    init_weights(model, gen, "kaiming")
    feats: list[torch.Tensor] = []
    versions: list[int] = []

    def hook(module: nn.Module, inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.dim() == 4:
            if feats and output is feats[-1] and output._version != versions[-1]:
                return  # the last map changed in place (nn.ReLU(inplace=True)): not a new map; an identity is
            feats.append(output)
            versions.append(output._version)

    handles = [b.register_forward_hook(hook) for b in blocks(model)]
    try:
        model(randn_like(images, gen))
    finally:
        for h in handles:
            h.remove()
    if len(feats) < 2:
        raise ZcpError("AZ-NAS needs at least two blocks with 4-D feature maps; the model has fewer")
    h = [_entropy(f) for f in feats]
    pairs = [_trainability(feats[i - 1], feats[i], gen) for i in range(len(feats) - 1, 0, -1)]
    pairs = [t for t in pairs if not np.isnan(t)]
    result = {"expressivity": sum(h), "progressivity": min(b - a for a, b in zip(h, h[1:])),
              "trainability": float(np.mean(pairs)) if pairs else float("nan"),
              "complexity": count_flops(model, images)}
    for name in (k for k, v in result.items() if np.isnan(v)):
        nan(f"az_nas {name}", "a block's feature map is constant (zero spectrum, e.g. a cell cut off by 'none'"
                              " edges) or no block pair is connected")
    return result
