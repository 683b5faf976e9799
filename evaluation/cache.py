"""The terminal cache: every sampled network run once, its terminals stored, proxies scored from it.

A cache directory holds ``manifest.json`` (how it was made), one ``shards/<index>.npz`` per finished
architecture while building, and ``terminals/`` (one ``.npy`` per packed array, all networks in
sample order; plain ``.npy`` loads at disk speed) once the build is complete; packing writes it in a
temporary folder renamed into place, then removes the shards. Every file is written atomically, so a build killed at
any point resumes where it stopped with no half-written entry. A directory is refused by a build or
a load that would mix caches made differently (space, dataset, seed, batch, sample, terminals,
backward signal, image source, code). The code is a digest of the modules that make the numbers (the
terminals and their passes, the space's builder, the image loader: :func:`code_roots`), so no cache
outlives an edit of them unnoticed; :func:`recheck_cache` re-runs a few networks of a cache made by
other code and, when they give the cached numbers, marks it as made by this code instead of a rebuild.

Each network is initialised by ``torch.manual_seed(seed)`` right before it is built, so its weights
depend on the seed and the architecture only (not on build order or worker).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluation.atomic import atomic_write_bytes, atomic_write_text, remove_stale_temps
from evaluation.code_digest import code_digest
from evaluation.errors import ZcpError
from evaluation.images import load_batch
from evaluation.parallel import gpu_share, resolve_device, run_tasks
from evaluation.progress import tracked
from evaluation.samples import Sample
from evaluation.spaces import get_space, input_modules
from primitives.terminals import (BASE, DEFAULT, TERMINALS, collate, compute_terminals, labels_problem,
                                  resolve_terminals)
from primitives.types import RowScalar, Vector

RECHECK_RTOL = 1e-6
FORMAT = "zcp-cache/1"
MANIFEST, PACKED, SHARDS = "manifest.json", "terminals", "shards"


@dataclass(frozen=True)
class CacheSpec:
    """Everything that determines the cached numbers."""

    space: str
    dataset: str
    seed: int
    batch_size: int
    sample_sha: str
    terminals: tuple[str, ...]
    signal: str
    image_source: str
    curve_points: int
    code_version: str

    def manifest(self, sample: Sample) -> dict[str, Any]:
        record = {"format": FORMAT, **asdict(self), "terminals": list(self.terminals)}
        record.update(sample_kind=sample.kind, sample_split=sample.split, sample_n=len(sample.indices),
                      torch=torch.__version__)
        return record


def code_roots(space: str) -> tuple[str, ...]:
    """The modules whose code (with the project modules they import) makes a cache's numbers."""
    return "primitives.terminals", *input_modules(space)


def code_version(space: str) -> str:
    """Digest of the code that makes the numbers of a cache of ``space`` (see the module docstring)."""
    return code_digest(*code_roots(space))


