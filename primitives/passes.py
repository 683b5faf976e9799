"""The extra passes behind the zoo terminals: what ZiCo, synflow, SWAP, AZ-NAS and jacov run besides
one forward/backward of the batch, and the helpers the zoo proxies share with them.

Each pass returns per-layer records (:class:`primitives.layers.LayerRecord`, one per Conv2d / Linear
call, in forward order: the rows of every per-layer terminal) and/or network numbers. Passes that
re-initialise weights (SWAP, AZ-NAS) change the model: :func:`primitives.terminals.compute_terminals`
runs them inside their own ``preserved`` block. Torch only, so that exported proxies carry this file.

Sources (formulas in ``evaluation/proxies/<name>.py``, which are the reference these passes are tested
against):

- ZiCo: Li et al., ICLR 2023 (SLDGroup/ZiCo ``compute_zico.py``): the batch in two halves, weight
  gradients after each backward *without zeroing in between* (running sums g1, g1+g2, as the official
  code keeps them);
- synflow: Tanaka et al., NeurIPS 2020; Abdelfattah et al., ICLR 2021 (SamsungLabs/zero-cost-nas
  ``measures/synflow.py``): a float64 copy without BatchNorm, every parameter and buffer replaced by
  its absolute value ("linearised"), one all-ones input, R = sum of the logits;
- SWAP: Peng et al., ICLR 2024 (pym1024/SWAP ``src/metrics/swap.py``): distinct sign patterns across
  the first 16 samples, averaged over 32 Gaussian re-initialisations;
- AZ-NAS: Lee & Ham, CVPR 2024 (cvlab-yonsei/AZ-NAS ``compute_az_nas_score.py``): Kaiming
  re-initialisation, Gaussian inputs, block features, entropy and local Jacobian spectra;
- jacov: Mellor et al., arXiv 2006.04647v1 (SamsungLabs/zero-cost-nas ``measures/jacob_cov.py``):
  the input gradient of the summed logits per sample.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from primitives.layers import LAYER_TYPES, LayerRecord, Recorder, corr

SWAP_SAMPLES, SWAP_REPEATS = 16, 32  # the official SWAP defaults
JACOV_K = 1e-5  # the regulariser of the official jacob_cov score


def init_weights(model: nn.Module, gen: torch.Generator, kind: str) -> None:
    """Re-initialise in place: Conv2d / Linear weights ~ N(0, 1) (``kind='gaussian'``, ZenNAS and
    SWAP style) or Kaiming-normal fan-in for ReLU (``kind='kaiming'``, AZ-NAS); their biases 0; norm
    layers' affine weight 1, bias 0."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LAYER_TYPES):
                std = 1.0 if kind == "gaussian" else math.sqrt(2.0 / (m.weight[0].numel()))
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * std)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm)) and m.weight is not None:
                m.weight.fill_(1.0)
                m.bias.zero_()


