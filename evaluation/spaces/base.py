"""What every search space offers and the checks the space modules share (kept apart from
``evaluation.spaces``, whose ``get_space`` names every space, so that a builder's code digest covers
its own space only: ``evaluation.code_digest``)."""
from __future__ import annotations

from typing import Protocol

import torch.nn as nn

from evaluation.datasets import DATASETS, check_dataset
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


def check_index(space: SearchSpace, index: int) -> int:
    """Return ``index`` if it names an architecture of ``space``, else a one-line error."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < space.size:
        raise ZcpError(f"architecture index {index!r} is outside the {space.name} space (0..{space.size - 1})")
    return index


def space_datasets(space: SearchSpace) -> tuple[str, ...]:
    """Datasets with ground truth in ``space``: all three NATS-Bench ones, unless the space says fewer (NB101)."""
    return getattr(space, "datasets", DATASETS)


def check_space_dataset(space: SearchSpace, dataset: str) -> str:
    """Return ``dataset`` if ``space`` has ground truth for it, else a one-line error."""
    known = space_datasets(space)
    if check_dataset(dataset) not in known:
        raise ZcpError(f"the {space.name} space has ground truth for {', '.join(known)} only, not {dataset!r}")
    return dataset
