"""A worker gives the memory a task freed back to the OS after every task (evaluation.parallel.release_memory),
and computing terminals leaves nothing that needs a garbage collection to be freed."""
import gc
import weakref

import pytest
import torch

from evaluation import parallel
from evaluation.parallel import release_memory, run_tasks
from experiments.bench.build_forward import rss_mib
from primitives.terminals import compute_terminals
from tests.models import TinyResNet


def _square(x: int, shared: None) -> int:
    return x * x


def test_every_task_is_followed_by_a_release(monkeypatch):
    calls = []
    monkeypatch.setattr(parallel, "release_memory", lambda: calls.append(1))
    assert sorted(r for _, r in run_tasks(_square, [1, 2, 3], backend="serial")) == [1, 4, 9]
    assert len(calls) == 3


@pytest.mark.skipif(parallel._MALLOC_TRIM is None, reason="malloc_trim is glibc's; this C library has none")
def test_freed_heap_pages_return_to_the_os():
    blocks = [bytearray(64 * 1024) for _ in range(3000)]  # about 190 MiB below glibc's mmap threshold
    kept = blocks[::50]  # a few live blocks pin the heap's top, so plain free() returns little
    del blocks
    before = rss_mib()
    release_memory()
    after = rss_mib()
    assert before - after > 100, (before, after)
    assert all(len(b) == 64 * 1024 for b in kept)


@pytest.mark.parametrize("names", [["@base"], ["@zoo"]])
def test_terminals_leave_no_reference_cycle_holding_the_model(names):
    """The hooks' closures once tied each Recorder (and through it the model, its weights and gradients)
    into a cycle, so every network outlived its task until the next collection."""
    model = TinyResNet()
    ref = weakref.ref(model)
    gc.disable()
    try:
        compute_terminals(model, torch.randn(4, 3, 8, 8), names, labels=torch.arange(4))
        del model
        assert ref() is None
    finally:
        gc.enable()
