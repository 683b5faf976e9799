"""The terminals of the proxy language: what a proxy may look at, computed from a network and a batch.

Passes (each runs only if a requested terminal needs it; see :data:`TERMINALS`):

- ``real``: forward (and backward, for gradient terminals) on the image batch;
- ``noise``: the same on a standard-normal batch of the same shape (terminals prefixed ``noise_``);
- ``circle``: one forward, no backward, of ``curve_points`` inputs on a unit circle in a random 2-D
  plane of input space (Dextr's construction), for the output curvature;
- the zoo passes (``halves``, ``synflow``, ``swap``, ``az``, ``jacov``; :mod:`primitives.passes`),
  each that of the zoo proxy its terminals stand for, with the proxy's seeding, so that the proxy is
  an expression of them (ZiCo ``layer_sum(log(zico))`` under signal ``ce``, synflow
  ``n_log(layer_sum(synflow))``, SWAP ``swap``, jacov ``jacov``, AZ-NAS's components).

Groups (:data:`GROUPS`, written ``@name`` wherever terminals are listed): ``@base`` the original 48
(the default), ``@zoo`` the zoo terminals, ``@labels`` the terminals that read true labels whatever
the signal (``label_kernel``), ``@all``.

The network is in train mode (BatchNorm uses batch statistics) and is restored afterwards: its
training flag, parameters, buffers (BN running statistics) and ``.grad`` are as before.
The backward signal (``signal``) is label-free by default: ``pseudo_ce`` = cross-entropy against
labels drawn uniformly at random from ``seed``; ``logit_sum`` = sum of the logits; ``ce`` =
cross-entropy against the batch's true labels (label -1 is ignored).

What each terminal needs from a model (``primitives/layers.py`` defines layers and units): every
terminal but ``params`` and ``curvature`` needs at least one layer (an ``nn.Conv2d`` / ``nn.Linear``
call); ``code_kernel`` needs activation units (ReLU-like activations, module or functional);
gradient terminals need a forward whose logits depend on the parameters; ``logit_*`` and
``curvature`` need only the logits. A model lacking what a requested terminal needs raises one line.

Per-network results are *packed*: for each terminal a float64 array (Vector: all layers' vectors
concatenated, with lengths under ``<name>.len``; RowScalar: (L,); Matrix: (1, B, B); NetScalar: (1,))
plus ``layers`` = (1,) layer count. Packed arrays of many networks concatenate along axis 0, which is
what the cache stores and :func:`collate` turns into language values.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from primitives.layers import (LayerRecord, ModelError, Output, Recorder, SameValues, code_kernel, corr,
                               corr_from_gram, exact_kernels, gram_and_sums, picking_logits, preserved,
                               singular_values, spectrum)
from primitives.passes import (SWAP_REPEATS, az_components, jacobian_corr, jacov_score, swap_layers, synflow_layers,
                               zico_layers)
from primitives.types import BIG, Matrix, NetScalar, Rows, RowScalar, Vector

SIGNALS = ("pseudo_ce", "logit_sum", "ce")


@dataclass(frozen=True)
class Terminal:
    name: str
    type: type
    pass_: str  # a key of FORWARDS, or "static"
    backward: bool
    doc: str
    labels: bool = False  # reads the batch's true labels whatever the backward signal


_DATA = [  # computed on the real batch, and on the noise batch with the prefix "noise_"
    ("act_sv", Vector, False, "singular values of the layer's activation (B x features)"),
    ("act_corr_eig", Vector, False, "eigenvalues of the sample x sample Pearson correlation of the activation"),
    ("chan_corr_eig", Vector, False, "eigenvalues of the channel x channel correlation of sample 0's pre-activation (MeCo)"),
    ("chan_sv", Vector, False, "singular values of sample 0's pre-activation as channels x positions (Dextr)"),
    ("grad_sv", Vector, True, "singular values of the gradient w.r.t. the pre-activation (B x features)"),
    ("wgrad_sv", Vector, True, "singular values of the weight gradient (out x fan-in)"),
    ("act_mean", RowScalar, False, "mean of the activation"),
    ("act_std", RowScalar, False, "standard deviation of the activation"),
    ("act_pos", RowScalar, False, "fraction of positive activation entries"),
    ("preact_std", RowScalar, False, "standard deviation of the pre-activation"),
    ("grad_abs_mean", RowScalar, True, "mean |gradient| w.r.t. the pre-activation"),
    ("grad_std", RowScalar, True, "standard deviation of the gradient w.r.t. the pre-activation"),
    ("wgrad_norm", RowScalar, True, "Frobenius norm of the weight gradient"),
    ("snip", RowScalar, True, "sum of |weight * weight gradient| (SNIP saliency of the layer)"),
    ("code_kernel", Matrix, False, "NASWOT kernel: sum over ReLU units of c c^T + (1-c)(1-c)^T, c = input > 0"),
    ("act_corr_sum", Matrix, False, "sum over layers of the sample x sample activation correlation"),
    ("grad_corr_sum", Matrix, True, "sum over layers of the sample x sample gradient correlation"),
    ("logit_corr", Matrix, False, "sample x sample Pearson correlation of the logits"),
    ("logit_std", NetScalar, False, "standard deviation of the logits"),
]
_STATIC = [  # data-independent, recorded during the real pass (the layer order needs a forward)
    ("weight_sv", Vector, "singular values of the weight (out x fan-in)"),
    ("weight_norm", RowScalar, "Frobenius norm of the weight"),
    ("layer_params", RowScalar, "parameters of the layer module"),
    ("fan_in", RowScalar, "fan-in of the layer (in channels x kernel area, or in features)"),
    ("width", RowScalar, "output channels or features of the layer"),
    ("layer_flops", RowScalar, "multiply-accumulates of the layer per input sample"),
    ("flops", NetScalar, "multiply-accumulates of all layers per input sample"),
    ("depth", NetScalar, "number of layers (Conv2d / Linear calls)"),
]
TERMINALS: dict[str, Terminal] = {}
for _name, _type, _bw, _doc in _DATA:
    TERMINALS[_name] = Terminal(_name, _type, "real", _bw, _doc)
    TERMINALS["noise_" + _name] = Terminal("noise_" + _name, _type, "noise", _bw, _doc + ", on the noise batch")
for _name, _type, _doc in _STATIC:
    TERMINALS[_name] = Terminal(_name, _type, "real", False, _doc)
TERMINALS["params"] = Terminal("params", NetScalar, "static", False, "number of parameters of the model")
TERMINALS["curvature"] = Terminal("curvature", NetScalar, "circle", False,
                                  "mean extrinsic curvature of the logits along a circle of inputs (Dextr)")
BASE = tuple(TERMINALS)
"""The original 48 terminals (group ``@base``): what every campaign before the zoo terminals used."""

_ZOO = [  # name, type, pass, backward, doc (the passes and their sources: primitives/passes.py)
    ("zico", RowScalar, "halves", True, "ZiCo's layer term: sum over weights of mean|g| / std g over the batch's"
     " two halves (running gradients, as the official code); ZiCo = layer_sum(log(zico)) under signal ce"),
    ("zico_mean", RowScalar, "halves", True, "mean over the layer's weights of ZiCo's mean|g| over the two halves"),
    ("zico_std", RowScalar, "halves", True, "mean over the layer's weights of ZiCo's std g over the two halves"),
    ("synflow", RowScalar, "synflow", True, "synflow saliency sum |W * dR/dW| of the layer on the linearised network"
     " (float64, no BN, |parameters|, one all-ones input, R = sum of logits); synflow = n_log(layer_sum(synflow))"),
    ("swap_layer", RowScalar, "swap", False, f"distinct sign patterns of the layer's activation over the first 16"
     f" samples, mean over {SWAP_REPEATS} Gaussian re-initialisations (SWAP per layer)"),
    ("swap", NetScalar, "swap", False, "SWAP: distinct sign patterns over all activation units on 4-D maps, first 16"
     f" samples, mean over {SWAP_REPEATS} Gaussian re-initialisations"),
    ("az_expressivity", NetScalar, "az", False, "AZ-NAS expressivity: sum over blocks of the channel-covariance"
     " spectral entropy (Kaiming re-initialisation, Gaussian inputs)"),
    ("az_progressivity", NetScalar, "az", False, "AZ-NAS progressivity: smallest entropy increase between blocks"),
    ("az_trainability", NetScalar, "az", True, "AZ-NAS trainability: mean of -s - 1/s + 2 over block pairs, s the"
     " spectral norm of the local Jacobian product"),
    ("jacob_corr", Matrix, "jacov", True, "sample x sample correlation of the input gradients of the summed logits"),
    ("jacov", NetScalar, "jacov", True, "jacov: -sum over eigenvalues l of jacob_corr of log(l + 1e-5) + 1/(l + 1e-5)"),
]
for _name, _type, _doc in [("code_logdet", RowScalar, "NASWOT per layer: log|det| of the code kernel of the layer's"
                            " activation (c = activation > 0); -1e150 when singular")]:
    TERMINALS[_name] = Terminal(_name, _type, "real", False, _doc)
    TERMINALS["noise_" + _name] = Terminal("noise_" + _name, _type, "noise", False, _doc + ", on the noise batch")
for _name, _type, _pass, _bw, _doc in _ZOO:
    TERMINALS[_name] = Terminal(_name, _type, _pass, _bw, _doc)
TERMINALS["label_kernel"] = Terminal("label_kernel", Matrix, "static", False, "sample x sample same-class indicator"
                                     " of the batch's true labels (kernel-target alignment)", labels=True)
GROUPS: dict[str, tuple[str, ...]] = {
    "base": BASE,
    "zoo": tuple(n for n in TERMINALS if n not in BASE and not TERMINALS[n].labels),
    "labels": tuple(n for n in TERMINALS if TERMINALS[n].labels),
    "all": tuple(TERMINALS),
}
"""Terminal groups, named ``@group`` wherever terminals are listed; ``@base`` is the default."""
DEFAULT = ("@base",)
FORWARDS = {"real": 1, "noise": 1, "circle": 1, "halves": 2, "synflow": 1, "swap": SWAP_REPEATS, "az": 1, "jacov": 1}
"""Forward calls of each pass; a pass with a wanted gradient terminal makes as many backward calls."""


def resolve_terminals(names: Iterable[str]) -> tuple[str, ...]:
    """The sorted terminal names of ``names`` with every ``@group`` expanded; ValueError (one line) for an
    unknown name or group."""
    names = list(names)
    unknown = [n for n in names if not (n in TERMINALS or (n.startswith("@") and n[1:] in GROUPS))]
    if unknown:
        raise ValueError(f"unknown terminal(s) {', '.join(unknown)}; known: the groups "
                         f"{', '.join('@' + g for g in GROUPS)} and {', '.join(TERMINALS)}")
    return tuple(sorted({t for n in names for t in (GROUPS[n[1:]] if n.startswith("@") else (n,))}))


def labels_problem(names: Iterable[str], signal: str) -> str | None:
    """Why the terminals ``names`` cannot be cached with the backward ``signal`` (None if they can): a
    terminal that reads true labels contradicts a label-free signal."""
    needing = sorted(n for n in names if TERMINALS[n].labels)
    if needing and signal != "ce":
        return (f"terminal {needing[0]} needs the batch's true labels, but the backward signal {signal!r} is"
                " label-free: use signal 'ce' or drop it")
    return None


def passes_needed(names: Iterable[str]) -> int:
    """Forward plus backward passes that computing the terminals ``names`` costs per network.

    Static terminals cost none; each pass costs its :data:`FORWARDS` calls, and as many backward calls
    when a gradient terminal of it is wanted (the proxy-cost objective). SWAP counts 32 forwards of 16
    samples; ZiCo two forwards and backwards of half the batch."""
    wanted = [TERMINALS[n] for n in names]
    forward = {t.pass_ for t in wanted if t.pass_ != "static"}
    return sum(FORWARDS[p] for p in forward) + sum(FORWARDS[p] for p in {t.pass_ for t in wanted if t.backward})


def terminal_types(names: Iterable[str] | None = None) -> dict[str, type]:
    """Name -> language type of the terminals ``names`` (all by default), as the parser takes them."""
    return {n: TERMINALS[n].type for n in (TERMINALS if names is None else names)}


def _pass_stats(model: nn.Module, x: torch.Tensor, wanted: set[str], labels: torch.Tensor | None,
                signal: str, draws: torch.Tensor) -> dict[str, np.ndarray]:
    """One forward (+ backward if a wanted terminal needs it, else without autograd) with hooks; base
    names in ``wanted``.

    Without ``labels`` the backward signal's labels are ``draws`` modulo the logits' width."""
    backward = any(TERMINALS[n].backward for n in wanted)
    kernels: dict[str, torch.Tensor] = {}
    same_acts, same_units = SameValues(), SameValues()

    def add(name: str, value: torch.Tensor) -> None:
        kernels[name] = kernels[name] + value if name in kernels else value

    def activation(a2: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        g, sums = gram_and_sums(a2)
        s: dict[str, torch.Tensor] = dict(zip(("act_mean", "act_std"), _moments(g, sums, a2.numel())))
        s["act_pos"] = (a2 > 0).sum() / a2.numel()
        if "code_logdet" in wanted:
            s["code_logdet"] = torch.linalg.slogdet(code_kernel(a2)).logabsdet.clamp_min(-BIG)
        c = None
        if wanted & {"act_sv", "act_corr_eig", "act_corr_sum"}:
            s["act_sv"] = spectrum(g).clamp_min(0).sqrt()
            c = corr_from_gram(g, sums, a2.shape[1])
            s["act_corr_eig"] = spectrum(c)
        return s, c

    def on_layer(rec: LayerRecord, a: torch.Tensor, z: torch.Tensor) -> None:
        s = rec.stats
        act, c = same_acts.get(a.reshape(a.shape[0], -1), activation)
        s.update(act)
        if "act_corr_sum" in wanted:
            add("act_corr_sum", c)
        s["preact_std"] = z.std()
        m = rec.module  # channels: dim 1 of a Conv2d output, the last dim of a Linear one (tokens x features)
        z0 = z[0].reshape(-1, z.shape[-1]).T if isinstance(m, nn.Linear) else z[0].reshape(z.shape[1], -1)
        if wanted & {"chan_corr_eig"}:
            s["chan_corr_eig"] = spectrum(corr(z0))
        if wanted & {"chan_sv"}:
            s["chan_sv"] = singular_values(z0)
        w = m.weight.detach().reshape(m.weight.shape[0], -1)
        if "weight_sv" in wanted:
            s["weight_sv"] = singular_values(w)
        s["weight_norm"] = torch.linalg.vector_norm(w.double())
        s["layer_params"] = torch.tensor(float(sum(p.numel() for p in m.parameters(recurse=False))))
        s["fan_in"], s["width"] = torch.tensor(float(w.shape[1])), torch.tensor(float(w.shape[0]))
        s["layer_flops"] = torch.tensor(float(z[0].numel() * w.shape[1]))

    def on_grad(rec: LayerRecord, g: torch.Tensor) -> None:
        s, g2 = rec.stats, g.reshape(g.shape[0], -1)
        gg, sums = gram_and_sums(g2)
        s["grad_abs_mean"] = torch.linalg.vector_norm(g2, 1) / g2.numel()
        s["grad_std"] = _moments(gg, sums, g2.numel())[1]
        if wanted & {"grad_sv", "grad_corr_sum"}:
            s["grad_sv"] = spectrum(gg).clamp_min(0).sqrt()
            if "grad_corr_sum" in wanted:
                add("grad_corr_sum", corr_from_gram(gg, sums, g2.shape[1]))

    def on_unit(u: torch.Tensor) -> None:
        add("code_kernel", same_units.get(u, code_kernel))

    for p in model.parameters():
        p.grad = None
    with torch.set_grad_enabled(backward), Recorder(model, on_layer, on_grad if backward else None,
                                                    on_unit if "code_kernel" in wanted else None) as rec:
        logits = model(x)
        if backward:
            y = labels if labels is not None else (draws % logits.shape[-1]).to(logits.device)
            _signal(logits, y, signal).backward()
    if "code_kernel" in wanted and rec.units == 0:
        raise ModelError("the model calls no ReLU-like activation (nn.ReLU / GELU / SiLU / LeakyReLU modules or "
                         "F.relu, torch.relu, x.relu(), F.gelu, F.silu, F.leaky_relu): code_kernel (NASWOT) needs them")
    if not rec.layers:
        raise ModelError("the model calls no nn.Conv2d / nn.Linear module: per-layer terminals are undefined")
    for r in rec.layers:
        if backward and r.module.weight.grad is not None:
            w, dw = r.module.weight.detach(), r.module.weight.grad.detach()
            r.stats["wgrad_sv"] = singular_values(dw.reshape(dw.shape[0], -1))
            r.stats["wgrad_norm"] = torch.linalg.vector_norm(dw.double())
            r.stats["snip"] = torch.linalg.vector_norm(w.double() * dw.double(), 1)
    with torch.no_grad():
        lg = logits.detach().double()
        kernels["logit_corr"] = corr(lg)
    net: dict[str, object] = dict(kernels, logit_std=lg.std(), depth=float(len(rec.layers)))
    net["flops"] = sum(float(r.stats["layer_flops"]) for r in rec.layers)
    return {"layers": np.array([len(rec.layers)], dtype=np.int64), **_pack(rec.layers, wanted, net)}


def _pack(layers: list[LayerRecord], names: Iterable[str], net: Mapping[str, object]) -> dict[str, np.ndarray]:
    """Packed arrays of the terminals ``names`` from per-layer records and network values ``net``."""
    out: dict[str, np.ndarray] = {}
    for name in names:
        kind = TERMINALS[name].type
        if kind is Vector:
            vecs = [r.stats[name].cpu() if name in r.stats else torch.zeros(0, dtype=torch.float64) for r in layers]
            out[name] = torch.cat(vecs).numpy()
            out[name + ".len"] = np.array([len(v) for v in vecs], dtype=np.int64)
        elif kind is RowScalar:
            out[name] = np.array([float(r.stats.get(name, math.nan)) for r in layers])
        elif kind is Matrix:
            out[name] = net[name].cpu().numpy()[None]
        else:
            out[name] = np.array([float(net[name])])
    return out


def _moments(g: torch.Tensor, sums: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) standard deviation of all entries, from their Gram matrix and row sums."""
    total = sums.double().sum()
    var = (g.diagonal().sum() - total * total / n) / max(n - 1, 1)
    return total / n, var.clamp_min(0).sqrt()


