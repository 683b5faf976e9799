"""The proxy contract, the registry decorator, and helpers several proxies share.

A proxy is a function ``fn(model, images, labels, gen, **options)`` registered with
:func:`register`. It may change the model freely except its dtype and modules (the caller restores
weights, buffers, gradients and mode with ``primitives.layers.preserved``), draws every random
number from ``gen`` (a ``torch.Generator`` seeded by the run's seed), and returns a float, or, for a
set-level proxy, a dict of component floats that ``aggregate`` turns into scores over a set of
networks. NaN is returned only together with a logged warning saying why.

As a library (:meth:`Proxy.__call__`) a proxy takes models as users have them: forwards returning a
tuple ``(features, logits)``, a dict or a ``ModelOutput`` (``output=`` picks the logits, see
``primitives.layers.pick_output``) and activations however written; every problem is one ZcpError line.
"""
from __future__ import annotations

import inspect
import logging
import math
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from evaluation.errors import ZcpError
from primitives.layers import LAYER_TYPES, ModelError, Output, exact_kernels, picking_logits, preserved
from primitives.passes import blocks, init_weights, randn_like  # noqa: F401 (the zoo imports them from here)
from primitives.proxy import check_model_inputs, model_failed

log = logging.getLogger("zcp.proxies")

ProxyFn = Callable[..., "float | dict[str, float]"]
Aggregate = Callable[[Mapping[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class Proxy:
    """A registered proxy: its function, whether it needs labels, and (set-level only) its aggregation."""

    name: str
    fn: ProxyFn
    needs_labels: bool
    doc: str
    components: tuple[str, ...] = ()
    aggregate: Aggregate | None = None

    def score(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, seed: int = 0,
              output: Output = None, **options: object) -> float | dict[str, float]:
        """Score one network in train mode; the model is left exactly as it was."""
        if self.needs_labels and not has_labels(labels):
            raise ZcpError(f"proxy {self.name} needs labels, but the batch has none (use real images, not noise)")
        with self._guard(model, images, labels, options, output):
            result = self.fn(model, images, labels, torch.Generator().manual_seed(seed), **options)
        if self.components:
            return {k: float(result[k]) for k in self.components}
        return float(result)

    def __call__(self, model: nn.Module, inputs: torch.Tensor, *, labels: torch.Tensor | None = None, seed: int = 0,
                 output: Output = None, **options: object) -> float | dict[str, float]:
        """The proxy on a user's model, with the contract of an exported proxy's ``score``.

        A float (a dict of components for a set-level proxy, see ``aggregate``); the model is left as
        found; problems are one ZcpError line. A proxy that needs labels gets, when ``labels`` is None,
        labels drawn uniformly from ``seed`` over the logits' width (as the label-free ``pseudo_ce``
        signal of the terminal cache does)."""
        if labels is None and self.needs_labels:
            with self._guard(model, inputs, None, options, output), torch.no_grad():
                classes = model(inputs[:2]).shape[-1]
            labels = torch.randint(0, classes, inputs.shape[:1], generator=torch.Generator().manual_seed(seed))
        return self.score(model, inputs, labels, seed, output, **options)

    @contextmanager
    def _guard(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None,
               options: Mapping[str, object], output: Output) -> Iterator[None]:
        """Checked arguments; the model in train mode with ``model(x)`` giving the logits, restored
        afterwards; any failure inside as one ZcpError line."""
        try:
            check_model_inputs(model, images, labels)
            inspect.signature(self.fn).bind(model, images, labels, None, **options)
        except ModelError as exc:
            raise ZcpError(str(exc)) from None
        except TypeError:
            known = [p for p in list(inspect.signature(self.fn).parameters)[4:]]
            raise ZcpError(f"proxy {self.name} takes the options {known or 'none'}, not {sorted(options)}") from None
        try:
            with preserved(model), exact_kernels(), picking_logits(model, output):
                model.train()
                yield
        except ZcpError:
            raise
        except ModelError as exc:
            raise ZcpError(str(exc)) from None
        except Exception as exc:  # the model's forward, or the proxy on a model it cannot handle
            raise ZcpError(f"proxy {self.name}: {model_failed(images, exc)}") from None


PROXIES: dict[str, Proxy] = {}


def register(name: str, *, labels: bool, components: tuple[str, ...] = (),
             aggregate: Aggregate | None = None) -> Callable[[ProxyFn], ProxyFn]:
    """Decorator: add ``fn`` to the zoo under ``name`` (its module docstring is the proxy's doc)."""

    def wrap(fn: ProxyFn) -> ProxyFn:
        if name in PROXIES:
            raise ValueError(f"proxy {name!r} registered twice")
        PROXIES[name] = Proxy(name, fn, labels, sys.modules[fn.__module__].__doc__ or "", components, aggregate)
        return fn

    return wrap


def proxy_names() -> list[str]:
    return sorted(PROXIES)


def get_proxy(name: str) -> Proxy:
    try:
        return PROXIES[name]
    except KeyError:
        raise ZcpError(f"unknown proxy {name!r}; known: {', '.join(proxy_names())}") from None


def has_labels(labels: torch.Tensor | None) -> bool:
    """True if at least one label is a real class (-1 marks images outside the dataset's classes)."""
    return labels is not None and bool((labels >= 0).any())


def nan(proxy: str, reason: str) -> float:
    """NaN, with the reason logged (the only way a proxy may return NaN)."""
    log.warning("%s: NaN because %s", proxy, reason)
    return math.nan


def layers(model: nn.Module) -> list[nn.Module]:
    """The model's Conv2d / Linear modules (the project's layers), in registration order."""
    return [m for m in model.modules() if isinstance(m, LAYER_TYPES)]


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labelled samples (label -1 is ignored)."""
    return F.cross_entropy(logits, labels.to(logits.device), ignore_index=-1)


def zero_grads(model: nn.Module) -> None:
    for p in model.parameters():
        p.grad = None


def first_sample_rows(output: object) -> torch.Tensor | None:
    """The first sample of a module's output as a (channels, positions) matrix; None if not a tensor.

    A vector output of k values becomes a (k, 1) matrix (as MeCo's ``reshape(C, -1)`` does)."""
    if not isinstance(output, torch.Tensor) or output.dim() < 2 or not output.is_floating_point():
        return None
    first = output[0].detach()
    return first.reshape(first.shape[0], -1) if first.dim() else None
