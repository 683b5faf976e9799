"""Energy of a run's phases, measured with CodeCarbon's offline tracker (one meter per run).

CodeCarbon reads the RAPL counters of the CPU package and NVIDIA's NVML where the machine exposes
them; elsewhere it estimates CPU power from its table of processor TDPs times the measured CPU load,
and RAM power from the memory size. Every figure carries which of these made it (``method``).
Scope: this process and its children (local Ray workers included, remote cluster nodes not); RAPL
and NVML read the whole package or GPU.

Offline and private: no network, no dashboard, no CodeCarbon file or lock file; the figures go to
the run's own ``energy.json``, and a run prints one :func:`summary` line at its end, which says
"estimated" where nothing was measured. CO2 only for a configured region (the country's average
intensity from CodeCarbon's energy-mix table). With tracking off (:class:`NoMeter`) CodeCarbon is
never imported.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from evaluation.atomic import atomic_write_text
from evaluation.errors import ZcpError

ENERGY_FILE = "energy.json"
JOULES_PER_KWH = 3.6e6
PARTS = ("cpu", "gpu", "ram")
OFF_HINT = "turn tracking off with --no-energy or [campaign] energy = false"
NEEDS_CODECARBON = f"energy tracking needs codecarbon (pip install codecarbon==3.3.2); or {OFF_HINT}"


def _energy_mix() -> dict[str, Any]:
    """CodeCarbon's per-country energy-mix table, found without importing CodeCarbon."""
    try:
        spec = importlib.util.find_spec("codecarbon")
    except ValueError:  # in sys.modules as None: made unimportable on purpose
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ZcpError(NEEDS_CODECARBON)
    path = Path(spec.submodule_search_locations[0]) / "data" / "private_infra" / "global_energy_mix.json"
    return json.loads(path.read_text())


def check_region(region: str) -> str:
    """``region`` upper-cased if it is a 3-letter country code CodeCarbon knows ('' = no region, no CO2)."""
    if not region:
        return ""
    if region.upper() not in _energy_mix():
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


COUNTERS = {"intel_rapl": "RAPL", "windows_emi": "RAPL (Windows EMI)", "intel_power_gadget": "RAPL (Power Gadget)"}


def _method(hardware: list[Any], ram_watts: float) -> tuple[str, bool]:
    """How CodeCarbon obtains each part's energy, and whether any part is measured (RAPL / NVML).

    Reads the tracker's hardware list: private in CodeCarbon, hence the pinned version."""
    parts, measured = [], False
    for hw in hardware:
        kind, mode = type(hw).__name__, getattr(hw, "_mode", None)
        if kind == "CPU" and mode in COUNTERS:
            parts.append(f"CPU: {COUNTERS[mode]}")
            measured = True
        elif kind == "CPU":
            share = "load" if mode == "cpu_load" else "50% (no load reading)"
            parts.append(f"CPU: estimate ({getattr(hw, '_tdp', '?')} W TDP x {share})")
        elif kind == "GPU":
            vendors = {type(d).__name__ for d in getattr(hw.devices, "devices", [])}
            parts.append("GPU: AMD SMI" if any(v.startswith("AMD") for v in vendors) else "GPU: NVML")
            measured = True
        elif kind == "RAM":
            parts.append(f"RAM: estimate ({ram_watts:g} W)")
        else:
            parts.append(f"{kind}: {mode or 'measured'}")
            measured = True
    return ", ".join(sorted(parts)), measured