def _signal(logits: torch.Tensor, labels: torch.Tensor, signal: str) -> torch.Tensor:
    if signal == "logit_sum":
        return logits.sum()
    return F.cross_entropy(logits, labels.to(logits.device), ignore_index=-1)


def circle_inputs(shape: tuple[int, ...], points: int, generator: torch.Generator) -> torch.Tensor:
    """``points`` inputs x(t) = cos(t) u1 + sin(t) u2 on a unit circle in a random 2-D input plane."""
    d = math.prod(shape)
    basis, _ = torch.linalg.qr(torch.randn(d, 2, generator=generator, dtype=torch.float64))
    theta = torch.arange(points, dtype=torch.float64) * (2 * math.pi / points)
    x = torch.cos(theta)[:, None] * basis[:, 0] + torch.sin(theta)[:, None] * basis[:, 1]
    return x.float().reshape(points, *shape)


def curvature(logits: torch.Tensor) -> float:
    """Mean curvature sqrt(|v|^2 |a|^2 - (v.a)^2) / |v|^3 of a closed curve sampled at equal angles.

    Velocity and acceleration by central differences in the angle (float64)."""
    f = logits.double()
    step = 2 * math.pi / f.shape[0]
    nxt, prv = f.roll(-1, 0), f.roll(1, 0)
    v, a = (nxt - prv) / (2 * step), (nxt - 2 * f + prv) / step**2
    vv, aa, va = (v * v).sum(1), (a * a).sum(1), (v * a).sum(1)
    k = torch.sqrt((vv * aa - va**2).clamp_min(0)) / vv.clamp_min(1e-300) ** 1.5
    return float(torch.where(vv > 0, k, torch.zeros_like(k)).mean())


