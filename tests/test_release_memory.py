"""A worker gives the memory a task freed back to the OS after every task (evaluation.parallel.release_memory)."""
import pytest

from evaluation import parallel
from evaluation.parallel import release_memory, run_tasks
from experiments.bench.build_forward import rss_mib


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
