"""SWAP: the number of distinct sample-wise activation patterns, averaged over re-initialisations.

Paper: Peng et al., "SWAP-NAS: Sample-Wise Activation Patterns for Ultra-fast NAS", ICLR 2024
(official code pym1024/SWAP ``src/metrics/swap.py``, a DARTS demo only). No published NATS-TSS
CIFAR-10 number was found (the abstract reports regularised SWAP rho 0.90 on NB201 CIFAR-100).

Formula, per repeat: re-initialise (Conv2d / Linear weights ~ N(0, 1), biases 0, norm layers 1 / 0);
forward the first ``samples=16`` images (official default); the outputs of every activation unit
(ReLU-like, module or functional; ``primitives/layers.py``) whose input is 4-D, flattened per sample
and concatenated, give A (N x V) (only their signs matter, which are those of the inputs); SWAP = the number of
distinct columns of sign(A), i.e. of distinct per-neuron patterns across the N samples. Averaged
over ``repeats=32`` (official default). The optional parameter regulariser (off by default in the
code) is not applied. The NB201 batch size and repeats of the paper are not public.
No labels. Cost: ``repeats`` forwards of ``samples`` images. Train mode, no gradients.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from evaluation.errors import ZcpError
from evaluation.proxies.base import init_weights, register
from primitives.layers import ActivationUnits
from primitives.passes import distinct, pattern_keys


@register("swap", labels=False)
def swap(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None, gen: torch.Generator,
         samples: int = 16, repeats: int = 32) -> float:
    x = images[:samples]
    if x.shape[0] > 62:
        raise ZcpError(f"SWAP packs each neuron's pattern into 62 bits: use at most 62 samples, not {x.shape[0]}")
    codes: list[torch.Tensor] = []

    def on_unit(u: torch.Tensor) -> None:
        if u.dim() == 4:
            codes.append(pattern_keys(u.reshape(u.shape[0], -1) > 0))

    total = 0
    with torch.no_grad():
        for _ in range(repeats):
            init_weights(model, gen, "gaussian")
            codes.clear()
            with ActivationUnits(on_unit):
                model(x)
            if not codes:
                raise ZcpError("SWAP needs ReLU-like activations acting on 4-D feature maps; the model has none")
            total += distinct(codes, x.shape[0])
    return total / repeats
