"""NAS-Bench-101 cell specifications: validation, pruning, the module hash, channel split.

A cell is a DAG of at most 7 vertices (input, up to 5 interior ops, output) with at most 9 edges,
given as an upper-triangular 0/1 adjacency matrix and a list of vertex ops. These rules are the
nasbench API's (``nasbench/lib/model_spec.py``, ``graph_util.py``, ``model_builder.py`` of
google-research/nasbench), re-implemented here:

- pruning removes every vertex not on a path from input to output (as ``ModelSpec`` does); the
  space's 423,624 unique cells are the pruned ones;
- the module hash is MD5 over the canonical graph (``graph_util.hash_module``): each vertex starts
  from ``md5(str((out_degree, in_degree, label)))`` (label -1 input, -2 output, else the op's index
  in ``OPS``), then, as many rounds as there are vertices, a vertex's hash becomes the MD5 of its
  sorted in-neighbour hashes, ``|``, its sorted out-neighbour hashes, ``|``, its own hash; the
  module hash is the MD5 of ``str(sorted(vertex hashes))``. Isomorphic cells share it;
- channels: the output's channels are split evenly among the vertices feeding it (the first ones
  get the remainder), and every other interior vertex takes the maximum of the vertices it feeds
  (``compute_vertex_channels``).
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from evaluation.errors import ZcpError

OPS = ("conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3")  # the API's canonical order (hash labels 0, 1, 2)
INPUT, OUTPUT = "input", "output"
MAX_VERTICES, MAX_EDGES = 7, 9


def validate_matrix(adjacency: object) -> np.ndarray:
    """Check an adjacency matrix as the nasbench API does; return it as int8 or a ZcpError naming the problem."""
    try:
        matrix = np.array(adjacency, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise ZcpError(f"NB101 adjacency {adjacency!r} is not a square 0/1 matrix") from None
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
        raise ZcpError(f"NB101 adjacency of shape {matrix.shape} is not a square matrix of >= 2 vertices")
    n = matrix.shape[0]
    if n > MAX_VERTICES:
        raise ZcpError(f"NB101 cell has {n} vertices; at most {MAX_VERTICES} are allowed")
    if not np.isin(matrix, (0, 1)).all():
        raise ZcpError("NB101 adjacency must hold only 0 and 1")
    if np.tril(matrix).any():
        raise ZcpError("NB101 adjacency is not upper-triangular (edges must go from a lower to a higher vertex)")
    if int(matrix.sum()) > MAX_EDGES:
        raise ZcpError(f"NB101 cell has {int(matrix.sum())} edges; at most {MAX_EDGES} are allowed")
    return matrix.astype(np.int8)


def validate_ops(ops: object, n: int) -> tuple[str, ...]:
    """Check the op list of an ``n``-vertex cell; return it as a tuple or a ZcpError naming the problem."""
    if not isinstance(ops, Sequence) or isinstance(ops, str) or len(ops) != n:
        raise ZcpError(f"NB101 ops must be a list of {n} op names (one per vertex), got {ops!r}")
    if ops[0] != INPUT or ops[-1] != OUTPUT:
        raise ZcpError(f"NB101 ops must start with 'input' and end with 'output', got {list(ops)!r}")
    unknown = [op for op in ops[1:-1] if op not in OPS]
    if unknown:
        raise ZcpError(f"NB101 op {unknown[0]!r} is not in the space (known: {', '.join(OPS)})")
    return tuple(ops)


def validate(adjacency: object, ops: object) -> tuple[np.ndarray, tuple[str, ...]]:
    """Check a cell (matrix, then ops); return (int8 matrix, ops) or a ZcpError naming the problem."""
    matrix = validate_matrix(adjacency)
    return matrix, validate_ops(ops, len(matrix))


def prune(matrix: np.ndarray, ops: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Drop vertices not on an input-to-output path; ZcpError if the output cannot be reached."""
    n = len(ops)
    from_input, to_output = {0}, {n - 1}
    for v in range(1, n):
        if any(matrix[u, v] for u in from_input if u < v):
            from_input.add(v)
    for v in range(n - 2, -1, -1):
        if any(matrix[v, w] for w in to_output if w > v):
            to_output.add(v)
    keep = sorted(from_input & to_output)
    if n - 1 not in from_input:
        raise ZcpError("NB101 cell has no path from input to output")
    return matrix[np.ix_(keep, keep)], tuple(ops[v] for v in keep)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def module_hash(matrix: np.ndarray, ops: Sequence[str]) -> str:
    """The nasbench module hash of an already pruned cell (see the module docstring)."""
    n = len(ops)
    labels = [-1] + [OPS.index(op) for op in ops[1:-1]] + [-2]
    ins, outs = matrix.sum(axis=0).tolist(), matrix.sum(axis=1).tolist()
    hashes = [_md5(str((int(outs[v]), int(ins[v]), labels[v]))) for v in range(n)]
    for _ in range(n):
        hashes = [_md5("".join(sorted(hashes[u] for u in range(n) if matrix[u, v])) + "|"
                       + "".join(sorted(hashes[w] for w in range(n) if matrix[v, w])) + "|" + hashes[v])
                  for v in range(n)]
    return _md5(str(sorted(hashes)))


def cell_hash(adjacency: object, ops: object) -> str:
    """Hash of any valid cell, as the nasbench API computes it: validate, prune, hash."""
    return module_hash(*prune(*validate(adjacency, ops)))


def vertex_channels(in_channels: int, out_channels: int, matrix: np.ndarray) -> list[int]:
    """Output channels of every vertex of a pruned cell (the official split, see the module docstring)."""
    n = matrix.shape[0]
    channels = [0] * n
    channels[0], channels[-1] = in_channels, out_channels
    if n == 2:
        return channels
    fan_in = int(matrix[1:, -1].sum())
    share, extra = divmod(out_channels, fan_in)
    for v in range(1, n - 1):
        if matrix[v, -1]:
            channels[v] = share + (1 if extra > 0 else 0)
            extra -= 1
    for v in range(n - 3, 0, -1):
        if not matrix[v, -1]:
            channels[v] = max(channels[w] for w in range(v + 1, n - 1) if matrix[v, w])
    return channels
