"""Run one function over many items, serially, in local processes or as Ray tasks, behind one interface.

Ray starts a private local instance by default (``num_cpus`` as asked, no dashboard, a modest object
store) or joins a cluster with ``address`` (evaluation/cluster.py: checks, code shipped to workers).
Shared read-only data (an image batch) is put in the object store (or sent to each local process)
once. Each task gets one CPU and runs torch single-threaded in every backend, so serial, process and
Ray results are bit-identical. Results come back as they finish. After each task the memory it freed
goes back to the OS (:func:`release_memory`), so a worker reused for many large networks stays small.

Worker faults (Ray): a task whose worker process dies (killed, out of memory, node lost) is resubmitted,
so it runs on another worker, up to :data:`RETRIES` times; the first death prints one warning line
(:class:`WorkerDeaths`) and Ray's own logs stay off the terminal (``log_to_driver=False``, level
ERROR). An exception raised by the task itself is not retried: it is the task's answer.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import torch

from evaluation.cluster import bootstrap_address, check_resources, init_error, join
from evaluation.errors import ZcpError

T = TypeVar("T")
R = TypeVar("R")
BACKENDS = ("serial", "processes", "ray")
RETRIES = 3
_END = object()


def resolve_device(device: str, remote_gpus: bool = False) -> str:
    """'auto' (CUDA when present here or asked of Ray's workers, else CPU), 'cpu', 'cuda' or 'cuda:N';
    ZcpError for anything else."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() or remote_gpus else "cpu"
    kind = device_kind(device)
    if kind == "cuda" and not torch.cuda.is_available() and not remote_gpus:
        raise ZcpError(f"device {device!r} was asked for, but this machine has no CUDA device")
    return device


def device_kind(device: str) -> str:
    """'cpu' or 'cuda' for a device string ('auto' means what :func:`resolve_device` picks); ZcpError otherwise."""
    if device == "auto":
        return resolve_device(device)
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        kind = None
    if kind not in ("cpu", "cuda"):
        raise ZcpError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    return kind


def gpu_share(device: str, backend: str, workers: int | None) -> float:
    """GPUs each Ray task asks for: a CUDA device shared by the ``workers`` tasks, else none."""
    return 1.0 / max(workers or 1, 1) if device.startswith("cuda") and backend == "ray" else 0.0


def worker_faults() -> tuple[type[Exception], ...]:
    """Ray's exceptions for work lost with its worker (as opposed to an exception the work raised)."""
    from ray import exceptions as rx

    return rx.WorkerCrashedError, rx.RayActorError, rx.OutOfMemoryError, rx.NodeDiedError


class WorkerDeaths:
    """Counts worker deaths of one job: warns once on stderr, gives up after :data:`RETRIES` for one item."""

    def __init__(self, what: str) -> None:
        self.what, self.count = what, 0

    def retry(self, attempts: int, exc: Exception) -> None:
        """Record a death of the work's ``attempts``-th try; ZcpError when it has been tried too often."""
        self.count += 1
        reason = type(exc).__name__
        if attempts > RETRIES:
            raise ZcpError(f"Ray workers died {attempts} times running the same {self.what} ({reason}): giving up")
        if self.count == 1:
            print(f"zcp: warning: a Ray worker died ({reason}); its {self.what} is retried on another worker",
                  file=sys.stderr, flush=True)


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):  # not glibc (macOS, Windows, musl builds without it)
        return None


_MALLOC_TRIM = _malloc_trim()