def randn_like(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Standard-normal draws of ``x``'s shape from ``gen`` (on the CPU, then moved to ``x``'s device)."""
    return torch.randn(x.shape, generator=gen).to(x.device, x.dtype)


def blocks(model: nn.Module) -> list[nn.Module]:
    """The model's blocks in order: ``[stem, *cells]`` for NATS-style networks (what AZ-NAS's
    ``extract_cell_features`` and WRCor's layer weights use), else the model's direct children that
    hold parameters (a pooling or activation child is not a block: on a 1 x 1 map a global pool passes
    the gradient unchanged, which AZ-NAS scores as -inf)."""
    if isinstance(getattr(model, "stem", None), nn.Module) and isinstance(getattr(model, "cells", None), nn.Sequential):
        return [model.stem, *model.cells]
    return [c for c in model.children() if next(c.parameters(), None) is not None]


# ----------------------------------------------------------------------------- ZiCo

def zico_layers(model: nn.Module, x: torch.Tensor, labels: torch.Tensor | None,
                loss: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]) -> list[LayerRecord]:
    """Per layer: ``zico`` = sum over weights (with s != 0) of m / s, ``zico_mean`` = mean of m and
    ``zico_std`` = mean of s, where m = mean over the two halves of |g|, s = their population std of g
    and g the running weight gradient after each half's backward of ``loss(logits, labels)``."""
    for p in model.parameters():
        p.grad = None
    halves = labels.chunk(2) if labels is not None else (None, None)
    stored: dict[nn.Module, list[torch.Tensor]] = {}
    records: list[LayerRecord] = []
    for xs, ys in zip(x.chunk(2), halves):
        with Recorder(model, lambda *_: None) as rec:
            logits = model(xs)
        records = records or rec.layers
        loss(logits, ys).backward()
        for m in {r.module for r in rec.layers}:
            if m.weight.grad is not None:
                stored.setdefault(m, []).append(m.weight.grad.detach().double().flatten())
    for r in records:
        if r.module not in stored:
            r.stats.update(zico=torch.zeros(()), zico_mean=torch.zeros(()), zico_std=torch.zeros(()))
            continue
        g = torch.stack(stored[r.module])
        m, s = g.abs().mean(0), g.std(0, correction=0)
        keep = s != 0
        r.stats.update(zico=(m[keep] / s[keep]).sum(), zico_mean=m.mean(), zico_std=s.mean())
    return records


# ----------------------------------------------------------------------------- synflow

def linearised(model: nn.Module, keep_batchnorm: bool = False) -> nn.Module:
    """synflow's network: a float64 copy without BatchNorm (kept, in the model's mode, if
    ``keep_batchnorm``), every parameter and buffer made absolute, every parameter requiring a
    gradient (none stored yet)."""
    net = copy.deepcopy(model)
    if not keep_batchnorm:
        _drop_batchnorm(net)
    net.double()
    with torch.no_grad():
        for tensor in net.state_dict().values():
            if tensor.is_floating_point():
                tensor.abs_()
    for p in net.parameters():
        p.requires_grad_(True)
        p.grad = None
    return net


