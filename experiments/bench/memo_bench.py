"""Benchmark the subtree memo kept across generations: replay a finished campaign's evaluations.

    .venv/bin/python -m experiments.bench.memo_bench runs/tss-cifar10-robust-mean-islands-s2 --mib 0,256,1024

Reads the run's config and checkpoint (its memo holds every expression the run evaluated, in the order
it evaluated them), loads the run's search caches, and scores ``--n`` of those expressions from
``--start`` on, in that order, once per memo size (``[parallel] memo_mib``; 0 = no memo), each with a
new fitness and one torch thread (as a Ray actor). ``--warm`` expressions before ``--start`` are scored
first, untimed, so the memo holds what a run in its middle would hold. Prints expressions per second,
each size's speed-up over the first size, the memo's bytes, this process's RSS after the size's run
(Linux), and whether every fitness equals the one the run recorded (it must: the memo changes time,
not scores).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from evaluation.errors import ZcpError
from evaluation.evaluators import one_thread
from experiments.bench.build_forward import rss_mib
from experiments.campaign import prepare, search_payload
from experiments.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a campaign run directory with config.toml and checkpoint.json")
    parser.add_argument("--mib", default="0,1024", help="comma-separated memo sizes in MiB")
    parser.add_argument("--start", type=int, default=20_000, help="first timed expression (evaluation order)")
    parser.add_argument("--n", type=int, default=500, help="timed expressions")
    parser.add_argument("--warm", type=int, default=1_000, help="untimed expressions before --start")
    args = parser.parse_args()
    run = Path(args.run)
    try:
        sizes = [int(m) for m in args.mib.split(",")]
        config = load_config(run / "config.toml")
        recorded = json.loads((run / "checkpoint.json").read_text())["engine"]["memo"]
    except (ValueError, OSError, KeyError, ZcpError) as exc:
        raise SystemExit(f"memo_bench: error: {type(exc).__name__}: {exc}") from None
    texts = list(recorded)
    if args.start + args.n > len(texts) or args.warm > args.start:
        raise SystemExit(f"memo_bench: error: the run evaluated {len(texts)} expressions; "
                         f"--warm <= --start and --start + --n <= {len(texts)}")
    with tempfile.TemporaryDirectory() as scratch:  # prepare() writes the samples it re-draws
        payload = search_payload(config, prepare(config, Path(scratch), splits=("search",)))
    warm, timed = texts[args.start - args.warm:args.start], texts[args.start:args.start + args.n]
    print(f"{run}: {len(payload.names)} search target(s), expressions {args.start}-{args.start + args.n - 1} "
          f"of {len(texts)} ({args.warm} before them warm the memo)")
    rates = []
    for mib in sizes:
        fitness = replace(payload, memo_mib=mib).fitness()
        with one_thread():
            fitness(warm)
            begun = time.perf_counter()
            scores = fitness(timed)
            seconds = time.perf_counter() - begun
        rates.append(len(timed) / seconds)
        held = sum(m.bytes for m in fitness.memos.values()) if fitness.memos else 0
        same = all(s == recorded[t] for s, t in zip(scores, timed))
        print(f"memo {mib:>5} MiB: {rates[-1]:6.1f} expressions/s ({seconds:.1f} s), {rates[-1] / rates[0]:.2f}x the "
              f"{sizes[0]} MiB rate; memo holds {held / 2**20:.0f} MiB, RSS {rss_mib():.0f} MiB; fitness as recorded: {same}")
        del fitness


if __name__ == "__main__":
    main()
