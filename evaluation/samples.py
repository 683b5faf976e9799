"""Disjoint search / held-out splits of a space, samplers over them, and sample files.

Split: architecture indices are permuted with ``numpy.random.default_rng(split_seed)``; the first
``round(size * heldout_fraction)`` of the permutation are held out, the rest are the search split.
The split depends on the space alone (not the dataset), so one split serves every dataset and a
proxy evolved on the search split never saw a held-out architecture on any dataset.

Samplers (all draw with ``numpy.random.default_rng(seed)``, without replacement, from one split):

- ``random``: ``n`` uniform architectures;
- ``stratified``: ``k`` equal-width bins of ground-truth accuracy between the split's min and max,
  ``n // k`` from each (the first ``n % k`` bins one more); a bin with too few members gives all it
  has, and a note says so (the sample is then smaller than ``n``);
- ``quantile``: ``k`` equal-count bins (by accuracy rank), ``n // k`` from each likewise.

A sample file is JSON: how it was drawn plus ``[index, arch]`` pairs, so any experiment can re-run on
exactly the same architectures; reading it checks every pair against the space.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from evaluation.atomic import atomic_write_text
from evaluation.errors import ZcpError
from evaluation.jsonfile import read_json_record
from evaluation.spaces import SearchSpace, get_space

KINDS = ("random", "stratified", "quantile")
SPLITS = ("search", "heldout", "all")
FORMAT = "zcp-sample/1"


def split_indices(size: int, split: str, split_seed: int = 0, heldout_fraction: float = 0.5) -> np.ndarray:
    """Sorted official indices of ``split`` ('search', 'heldout' or 'all') of a space of ``size``."""
    if split not in SPLITS:
        raise ZcpError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    if not 0.0 < heldout_fraction < 1.0:
        raise ZcpError(f"heldout fraction must be in (0, 1), got {heldout_fraction}")
    if split == "all":
        return np.arange(size)
    order = np.random.default_rng(split_seed).permutation(size)
    n_heldout = round(size * heldout_fraction)
    part = order[:n_heldout] if split == "heldout" else order[n_heldout:]
    return np.sort(part)


def _binned_draw(rng: np.random.Generator, pool: np.ndarray, bin_of: np.ndarray, k: int, n: int) -> tuple[np.ndarray, list[str]]:
    """Draw ``n // k`` (+1 for the first ``n % k``) members of each of ``k`` bins."""
    chosen, notes = [], []
    for b in range(k):
        members = pool[bin_of == b]
        want = n // k + (1 if b < n % k else 0)
        if len(members) < want:
            notes.append(f"bin {b} has {len(members)} < {want} architectures: took all of them")
            want = len(members)
        chosen.append(rng.choice(members, size=want, replace=False))
    return np.concatenate(chosen), notes


def draw(pool: np.ndarray, kind: str, n: int, seed: int, accuracy: np.ndarray | None = None,
         bins: int = 10) -> tuple[np.ndarray, list[str]]:
    """Draw up to ``n`` indices from ``pool``; ``accuracy`` (by official index) for binned kinds.

    Returns the sorted indices and notes about bins that were short."""
    if kind not in KINDS:
        raise ZcpError(f"unknown sample kind {kind!r}; known: {', '.join(KINDS)}")
    if n < 1:
        raise ZcpError(f"sample size must be >= 1, got {n}")
    if bins < 1:
        raise ZcpError(f"number of bins must be >= 1, got {bins}")
    rng = np.random.default_rng(seed)
    if kind == "random":
        if n > len(pool):
            raise ZcpError(f"cannot draw {n} architectures from a split of {len(pool)}")
        return np.sort(rng.choice(pool, size=n, replace=False)), []
    if accuracy is None:
        raise ZcpError(f"a {kind} sample needs ground-truth accuracy")
    acc = accuracy[pool]
    known = ~np.isnan(acc)
    pool, acc = pool[known], acc[known]
    if kind == "stratified":
        edges = np.linspace(acc.min(), acc.max(), bins + 1)
        bin_of = np.clip(np.searchsorted(edges, acc, side="right") - 1, 0, bins - 1)
    else:
        ranks = np.argsort(np.argsort(acc, kind="stable"), kind="stable")
        bin_of = ranks * bins // len(acc)
    chosen, notes = _binned_draw(rng, pool, bin_of, bins, n)
    return np.sort(chosen), notes


@dataclass(frozen=True)
class Sample:
    """A drawn set of architectures and how it was drawn (enough to draw it again)."""

    space: str
    dataset: str | None
    split: str
    split_seed: int
    heldout_fraction: float
    kind: str
    n: int
    seed: int
    bins: int
    indices: tuple[int, ...]
    archs: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> str:
        record = {"format": FORMAT, **asdict(self)}
        record["architectures"] = [[i, a] for i, a in zip(record.pop("indices"), record.pop("archs"))]
        return json.dumps(record, indent=1)


def make_sample(space: SearchSpace, kind: str, n: int, seed: int, split: str = "search",
                dataset: str | None = None, accuracy: np.ndarray | None = None, split_seed: int = 0,
                heldout_fraction: float = 0.5, bins: int = 10) -> Sample:
    """Draw a sample from ``split`` of ``space``; binned kinds need ``dataset`` and its ``accuracy``."""
    pool = split_indices(space.size, split, split_seed, heldout_fraction)
    indices, notes = draw(pool, kind, n, seed, accuracy, bins)
    return Sample(space.name, dataset, split, split_seed, heldout_fraction, kind, n, seed, bins,
                  tuple(int(i) for i in indices), tuple(space.arch_str(int(i)) for i in indices), tuple(notes))