def compute_terminals(model: nn.Module, images: torch.Tensor, names: Iterable[str] | None = None, *,
                      labels: torch.Tensor | None = None, signal: str = "pseudo_ce", seed: int = 0,
                      curve_points: int = 64, output: Output = None) -> dict[str, np.ndarray]:
    """Packed terminals of one network (see the module docstring); only the passes ``names`` need.

    ``names`` may hold ``@group`` names (:data:`GROUPS`); the default is ``@base``. ``output`` picks the
    logits when the forward returns more than a tensor (``layers.pick_output``)."""
    names = set(resolve_terminals(DEFAULT if names is None else names))
    if signal not in SIGNALS:
        raise ValueError(f"unknown backward signal {signal!r}; known: {', '.join(SIGNALS)}")
    if signal == "ce" and labels is None:
        raise ModelError("backward signal 'ce' needs the batch's labels")
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=gen).to(images.device)
    pseudo = torch.randint(0, 1 << 30, (images.shape[0],), generator=gen)
    circle_gen = torch.Generator().manual_seed(seed + 1)

    out: dict[str, np.ndarray] = {}
    with preserved(model), exact_kernels(), picking_logits(model, output):
        model.train()
        for kind, prefix, x in (("real", "", images), ("noise", "noise_", noise)):
            wanted = {n[len(prefix):] for n in names if TERMINALS[n].pass_ == kind}
            if not wanted:
                continue
            y = labels if signal == "ce" and kind == "real" else None
            stats = _pass_stats(model, x, wanted, y, signal, pseudo)
            out["layers"] = stats.pop("layers")
            out.update({prefix + k: v for k, v in stats.items()})
        if "curvature" in names:
            with torch.no_grad():
                logits = model(circle_inputs(tuple(images.shape[1:]), curve_points, circle_gen).to(images.device))
            out["curvature"] = np.array([curvature(logits.cpu())])
        if "params" in names:
            out["params"] = np.array([float(sum(p.numel() for p in model.parameters()))])
        if names & set(GROUPS["zoo"]) - {"code_logdet", "noise_code_logdet"}:
            y = labels if signal == "ce" else pseudo
            _zoo_passes(model, images, names, y, signal, seed, out)
    if "label_kernel" in names:
        out["label_kernel"] = _label_kernel(labels, images.shape[0])
    out.setdefault("layers", np.zeros(1, dtype=np.int64))
    return out


