"""Energy of a run's phases: CodeCarbon's hardware detection and energy counters, zcp's CPU accounting.

Each part of a phase's energy is obtained in one of these ways, and its row's ``method`` says which:

- CPU, measured: the package's RAPL counter (Linux; Windows EMI), read through CodeCarbon at the phase's
  start and end and every ``COUNTER_SECS`` between (a counter that wraps during a long phase stays right).
- GPU, measured: NVIDIA NVML's (AMD SMI's) energy counter, read the same way.
- CPU, estimated where no RAPL is readable: ``E_cpu = TDP x cpu_s / cores``. TDP is CodeCarbon's table value
  for the processor times the sockets (4 W per thread for a model the table lacks), ``cores`` the logical
  CPUs (CodeCarbon's count), ``cpu_s`` the CPU seconds (user + system) the process tree spent in the phase.
  That is CodeCarbon's own process-mode formula (power = TDP x load / cores, load = CPU seconds per wall
  second, linear, no idle floor) with the CPU seconds counted by zcp: CodeCarbon samples the tree once a
  second in a thread (which cost Ray campaigns 10-16% wall time) and counts a process from the first sample
  that sees it, so a Ray worker started during a phase was counted only from then on.
- RAM, estimated: CodeCarbon's RAM model (watts from the process tree's memory: per estimated DIMM, at
  least two) times the phase's wall seconds, its power read at the phase's end.

``cpu_s`` comes from a snapshot of this process and its descendants at the phase's start and end (psutil):
each process's own CPU seconds plus those of its children it has reaped (an exited process's time moves
into its parent's). A process started during the phase counts in full, one that ended and was reaped
inside the tree counts up to its end; one that left the tree alive (re-parented when its parent died)
counts nothing for that phase. Local Ray processes (raylet and its workers) are descendants of the driver,
so they are counted; nodes of a cluster joined with ``--address`` are not. RAPL and NVML read the whole
package or GPU, whoever used it.

CodeCarbon's import and hardware detection (its TDP table; the CPU's name from /proc/cpuinfo where Linux
has it, else from py-cpuinfo's extra process: 0.3-1 CPU second) run in a thread beside the run's first
phases, and no phase waits for them. A phase over before they are done is recorded when the hardware is
known; with counters, the seconds they did not cover (``unmeasured_s``) count at the power they measure
next. Each row also records ``tracker_cpu_s``, the CPU seconds this accounting itself
took in the phase (the first row: the set-up too), so its overhead can be read from any run.

Offline and private: no network, no dashboard, no CodeCarbon file or lock file, no CodeCarbon thread;
the figures go to the run's own ``energy.json``, and a run prints one :func:`summary` line at its end,
which says "estimated" where nothing was measured. CO2 only for a configured region (the country's
average intensity from CodeCarbon's energy-mix table). With tracking off (:class:`NoMeter`) neither
CodeCarbon nor psutil is imported.
"""
from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.atomic import atomic_write_text
from evaluation.errors import ZcpError
from evaluation.hardware import (OFF_HINT, Hardware, Snapshot, cpu_by_thread, detect_hardware, energy_mix, spent_aside,
                                 tree_cpu_seconds, tree_snapshot)

ENERGY_FILE = "energy.json"
JOULES_PER_KWH = 3.6e6
PARTS = ("cpu", "gpu", "ram")
COUNTER_SECS = 30.0  # energy counters are read at least this often during a phase


def check_region(region: str) -> str:
    """``region`` upper-cased if it is a 3-letter country code CodeCarbon knows ('' = no region, no CO2)."""
    if not region:
        return ""
    if region.upper() not in energy_mix():
        raise ZcpError(f"unknown energy region {region!r}: use a 3-letter ISO country code of CodeCarbon's "
                       "energy-mix table (e.g. FRA, DEU, USA), or leave it empty for no CO2 figure")
    return region.upper()


