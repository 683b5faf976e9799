"""Score one network with a proxy: the runtime shared by the Python API and exported proxy files.

A proxy is a *program* (language values of one network -> its (1,) float64 score) plus the names of
the terminals it reads. :func:`score_network` checks the arguments, computes exactly those terminals
with :func:`primitives.terminals.compute_terminals` (so only the passes they need run), collates them
as the terminal cache does, runs the program and returns the score. Every problem with the model or
the inputs is a one-line ``ValueError`` (``layers.ModelError``), including an exception raised by
the model's own forward. Torch only, like the modules it uses, so that an exported
proxy file can carry this code unchanged.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn as nn

from primitives.layers import ModelError, Output
from primitives.terminals import SIGNALS, collate, compute_terminals
from primitives.types import Value

Program = Callable[[Mapping[str, Value]], torch.Tensor]


def check_model_inputs(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor | None = None) -> None:
    """Raise a one-line ModelError unless ``model`` and ``inputs`` (and ``labels``) can be scored."""
    if not isinstance(model, nn.Module):
        raise ModelError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        raise ModelError(f"inputs must be a floating-point torch.Tensor, got {_describe(inputs)}")
    if inputs.ndim < 2 or inputs.shape[0] < 2:
        raise ModelError(f"inputs must be a batch of at least 2 samples (B, ...), got shape {tuple(inputs.shape)}")
    if not torch.isfinite(inputs).all():
        raise ModelError("inputs hold NaN or infinite values")
    devices = {p.device for p in model.parameters()}
    if not devices:
        raise ModelError(f"the model ({type(model).__name__}) has no parameters: there is nothing to score")
    if devices != {inputs.device}:
        where = ", ".join(sorted(map(str, devices)))
        raise ModelError(f"the model is on {where} but the inputs are on {inputs.device}: move one of them")
    if labels is not None and (not isinstance(labels, torch.Tensor) or labels.shape != inputs.shape[:1]):
        raise ModelError(f"labels must be a tensor of {inputs.shape[0]} class indices, got {_describe(labels)}")


def check_arguments(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor | None, signal: str) -> None:
    """:func:`check_model_inputs`, and a known backward ``signal``."""
    check_model_inputs(model, inputs, labels)
    if signal not in SIGNALS:
        raise ModelError(f"unknown backward signal {signal!r}; known: {', '.join(SIGNALS)}")


def model_failed(inputs: torch.Tensor, exc: BaseException) -> ModelError:
    """The one-line error for an exception raised by a model's own forward (or backward) pass."""
    lines = str(exc).strip().splitlines()
    return ModelError(f"the model failed on inputs of shape {tuple(inputs.shape)}: {type(exc).__name__}: "
                      f"{lines[0] if lines else 'no message'}")


def score_network(model: nn.Module, inputs: torch.Tensor, terminals: Iterable[str], program: Program, *,
                  labels: torch.Tensor | None = None, signal: str = "pseudo_ce", seed: int = 0,
                  curve_points: int = 64, output: Output = None) -> float:
    """The proxy's score of ``model`` on ``inputs``; the options are those of ``compute_terminals``.

    The model's weights, buffers, gradients and training flag are left as they were found."""
    check_arguments(model, inputs, labels, signal)
    names = sorted(terminals)
    try:
        packed = compute_terminals(model, inputs, names, labels=labels, signal=signal, seed=seed,
                                   curve_points=curve_points, output=output)
    except ModelError:
        raise
    except Exception as exc:  # raised by the model's own forward or backward pass
        raise model_failed(inputs, exc) from None
    return float(program(collate(packed, names))[0])


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
