"""NATS-Bench size search space (SSS): one fixed cell, 5 layer widths from {8, 16, ..., 64}, 32,768 networks.

An architecture is a channel string such as ``8:16:24:32:64``: the widths of the 5 layers
cell, residual block, cell, residual block, cell (the stem has the first layer's width).

Official index order: the benchmark's ``meta_archs`` list is built by ``traverse_net`` in
AutoDL-Projects ``exps/NATS-Bench/main-sss.py`` / ``sss-collect.py``: nested loops over the
candidates 8..64 for layer 1, then 2, ... 5, with NO shuffle (unlike TSS). That is
``itertools.product(CANDIDATES, repeat=5)`` order, the first layer most significant: index 0 is
``8:8:8:8:8``, 32767 is ``64:64:64:64:64``. The official notebook NATS-Bench/notebooks/issue-21.ipynb,
run on the real archive, shows ``api.get_net_config(12, 'cifar10')`` giving channels ``8:8:8:16:40``,
which is index 12 in this order.
"""
from __future__ import annotations

import torch.nn as nn

from evaluation.datasets import NUM_CLASSES, check_dataset
from evaluation.errors import ZcpError
from evaluation.spaces.base import check_index
from evaluation.spaces.cells import Genotype, TinyNetwork

CANDIDATES = (8, 16, 24, 32, 40, 48, 56, 64)
NUM_LAYERS = 5
# The best TSS cell on CIFAR-100 validation (TSS index 9930), fixed for every SSS network.
GENOTYPE: Genotype = (
    (("nor_conv_3x3", 0),),
    (("nor_conv_3x3", 0), ("nor_conv_3x3", 1)),
    (("skip_connect", 0), ("nor_conv_3x3", 1), ("nor_conv_3x3", 2)),
)
REDUCTIONS = (False, True, False, True, False)  # layers 2 and 4 are stride-2 residual blocks

_CANDIDATE_TEXT = ", ".join(map(str, CANDIDATES))


def parse_channels(arch: str) -> tuple[int, ...]:
    """Validate an SSS channel string and return its 5 widths; ZcpError naming the string and problem.

    Only the canonical spelling is accepted (no whitespace, signs or leading zeros), so that every
    accepted string is exactly the official one.
    """
    if not isinstance(arch, str):
        raise ZcpError(f"SSS architecture must be a channel string like '8:16:24:32:64', got {type(arch).__name__}")
    if any(ch.isspace() for ch in arch):
        raise ZcpError(f"malformed SSS architecture {arch!r}: contains whitespace")
    parts = arch.split(":")
    if len(parts) != NUM_LAYERS:
        raise ZcpError(f"malformed SSS architecture {arch!r}: expected {NUM_LAYERS} channel counts "
                       f"separated by ':', got {len(parts)}")
    channels = []
    for part in parts:
        if not (part.isascii() and part.isdigit()) or (len(part) > 1 and part[0] == "0"):
            raise ZcpError(f"malformed SSS architecture {arch!r}: channel count {part!r} is not a plain integer")
        if int(part) not in CANDIDATES:
            raise ZcpError(f"malformed SSS architecture {arch!r}: channel count {part} is not one of {_CANDIDATE_TEXT}")
        channels.append(int(part))
    return tuple(channels)


def channels_to_str(channels: tuple[int, ...]) -> str:
    """Official string of a width tuple."""
    return ":".join(map(str, channels))


class SizeSpace:
    """The SSS space: index <-> channel string in the official order, and the official networks."""

    name = "sss"
    size = len(CANDIDATES) ** NUM_LAYERS

    def arch_str(self, index: int) -> str:
        """Official string of ``index``: its base-8 digits, most significant first, pick the widths."""
        index = check_index(self, index)
        digits = []
        for _ in range(NUM_LAYERS):
            index, digit = divmod(index, len(CANDIDATES))
            digits.append(digit)
        return channels_to_str(tuple(CANDIDATES[d] for d in reversed(digits)))

    def index_of(self, arch: str) -> int:
        """Official index of a channel string (the inverse of ``arch_str``)."""
        index = 0
        for width in parse_channels(arch):
            index = index * len(CANDIDATES) + CANDIDATES.index(width)
        return index

    def build(self, arch: int | str, dataset: str) -> nn.Module:
        """The official network (xautodl's ``DynamicShapeTinyNet``) for ``arch`` and ``dataset``.

        stem (3x3 conv + BN, width c1) -> cell(c1->c1) -> block(c1->c2, /2) -> cell(c2->c3)
        -> block(c3->c4, /2) -> cell(c4->c5) -> BN-ReLU -> global average pool -> Linear(c5, classes).
        Modules are created in the official order, so a given torch seed gives the official weights.
        """
        channels = parse_channels(self.arch_str(arch) if isinstance(arch, int) else arch)
        return TinyNetwork(GENOTYPE, list(channels), list(REDUCTIONS), NUM_CLASSES[check_dataset(dataset)],
                           stem_width=channels[0])


SSS = SizeSpace()