SUBSET = "uniform subset"


def _subset_note(sample: Sample, seed: int) -> str:
    return f"{SUBSET} (seed {seed}) of a {sample.kind} sample of {len(sample.indices)} drawn with seed {sample.seed}"


def subsample(sample: Sample, n: int, seed: int, keep: Sample | None = None) -> Sample:
    """``n`` architectures drawn uniformly (``default_rng(seed)``) from ``sample``: nested samples for
    measuring cheap and expensive proxies on the same networks. ``keep``, an earlier uniform subset of
    ``sample``, is held whole and the rest drawn from the other networks (still a uniform subset), so
    a study grows without re-scoring the networks it has."""
    if not 1 <= n <= len(sample.indices):
        raise ZcpError(f"a subsample needs 1..{len(sample.indices)} architectures, got {n}")
    held = np.zeros(len(sample.indices), dtype=bool)
    note = _subset_note(sample, seed)
    if keep is not None:
        if not keep.notes or not keep.notes[-1].startswith(_subset_note(sample, keep.seed)):
            raise ZcpError(f"the sample to keep is no uniform subset of this {sample.kind} sample of "
                           f"{len(sample.indices)} (its notes: {'; '.join(keep.notes) or 'none'})")
        row = {index: r for r, index in enumerate(sample.indices)}
        outside = [i for i in keep.indices if i not in row]
        if outside or keep.space != sample.space:
            raise ZcpError(f"the sample to keep holds {len(outside) or len(keep.indices)} {keep.space} architectures "
                           f"outside this {sample.space} sample")
        held[[row[i] for i in keep.indices]] = True
        if n <= len(keep.indices):
            raise ZcpError(f"a subsample keeping {len(keep.indices)} architectures needs more than that, got {n}")
        note += f", holding the {len(keep.indices)} of the subset drawn with seed {keep.seed}"
    drawn = np.random.default_rng(seed).choice(np.flatnonzero(~held), n - held.sum(), replace=False)
    rows = np.sort(np.concatenate([np.flatnonzero(held), drawn]))
    return replace(sample, kind="random", n=n, seed=seed, indices=tuple(sample.indices[i] for i in rows),
                   archs=tuple(sample.archs[i] for i in rows), notes=(*sample.notes, note))


def described(sample: Sample) -> str:
    """How ``sample`` was drawn, for report titles: its kind and seed, or, for a subset, the subsets it
    was taken through, first to last (a subset of a stratified sample is no random sample of the space)."""
    subsets = [note for note in sample.notes if note.startswith(SUBSET)]
    return "; ".join(subsets) if subsets else f"{sample.kind} sample, seed {sample.seed}"


def write_sample(sample: Sample, path: str | os.PathLike) -> Path:
    """Write ``sample`` as JSON, atomically."""
    return atomic_write_text(path, sample.to_json() + "\n")


_FIELDS = ("space", "dataset", "split", "split_seed", "heldout_fraction", "kind", "n", "seed", "bins")


def _mismatch(space: SearchSpace, index: int, arch: object) -> str:
    """Why ``[index, arch]`` is not an architecture of ``space``: the string's problem, else the index's."""
    try:
        found = space.index_of(arch)  # type: ignore[arg-type]
    except ZcpError as exc:
        return str(exc)
    if not 0 <= index < space.size:
        return f"index {index} is outside 0..{space.size - 1}"
    return f"{arch!r} is index {found}, index {index} is {space.arch_str(index)!r}"


def read_sample(path: str | os.PathLike, space: str | None = None) -> Sample:
    """Read and validate a sample file; ``space`` (if given) must match the file's."""
    path = Path(path)
    record = read_json_record(path, "sample file", FORMAT, "zcp sample")
    missing = [k for k in (*_FIELDS, "architectures") if k not in record]
    if missing:
        raise ZcpError(f"sample file {path} lacks field(s): {', '.join(missing)}")
    file_space = get_space(record["space"])
    if space is not None and record["space"] != space:
        raise ZcpError(f"sample file {path} is from space {record['space']!r}, not {space!r}")
    pairs = record["architectures"]
    if not isinstance(pairs, list) or not pairs:
        raise ZcpError(f"sample file {path} lists no architectures")
    indices, archs = [], []
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], int) and not isinstance(pair[0], bool)):
            raise ZcpError(f"sample file {path}: entry {pair!r} is not an [index, arch] pair")
        index, arch = pair
        if not 0 <= index < file_space.size or file_space.arch_str(index) != arch:
            raise ZcpError(f"sample file {path} names architecture [{index}, {arch!r}], which is not in the "
                           f"{file_space.name} space ({_mismatch(file_space, index, arch)})")
        indices.append(index)
        archs.append(arch)
    if len(set(indices)) != len(indices):
        raise ZcpError(f"sample file {path} lists an architecture twice")
    kwargs = {k: record[k] for k in _FIELDS}
    return Sample(**kwargs, indices=tuple(indices), archs=tuple(archs), notes=tuple(record.get("notes", ())))