def release_memory() -> None:
    """Give the heap memory this process has freed back to the OS (glibc's ``malloc_trim``; elsewhere only
    a garbage collection, which also frees tensors held in reference cycles). glibc keeps freed pages for
    reuse, and after large CPU tensors of varying shapes most stay unused: one process computing NB-101
    terminals held 7.1 GiB between networks after 8 of them, 0.3 GiB with this call after each
    (``python -m experiments.bench.worker_rss``); it costs about 0.1 s per task, mostly the collection."""
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _call(fn: Callable[[T, Any], R], item: T, shared: Any) -> R:
    """Run one task with torch single-threaded, as every backend does (bit-identical results), then
    release the memory it freed (a worker runs many tasks)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(item, shared)
    finally:
        torch.set_num_threads(threads)
        release_memory()


_SHARED: Any = None


def _keep_shared(shared: Any) -> None:
    global _SHARED
    _SHARED = shared


def _call_shared(fn: Callable[[T, Any], R], item: T) -> R:
    return _call(fn, item, _SHARED)


def _in_processes(fn: Callable[[T, Any], R], items: list[T], shared: Any, workers: int | None) -> Iterator[tuple[T, R]]:
    """``run_tasks`` on spawned local processes; ``shared`` is sent to each process once. Stopping early
    (an error, Ctrl-C) cancels what has not started and waits for what has."""
    pool = ProcessPoolExecutor(workers or os.cpu_count() or 1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_keep_shared, initargs=(shared,))
    try:
        futures = {pool.submit(_call_shared, fn, item): item for item in items}
        for future in as_completed(futures):
            try:
                result = future.result()
            except BrokenProcessPool:
                raise ZcpError(f"a local worker process died (killed, or out of memory?) on {futures[future]!r}; "
                               "what finished is kept: run again to go on") from None
            yield futures[future], result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def start_ray(num_cpus: int | None = None, address: str | None = None, num_gpus: int | None = None,
              node_ip: str | None = None) -> None:
    """Start a private local Ray instance, or join the cluster at ``address`` (else ``RAY_ADDRESS``) on
    purpose (:func:`evaluation.cluster.join`); a no-op when Ray is already up. Says which on stderr
    when it matters: joining, or a local run beside a cluster that ``ray start`` left on this machine."""
    import ray

    if ray.is_initialized():
        return
    quiet: dict[str, Any] = dict(log_to_driver=False, logging_level=logging.ERROR, configure_logging=True)
    from_env = not address and os.environ.get("RAY_ADDRESS")
    address = address or from_env or None
    if address:
        where = join(address, node_ip, **quiet)
        resources = ray.cluster_resources()
        print(f"zcp: joined the Ray cluster at {where}{' (RAY_ADDRESS)' if from_env else ''}: "
              f"{len(ray.nodes())} node(s), {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs",
              file=sys.stderr, flush=True)
    else:
        running = bootstrap_address()
        if running:
            print(f"zcp: note: a Ray cluster runs on this machine ({running}); this run starts its own local Ray "
                  f"instance (to use that cluster: --address auto)", file=sys.stderr, flush=True)
        try:  # address="local": never the running cluster Ray's init would otherwise find by itself
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), num_gpus=num_gpus, include_dashboard=False,
                     object_store_memory=256 * 2**20, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise init_error(exc, None) from None
    _drop_death_notices()


def _drop_death_notices() -> None:
    """Ray's driver prints a paragraph for every dead worker, from a thread that no ``ray.init``
    option turns off; :class:`WorkerDeaths` reports deaths in one line, so those paragraphs are dropped
    (other messages pass). If Ray's internals change, this does nothing."""
    from ray._private import worker

    show = getattr(worker, "print_to_stdstream", None)
    if show is None or getattr(show, "drops_deaths", False):
        return

    def filtered(data: dict, *args: Any, **kwargs: Any) -> None:
        if data.get("pid") == "raylet" and any("died" in line or "killed" in line for line in data.get("lines", [])):
            return
        show(data, *args, **kwargs)

    filtered.drops_deaths = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = filtered


def run_tasks(fn: Callable[[T, Any], R], items: Iterable[T], shared: Any = None, backend: str = "serial",
              workers: int | None = None, address: str | None = None, gpus_per_task: float = 0.0,
              max_in_flight: int = 64, node_ip: str | None = None) -> Iterator[tuple[T, R]]:
    """Yield ``(item, fn(item, shared))`` for every item, in completion order.

    ``fn`` must be a module-level function (Ray ships it by reference); each Ray task asks for one CPU
    and ``gpus_per_task`` GPUs (fractions share a GPU). ``processes``: ``workers`` spawned local
    processes (all cores by default), for a machine where Ray is missing or cannot start."""
    if backend not in BACKENDS:
        raise ZcpError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    items = list(items)
    if backend == "serial":
        for item in items:
            yield item, _call(fn, item, shared)
        return
    if backend == "processes":
        yield from _in_processes(fn, items, shared, workers)
        return
    import ray

    start_ray(workers, address, node_ip=node_ip)
    check_resources(gpus_per_task)
    remote = ray.remote(num_cpus=1, num_gpus=gpus_per_task, max_retries=0)(_call)
    shared_ref = ray.put(shared)
    pending: dict[Any, tuple[T, int]] = {}  # ref -> (item, attempts so far)
    queue = iter(items)
    deaths = WorkerDeaths("task")
    while True:
        while len(pending) < max_in_flight:
            item = next(queue, _END)
            if item is _END:
                break
            pending[remote.remote(fn, item, shared_ref)] = (item, 1)
        if not pending:
            return
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            item, attempts = pending.pop(ref)
            try:
                result = ray.get(ref)
            except worker_faults() as exc:
                deaths.retry(attempts, exc)
                pending[remote.remote(fn, item, shared_ref)] = (item, attempts + 1)
                continue
            yield item, result