def check_writable(folder: Path) -> None:
    """ZcpError (one line) unless files can be created in ``folder`` (or in its first existing parent)."""
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(f"{probe} is not a folder")
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise ZcpError(f"energy tracking cannot write its figures in {folder} ({type(exc).__name__}: "
                       f"{exc.strerror or exc}); choose a writable folder or {OFF_HINT}") from None



class NoMeter:
    """Tracking off: phases run bare, nothing is recorded, neither CodeCarbon nor psutil is imported."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    @contextmanager
    def phase(self, name: str) -> Iterator[dict[str, Any]]:
        yield {}


@dataclass
class _Phase:
    """A phase in progress: the tree's CPU at its start, and what its energy counters read so far."""
    name: str
    begin: float
    tree: Snapshot
    tracker_cpu: float = 0.0
    counted_from: float | None = None  # when its counters started (None: hardware not known yet)
    last_read: float = 0.0
    kwh: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PARTS, 0.0))
    done: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None
    seconds: float = 0.0
    cpu_s: float = 0.0
    networks: int | None = None

    @property
    def counted_s(self) -> float:
        return 0.0 if self.counted_from is None else self.last_read - self.counted_from


class EnergyMeter:
    """Energy per named phase of one run, written to ``path`` (JSON) after every phase.

    ``with meter.phase("evolution") as row: ...`` measures the block; set ``row["networks"]`` inside
    it to get joules per network. A phase name used again adds to its row; a phase that raises is not
    recorded; phases of one meter do not nest. The module docstring says how each figure is obtained."""

    def __init__(self, path: str | Path, region: str = "") -> None:
        cpu = time.thread_time()
        self.path = Path(path)
        check_writable(self.path.parent)
        self.region = check_region(region)
        mix = energy_mix()  # a missing CodeCarbon is an error now, not after the first phase
        self._intensity = mix[self.region]["carbon_intensity"] if self.region else 0.0
        import psutil  # after the check above: CodeCarbon depends on it

        self._root = psutil.Process()
        self._rows: list[dict[str, Any]] = []
        self._deferred: list[_Phase] = []  # phases over before the hardware was known
        self._hardware: Hardware | None = None
        self._error: ZcpError | None = None
        self._setup_cpu = time.thread_time() - cpu  # CPU seconds of the set-up (this and the thread's), charged to the first row recorded
        self._lock = threading.Lock()
        self._open: _Phase | None = None
        self._setup = threading.Thread(target=self._set_up, name="zcp-energy-setup", daemon=True)
        self._setup.start()

    def _set_up(self) -> None:
        before = cpu_by_thread(self._root)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            hardware = detect_hardware(str(self.path.parent), self.region)
        except OSError as exc:
            self._error = ZcpError(f"energy tracking cannot create {self.path.parent} ({exc.strerror or exc}); {OFF_HINT}")
            return
        except ZcpError as exc:
            self._error = exc
            return
        except Exception as exc:  # noqa: BLE001 (reported by the phase that needs the hardware)
            self._error = ZcpError(f"CodeCarbon failed to set up ({type(exc).__name__}: {exc}); {OFF_HINT}")
            return
        with self._lock:
            self._setup_cpu += spent_aside(self._root, before)
            self._hardware = hardware
            if self._open is not None:
                self._start_counters(self._open)

    def _raise_set_up_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _start_counters(self, phase: _Phase) -> None:
        """Start the hardware's energy counters for ``phase`` (with the lock held)."""
        assert self._hardware is not None
        for hardware in self._hardware.counters.values():
            for hw in hardware:
                hw.start()
        phase.counted_from = phase.last_read = time.perf_counter()
        if self._hardware.counters:
            phase.reader = threading.Thread(target=self._read_every, args=(phase,), name="zcp-energy-counters", daemon=True)
            phase.reader.start()

    def _read_counters(self, phase: _Phase) -> None:
        """Add what the energy counters measured since their last reading to ``phase`` (with the lock held)."""
        assert self._hardware is not None
        now = time.perf_counter()
        for part, hardware in self._hardware.counters.items():
            for hw in hardware:
                if part == "gpu":
                    hw.monitor_power()  # a power sample, used for a GPU without an energy counter
                phase.kwh[part] += float(hw.measure_power_and_energy(last_duration=now - phase.last_read)[1].kWh)
        phase.last_read = now

    def _read_every(self, phase: _Phase) -> None:
        while not phase.done.wait(COUNTER_SECS):
            with self._lock:
                if self._open is phase:
                    self._read_counters(phase)
        phase.tracker_cpu += time.thread_time()

    @contextmanager
    def phase(self, name: str) -> Iterator[dict[str, Any]]:
        cpu = time.thread_time()
        phase = _Phase(name, time.perf_counter(), tree_snapshot(self._root))
        with self._lock:
            self._raise_set_up_error()
            if self._open is not None:
                raise RuntimeError(f"energy phase {name!r} started inside {self._open.name!r}: phases of one meter do not nest")
            self._open = phase
            if self._hardware is not None:
                self._start_counters(phase)
        phase.tracker_cpu += time.thread_time() - cpu
        extra: dict[str, Any] = {}
        try:
            yield extra
        finally:
            cpu = time.thread_time()
            end = time.perf_counter()
            with self._lock:
                self._open = None
                if phase.counted_from is not None:
                    self._read_counters(phase)
                hardware = self._hardware
            phase.done.set()
            if phase.reader is not None:
                phase.reader.join()
            phase.seconds, phase.networks = end - phase.begin, extra.get("networks")
            phase.cpu_s = tree_cpu_seconds(phase.tree, tree_snapshot(self._root))
            phase.tracker_cpu += time.thread_time() - cpu
        if hardware is None or (hardware.counters and phase.counted_from is None):
            self._deferred.append(phase)  # over before the hardware was known: recorded with the next phase
            return
        self._flush_deferred(_rates(phase))
        self._add(phase, _rates(phase))

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One row per phase (phases that ended before the hardware was known are recorded now)."""
        if self._deferred:
            self._setup.join()
            self._raise_set_up_error()
            self._flush_deferred({})
        return self._rows

    def _flush_deferred(self, rates: dict[str, float]) -> None:
        """Record the phases over before the hardware was known; with energy counters, at ``rates``
        (those of the phase measured next, else of a moment measured now)."""
        deferred, self._deferred = self._deferred, []
        if deferred and self._hardware.counters and not rates:
            moment = _Phase("moment", time.perf_counter(), {})
            with self._lock:
                self._start_counters(moment)
            time.sleep(0.5)
            with self._lock:
                self._read_counters(moment)
            moment.done.set()
            rates = _rates(moment)
        for phase in deferred:
            self._add(phase, rates)

    def _add(self, phase: _Phase, rates: dict[str, float]) -> None:
        cpu, hardware = time.thread_time(), self._hardware
        assert hardware is not None
        unmeasured = max(0.0, phase.seconds - phase.counted_s) if hardware.counters else 0.0
        ram_watts = float(hardware.ram.total_power().W) if hardware.ram is not None and "ram" not in hardware.counters else 0.0
        kwh = {"cpu": hardware.tdp * phase.cpu_s / hardware.cores / JOULES_PER_KWH if hardware.tdp else 0.0,
               "ram": ram_watts * phase.seconds / JOULES_PER_KWH, "gpu": 0.0}
        for part in hardware.counters:
            kwh[part] = phase.kwh[part] + unmeasured * rates.get(part, 0.0)
        row = next((r for r in self._rows if r["phase"] == phase.name), None)
        if row is None:
            row = {"phase": phase.name, "seconds": 0.0, "cpu_s": 0.0, "unmeasured_s": 0.0, "kwh": 0.0,
                   **{f"{part}_kwh": 0.0 for part in PARTS}, "tracker_cpu_s": 0.0}
            self._rows.append(row)
        row["seconds"] += phase.seconds
        row["cpu_s"] += phase.cpu_s
        row["unmeasured_s"] += unmeasured
        row["tracker_cpu_s"] += phase.tracker_cpu + self._setup_cpu + time.thread_time() - cpu  # all but the write
        self._setup_cpu = 0.0
        for part in PARTS:
            row[f"{part}_kwh"] += kwh[part]
        row["kwh"] = sum(row[f"{part}_kwh"] for part in PARTS)
        row["joules"] = row["kwh"] * JOULES_PER_KWH
        if phase.networks is not None:
            row["networks"] = row.get("networks", 0) + phase.networks
            row["joules_per_network"] = row["joules"] / row["networks"] if row["networks"] else None
        ram = [] if "ram" in hardware.counters else \
            [f"RAM: estimate ({row['ram_kwh'] * JOULES_PER_KWH / row['seconds'] if row['seconds'] else ram_watts:.3g} W)"]
        row["method"], row["measured"] = ", ".join(sorted(hardware.parts + ram)), hardware.measured
        if row["unmeasured_s"] >= 0.05:
            row["method"] += f"; {row['unmeasured_s']:.1f} s of it (CodeCarbon setting up) at the power measured next"
        if self.region:
            row["region"], row["co2_kg"] = self.region, row["kwh"] * self._intensity / 1000
        atomic_write_text(self.path, json.dumps(self._rows, indent=1) + "\n")



def _rates(phase: _Phase) -> dict[str, float]:
    """kWh per second each energy counter measured over ``phase`` ({} where none ran)."""
    return {part: kwh / phase.counted_s for part, kwh in phase.kwh.items()} if phase.counted_s > 0 else {}


def energy_meter(path: str | Path, enabled: bool = True, region: str = "") -> EnergyMeter | NoMeter:
    """A meter writing to ``path`` (an :class:`EnergyMeter`), or :class:`NoMeter` when tracking is off."""
    return EnergyMeter(path, region) if enabled else NoMeter()


def _number(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def markdown(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown table lines of energy rows (kWh and joules, CO2 only where a region was set)."""
    co2 = any("co2_kg" in r for r in rows)
    lines = ["| phase | wall s | energy kWh | energy J | of which CPU / GPU / RAM J | networks | J per network |"
             + (" g CO2 (region) |" if co2 else "") + " how obtained |", "|---|---|---|---|---|---|---|"
             + ("---|" if co2 else "") + "---|"]
    for r in rows:
        per = r.get("joules_per_network")
        parts = " / ".join(_number(r[k] * JOULES_PER_KWH) for k in ("cpu_kwh", "gpu_kwh", "ram_kwh"))
        cells = [r["phase"], f"{r['seconds']:.1f}", f"{r['kwh']:.3g}", _number(r["joules"]), parts,
                 str(r.get("networks", "-")), "-" if per is None else _number(per)]
        if co2:
            cells.append(f"{1000 * r['co2_kg']:.3g} ({r['region']})" if "co2_kg" in r else "-")
        lines.append("| " + " | ".join(cells + [r["method"]]) + " |")
    return lines


def summary(rows: list[dict[str, Any]]) -> str:
    """One line: joules per phase and in total, and how they were obtained, saying "estimated" where no
    RAPL or NVML was readable ('' without rows)."""
    if not rows:
        return ""
    total = sum(r["kwh"] for r in rows)
    phases = ", ".join(f"{r['phase']} {_number(r['joules'])} J" for r in rows)
    how = rows[0]["method"] if rows[0]["measured"] else \
        f"estimated, no RAPL or NVML readable here: {rows[0]['method']}"
    return f"energy: {phases}; total {total:.3g} kWh = {_number(total * JOULES_PER_KWH)} J ({how})"
