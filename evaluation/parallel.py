"""Run one function over many items, serially or as Ray tasks, behind one interface.

Ray starts locally by default (``num_cpus`` as asked, no dashboard, a modest object store) or joins
an existing cluster with ``address``. Shared read-only data (an image batch) is put in the object
store once. Each task gets one CPU and runs torch single-threaded in both backends, so serial and
Ray results are bit-identical; a task whose worker dies is retried on another worker
(``max_retries``). Results come back as they finish.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from evaluation.errors import ZcpError

T = TypeVar("T")
R = TypeVar("R")
BACKENDS = ("serial", "ray")
_END = object()


def _call(fn: Callable[[T, Any], R], item: T, shared: Any) -> R:
    """Run one task with torch single-threaded, as every backend does (bit-identical results)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(item, shared)
    finally:
        torch.set_num_threads(threads)


def start_ray(num_cpus: int | None = None, address: str | None = None, num_gpus: int | None = None) -> None:
    """Start (or join, with ``address``) Ray quietly; a no-op when Ray is already up."""
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                                  configure_logging=True)
    if address:
        kwargs["address"] = address
    else:
        kwargs.update(num_cpus=num_cpus or os.cpu_count(), num_gpus=num_gpus, object_store_memory=256 * 2**20)
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ZcpError(f"cannot start or join Ray{' at ' + address if address else ''}: {str(exc).splitlines()[0]}") from None


def run_tasks(fn: Callable[[T, Any], R], items: Iterable[T], shared: Any = None, backend: str = "serial",
              workers: int | None = None, address: str | None = None, gpus_per_task: float = 0.0,
              max_in_flight: int = 64) -> Iterator[tuple[T, R]]:
    """Yield ``(item, fn(item, shared))`` for every item, in completion order.

    ``fn`` must be a module-level function (Ray ships it by reference)."""
    if backend not in BACKENDS:
        raise ZcpError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    items = list(items)
    if backend == "serial":
        for item in items:
            yield item, _call(fn, item, shared)
        return
    import ray

    start_ray(workers, address)
    remote = ray.remote(num_cpus=1, num_gpus=gpus_per_task, max_retries=3)(_call)
    shared_ref = ray.put(shared)
    pending: dict[Any, T] = {}
    queue = iter(items)
    while True:
        while len(pending) < max_in_flight:
            item = next(queue, _END)
            if item is _END:
                break
            pending[remote.remote(fn, item, shared_ref)] = item
        if not pending:
            return
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            yield pending.pop(ref), ray.get(ref)
