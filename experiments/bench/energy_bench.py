"""Benchmark energy tracking: what CodeCarbon costs a campaign, tracking off and on side by side.

    .venv/bin/python -m experiments.bench.energy_bench [--config experiments/configs/quickstart.toml] \\
        [--reps 2] [--set gp.generations=10 ...]

1. Fixed costs, in a fresh process: CodeCarbon's import and hardware detection (wall and CPU seconds;
   they run in a thread beside the first phase), a phase's start + stop (with the atomic write of
   energy.json), and the CPU seconds its 1 s monitor thread takes per second.
2. The same campaign (``zcp evolve`` in a fresh process, so each run pays its own imports and set-up)
   with ``[campaign] energy = false`` and ``true``, alternating off / on ``--reps`` times. The caches
   are built once beforehand into a shared folder by a warm-up run (tracked: its energy per phase is
   printed), so every timed run does the same work. Overhead =
   median wall time on / median off - 1; on a shared machine its noise is that of the wall times.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evaluation.energy import ENERGY_FILE, markdown

FIXED = r"""
import json, os, sys, time
from evaluation.energy import energy_meter
cpu = lambda: sum(os.times()[:4])  # this process and its children (py-cpuinfo's)
t0, c0 = time.perf_counter(), cpu()
meter = energy_meter(sys.argv[1] + "/energy.json")
meter._setup.join()
t_setup, c_setup = time.perf_counter() - t0, cpu() - c0
t1 = time.perf_counter()
with meter.phase("first"):
    t_first = time.perf_counter() - t1
t2 = time.perf_counter()
for i in range(20):
    with meter.phase(f"p{i}"):
        pass
t_phase = (time.perf_counter() - t2) / 20
c1 = time.process_time(); w1 = time.perf_counter()
with meter.phase("idle"):
    time.sleep(10)
monitor = (time.process_time() - c1) / (time.perf_counter() - w1)
c2 = time.process_time(); w2 = time.perf_counter()
time.sleep(10)
bare = (time.process_time() - c2) / (time.perf_counter() - w2)
print(json.dumps({"setup_s": t_setup, "setup_cpu_s": c_setup, "first_wait_s": t_first, "phase_s": t_phase,
                  "monitor_cpu_s_per_s": monitor - bare, "method": meter.rows[0]["method"]}))
"""


def fixed_costs(folder: Path) -> dict[str, float]:
    """The tracker's costs measured in a fresh interpreter (see the module docstring)."""
    out = subprocess.run([sys.executable, "-c", FIXED, str(folder)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def campaign_wall(config: str, run_dir: Path, overrides: list[str], energy: bool) -> float:
    """Wall seconds of ``zcp evolve`` in a fresh process."""
    cmd = [sys.executable, "-m", "experiments.cli", "evolve", config, "--out", str(run_dir)]
    for setting in [*overrides, f"campaign.energy={'true' if energy else 'false'}"]:
        cmd += ["--set", setting]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/configs/quickstart.toml")
    parser.add_argument("--reps", type=int, default=2, help="off / on pairs")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fixed = fixed_costs(folder)
        print(f"how obtained here: {fixed['method']}")
        print(f"fixed costs: CodeCarbon import + hardware detection {fixed['setup_s']:.2f} s wall, "
              f"{fixed['setup_cpu_s']:.2f} CPU-s (in a thread beside the first phase, which waits "
              f"{fixed['first_wait_s']:.2f} s for it); a phase start + stop {1000 * fixed['phase_s']:.1f} ms; "
              f"monitor thread {100 * fixed['monitor_cpu_s_per_s']:.2f}% of one core")
        overrides = [*args.set, f"cache.dir={json.dumps(str(folder / 'caches'))}"]
        warm = campaign_wall(args.config, folder / "warm-up", overrides, True)  # builds the shared caches
        print(f"warm-up run (builds the caches; not counted in the overhead): {warm:.1f} s wall, energy per phase:")
        print("\n".join(markdown(json.loads((folder / "warm-up" / ENERGY_FILE).read_text()))))
        walls: dict[bool, list[float]] = {False: [], True: []}
        for rep in range(args.reps):
            for energy in (False, True):
                walls[energy].append(campaign_wall(args.config, folder / f"{energy}-{rep}", overrides, energy))
                print(f"run {rep}, energy {'on ' if energy else 'off'}: {walls[energy][-1]:.1f} s wall")
        off, on = statistics.median(walls[False]), statistics.median(walls[True])
        print(f"campaign wall time, median of {args.reps}: off {off:.1f} s, on {on:.1f} s: "
              f"overhead {100 * (on / off - 1):+.2f}% (target < 2%)")
        cores = os.cpu_count() or 1
        expected = (fixed["setup_cpu_s"] / cores + 3 * fixed["phase_s"]) / off + fixed["monitor_cpu_s_per_s"] / cores
        print(f"expected from the fixed costs: {100 * expected:.2f}% (set-up CPU over {cores} cores + 3 phases) / wall "
              f"+ monitor CPU over {cores} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