def _drop_batchnorm(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            _drop_batchnorm(child)


def synflow_layers(model: nn.Module, shape: tuple[int, ...], device: torch.device) -> list[LayerRecord]:
    """Per layer ``synflow`` = sum |W * dR/dW| on the linearised copy (the model is not touched)."""
    net = linearised(model)
    with Recorder(net, lambda *_: None) as rec:
        out = net(torch.ones((1, *shape), dtype=torch.float64, device=device))
    out.sum().backward()
    for r in rec.layers:
        w = r.module.weight
        r.stats["synflow"] = (w.detach() * w.grad).abs().sum() if w.grad is not None else torch.zeros(())
    return rec.layers


# ----------------------------------------------------------------------------- SWAP

def pattern_keys(code: torch.Tensor) -> torch.Tensor:
    """Each column of an (N x V) binary code packed into one integer (bit n = sample n; N <= 62)."""
    bits = 2 ** torch.arange(code.shape[0] - 1, -1, -1, device=code.device)
    return (code.to(torch.int64) * bits[:, None]).sum(0)


def distinct(keys: list[torch.Tensor], samples: int) -> int:
    """Number of distinct values among all keys (a histogram when 2^samples is small, else unique)."""
    keys = torch.cat(keys)
    if samples <= 20:
        return int((torch.bincount(keys, minlength=1 << samples) > 0).sum())
    return int(torch.unique(keys).numel())


def swap_layers(model: nn.Module, x: torch.Tensor, gen: torch.Generator) -> tuple[list[LayerRecord], float]:
    """SWAP on the first ``SWAP_SAMPLES`` inputs over ``SWAP_REPEATS`` Gaussian re-initialisations: per
    layer ``swap_layer`` = mean number of distinct sign patterns of the layer's activation (B x
    features), and the network's SWAP (distinct patterns over all activation units on 4-D maps).
    Re-initialises the model's weights."""
    x = x[:SWAP_SAMPLES]
    n = x.shape[0]
    records: list[LayerRecord] = []
    counts: list[int] = []
    total = 0

    def on_layer(rec: LayerRecord, a: torch.Tensor, z: torch.Tensor) -> None:
        rec.stats["patterns"] = distinct([pattern_keys(a.reshape(n, -1) > 0)], n)

    def on_unit(u: torch.Tensor) -> None:
        if u.dim() == 4:
            units.append(pattern_keys(u.reshape(n, -1) > 0))

    with torch.no_grad():
        for _ in range(SWAP_REPEATS):
            init_weights(model, gen, "gaussian")
            units: list[torch.Tensor] = []
            with Recorder(model, on_layer, on_unit=on_unit) as rec:
                model(x)
            if not units:
                raise ValueError("SWAP needs ReLU-like activations acting on 4-D feature maps; the model has none")
            total += distinct(units, n)
            records = records or rec.layers
            counts = [c + r.stats["patterns"] for c, r in zip(counts or [0] * len(rec.layers), rec.layers)]
    for r, c in zip(records, counts):
        r.stats["swap_layer"] = torch.tensor(c / SWAP_REPEATS, dtype=torch.float64)
    return records, total / SWAP_REPEATS


# ----------------------------------------------------------------------------- AZ-NAS

def az_entropy(f: torch.Tensor) -> float:
    """Entropy of the normalised eigenvalues of the channel covariance of a (N, C, H, W) map."""
    x = f.detach().double().permute(0, 2, 3, 1).reshape(-1, f.shape[1])
    x = x - x.mean(0)
    eig = torch.linalg.eigvalsh(x.T @ x / x.shape[0])
    p = eig / eig.sum()
    return float(-(p * torch.log(p + 1e-8)).sum())


def az_trainability(prev: torch.Tensor, cur: torch.Tensor, gen: torch.Generator) -> float:
    """-sigma - 1/(sigma + 1e-6) + 2 for sigma = the spectral norm of g_in^T g_out / (N H W)."""
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


def az_components(model: nn.Module, x: torch.Tensor, gen: torch.Generator,
                  trainability: bool = True) -> dict[str, float]:
    """AZ-NAS's expressivity, progressivity and (if asked) trainability of ``model`` (re-initialised
    Kaiming-normal from ``gen``) on Gaussian inputs of ``x``'s shape; see evaluation/proxies/az_nas.py."""
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
        with torch.set_grad_enabled(trainability):
            model(randn_like(x, gen))
    finally:
        for h in handles:
            h.remove()
    if len(feats) < 2:
        raise ValueError("AZ-NAS needs at least two blocks with 4-D feature maps; the model has fewer")
    h = [az_entropy(f) for f in feats]
    result = {"expressivity": sum(h), "progressivity": min(b - a for a, b in zip(h, h[1:]))}
    if trainability:
        pairs = [az_trainability(feats[i - 1], feats[i], gen) for i in range(len(feats) - 1, 0, -1)]
        pairs = [t for t in pairs if not math.isnan(t)]
        result["trainability"] = float(np.mean(pairs)) if pairs else math.nan
    return result


# ----------------------------------------------------------------------------- jacov

def jacobian_corr(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pearson correlation (B x B, float64) of the per-sample input gradients of the summed logits."""
    x = x.detach().clone().requires_grad_(True)
    (j,) = torch.autograd.grad(model(x).sum(), x)
    return corr(j.reshape(x.shape[0], -1))


def jacov_score(eig: torch.Tensor) -> float:
    """``-sum [log(l + k) + 1/(l + k)]`` over the eigenvalues l (k = 1e-5); NaN if some l + k <= 0."""
    e = eig.double() + JACOV_K
    if float(e.min()) <= 0:
        return math.nan
    return float(-(torch.log(e) + 1.0 / e).sum())
