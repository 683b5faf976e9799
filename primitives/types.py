"""The value types of the proxy language, vectorised over many networks at once.

A value holds one entry per *row*. Rows are either the layers of a batch of networks (per-layer
terminals) or the networks themselves (network-level terminals such as a layer-summed kernel).
:class:`Rows` says which: ``seg[r]`` is the network of row ``r`` and ``pos[r]`` its relative depth
in [0, 1]. A network-rows value combined with a layer-rows value is broadcast to every layer of its
network, so ``add(act_sv, logit_std)`` is well defined.

Types (the GP's type system; a tree's root is a :class:`NetScalar`):

- :class:`Matrix` (``n x n`` per row, float64): sample x sample kernels;
- :class:`Vector` (ragged per row, padded with a mask): spectra and other per-layer vectors;
- :class:`RowScalar`: one number per row (the "per-layer scalar");
- :class:`NetScalar`: one number per network.

Why not per-layer matrices: a B x B kernel per layer for ~44 layers x 1,000 networks is ~2 MB per
network and 44,000 eigen-decompositions per candidate; per-layer spectra are stored instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch

DTYPE = torch.float64
BIG = 1e150
"""Every value lies in [-BIG, BIG] (or is NaN), so a product of two values never overflows."""
TINY = 1.0 / BIG
"""Magnitudes below TINY count as zero for the protected operations."""


@dataclass(frozen=True, eq=False)
class Rows:
    """Row layout: ``seg`` (R,) network index of each row, ``pos`` (R,) relative depth, ``n`` networks."""

    seg: torch.Tensor
    pos: torch.Tensor
    n: int

    @property
    def is_network(self) -> bool:
        """True when there is exactly one row per network, in network order."""
        return len(self.seg) == self.n and bool(torch.equal(self.seg, torch.arange(self.n, device=self.seg.device)))

    @staticmethod
    def networks(n: int, device: torch.device | str = "cpu") -> Rows:
        return Rows(torch.arange(n, device=device), torch.zeros(n, dtype=DTYPE, device=device), n)

    @staticmethod
    def from_counts(counts: list[int], device: torch.device | str = "cpu") -> Rows:
        """Layer rows for networks with ``counts[i]`` layers each (depth i/(L-1), 0 for L=1)."""
        seg = torch.repeat_interleave(torch.arange(len(counts), device=device), torch.tensor(counts, device=device))
        pos = torch.cat([torch.linspace(0, 1, c, dtype=DTYPE, device=device) if c > 1
                         else torch.zeros(c, dtype=DTYPE, device=device) for c in counts])
        return Rows(seg, pos, len(counts))


@dataclass(frozen=True, eq=False)
class Matrix:
    """``data`` (R, n, n) float64, one square matrix per row."""

    data: torch.Tensor
    rows: Rows


@dataclass(frozen=True, eq=False)
class Vector:
    """``data`` (R, K) float64 with ``mask`` (R, K) bool marking the real entries (ragged rows)."""

    data: torch.Tensor
    mask: torch.Tensor
    rows: Rows


@dataclass(frozen=True, eq=False)
class RowScalar:
    """``data`` (R,) float64: one number per row (per layer, or per network for network rows)."""

    data: torch.Tensor
    rows: Rows


@dataclass(frozen=True, eq=False)
class NetScalar:
    """``data`` (N,) float64: one number per network; the type of every proxy's root."""

    data: torch.Tensor


TYPES = (Matrix, Vector, RowScalar, NetScalar)
Value = Union[Matrix, Vector, RowScalar, NetScalar]


def clamp_value(value: Value) -> Value:
    """``value`` with its data clamped into [-BIG, BIG] (NaN stays NaN, +-inf becomes +-BIG)."""
    data = value.data.clamp(-BIG, BIG)
    if isinstance(value, NetScalar):
        return NetScalar(data)
    if isinstance(value, Vector):
        return Vector(data, value.mask, value.rows)
    return type(value)(data, value.rows)


def value_bytes(value: Value) -> int:
    """Bytes of a value's data (and mask); its Rows are not counted (values share them with their inputs)."""
    size = value.data.numel() * value.data.element_size()
    if isinstance(value, Vector):
        size += value.mask.numel() * value.mask.element_size()
    return size


def constant_value(value: float, type_: type, networks: Rows) -> NetScalar | RowScalar:
    """A constant of a scalar type on network rows (one entry per network)."""
    data = torch.full((networks.n,), value, dtype=DTYPE, device=networks.seg.device)
    return NetScalar(data) if type_ is NetScalar else RowScalar(data, networks)