def sample_sha(sample: Sample) -> str:
    """Hash of the sample's space and architecture list (what the cache is of)."""
    text = sample.space + ":" + ",".join(map(str, sample.indices))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_manifest(found: dict[str, Any], expected: dict[str, Any], where: Path) -> None:
    keys = [k for k in ("format", *CacheSpec.__dataclass_fields__) if found.get(k) != expected.get(k)]
    if keys:
        k = keys[0]
        fix = (f"`zcp cache recheck {where}` adopts it if this code gives its numbers" if keys == ["code_version"]
               else "use another --out or delete it")
        raise ZcpError(f"cache {where} was made differently: {k} is {found.get(k)!r} there, {expected.get(k)!r} here"
                       f"{' (and ' + ', '.join(keys[1:]) + ')' if keys[1:] else ''}; {fix}")


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        record = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise ZcpError(f"{path} is not a terminal cache (no {MANIFEST})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ZcpError(f"cache manifest {path / MANIFEST} is unreadable ({exc})") from None
    if not isinstance(record, dict):
        raise ZcpError(f"cache manifest {path / MANIFEST} is not a JSON object")
    return record


@dataclass(frozen=True)
class _Job:
    space: str
    dataset: str
    seed: int
    signal: str
    curve_points: int
    terminals: tuple[str, ...]
    device: str


def _build_one(index: int, shared: tuple[_Job, torch.Tensor, torch.Tensor]) -> dict[str, np.ndarray]:
    job, images, labels = shared
    torch.manual_seed(job.seed)
    model = get_space(job.space).build(index, job.dataset).to(job.device)
    return compute_terminals(model, images.to(job.device), job.terminals, labels=labels, signal=job.signal,
                             seed=job.seed, curve_points=job.curve_points)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _corrupt(path: Path, exc: Exception) -> ZcpError:
    return ZcpError(f"cache file {path} is truncated or corrupt ({type(exc).__name__}); delete it and rebuild")


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise _corrupt(path, exc) from None


def _load_packed(folder: Path) -> dict[str, np.ndarray]:
    arrays = {}
    for path in sorted(folder.glob("*.npy")):
        try:
            arrays[path.name[:-4]] = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise _corrupt(path, exc) from None
    return arrays


def _write_packed(folder: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write every array as ``<name>.npy`` into a temporary sibling folder, then rename it into place."""
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmpdir"))
    try:
        for name, array in arrays.items():
            with open(tmp / f"{name}.npy", "wb") as f:
                np.save(f, array, allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, folder)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ZcpError(f"cannot write {folder}: {exc.strerror or exc}") from None
    return folder


def build_cache(sample: Sample, dataset: str, out: str | os.PathLike, *, batch_size: int = 64, seed: int = 0,
                signal: str = "pseudo_ce", image_source: str = "auto", curve_points: int = 64,
                terminals: tuple[str, ...] | None = None, backend: str = "ray", workers: int | None = None,
                address: str | None = None, device: str = "auto", paths: Any = None,
                progress: bool | None = None, gpus_per_task: float | None = None, node_ip: str | None = None) -> Path:
    """Build (or resume) the cache of ``sample`` in ``out``; returns the packed folder's path.

    ``terminals`` are names and ``@group`` names (default ``@base``, the original 48 terminals).
    ``gpus_per_task`` (Ray): GPUs each task asks for (default: a share of one GPU per worker when the
    device is CUDA, else none); asking for GPUs lets ``device`` 'auto'/'cuda' mean the task's GPU even
    when the driver has none (a CPU head node)."""
    out = Path(out)
    try:
        terminals = resolve_terminals(terminals or DEFAULT)
    except ValueError as exc:
        raise ZcpError(str(exc)) from None
    problem = labels_problem(terminals, signal)
    if problem:
        raise ZcpError(problem)
    remote_gpus = backend == "ray" and bool(gpus_per_task)
    device = resolve_device(device, remote_gpus)
    batch = load_batch(dataset, batch_size, seed, image_source, paths)
    spec = CacheSpec(sample.space, dataset, seed, batch_size, sample_sha(sample), terminals, signal,
                     image_source, curve_points, code_version(sample.space))
    expected = spec.manifest(sample)
    if (out / MANIFEST).exists():
        _check_manifest(_read_manifest(out), expected, out)
    else:
        atomic_write_text(out / MANIFEST, json.dumps(expected, indent=1) + "\n")
    if (out / PACKED).exists():
        return out / PACKED
    shard_dir = out / SHARDS
    shard_dir.mkdir(parents=True, exist_ok=True)
    for folder in (out, shard_dir):  # temporary files of a killed build
        remove_stale_temps(folder)
    done = _shards_done(out)
    todo = [i for i in sample.indices if i not in done]
    job = _Job(sample.space, dataset, seed, signal, curve_points, terminals, device)
    if gpus_per_task is None:
        gpus_per_task = gpu_share(device, backend, workers)
    results = run_tasks(_build_one, todo, (job, batch.images, batch.labels), backend, workers, address,
                        gpus_per_task, node_ip=node_ip)
    for index, arrays in tracked(results, len(todo), f"{dataset} cache", progress):
        atomic_write_bytes(shard_dir / f"{index}.npz", _npz_bytes(arrays))
    return pack(out, sample)


def _shards_done(out: Path) -> set[int]:
    return {int(p.stem) for p in (out / SHARDS).glob("*.npz")}


def unbuilt(out: Path, sample: Sample) -> int:
    """How many networks of ``sample`` a build into ``out`` has still to run (0 once it is packed)."""
    return 0 if (out / PACKED).exists() else len(set(sample.indices) - _shards_done(out))


def pack(out: Path, sample: Sample) -> Path:
    """Concatenate all shards in sample order into the packed file, then remove the shards."""
    shards = [_load_npz(out / SHARDS / f"{i}.npz") for i in sample.indices]
    packed = {k: np.concatenate([s[k] for s in shards]) for k in shards[0]}
    packed["index"] = np.asarray(sample.indices, dtype=np.int64)
    path = _write_packed(out / PACKED, packed)
    for i in sample.indices:
        (out / SHARDS / f"{i}.npz").unlink(missing_ok=True)
    (out / SHARDS).rmdir()
    return path


@dataclass(frozen=True)
class Cache:
    """A loaded cache: its manifest and packed arrays; :meth:`env` gives the language values."""

    path: Path
    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def indices(self) -> np.ndarray:
        return self.arrays["index"]

    @property
    def folders(self) -> tuple[Path, ...]:
        """The cache folders it was loaded from (several for a :func:`merge_caches` result)."""
        return tuple(Path(p) for p in self.manifest.get("parts", [self.path]))

    def env(self, names: tuple[str, ...] | None = None, device: str = "cpu") -> dict[str, object]:
        """Language values of the cached terminals (all of them by default)."""
        return collate(self.arrays, names or tuple(self.manifest["terminals"]), device)


def load_cache(path: str | os.PathLike, **expect: Any) -> Cache:
    """Load a complete cache; ``expect`` (e.g. space='tss', dataset='cifar10', seed=0) must match."""
    path = Path(path)
    manifest = _read_manifest(path)
    if not _made_by_this_code(path, manifest):
        raise ZcpError(f"cache {path} was made by other code ({manifest.get('code_version')!r}, this is "
                       f"{code_version(manifest['space'])!r}): `zcp cache recheck {path}` adopts it if this code "
                       "gives its numbers, else rebuild it")
    for key, value in expect.items():
        if manifest.get(key) != value:
            raise ZcpError(f"cache {path} is for {key}={manifest.get(key)!r}, not {value!r}")
    if not (path / PACKED).exists():
        raise ZcpError(f"cache {path} is incomplete: run the same `zcp cache build` again to finish it")
    arrays = _load_packed(path / PACKED)
    missing = [t for t in manifest.get("terminals", []) if t not in arrays]
    if missing or "index" not in arrays or len(arrays["index"]) != manifest.get("sample_n"):
        raise ZcpError(f"cache {path / PACKED} does not match its manifest (missing {', '.join(missing[:3]) or 'rows'})")
    return Cache(path, manifest, arrays)


def _made_by_this_code(path: Path, manifest: dict[str, Any]) -> bool:
    """True when the cache was made by this code, False when by other code; ZcpError for another format."""
    if manifest.get("format") != FORMAT:
        raise ZcpError(f"cache {path} has format {manifest.get('format')!r}, this code reads {FORMAT!r}: rebuild it")
    return manifest.get("code_version") == code_version(manifest.get("space"))


def _network_rows(arrays: dict[str, np.ndarray], position: int) -> dict[str, np.ndarray]:
    """The packed arrays of the network at ``position`` of a packed cache (what its shard held)."""
    layers = arrays["layers"]
    lo, hi = int(layers[:position].sum()), int(layers[:position + 1].sum())
    rows = {"layers": layers[position:position + 1]}
    for name, values in arrays.items():
        if name not in TERMINALS:
            continue
        kind = TERMINALS[name].type
        if kind is Vector:
            lens = arrays[name + ".len"]
            rows[name + ".len"] = lens[lo:hi]
            rows[name] = values[int(lens[:lo].sum()):int(lens[:hi].sum())]
        else:
            rows[name] = values[lo:hi] if kind is RowScalar else values[position:position + 1]
    return rows


def recheck_cache(path: str | os.PathLike, networks: int = 2, *, device: str = "cpu", paths: Any = None) -> int:
    """Adopt a cache made by other code: re-run ``networks`` of its networks (drawn with the cache's seed)
    with this code and, when every terminal equals the cached one (relative :data:`RECHECK_RTOL`), record
    this code's version in its manifest. Returns how many networks were re-run (0: already this code's);
    ZcpError (one line) naming the first terminal that differs."""
    path = Path(path)
    m = _read_manifest(path)
    if _made_by_this_code(path, m):
        return 0
    lacking = [k for k in CacheSpec.__dataclass_fields__ if k not in m]
    if lacking:
        raise ZcpError(f"cache manifest {path / MANIFEST} lacks {', '.join(lacking)}: rebuild the cache")
    if not (path / PACKED).exists():
        raise ZcpError(f"cache {path} is incomplete and was made by other code: delete it and build it again")
    arrays = _load_packed(path / PACKED)
    batch = load_batch(m["dataset"], m["batch_size"], m["seed"], m["image_source"], paths)
    job = _Job(m["space"], m["dataset"], m["seed"], m["signal"], m["curve_points"], tuple(m["terminals"]),
               resolve_device(device))
    count = len(arrays["index"])
    positions = sorted(np.random.default_rng(m["seed"]).choice(count, min(networks, count), replace=False))
    for position in positions:
        index = int(arrays["index"][position])
        new, old = _build_one(index, (job, batch.images, batch.labels)), _network_rows(arrays, position)
        for name in sorted(old):
            if name not in new or new[name].shape != old[name].shape or not np.allclose(
                    new[name], old[name], rtol=RECHECK_RTOL, atol=0, equal_nan=True):
                raise ZcpError(f"cache {path} is not what this code makes: terminal {name} of network {index} "
                               "differs; rebuild it")
    atomic_write_text(path / MANIFEST, json.dumps(m | {"code_version": code_version(m["space"])}, indent=1) + "\n")
    return len(positions)


def cache_parts(terminals: Sequence[str]) -> list[tuple[str, ...]]:
    """``terminals`` split as campaigns cache them: the ``@base`` ones in one part (every campaign over
    @base shares that cache), each other pass in a part of its own, so that adding terminals to a
    campaign runs only their passes. Computing a part alone gives the numbers of computing it with the
    rest: every pass draws from its own seeded generators and leaves the network as it found it."""
    names = resolve_terminals(terminals)
    rest: dict[str, list[str]] = {}
    for name in names:
        if name not in BASE:
            rest.setdefault(TERMINALS[name].pass_, []).append(name)
    return [part for part in (tuple(n for n in names if n in BASE), *map(tuple, rest.values())) if part]


def merge_caches(caches: Sequence[Cache]) -> Cache:
    """One cache holding the terminals of ``caches``: caches of the same networks made the same way
    (the parts of :func:`cache_parts`); ZcpError (one line) when they are not."""
    first = caches[0]
    if len(caches) == 1:
        return first
    made = [k for k in CacheSpec.__dataclass_fields__ if k != "terminals"]
    for other in caches[1:]:
        differ = [k for k in made if other.manifest.get(k) != first.manifest.get(k)]
        if differ:  # sample_sha among them: the same networks in the same order
            raise ZcpError(f"caches {first.path} and {other.path} cannot be merged: {differ[0]} differs")
    layers = np.stack([c.arrays["layers"] for c in caches])
    counted = layers.max(axis=0)
    if not np.all((layers == 0) | (layers == counted)):
        raise ZcpError(f"caches {', '.join(str(c.path) for c in caches)} count different layers for one network:"
                       " they were made by different models")
    arrays = {k: v for c in caches for k, v in c.arrays.items()}
    arrays["layers"] = counted
    terminals = sorted({t for c in caches for t in c.manifest["terminals"]})
    return Cache(first.path, {**first.manifest, "terminals": terminals, "parts": [str(c.path) for c in caches]}, arrays)