class NoMeter:
    """Tracking off: phases run bare, nothing is recorded, CodeCarbon is not imported."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    @contextmanager
    def phase(self, name: str) -> Iterator[dict[str, Any]]:
        yield {}


class EnergyMeter:
    """Energy per named phase of one run, written to ``path`` (JSON) after every phase.

    ``with meter.phase("evolution") as row: ...`` measures the block; set ``row["networks"]`` inside
    it to get joules per network. A phase name used again adds to its row; a phase that raises is not
    recorded. CodeCarbon's import and hardware detection (seconds: py-cpuinfo, its TDP table) run in a
    thread beside the run's first phases instead of before them, and no phase waits for them: the
    seconds before the tracker was ready (``unmeasured_s``) count at the power it measures next (the
    rest of the phase, or the next phase; :attr:`rows` measures a moment if no phase is left)."""

    def __init__(self, path: str | Path, region: str = "") -> None:
        self.path = Path(path)
        check_writable(self.path.parent)
        self.region = check_region(region)
        mix = _energy_mix()  # a missing CodeCarbon is an error now, not after the first phase
        self._intensity = mix[self.region]["carbon_intensity"] if self.region else 0.0
        self._rows: list[dict[str, Any]] = []
        self._deferred: list[tuple[str, float, int | None]] = []  # phases over before the tracker was ready
        self._tracker: Any = None
        self._error: ZcpError | None = None
        self._method, self._measured = "", False
        self._lock = threading.Lock()
        self._pending: tuple[str, float] | None = None  # (phase, start) waiting for the tracker
        self._running: tuple[str, float] | None = None  # (phase, when the tracker started it)
        self._setup = threading.Thread(target=self._set_up, name="zcp-energy-setup", daemon=True)
        self._setup.start()

    def _set_up(self) -> None:
        try:
            tracker = self._new_tracker()
            tracker.start_task("set-up")  # detects the hardware
            tracker.stop_task()
        except Exception as exc:  # noqa: BLE001 (reported by the phase that needs the tracker)
            self._error = exc if isinstance(exc, ZcpError) else ZcpError(
                f"CodeCarbon failed to set up ({type(exc).__name__}: {exc}); {OFF_HINT}")
            return
        with self._lock:
            self._tracker = tracker
            if self._pending is not None:
                tracker.start_task(self._pending[0])
                self._running = (self._pending[0], time.perf_counter())
                self._pending = None

    def _new_tracker(self) -> Any:
        try:
            from codecarbon import OfflineEmissionsTracker
        except ImportError:
            raise ZcpError(NEEDS_CODECARBON) from None
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ZcpError(f"energy tracking cannot create {self.path.parent} ({exc.strerror or exc}); {OFF_HINT}") from None
        tracker = OfflineEmissionsTracker(
            output_methods=[], emissions_endpoint=None, electricitymaps_api_token=None,
            allow_multiple_runs=True, log_level="error", tracking_mode="process",
            output_dir=str(self.path.parent), country_iso_code=self.region or None,
            force_carbon_intensity_g_co2e_kwh=self._intensity)
        if not hasattr(tracker, "_active_task"):  # CodeCarbon swallows its own set-up errors
            raise ZcpError(f"CodeCarbon could not set up its tracker; {OFF_HINT}")
        return tracker

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One row per phase (phases that ended before the tracker was ready are recorded now)."""
        if self._deferred:
            self._setup.join()
            self._raise_set_up_error()
            self._tracker.start_task("now")
            data = self._tracker.stop_task()
            self._describe(data)
            self._flush_deferred(_rates(data))
        return self._rows

    def _raise_set_up_error(self) -> None:
        if self._error is not None:
            raise self._error

    @contextmanager
    def phase(self, name: str) -> Iterator[dict[str, Any]]:
        begin = time.perf_counter()
        with self._lock:
            self._raise_set_up_error()
            if self._tracker is None:
                self._pending = (name, begin)
            else:
                self._tracker.start_task(name)
                self._running = (name, begin)
        extra: dict[str, Any] = {}
        try:
            yield extra
        finally:
            end = time.perf_counter()
            with self._lock:
                self._pending, running, self._running = None, self._running, None
                data = self._tracker.stop_task() if running else None
        if data is None:  # over before the tracker was ready: recorded at the power of the next measured phase
            self._deferred.append((name, end - begin, extra.get("networks")))
            return
        self._describe(data)
        rates = _rates(data)
        self._flush_deferred(rates)
        unmeasured = running[1] - begin
        self._add(name, end - begin, unmeasured, extra.get("networks"),
                  {part: float(getattr(data, f"{part}_energy")) + unmeasured * rates[part] for part in PARTS})

    def _flush_deferred(self, rates: dict[str, float]) -> None:
        deferred, self._deferred = self._deferred, []
        for name, seconds, networks in deferred:
            self._add(name, seconds, seconds, networks, {part: seconds * rates[part] for part in PARTS})

    def _describe(self, data: Any) -> None:
        if not self._method:
            self._method, self._measured = _method(self._tracker._hardware, data.ram_power)

    def _add(self, name: str, seconds: float, unmeasured: float, networks: int | None, kwh: dict[str, float]) -> None:
        row = next((r for r in self._rows if r["phase"] == name), None)
        if row is None:
            row = {"phase": name, "seconds": 0.0, "unmeasured_s": 0.0, "kwh": 0.0,
                   **{f"{part}_kwh": 0.0 for part in PARTS}}
            self._rows.append(row)
        row["seconds"] += seconds
        row["unmeasured_s"] += unmeasured
        for part in PARTS:
            row[f"{part}_kwh"] += kwh[part]
        row["kwh"] = sum(row[f"{part}_kwh"] for part in PARTS)
        row["joules"] = row["kwh"] * JOULES_PER_KWH
        if networks is not None:
            row["networks"] = row.get("networks", 0) + networks
            row["joules_per_network"] = row["joules"] / row["networks"] if row["networks"] else None
        row["method"], row["measured"] = self._method, self._measured
        if row["unmeasured_s"] >= 0.05:
            row["method"] += f"; {row['unmeasured_s']:.1f} s of it (CodeCarbon setting up) at the power measured next"
        if self.region:
            row["region"], row["co2_kg"] = self.region, row["kwh"] * self._intensity / 1000
        atomic_write_text(self.path, json.dumps(self._rows, indent=1) + "\n")


def _rates(data: Any) -> dict[str, float]:
    """kWh per second of each part over a measured task (its power where it lasted under a second)."""
    return {part: float(getattr(data, f"{part}_energy")) / data.duration if data.duration >= 1
            else float(getattr(data, f"{part}_power")) / JOULES_PER_KWH for part in PARTS}


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
        f"estimated by CodeCarbon, no RAPL or NVML readable here: {rows[0]['method']}"
    return f"energy: {phases}; total {total:.3g} kWh = {_number(total * JOULES_PER_KWH)} J ({how})"