def _zoo_passes(model: nn.Module, images: torch.Tensor, names: set[str], labels: torch.Tensor | None, signal: str,
                seed: int, out: dict[str, np.ndarray]) -> None:
    """Run the passes of the zoo terminals in ``names`` (primitives/passes.py) into ``out``; passes that
    re-initialise the model restore it before the next one."""
    def want(kind: str) -> set[str]:
        return {n for n in names if TERMINALS[n].pass_ == kind}

    def take(kind: str, what: str, records: list[LayerRecord], net: Mapping[str, object]) -> None:
        layers = np.array([len(records)], dtype=np.int64)
        if not records:
            raise ValueError("the model has no Conv2d / Linear layers: per-layer terminals are undefined")
        if "layers" in out and out["layers"][0] != layers[0]:
            raise ValueError(f"the {what} pass called {layers[0]} Conv2d / Linear layers, an earlier pass"
                             f" {out['layers'][0]}: the model must call the same layers on every input")
        out["layers"] = layers
        out.update(_pack(records, want(kind), net))

    if want("halves"):
        def loss(z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:  # pseudo-labels: draws modulo the width
            return _signal(z, y if signal == "ce" else y % z.shape[-1], signal)

        take("halves", "ZiCo", zico_layers(model, images, labels, loss), {})
    if want("synflow"):
        take("synflow", "synflow", synflow_layers(model, tuple(images.shape[1:]), images.device), {})
    if want("swap"):
        with preserved(model):
            records, total = swap_layers(model, images, torch.Generator().manual_seed(seed))
        take("swap", "SWAP", records, {"swap": total})
    if want("az"):
        with preserved(model):
            c = az_components(model, images, torch.Generator().manual_seed(seed), "az_trainability" in names)
        out.update({n: np.array([c[n[len("az_"):]]]) for n in want("az")})
    if want("jacov"):
        k = jacobian_corr(model, images)
        out.update(_pack([], want("jacov"), {"jacob_corr": k, "jacov": jacov_score(spectrum(k))}))


def _label_kernel(labels: torch.Tensor | None, n: int) -> np.ndarray:
    """(1, B, B) float64: 1 where samples i and j carry the same true label (label -1: no class)."""
    if labels is None or not bool((labels >= 0).any()):
        raise ValueError("terminal label_kernel needs the batch's true labels (labels=...), and these have none")
    y = labels.cpu()
    same = (y[:, None] == y[None, :]) & (y >= 0)[:, None]
    return same.double().numpy()[None]


def collate(packed: Mapping[str, np.ndarray], names: Iterable[str], device: str = "cpu") -> dict[str, object]:
    """Language values (see ``primitives.types``) of the terminals ``names`` for all packed networks."""
    counts = packed["layers"].tolist()
    layer_rows, net_rows = Rows.from_counts(counts, device), Rows.networks(len(counts), device)
    env: dict[str, object] = {}
    for name in names:
        kind, arr = TERMINALS[name].type, torch.as_tensor(np.asarray(packed[name]), dtype=torch.float64, device=device)
        if kind is Vector:
            lens = torch.as_tensor(np.asarray(packed[name + ".len"]), device=device)
            width = int(lens.max()) if len(lens) else 0
            mask = torch.arange(width, device=device)[None, :] < lens[:, None]
            data = torch.zeros(mask.shape, dtype=torch.float64, device=device)
            data[mask] = arr
            env[name] = Vector(data, mask, layer_rows)
        elif kind is RowScalar:
            env[name] = RowScalar(arr, layer_rows)
        elif kind is Matrix:
            env[name] = Matrix(arr, net_rows)
        else:
            env[name] = NetScalar(arr)
    return env
