"""Score every network of a sample with one proxy (zoo name or exported ``.py`` file), with a score cache.

Each network is built after ``torch.manual_seed(seed)`` (as the terminal cache does), so its score
depends on (proxy, network, data, seed, options) only, never on order or worker; serial and Ray runs
give the same numbers. On a CUDA device the network is built there (a 20M-parameter NB101 network
takes 0.4 s to initialise on one CPU core): its weights come from CUDA's generator, so its scores are
not the CPU's and are cached apart, but they are as deterministic. Scores are cached in
``<cache_dir>/<proxy>-<key>.json``, one file per (proxy and its code: an exported file's bytes or a zoo
proxy's module with the project modules it imports; the space's builder and the image loader, with
theirs; space, dataset, image source, batch size, seed, options, device) holding one
entry per architecture index, so a re-run on the same or an overlapping sample computes only what is
new. The file is rewritten atomically every few networks while scoring, so an interrupted run loses
at most that much work; each write merges what is on disk under a file lock, so concurrent runs on
parts of a sample (or overlapping samples) add up instead of overwriting each other. Scores made
elsewhere (an earlier comparison's ``scores.csv``) can stand in for networks not in the cache, once a few
of them are scored again here and found equal; they never enter the cache.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluation.atomic import atomic_write_text
from evaluation.code_digest import code_digest
from evaluation.errors import ZcpError
from evaluation.images import load_batch
from evaluation.parallel import device_kind, gpu_share, resolve_device, run_tasks
from evaluation.progress import tracked
from evaluation.proxies import Proxy, get_proxy
from evaluation.proxies.base import has_labels
from evaluation.samples import Sample
from evaluation.spaces import get_space, input_modules
from gp.export.load import load_exported

FORMAT = "zcp-scores/1"
CHECKPOINT_EVERY = 20  # networks between cache rewrites
RECHECK_RTOL = 1e-6  # scores made elsewhere must match this run's within this relative tolerance


def _is_file(ref: str) -> bool:
    return ref.endswith(".py") or os.sep in ref


def resolve(ref: str) -> tuple[Proxy, str]:
    """The proxy named ``ref`` (zoo name or path of a ``.py`` file) and its identity for the cache."""
    if not _is_file(ref):
        proxy = get_proxy(ref)
        return proxy, f"{ref}:{code_digest(proxy.fn.__module__)}"
    fn = load_exported(ref)
    digest = hashlib.sha256(Path(ref).read_bytes()).hexdigest()[:16]

    def call(model: torch.nn.Module, images: torch.Tensor, labels: Any, gen: torch.Generator, **options: Any) -> float:
        return fn(model, images, **options)

    return Proxy(Path(ref).stem, call, False, fn.__doc__ or ""), f"file:{digest}"


@dataclass(frozen=True)
class ScoreSpec:
    """Everything that determines a score besides the network."""

    proxy: str
    space: str
    dataset: str
    image_source: str
    batch_size: int
    seed: int
    inputs_code: str  # digest of the space's builder and the image loader (see ``inputs_code``)
    options: tuple[tuple[str, Any], ...] = ()
    device: str = "cpu"  # 'cpu' or 'cuda'

    def record(self) -> dict[str, Any]:
        """The spec as the cache file stores it (a CPU spec omits the device, as caches made before
        scores could run on CUDA did)."""
        fields = json.loads(json.dumps(asdict(self)))
        if fields["device"] == "cpu":
            del fields["device"]
        return fields

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.record(), sort_keys=True).encode()).hexdigest()[:12]


def inputs_code(space: str) -> str:
    """Digest of the code that makes what a proxy sees: the space's network builder and the image loader."""
    return code_digest(*input_modules(space))


@dataclass
class Scores:
    """Scores of one proxy on a sample, in sample order (components only for set-level proxies);
    ``scored``: how many of them this call computed (the rest came from the score cache or, ``imported``
    of them, from scores made elsewhere; their seconds are NaN)."""

    proxy: str
    indices: np.ndarray
    values: np.ndarray
    seconds: np.ndarray
    components: dict[str, np.ndarray] = field(default_factory=dict)
    scored: int = 0
    imported: int = 0


@dataclass(frozen=True)
class _Job:
    ref: str
    space: str
    dataset: str
    seed: int
    options: tuple[tuple[str, Any], ...]
    device: str = "cpu"
    source: str = ""  # an exported proxy file's text: workers on other machines cannot read the driver's path


_RESOLVED: dict[str, Proxy] = {}


