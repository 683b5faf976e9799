"""What the machine tells about a run's energy: CodeCarbon's hardware detection (RAPL / NVML counters, its
TDP table and RAM model) and the CPU seconds of a process tree (psutil), for :mod:`evaluation.energy`.

CodeCarbon's private hardware attributes are read here only, hence its pinned version."""
from __future__ import annotations

import importlib.util
import json
import logging
import re
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.errors import ZcpError

OFF_HINT = "turn tracking off with --no-energy or [campaign] energy = false"
NEEDS_CODECARBON = f"energy tracking needs codecarbon (pip install codecarbon==3.3.2); or {OFF_HINT}"


def energy_mix() -> dict[str, Any]:
    """CodeCarbon's per-country energy-mix table, found without importing CodeCarbon."""
    try:
        spec = importlib.util.find_spec("codecarbon")
    except ValueError:  # in sys.modules as None: made unimportable on purpose
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ZcpError(NEEDS_CODECARBON)
    path = Path(spec.submodule_search_locations[0]) / "data" / "private_infra" / "global_energy_mix.json"
    return json.loads(path.read_text())



COUNTERS = {"intel_rapl": "RAPL", "windows_emi": "RAPL (Windows EMI)", "intel_power_gadget": "RAPL (Power Gadget)"}

Snapshot = dict[tuple[int, float], tuple[float, float, int]]


def tree_snapshot(root: Any) -> Snapshot:
    """(pid, start time) -> (own CPU s, CPU s of its reaped children, parent pid) for the psutil process
    ``root`` and its live descendants."""
    import psutil

    snapshot: Snapshot = {}
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        procs = [root]
    for proc in procs:
        try:
            times = proc.cpu_times()
            snapshot[(proc.pid, proc.create_time())] = (times.user + times.system,
                                                        times.children_user + times.children_system, proc.ppid())
        except psutil.Error:  # ended meanwhile: its reaper's figure holds its time
            continue
    return snapshot


def tree_cpu_seconds(start: Snapshot, end: Snapshot) -> float:
    """CPU seconds a process tree spent between two snapshots (see the module docstring for what counts).

    The total of (own + reaped children's) CPU seconds over the live processes grows by exactly the work
    done when every process that ended was reaped inside the tree. The earlier seconds of processes gone
    at ``end`` are subtracted only as far as the reaped seconds of their nearest surviving ancestor grew:
    a process that left the tree alive counts zero for the phase (never less), and may take as much of
    the last work of processes that ended under the same ancestor with it."""
    total = sum(own + reaped for own, reaped, _ in end.values()) - sum(own + reaped for own, reaped, _ in start.values())
    by_pid = {key[0]: key for key in start}
    owed: dict[tuple[int, float] | None, float] = defaultdict(float)
    for key, (own, reaped, ppid) in start.items():
        if key in end:
            continue
        ancestor = by_pid.get(ppid)
        while ancestor is not None and ancestor not in end:
            ancestor = by_pid.get(start[ancestor][2])
        owed[ancestor] += own + reaped
    for ancestor, seconds in owed.items():
        grew = end[ancestor][1] - start[ancestor][1] if ancestor is not None else 0.0
        total += max(0.0, seconds - grew)
    return max(total, 0.0)


def kernel_cpu_model() -> str | None:
    """The CPU's brand string as Linux's /proc/cpuinfo gives it ("model name"; None elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    found = re.search(r"^model name\s*:\s*(.+?)\s*$", text, re.MULTILINE)
    return found.group(1) if found else None


@contextmanager
def _cpu_model_from_kernel() -> Iterator[None]:
    """Hand CodeCarbon the CPU's brand string from /proc/cpuinfo while it detects the hardware.

    CodeCarbon asks py-cpuinfo, which reads the brand string (CPUID) in a fresh Python process: most of
    the set-up's CPU seconds. x86 Linux reports the same string; elsewhere py-cpuinfo runs as usual."""
    import cpuinfo

    model, original = kernel_cpu_model(), cpuinfo.get_cpu_info
    if model:
        cpuinfo.get_cpu_info = lambda: {"brand_raw": model}  # the one field CodeCarbon reads
    try:
        yield
    finally:
        cpuinfo.get_cpu_info = original


