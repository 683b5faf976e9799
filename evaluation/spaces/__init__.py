"""NATS-Bench search spaces: architecture identity (index <-> official string) and network builders."""
from __future__ import annotations

from typing import Protocol

import torch.nn as nn

from evaluation.errors import ZcpError


class SearchSpace(Protocol):
    """What every space offers. Architectures are identified by (space, index), string beside it."""

    name: str
    size: int

    def arch_str(self, index: int) -> str:
        """Official string of architecture ``index``; ZcpError if out of range."""

    def index_of(self, arch: str) -> int:
        """Official index of a (validated) architecture string; ZcpError if malformed."""

    def build(self, arch: int | str, dataset: str) -> nn.Module:
        """The official network for ``dataset``, freshly initialised from torch's global RNG.

        ``forward(x)`` returns logits (N, num_classes)."""


SPACES = ("tss", "sss")


def get_space(name: str) -> SearchSpace:
    """The space called ``name`` ('tss' or 'sss')."""
    if name == "tss":
        from evaluation.spaces.tss import TSS
        return TSS
    if name == "sss":
        from evaluation.spaces.sss import SSS
        return SSS
    raise ZcpError(f"unknown search space {name!r}; known: {', '.join(SPACES)}")


def check_index(space: SearchSpace, index: int) -> int:
    """Return ``index`` if it names an architecture of ``space``, else a one-line error."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < space.size:
        raise ZcpError(f"architecture index {index!r} is outside the {space.name} space (0..{space.size - 1})")
    return index
