"""NATS-Bench topology search space (TSS, = NAS-Bench-201): 5 ops on 6 cell edges, 15,625 cells.

Official index order: all genotypes in ``itertools.product(CELL_OPS, repeat=6)`` order (edges
1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2, first edge most significant), then ``random.seed(88);
random.shuffle`` -- how NAS-Bench-201 generated its meta list. The test suite checks this against
every row of the official table.
"""
from __future__ import annotations

import itertools
import random
from functools import cached_property

import torch.nn as nn

from evaluation.datasets import NUM_CLASSES, check_dataset
from evaluation.errors import ZcpError
from evaluation.spaces.base import check_index
from evaluation.spaces.cells import CELL_OPS, Genotype, TinyNetwork

C, N = 16, 5  # the benchmark's channels and cells per stage


def arch_to_str(genotype: Genotype) -> str:
    """Official string of a genotype."""
    return "+".join("|" + "|".join(f"{op}~{src}" for op, src in node) + "|" for node in genotype)


def parse_arch(arch: str) -> Genotype:
    """Validate an official TSS string and return its genotype; ZcpError naming the problem.

    Only the exact official spelling is accepted (no surrounding whitespace), like SSS strings."""
    if not isinstance(arch, str):
        raise ZcpError(f"architecture must be a string, got {type(arch).__name__}")
    nodes = arch.split("+")
    if len(nodes) != 3:
        raise ZcpError(f"malformed TSS architecture {arch!r}: expected 3 nodes separated by '+', got {len(nodes)}")
    genotype = []
    for j, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")) or len(node) < 2:
            raise ZcpError(f"malformed TSS architecture {arch!r}: node {j} {node!r} must look like |op~i|...|")
        edges = node[1:-1].split("|")
        if len(edges) != j:
            raise ZcpError(f"malformed TSS architecture {arch!r}: node {j} needs {j} inputs, got {len(edges)}")
        parsed = []
        for i, edge in enumerate(edges):
            op, sep, src = edge.partition("~")
            if op not in CELL_OPS:
                raise ZcpError(f"malformed TSS architecture {arch!r}: unknown op {op!r} (known: {', '.join(CELL_OPS)})")
            if sep != "~" or src != str(i):
                raise ZcpError(f"malformed TSS architecture {arch!r}: edge {edge!r} of node {j} must read {op}~{i}")
            parsed.append((op, i))
        genotype.append(tuple(parsed))
    return tuple(genotype)


class TopologySpace:
    """The TSS space: index <-> string in the official order, and the official networks."""

    name = "tss"
    size = len(CELL_OPS) ** 6

    @cached_property
    def _archs(self) -> list[str]:
        template = "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|"
        archs = [template.format(*ops) for ops in itertools.product(CELL_OPS, repeat=6)]
        random.Random(88).shuffle(archs)
        return archs

    @cached_property
    def _index(self) -> dict[str, int]:
        return {a: i for i, a in enumerate(self._archs)}

    def arch_str(self, index: int) -> str:
        return self._archs[check_index(self, index)]

    def index_of(self, arch: str) -> int:
        return self._index[arch_to_str(parse_arch(arch))]

    def build(self, arch: int | str, dataset: str) -> nn.Module:
        """The official TinyNetwork (C=16, N=5) for ``dataset``."""
        genotype = parse_arch(self.arch_str(arch) if isinstance(arch, int) else arch)
        widths = [C] * N + [2 * C] + [2 * C] * N + [4 * C] + [4 * C] * N
        reductions = [False] * N + [True] + [False] * N + [True] + [False] * N
        return TinyNetwork(genotype, widths, reductions, NUM_CLASSES[check_dataset(dataset)], stem_width=C)


TSS = TopologySpace()
