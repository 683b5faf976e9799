"""What a "layer" is, for any ``torch.nn.Module``, and the hooks that reduce it to statistics.

Definition (used by the terminal cache and by exported proxies alike):

- a **layer** is one call of an ``nn.Conv2d`` or ``nn.Linear`` module, in the order the forward pass
  makes the calls. Its *activation* is the tensor the module reads (its input), its *pre-activation*
  the tensor it writes (its output), its *gradient* the gradient of the backward signal with
  respect to that output; its *weight* and *weight gradient* are the module's ``weight`` and
  ``weight.grad``;
- an **activation unit** is one call of an ``nn.ReLU`` module; its input's sign pattern is the binary
  code of NASWOT (Mellor et al. 2021), whose kernel is summed over all activation units.

Networks that call ``torch.relu`` functionally have layers but no activation units; terminals that
need activation units then fail with a clear error rather than returning a wrong number.

Every tensor is reduced to small statistics inside its hook (B x B kernels, spectra, moments), so
memory stays that of a plain forward/backward pass. Gram matrices and everything derived from them
are float64; only binary-code products are float32, which is exact up to 2^24 features.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn as nn

LAYER_TYPES = (nn.Conv2d, nn.Linear)
ACTIVATION_TYPES = (nn.ReLU,)
F64 = torch.float64


def corr_from_gram(g: torch.Tensor, sums: torch.Tensor, d: int) -> torch.Tensor:
    """Pearson correlation of the rows of a (B, d) matrix from its Gram matrix and row sums.

    Correlations involving a constant row are undefined and set to 0 (as MeCo does)."""
    mean = sums.double() / d
    cov = g - d * torch.outer(mean, mean)
    var = cov.diagonal().clamp_min(0)
    scale = torch.sqrt(torch.outer(var, var))
    defined = scale > 1e-12 * max(float(var.max()), 1e-300)
    return torch.where(defined, cov / torch.where(defined, scale, torch.ones_like(scale)), torch.zeros_like(cov))


def gram_and_sums(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x x^T`` and the row sums of a (B, D) matrix, in float64 (a float32 Gram loses the small end
    of the spectrum), from one conversion."""
    x = x.double()
    return x @ x.T, x.sum(1)


def corr(x: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of the rows of a 2-D tensor, in float64 (undefined entries 0)."""
    x = x.flatten(1)
    return corr_from_gram(*gram_and_sums(x), x.shape[1])


def spectrum(sym: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of a symmetric matrix, descending (float64)."""
    return torch.linalg.eigvalsh(sym.double()).flip(-1)


def singular_values(x: torch.Tensor) -> torch.Tensor:
    """Singular values of a 2-D tensor (float64, descending)."""
    return torch.linalg.svdvals(x.double())


def code_kernel(x: torch.Tensor) -> torch.Tensor:
    """NASWOT kernel of one activation unit: ``c c^T + (1-c)(1-c)^T`` for the codes ``c = x > 0``."""
    c = (x.flatten(1) > 0).float()
    s = c.sum(1).double()
    return c.shape[1] - s[:, None] - s[None, :] + 2 * (c @ c.T).double()


class SameValues:
    """Statistics already computed for a tensor with the same values, within one pass.

    A node of a cell feeds several layers, and each reads its own but equal tensor (e.g. one ReLU
    output per edge): reusing the statistics of equal tensors saves their Gram matrices. A strided
    fingerprint finds candidates, ``torch.equal`` confirms, so reuse is exact (NaN never matches).
    Holds references to the tensors it has seen: use one per pass."""

    def __init__(self) -> None:
        self._seen: dict[tuple, list[tuple[torch.Tensor, object]]] = {}

    @staticmethod
    def _key(x: torch.Tensor) -> tuple:
        flat = x.reshape(-1)
        sample = flat[:: max(1, flat.numel() // 64)][:64]
        return x.shape, x.dtype, sample.float().cpu().numpy().tobytes()

    def get(self, x: torch.Tensor, compute: Callable[[torch.Tensor], object]) -> object:
        """``compute(x)``, or the value it gave for an equal tensor seen before."""
        bucket = self._seen.setdefault(self._key(x), [])
        for seen, value in bucket:
            if torch.equal(seen, x):
                return value
        value = compute(x)
        bucket.append((x, value))
        return value


@dataclass
class LayerRecord:
    """Statistics of one layer call; filled by the hooks that ``Recorder`` installs."""

    module: nn.Module
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


@contextmanager
def preserved(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block that may change ``model`` and leave it as it was: its training flag, parameter and
    buffer values (BN running statistics included), ``requires_grad`` flags and ``.grad`` tensors.

    Values are restored in place, so a block must not change dtypes or replace modules (work on a
    ``copy.deepcopy`` for that)."""
    was_training = model.training
    saved = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    params = list(model.parameters())
    grads = [(p, p.grad, p.requires_grad) for p in params]
    try:
        yield model
    finally:
        model.load_state_dict(saved)
        for p, g, flag in grads:
            p.grad, p.requires_grad = g, flag
        model.train(was_training)


LayerStats = Callable[[LayerRecord, torch.Tensor, torch.Tensor], None]
GradStats = Callable[[LayerRecord, torch.Tensor], None]


class Recorder:
    """Install hooks on every layer and activation unit of ``model`` for one forward/backward pass.

    ``on_layer(record, activation, pre_activation)`` runs in each layer's forward hook,
    ``on_grad(record, gradient)`` when the gradient of that layer's output is known (only if
    given), ``on_unit(input)`` in each activation unit's forward pre-hook (only if given).
    """

    def __init__(self, model: nn.Module, on_layer: LayerStats, on_grad: GradStats | None = None,
                 on_unit: Callable[[torch.Tensor], None] | None = None) -> None:
        self.model, self.on_layer, self.on_grad, self.on_unit = model, on_layer, on_grad, on_unit
        self.layers: list[LayerRecord] = []
        self.units = 0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _layer_hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        record = LayerRecord(module)
        self.layers.append(record)
        with torch.no_grad():
            self.on_layer(record, inputs[0].detach(), output.detach())
        if self.on_grad is not None and output.requires_grad:
            output.register_hook(lambda g, r=record: self._grad_hook(r, g))

    def _grad_hook(self, record: LayerRecord, grad: torch.Tensor) -> None:
        with torch.no_grad():
            self.on_grad(record, grad.detach())

    def _unit_hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self.units += 1
        with torch.no_grad():
            self.on_unit(inputs[0].detach())

    def __enter__(self) -> Recorder:
        for module in self.model.modules():
            if isinstance(module, LAYER_TYPES):
                self._handles.append(module.register_forward_hook(self._layer_hook))
            elif self.on_unit is not None and isinstance(module, ACTIVATION_TYPES):
                self._handles.append(module.register_forward_pre_hook(self._unit_hook))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