def _worker_copy(job: _Job) -> str:
    """The job's exported proxy file written on this worker (same name and bytes, so same identity)."""
    digest = hashlib.sha256(job.source.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / "zcp-proxies" / digest / Path(job.ref).name
    if not path.exists():
        atomic_write_text(path, job.source)
    return str(path)


def _score_one(index: int, shared: tuple[_Job, torch.Tensor, torch.Tensor | None]) -> dict[str, Any]:
    job, images, labels = shared
    if job.ref not in _RESOLVED:
        _RESOLVED[job.ref] = resolve(_worker_copy(job) if job.source else job.ref)[0]
    proxy = _RESOLVED[job.ref]
    torch.manual_seed(job.seed)
    with nullcontext() if job.device == "cpu" else torch.device(job.device):
        model = get_space(job.space).build(index, job.dataset)
    images, labels = images.to(job.device), labels if labels is None else labels.to(job.device)
    start = time.perf_counter()
    result = proxy.score(model, images, labels, seed=job.seed, **dict(job.options))
    seconds = time.perf_counter() - start
    if isinstance(result, dict):
        return {"components": result, "seconds": seconds}
    return {"value": result, "seconds": seconds}


def _read_cache(path: Path, spec: ScoreSpec) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ZcpError(f"score cache {path} is unreadable ({exc}); delete it") from None
    if record.get("format") != FORMAT or record.get("spec") != spec.record():
        raise ZcpError(f"score cache {path} was made for other settings; delete it")
    return record["scores"]


def _write_cache(path: Path, spec: ScoreSpec, entries: dict[str, Any]) -> None:
    """Merge ``entries`` into the cache file under a lock, so concurrent runs (e.g. on two halves of a
    sample) never drop each other's networks; ``entries`` gains what the others wrote."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries.update({k: v for k, v in _read_cache(path, spec).items() if k not in entries})
        atomic_write_text(path, json.dumps({"format": FORMAT, "spec": spec.record(), "scores": entries}) + "\n")


def same_entry(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two score entries agree: the value, or every component, within ``RECHECK_RTOL``."""
    def values(entry: Mapping[str, Any]) -> np.ndarray:
        parts = entry.get("components")
        return np.array([entry["value"]] if parts is None else [parts[k] for k in sorted(parts)], dtype=np.float64)

    x, y = values(a), values(b)
    return x.shape == y.shape and bool(np.allclose(x, y, rtol=RECHECK_RTOL, atol=0.0, equal_nan=True))


def _recheck(name: str, index: str, here: Mapping[str, Any], there: Mapping[str, Any], source: str) -> None:
    if not same_entry(here, there):
        shown = {k: v for k, v in here.items() if k != "seconds"}
        raise ZcpError(f"{name}: network {index} scores {shown} in this run but {there} in {source}: "
                       "those scores were made with other settings (batch, seed, images, device or proxy code)")


def score_sample(ref: str, sample: Sample, dataset: str, cache_dir: str | os.PathLike, *, batch_size: int = 64,
                 seed: int = 0, image_source: str = "auto", options: Mapping[str, Any] | None = None,
                 backend: str = "serial", workers: int | None = None, address: str | None = None,
                 paths: Any = None, progress: bool | None = None, node_ip: str | None = None,
                 device: str = "cpu", prior: Mapping[int, Mapping[str, Any]] | None = None,
                 prior_source: str = "", recheck: int = 2) -> Scores:
    """Scores of proxy ``ref`` on every network of ``sample`` (cached; see the module docstring);
    ``device``: 'cpu', 'cuda', 'cuda:N' or 'auto' (a GPU is needed only for networks not yet cached).
    ``prior``: entries (``{"value": v}`` or ``{"components": {...}}``) made elsewhere (``prior_source``)
    for networks of the sample. Until ``recheck`` of them (or all) are compared with this run's scores, those
    the cache holds first, others (evenly spread, first in line) are scored again; the rest are taken."""
    proxy, identity = resolve(ref)
    batch = load_batch(dataset, batch_size, seed, image_source, paths)
    labels = batch.labels if batch.source != "gaussian" and has_labels(batch.labels) else None
    if proxy.needs_labels and labels is None:
        raise ZcpError(f"proxy {proxy.name} needs labels, but {batch.source} images of {dataset} have none")
    opts = tuple(sorted((options or {}).items()))
    spec = ScoreSpec(identity, sample.space, dataset, batch.source, batch_size, seed, inputs_code(sample.space),
                     opts, device_kind(device))
    path = Path(cache_dir) / f"{proxy.name}-{spec.key()}.json"
    entries = _read_cache(path, spec)
    given = {str(i): prior[i] for i in sample.indices if i in (prior or {})}
    for key in (k for k in given if k in entries):
        _recheck(proxy.name, key, entries[key], given[key], prior_source)
    fresh = [k for k in given if k not in entries]
    count = min(len(fresh), max(0, recheck - (len(given) - len(fresh))))
    rescore = {fresh[j * len(fresh) // count] for j in range(count)}
    imported = {k: {**given[k], "seconds": float("nan")} for k in fresh if k not in rescore}
    todo = sorted((i for i in sample.indices if str(i) not in entries and str(i) not in imported),
                  key=lambda i: str(i) not in rescore)
    source = Path(ref).read_text() if _is_file(ref) else ""
    if todo:
        device = resolve_device(device, remote_gpus=backend == "ray" and spec.device == "cuda")
    job = _Job(ref if source else proxy.name, sample.space, dataset, seed, opts, device, source)
    last = time.monotonic()
    try:
        results = run_tasks(_score_one, todo, (job, batch.images, labels), backend, workers, address,
                            gpu_share(job.device, backend, workers), node_ip=node_ip)
        for n, (index, entry) in enumerate(tracked(results, len(todo), f"{proxy.name} on {dataset}", progress), 1):
            entries[str(index)] = entry
            if str(index) in rescore:
                _recheck(proxy.name, str(index), entry, given[str(index)], prior_source)
            if n % CHECKPOINT_EVERY == 0 or time.monotonic() - last > 60:
                _write_cache(path, spec, entries)
                last = time.monotonic()
    finally:
        if todo:
            _write_cache(path, spec, entries)
    scores = _collect(proxy, sample, {**entries, **imported})
    scores.scored, scores.imported = len(todo), len(imported)
    return scores


def _collect(proxy: Proxy, sample: Sample, entries: Mapping[str, Any]) -> Scores:
    rows = [entries[str(i)] for i in sample.indices]
    seconds = np.array([r["seconds"] for r in rows], dtype=np.float64)
    indices = np.asarray(sample.indices, dtype=np.int64)
    if not proxy.components:
        values = np.array([r["value"] for r in rows], dtype=np.float64)
        return Scores(proxy.name, indices, values, seconds)
    components = {k: np.array([r["components"][k] for r in rows], dtype=np.float64) for k in proxy.components}
    return Scores(proxy.name, indices, proxy.aggregate(components), seconds, components)
