"""Progress of a long loop over networks: a bar on a terminal, one line per tenth in a log."""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def tracked(items: Iterable[T], total: int, desc: str, show: bool | None = None, lines: int = 10) -> Iterator[T]:
    """Yield ``items``. ``show`` True: a tqdm bar; False: nothing; None: the bar when stderr is a terminal,
    else ``zcp: DESC: n of TOTAL networks, S s`` after each ``1/lines`` of ``total`` (so that the log of
    an hour-long build or comparison says how far it got)."""
    tty = sys.stderr.isatty()
    step = max(1, -(-total // lines))
    start = time.perf_counter()
    for n, item in enumerate(tqdm(items, total=total, disable=not (tty if show is None else show), desc=desc,
                                  unit="net"), 1):
        yield item
        if show is None and not tty and (n % step == 0 or n == total):
            print(f"zcp: {desc}: {n} of {total} networks, {time.perf_counter() - start:.0f} s",
                  file=sys.stderr, flush=True)
