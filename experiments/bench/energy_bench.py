"""Benchmark energy tracking: what it costs a campaign, tracking off and on side by side.

    .venv/bin/python -m experiments.bench.energy_bench [--config experiments/configs/quickstart.toml] \\
        [--reps 2] [--set gp.generations=10 ...]

1. Fixed costs, in a fresh process: CodeCarbon's import and hardware detection (wall and CPU seconds;
   they run in a thread beside the first phase), a phase's start + stop (wall and CPU: two snapshots of
   the process tree, the atomic write of energy.json), and the CPU seconds per second the tracker takes
   while a phase runs (no thread of its own without RAPL / NVML counters).
2. The same campaign (``zcp evolve`` in a fresh process, so each run pays its own imports and set-up)
   with ``[campaign] energy = false`` and ``true``, alternating off / on ``--reps`` times. The caches
   are built once beforehand into a shared folder by a warm-up run (tracked: its energy per phase is
   printed), so every timed run does the same work. Three overhead figures, side by side:
   - wall: median wall time on / median off - 1 (on a shared machine its noise is that of the wall times);
   - CPU: median CPU seconds on / median off - 1, the CPU seconds of the ``zcp`` process and the
     descendants it reaped (getrusage of this benchmark's children; Ray's processes outlive the driver
     and are not in it): less sensitive to other jobs;
   - tracker share: the CPU seconds the tracker itself took (``tracker_cpu_s`` of each row, set-up
     included) over the CPU seconds of the campaign's process tree in its phases (``cpu_s``), summed
     over the tracked runs: immune to other jobs, and to noise in the campaign's own work.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
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
cpu = lambda: sum(os.times()[:4])  # this process and its reaped children (py-cpuinfo's)
t0, c0 = time.perf_counter(), cpu()
meter = energy_meter(sys.argv[1] + "/energy.json")
meter._setup.join()
t_setup, c_setup = time.perf_counter() - t0, cpu() - c0
t1, c1 = time.perf_counter(), cpu()
for i in range(20):
    with meter.phase(f"p{i}"):
        pass
t_phase, c_phase = (time.perf_counter() - t1) / 20, (cpu() - c1) / 20
c2, w2 = cpu(), time.perf_counter()
with meter.phase("idle"):
    time.sleep(5)
during = (cpu() - c2) / (time.perf_counter() - w2)
print(json.dumps({"setup_s": t_setup, "setup_cpu_s": c_setup, "phase_s": t_phase, "phase_cpu_s": c_phase,
                  "during_cpu_s_per_s": during, "method": meter.rows[0]["method"]}))
"""


def fixed_costs(folder: Path) -> dict[str, float]:
    """The tracker's costs measured in a fresh interpreter (see the module docstring)."""
    out = subprocess.run([sys.executable, "-c", FIXED, str(folder)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def campaign(config: str, run_dir: Path, overrides: list[str], energy: bool) -> tuple[float, float]:
    """Wall and CPU seconds of ``zcp evolve`` in a fresh process."""
    cmd = [sys.executable, "-m", "experiments.cli", "evolve", config, "--out", str(run_dir)]
    for setting in [*overrides, f"campaign.energy={'true' if energy else 'false'}"]:
        cmd += ["--set", setting]
    start, cpu = time.perf_counter(), _children_cpu()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, _children_cpu() - cpu


def _share(rows: list[dict]) -> str:
    """The tracker's CPU seconds over those of the campaign's process tree in its phases, from energy.json rows."""
    own, tree = sum(r["tracker_cpu_s"] for r in rows), sum(r["cpu_s"] for r in rows)
    return f"{100 * own / tree:.2f}% of the campaign's ({own:.3f} of {tree:.1f} CPU-s)"


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
              f"{fixed['setup_cpu_s']:.2f} CPU-s (in a thread beside the first phase, which does not wait); "
              f"a phase start + stop {1000 * fixed['phase_s']:.1f} ms wall, {1000 * fixed['phase_cpu_s']:.1f} ms CPU; "
              f"while a phase runs {100 * fixed['during_cpu_s_per_s']:.2f}% of one core (whole process, idle phase)")
        overrides = [*args.set, f"cache.dir={json.dumps(str(folder / 'caches'))}"]
        warm, _ = campaign(args.config, folder / "warm-up", overrides, True)  # builds the shared caches
        rows = json.loads((folder / "warm-up" / ENERGY_FILE).read_text())
        print(f"warm-up run (builds the caches; not counted in the overhead): {warm:.1f} s wall, tracker's own CPU "
              f"seconds {_share(rows)}; energy per phase:")
        print("\n".join(markdown(rows)))
        runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        tracked: list[dict] = []
        for rep in range(args.reps):
            for energy in (False, True):
                run_dir = folder / f"{energy}-{rep}"
                runs[energy].append(campaign(args.config, run_dir, overrides, energy))
                wall, cpu = runs[energy][-1]
                line = f"run {rep}, energy {'on ' if energy else 'off'}: {wall:.1f} s wall, {cpu:.1f} CPU-s"
                if energy:
                    rows = json.loads((run_dir / ENERGY_FILE).read_text())
                    tracked += rows
                    line += f"; tracker's own CPU seconds {_share(rows)}"
                print(line)
        (off, off_cpu), (on, on_cpu) = ([statistics.median(x) for x in zip(*runs[e])] for e in (False, True))
        print(f"overhead, median of {args.reps} (target < 2%): wall {100 * (on / off - 1):+.2f}% "
              f"(off {off:.1f} s, on {on:.1f} s); CPU {100 * (on_cpu / off_cpu - 1):+.2f}% "
              f"(off {off_cpu:.1f} CPU-s, on {on_cpu:.1f} CPU-s of the zcp process); tracker's own CPU seconds "
              f"{_share(tracked)}")
        cores = os.cpu_count() or 1
        expected = (fixed["setup_cpu_s"] + 3 * fixed["phase_cpu_s"]) / cores / off + fixed["during_cpu_s_per_s"] / cores
        print(f"expected from the fixed costs: {100 * expected:.2f}% of the wall time "
              f"((set-up + 3 phases) CPU over {cores} cores / wall off + per-second CPU over {cores} cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