@dataclass
class Hardware:
    """What CodeCarbon detected: energy counters per part, else the CPU's TDP for the estimate; RAM model."""
    counters: dict[str, list[Any]]  # part -> CodeCarbon hardware objects read by start / measure_power_and_energy
    tdp: float | None  # W, whole CPU (None: the CPU has a counter)
    cores: int
    ram: Any  # CodeCarbon's RAM model (total_power)
    parts: list[str]  # how CPU / GPU are obtained, for ``method``

    @property
    def measured(self) -> bool:
        return bool(self.counters)


def detect_hardware(output_dir: str, region: str) -> Hardware:
    """CodeCarbon's hardware detection (RAPL / NVML / its TDP table and RAM model), without its scheduler.

    Reads the tracker's hardware list and attributes: private in CodeCarbon, hence the pinned version."""
    try:
        from codecarbon import OfflineEmissionsTracker
    except ImportError:
        raise ZcpError(NEEDS_CODECARBON) from None
    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    tracker = OfflineEmissionsTracker(
        output_methods=[], emissions_endpoint=None, electricitymaps_api_token=None,
        allow_multiple_runs=True, log_level="error", tracking_mode="process",
        output_dir=output_dir, country_iso_code=region or None)
    if not hasattr(tracker, "_active_task"):  # CodeCarbon swallows its own set-up errors
        raise ZcpError(f"CodeCarbon could not set up its tracker; {OFF_HINT}")
    with _cpu_model_from_kernel():
        tracker._ensure_hardware_ready()
    counters: dict[str, list[Any]] = defaultdict(list)
    tdp, cores, ram, parts = None, 1, None, []
    for hw in tracker._hardware:
        kind, mode = type(hw).__name__, getattr(hw, "_mode", None)
        chip = getattr(hw, "chip_part", kind).upper()  # Apple / Raspberry chips measure a CPU, GPU or RAM part
        if kind == "RAM":
            ram = hw
        elif kind == "CPU" and mode == "cpu_load":
            tdp, cores = float(hw._tdp), int(hw._cpu_count)
            parts.append(f"CPU: estimate ({tdp:g} W TDP x CPU s / {cores} cores)")
        else:
            part = "gpu" if kind == "GPU" or chip == "GPU" else "ram" if chip == "RAM" else "cpu"
            counters[part].append(hw)
            if kind == "GPU":
                vendors = {type(d).__name__ for d in getattr(hw.devices, "devices", [])}
                parts.append("GPU: AMD SMI" if any(v.startswith("AMD") for v in vendors) else "GPU: NVML")
            else:
                parts.append(f"CPU: {COUNTERS[mode]}" if mode in COUNTERS else f"{kind} {chip}: {mode or 'measured'}")
    return Hardware(dict(counters), tdp, cores, ram, parts)



def cpu_by_thread(process: Any) -> dict[int, float]:
    """CPU seconds of each thread of ``process`` (this one) by thread id, with -1: its total and its reaped
    children's."""
    times = process.cpu_times()
    return {-1: sum(times[:4]), **{t.id: t.user_time + t.system_time for t in process.threads()}}


def spent_aside(process: Any, before: dict[int, float]) -> float:
    """CPU seconds ``process`` spent since ``before`` (:func:`cpu_by_thread`) outside the threads that
    were running then (but the calling one): the set-up's, the threads it started (CodeCarbon's, ended or
    not) and reaped children (py-cpuinfo's process). A thread the run itself starts meanwhile counts too:
    an upper bound of the set-up's cost."""
    now, me = cpu_by_thread(process), threading.get_native_id()
    others = sum(seconds - before[tid] for tid, seconds in now.items() if tid in before and tid not in (-1, me))
    return max(0.0, now[-1] - before[-1] - others)
