"""What a "layer" is, for any ``torch.nn.Module``, and the hooks that reduce it to statistics.

Definition (used by the terminal cache and by exported proxies alike):

- a **layer** is one call of an ``nn.Conv2d`` or ``nn.Linear`` module, in the order the forward pass
  makes the calls. Its *activation* is the tensor the module reads (its input), its *pre-activation*
  the tensor it writes (its output), its *gradient* the gradient of the backward signal with
  respect to that output; its *weight* and *weight gradient* are the module's ``weight`` and
  ``weight.grad``;
- an **activation unit** is one call of a ReLU-like activation however it is written: the modules
  ``nn.ReLU`` / ``nn.LeakyReLU`` / ``nn.GELU`` / ``nn.SiLU`` (in-place or not) and the functions
  ``F.relu`` / ``torch.relu`` / ``x.relu()`` / ``F.leaky_relu`` / ``F.gelu`` / ``F.silu`` and their
  in-place forms (:data:`ACTIVATION_FUNCTIONS`, seen by a ``TorchFunctionMode`` during the pass). Its
  input's sign pattern is the binary code of NASWOT (Mellor et al. 2021), whose kernel is summed over
  all activation units. A network with none of them has no activation units; terminals that need
  them then fail with one line rather than returning a constant;
- the **logits** are what the model's forward returns, picked by :func:`pick_output` when it returns
  a tuple, list, dict or an object with a ``logits`` attribute (see there; ``output=`` overrides).

Statistics are computed inside the hooks, before anything downstream runs, so an in-place activation
after a layer (``nn.ReLU(inplace=True)``, ``x.relu_()``) cannot change what the layer's hook saw, and
a layer's gradient is taken with respect to its output before the in-place change.

Every tensor is reduced to small statistics inside its hook (B x B kernels, spectra, moments), so
memory stays that of a plain forward/backward pass. Gram matrices and everything derived from them
are float64; only binary-code products are float32, which is exact up to 2^24 features.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

LAYER_TYPES = (nn.Conv2d, nn.Linear)
ACTIVATION_FUNCTIONS = frozenset({F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_,
                                  F.leaky_relu, F.leaky_relu_, F.gelu, F.silu})
F64 = torch.float64


class ModelError(ValueError):
    """A model or batch that cannot be scored (one line saying why and what to do)."""


Output = int | str | Callable[[object], torch.Tensor] | None


def pick_output(out: object, output: Output = None) -> torch.Tensor:
    """The logits among what a model's forward returned.

    ``output=None`` (the default): a tensor is the logits; a dict (or ``ModelOutput``) its ``"logits"``
    entry, else its only tensor; an object with a ``logits`` attribute (dataclass, named tuple) that
    attribute; a tuple or list of one element that element, of two elements the second, as in
    NATS-Bench's ``(features, logits)``. Anything else is ambiguous and raises a ModelError naming what
    was found. ``output`` overrides: an int indexes a tuple or list, a str names a dict key or an
    attribute, a callable maps the whole output to the logits."""
    if output is not None:
        try:
            picked = output(out) if callable(output) else (
                out[output] if isinstance(out, (tuple, list, Mapping)) else getattr(out, output))
        except (IndexError, KeyError, AttributeError, TypeError):
            raise ModelError(f"output={output!r} does not select anything from {_found(out)}") from None
        if not isinstance(picked, torch.Tensor):
            raise ModelError(f"output={output!r} selects a {type(picked).__name__} from {_found(out)}, not a tensor")
        return picked
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        tensors = [k for k, v in out.items() if isinstance(v, torch.Tensor)]
        if isinstance(out.get("logits"), torch.Tensor):
            return out["logits"]
        if len(tensors) == 1:
            return out[tensors[0]]
        how = "output=KEY"
    elif isinstance(getattr(out, "logits", None), torch.Tensor):
        return out.logits
    elif isinstance(out, (tuple, list)) and 1 <= len(out) <= 2 and isinstance(out[-1], torch.Tensor):
        return out[-1]
    else:
        how = "output=INDEX" if isinstance(out, (tuple, list)) else "output=NAME"
    raise ModelError(f"cannot tell which output is the logits: the model returned {_found(out)}; "
                     f"pass {how} or output=callable to choose")


def _found(out: object) -> str:
    """What a forward returned, in a few words (types and tensor shapes)."""
    def one(v: object) -> str:
        return f"tensor{tuple(v.shape)}" if isinstance(v, torch.Tensor) else type(v).__name__
    if isinstance(out, Mapping):
        return "a dict {" + ", ".join(f"{k!r}: {one(v)}" for k, v in list(out.items())[:8]) + "}"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} (" + ", ".join(one(v) for v in out[:8]) + ")"
    return f"a {one(out)}"


@contextmanager
def picking_logits(model: nn.Module, output: Output = None) -> Iterator[nn.Module]:
    """Within the block, ``model(x)`` returns the logits (:func:`pick_output`), checked to be a float
    tensor with the batch dimension of ``x`` first: a forward hook, removed afterwards, that also
    holds for copies of the model made inside the block. Hooks the model already has still see what
    its forward returned; hooks registered inside the block see the logits."""
    def hook(module: nn.Module, args: tuple[object, ...], out: object) -> torch.Tensor:
        logits = pick_output(out, output)
        x = args[0] if args else None
        batch = x.shape[0] if isinstance(x, torch.Tensor) and x.ndim else None
        if not logits.is_floating_point() or logits.ndim < 1 or (batch is not None and logits.shape[0] != batch):
            raise ModelError(f"the model's output is a {logits.dtype} tensor of shape {tuple(logits.shape)} for a "
                             f"batch of {batch}: expected float logits (batch, ...) with the batch dimension first")
        return logits

    handle = model.register_forward_hook(hook)
    try:
        yield model
    finally:
        handle.remove()


class ActivationUnits(TorchFunctionMode):
    """Within the block, call ``on_unit(input)`` (no grad) before every activation unit runs, and the
    callable it may return on the unit's output afterwards; ``units`` counts the calls.

    Seeing the input before the call is what makes in-place activations safe. The handler runs with
    the mode switched off, so the activation's own inner calls are not counted twice."""

    def __init__(self, on_unit: Callable[[torch.Tensor], Callable[[torch.Tensor], None] | None]) -> None:
        super().__init__()
        self.on_unit, self.units = on_unit, 0

    def __torch_function__(self, func: Callable, types: object, args: tuple = (), kwargs: dict | None = None) -> object:
        kwargs = kwargs or {}
        if func not in ACTIVATION_FUNCTIONS:
            return func(*args, **kwargs)
        x = args[0] if args else kwargs["input"]
        self.units += 1
        with torch.no_grad():
            after = self.on_unit(x.detach())
        out = func(*args, **kwargs)
        if after is not None:
            after(out)
        return out


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
    fingerprint finds candidates, ``torch.equal`` confirms, so reuse is exact (NaN never matches); a
    tensor changed in place since it was seen (its version moved on) is never a match.
    Holds references to the tensors it has seen: use one per pass."""

    def __init__(self) -> None:
        self._seen: dict[tuple, list[tuple[torch.Tensor, int, object]]] = {}

    @staticmethod
    def _key(x: torch.Tensor) -> tuple:
        flat = x.reshape(-1)
        sample = flat[:: max(1, flat.numel() // 64)][:64]
        return x.shape, x.dtype, sample.float().cpu().numpy().tobytes()

    def get(self, x: torch.Tensor, compute: Callable[[torch.Tensor], object]) -> object:
        """``compute(x)``, or the value it gave for an equal tensor seen before."""
        bucket = self._seen.setdefault(self._key(x), [])
        for seen, version, value in bucket:
            if seen._version == version and torch.equal(seen, x):
                return value
        value = compute(x)
        bucket.append((x, x._version, value))
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


@contextmanager
def exact_kernels() -> Iterator[None]:
    """Full float32 and deterministic cuDNN kernels inside the block, the caller's settings after.

    CUDA's defaults compute convolutions in TF32 (10-bit mantissa: terminals off by ~1e-3 relative,
    near-singular spectra by far more) and pick nondeterministic backward algorithms (ZiCo off by 0.3%
    between two runs on an H200). On the CPU these flags change nothing."""
    flags = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = flags[0].allow_tf32, flags[1].allow_tf32, flags[0].deterministic, flags[0].benchmark
    flags[0].allow_tf32 = flags[1].allow_tf32 = flags[0].benchmark = False
    flags[0].deterministic = True
    try:
        yield
    finally:
        flags[0].allow_tf32, flags[1].allow_tf32, flags[0].deterministic, flags[0].benchmark = saved


LayerStats = Callable[[LayerRecord, torch.Tensor, torch.Tensor], None]
GradStats = Callable[[LayerRecord, torch.Tensor], None]


class Recorder:
    """Install hooks on every layer and activation unit of ``model`` for one forward/backward pass.

    ``on_layer(record, activation, pre_activation)`` runs in each layer's forward hook,
    ``on_grad(record, gradient)`` when the gradient of that layer's output is known (only if
    given), ``on_unit(input)`` before each activation unit runs (only if given; see
    :class:`ActivationUnits`).
    """

    def __init__(self, model: nn.Module, on_layer: LayerStats, on_grad: GradStats | None = None,
                 on_unit: Callable[[torch.Tensor], None] | None = None) -> None:
        self.model, self.on_layer, self.on_grad = model, on_layer, on_grad
        self.layers: list[LayerRecord] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._units = ActivationUnits(on_unit) if on_unit is not None else None

    @property
    def units(self) -> int:
        """Activation units seen so far."""
        return self._units.units if self._units is not None else 0

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

    def __enter__(self) -> Recorder:
        for module in self.model.modules():
            if isinstance(module, LAYER_TYPES):
                self._handles.append(module.register_forward_hook(self._layer_hook))
        if self._units is not None:
            self._units.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._units is not None:
            self._units.__exit__(*exc)
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
