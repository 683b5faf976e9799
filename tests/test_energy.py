"""Energy tracking (evaluation/energy.py): CodeCarbon's offline tracker per phase, its figures and
where they go, tracking off without importing CodeCarbon, concurrent trackers, bad settings."""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from evaluation import energy, hardware
from evaluation.errors import ZcpError
from evaluation.samples import make_sample, write_sample
from evaluation.spaces import get_space
from experiments import campaign, heldout
from experiments.cli import main
from experiments.config import parse_config
from tests.campaigns import tiny_config

ROOT = Path(__file__).resolve().parent.parent


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(1000))


def _warm(tmp_path: Path) -> None:
    """Leave CodeCarbon imported and its hardware detection cached in this process (as after a first run)."""
    energy.energy_meter(tmp_path / "warm" / "energy.json")._setup.join()


CHILD_BUSY = ("import sys, time\nend = time.perf_counter() + float(sys.argv[1])\n"
              "while time.perf_counter() < end: sum(range(1000))\n")


def _tdp(row: dict) -> tuple[float, int] | None:
    """The (TDP W, cores) of a row's CPU estimate (None where its CPU was measured)."""
    found = re.search(r"CPU: estimate \(([\d.]+) W TDP x CPU s / (\d+) cores\)", row["method"])
    return (float(found.group(1)), int(found.group(2))) if found else None


PHASES = """
import json, os, subprocess, sys, time
from evaluation.energy import energy_meter
CHILD_BUSY = %r
def _busy(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(1000))
setup = sum(os.times()[:4])
meter = energy_meter(sys.argv[1])
meter._setup.join()  # measured from their start on (the set-up test covers phases that begin earlier)
setup = sum(os.times()[:4]) - setup  # CodeCarbon's set-up, all its threads and processes
cpu, reaped = time.process_time(), sum(os.times()[2:4])
with meter.phase("busy") as row:
    _busy(1.0)
    subprocess.run([sys.executable, "-c", CHILD_BUSY, "0.5"], check=True)  # a child's CPU counts too
    row["networks"] = 3
cpu, reaped = time.process_time() - cpu, sum(os.times()[2:4]) - reaped
with meter.phase("idle"):
    time.sleep(1.0)
late = time.process_time()
with meter.phase("busy") as row:  # the same phase again adds to its row
    _busy(0.5)
    row["networks"] = 2
late = time.process_time() - late
try:
    with meter.phase("outer"), meter.phase("inner"):
        pass
except RuntimeError as exc:
    nested = str(exc)
print(json.dumps({"rows": meter.rows, "cpu_s": cpu + late, "reaped_s": reaped, "nested": nested, "setup_s": setup}))
""" % CHILD_BUSY


def test_phases_are_measured_in_kwh_and_joules_and_say_how(tmp_path):
    """In a fresh process (its tree: itself and the child it starts), so that the CPU seconds compared
    are those of the same processes: children left by other tests (a Ray instance) would count too."""
    out = subprocess.run([sys.executable, "-c", PHASES, str(tmp_path / "run" / "energy.json")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stderr == "" and len(out.stdout.splitlines()) == 1, out  # phases print nothing
    result = json.loads(out.stdout)
    rows = json.loads((tmp_path / "run" / "energy.json").read_text())
    assert rows == result["rows"] and [r["phase"] for r in rows] == ["busy", "idle"]
    assert "do not nest" in result["nested"]
    busy, idle = rows
    assert busy["networks"] == 5 and busy["seconds"] > 2.0 and idle["seconds"] == pytest.approx(1.0, abs=0.3)
    assert busy["kwh"] > 0 and busy["joules"] == pytest.approx(busy["kwh"] * 3.6e6)
    assert busy["kwh"] == pytest.approx(busy["cpu_kwh"] + busy["gpu_kwh"] + busy["ram_kwh"])
    assert busy["joules_per_network"] == pytest.approx(busy["joules"] / 5)
    tree = result["cpu_s"] + result["reaped_s"]  # this process and its child
    assert result["reaped_s"] > 0.2 and busy["cpu_s"] == pytest.approx(tree, abs=0.1)
    assert idle["cpu_s"] < 0.2 and 0 <= idle["tracker_cpu_s"] < 0.05  # two tree snapshots, the RAM model
    assert busy["tracker_cpu_s"] == pytest.approx(result["setup_s"], abs=0.1)  # the set-up's, charged to row 1
    assert "co2_kg" not in busy  # no region, no CO2
    assert busy["measured"] == any(source in busy["method"] for source in ("RAPL", "NVML"))
    estimate = _tdp(busy)
    if estimate:  # the CPU estimate is TDP x (CPU seconds of the process tree) / cores, phase by phase
        tdp, cores = estimate
        assert cores == psutil.cpu_count()  # logical CPUs, CodeCarbon's count
        assert busy["cpu_kwh"] * 3.6e6 == pytest.approx(tdp * tree / cores, rel=0.1)
        assert idle["cpu_kwh"] * 3.6e6 == pytest.approx(tdp * idle["cpu_s"] / cores)
        watts = float(re.search(r"RAM: estimate \(([\d.]+) W\)", busy["method"]).group(1))
        assert busy["ram_kwh"] * 3.6e6 == pytest.approx(watts * busy["seconds"], rel=0.01)
    assert "CPU: " in busy["method"] and "RAM: " in busy["method"]
    table = energy.markdown(rows)
    assert table[0].startswith("| phase | wall s | energy kWh | energy J |") and busy["method"] in table[2]
    line = energy.summary(rows)
    assert line.startswith("energy: busy ") and "\n" not in line
    assert ("estimated" in line) != busy["measured"] and line.count("estimate") <= 3


def test_descendants_started_during_a_phase_count_in_full(tmp_path):
    """A grandchild started mid-phase and still running at its end (as a Ray worker under the raylet)
    counts from its start: the tree is read at the phase's start and end only, by zcp."""
    meter = energy.energy_meter(tmp_path / "e.json")
    meter._setup.join()
    work = "import time\nwhile time.process_time() < 0.5: pass\ntime.sleep(60)\n"  # 0.5 CPU-s, then idle
    spawn = f"import subprocess, sys\np = subprocess.Popen([sys.executable, '-c', {work!r}])\nsys.stdin.read(); p.kill(); p.wait()\n"
    with meter.phase("workers"):
        parent = subprocess.Popen([sys.executable, "-c", spawn], stdin=subprocess.PIPE, text=True)
        deadline, busy = time.perf_counter() + 60, 0.0
        while busy < 0.45 and time.perf_counter() < deadline:  # psutil counts 10 ms ticks
            time.sleep(0.2)
            busy = sum(sum(p.cpu_times()[:2]) for p in psutil.Process(parent.pid).children())
    parent.communicate("")
    assert busy >= 0.45 and meter.rows[0]["cpu_s"] >= busy


def test_tree_cpu_counts_new_reaped_and_lost_processes():
    """Snapshots (pid, start) -> (own s, reaped children's s, parent): a process that ended counts up to
    its end when its parent reaped it, and nothing (never less) when it left the tree."""
    root, a, b = (1, 0.0), (2, 0.0), (3, 0.0)
    start = {root: (1.0, 0.0, 0), a: (2.0, 0.5, 1), b: (3.0, 0.0, 2)}
    assert hardware.tree_cpu_seconds(start, {root: (1.5, 0.0, 0), a: (2.0, 0.5, 1), b: (3.0, 0.0, 2),
                                           (4, 9.0): (0.7, 0.0, 1)}) == pytest.approx(1.2)  # new: in full
    # b ended after 1 more second, reaped by a: a's reaped seconds grew by b's whole 4 s
    assert hardware.tree_cpu_seconds(start, {root: (1.0, 0.0, 0), a: (2.0, 4.5, 1)}) == pytest.approx(1.0)
    # a and b ended, a reaped b, root reaped a: root's reaped seconds hold a's 2.5 own and 4.5 reaped
    assert hardware.tree_cpu_seconds(start, {root: (1.0, 7.0, 0)}) == pytest.approx(1.5)
    # a ended (0.5 s more) but b left the tree alive: b's seconds are lost, and a's extra half second
    # with them (root's reaped seconds grew by 3 < the 5.5 a and b had): never a negative figure
    assert hardware.tree_cpu_seconds(start, {root: (1.0, 3.0, 0)}) == 0.0
    assert hardware.tree_cpu_seconds(start, {root: (1.2, 0.0, 0)}) == pytest.approx(0.2)


@pytest.mark.skipif(hardware.kernel_cpu_model() is None, reason="no model name in /proc/cpuinfo (not x86 Linux)")
def test_the_kernel_names_the_cpu_as_py_cpuinfo_does():
    """CodeCarbon is handed /proc/cpuinfo's model name instead of running py-cpuinfo's extra process:
    the same brand string, so the same TDP row."""
    import cpuinfo

    assert hardware.kernel_cpu_model() == cpuinfo.get_cpu_info()["brand_raw"]


def test_a_region_adds_co2_at_its_offline_intensity(tmp_path):
    meter = energy.energy_meter(tmp_path / "e.json", region="fra")
    with meter.phase("a"):
        _busy(0.3)
    row = meter.rows[0]
    intensity = hardware.energy_mix()["FRA"]["carbon_intensity"]  # g per kWh
    assert row["region"] == "FRA" and row["co2_kg"] == pytest.approx(row["kwh"] * intensity / 1000, rel=1e-6)
    assert "g CO2 (region)" in energy.markdown(meter.rows)[0]


def test_tracker_writes_nothing_but_the_run_file_and_takes_no_lock(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lock = Path(tempfile.gettempdir()) / ".codecarbon.lock"
    meter = energy.energy_meter(tmp_path / "run" / "energy.json")
    with meter.phase("a"):
        assert not lock.exists()
        _busy(0.2)
    assert [r["phase"] for r in meter.rows] == ["a"]  # as a run reads them at its end (also a phase done before set-up)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["run", "run/energy.json"]


def test_concurrent_trackers_do_not_collide(tmp_path):
    """Two processes tracking at once (tests, Ray workers, two runs) both measure: no lock refuses one."""
    code = ("import sys, time; from evaluation.energy import energy_meter\n"
            "m = energy_meter(sys.argv[1])\n"
            "with m.phase('p'):\n    time.sleep(2)\n"
            "print(m.rows[0]['kwh'] > 0)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / f"{i}.json")], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [out.strip() for out, _ in results] == ["True", "True"], results
    assert all(err == "" for _, err in results), results
    one, two = energy.energy_meter(tmp_path / "a.json"), energy.energy_meter(tmp_path / "b.json")
    with one.phase("outer"), two.phase("inner"):  # two meters of one process overlap
        _busy(0.2)
    assert one.rows[0]["kwh"] > 0 and two.rows[0]["kwh"] > 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("energy")
    config = tiny_config(tmp, tmp / "caches", generations=2, population=16)
    on = campaign.start(config, tmp / "on", progress=False)
    return tmp, config, on


def test_campaign_measures_each_phase(runs, capsys):
    tmp, _, record = runs
    phases = record["energy_this_run"]
    assert [r["phase"] for r in phases] == ["cache build", "evolution", "report"]
    assert all(r["kwh"] > 0 and r["seconds"] > 0 for r in phases)
    assert json.loads((tmp / "on" / "energy.json").read_text()) == phases
    assert record["seconds_this_run"] >= sum(r["seconds"] for r in phases[:2]) - 0.5


def test_tracking_off_never_imports_codecarbon(runs, monkeypatch):
    """With tracking off a campaign runs with CodeCarbon unimportable; with it on, the import is needed."""
    tmp, config, _ = runs
    monkeypatch.setitem(sys.modules, "codecarbon", None)  # `import codecarbon` now raises ImportError
    record = campaign.start(config, tmp / "off", progress=False, overrides=["campaign.energy=false"])
    assert "energy_this_run" not in record and not (tmp / "off" / "energy.json").exists()
    with pytest.raises(ZcpError, match="energy tracking needs codecarbon"):
        campaign.start(config, tmp / "on-again", progress=False)


def test_heldout_report_takes_measured_energy_and_measures_its_own(runs):
    """The cost table shows each run's measured energy (or says it was not measured); the report's own
    phases are measured too. Runs that differ only in energy settings are seeds of one campaign."""
    tmp, _, _ = runs
    result = heldout.report([tmp / "on", tmp / "off"], tmp / "report", stratified_n=6, resamples=20,
                            zoo=["params"], scores_dir=tmp / "scores")
    on, off = result["cost"]
    assert on["energy_kwh"] > 0 and "CPU: " in on["energy_method"] and off["energy_kwh"] is None
    assert [r["phase"] for r in result["report_energy"]] == ["caches", "single-terminal expressions (cache)",
                                                             "evolved and baselines (cache)", "zoo params (live networks)"]
    text = (tmp / "report" / "results.md").read_text()
    assert "| not measured | run without energy tracking |" in text and "Energy of this report" in text
    assert "10 W per" not in text


def test_energy_settings_do_not_change_the_config_digest():
    base = parse_config("")
    assert base.campaign.energy is True and base.campaign.energy_region == ""
    assert parse_config("[campaign]\nenergy = false\nenergy_region = 'DEU'\n").digest() == base.digest()
    assert parse_config("[campaign]\nseed = 1\n").digest() != base.digest()


def test_cli_no_energy_and_resume_without_tracking(runs, capsys):
    tmp, config, _ = runs
    assert main(["evolve", str(config), "--out", str(tmp / "cli-off"), "--no-energy"]) == 0
    out = capsys.readouterr().out
    assert "energy:" not in out and "energy = false" in (tmp / "cli-off" / "config.toml").read_text()
    assert main(["evolve", str(config), "--out", str(tmp / "cli-on"), "--energy-region", "USA"]) == 0
    out = capsys.readouterr().out
    assert "energy: cache build " in out and "kWh" in out
    assert json.loads((tmp / "cli-on" / "energy.json").read_text())[0]["region"] == "USA"
    assert main(["resume", str(tmp / "cli-on"), "--no-energy"]) == 0  # the energy settings are not in the digest
    assert "energy:" not in capsys.readouterr().out
    assert "energy_this_run" not in json.loads((tmp / "cli-on" / "hall_of_fame.json").read_text())


def test_cache_build_and_compare_give_joules_per_network(tmp_path, capsys, data_dir):
    sample = write_sample(make_sample(get_space("tss"), "random", 3, 0, split="all"), tmp_path / "s.json")
    common = ["--space", "tss", "--dataset", "cifar10", "--sample", str(sample), "--batch-size", "4",
              "--backend", "serial"]
    assert main(["cache", "build", *common, "--terminals", "params,snip", "--out", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "J per network built (3 this run)" in out
    assert json.loads((tmp_path / "cache" / "energy.json").read_text())[0]["networks"] == 3
    argv = ["compare", "--proxies", "params,synflow", *common, "--score-cache", str(tmp_path / "scores"),
            "--bootstrap", "20", "--out", str(tmp_path / "cmp")]
    assert main(argv) == 0
    rows = {r["phase"]: r for r in json.loads((tmp_path / "cmp" / "energy.json").read_text())}
    assert set(rows) == {"score params", "score synflow"}
    assert all(r["networks"] == 3 and r["joules_per_network"] > 0 for r in rows.values())
    report = (tmp_path / "cmp" / "results.md").read_text()
    assert "## Energy" in report and "| score synflow |" in report
    assert main(argv) == 0  # everything from the score cache: no network scored, none counted
    assert all(r["networks"] == 0 and r["joules_per_network"] is None
               for r in json.loads((tmp_path / "cmp" / "energy.json").read_text()))
    capsys.readouterr()
    assert main(["score", "--proxy", "params", *common, "--score-cache", str(tmp_path / "scores"),
                 "--out", str(tmp_path / "params.csv")]) == 0
    assert "no network scored this run (all from the score cache)" in capsys.readouterr().out
    assert json.loads((tmp_path / "params.energy.json").read_text())[0]["phase"] == "score params"


def test_bad_energy_settings_are_one_line():
    with pytest.raises(ZcpError, match="unknown energy region 'XYZ'") as info:
        parse_config("[campaign]\nenergy_region = 'XYZ'\n")
    assert "\n" not in str(info.value)
    with pytest.raises(ZcpError, match="campaign.energy must be bool"):
        parse_config("[campaign]\nenergy = 'rapl'\n")
    with pytest.raises(ZcpError, match="unknown key campaign.energy_mode"):
        parse_config("[campaign]\nenergy_mode = 'rapl'\n")


def test_unwritable_folder_is_refused_before_any_work(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ZcpError, match="energy tracking cannot write its figures in .*NotADirectoryError"):
        energy.energy_meter(tmp_path / "file" / "run" / "energy.json")
    assert isinstance(energy.energy_meter(tmp_path / "file" / "x.json", enabled=False), energy.NoMeter)


def test_set_up_runs_beside_the_first_phase_and_its_seconds_are_counted(tmp_path, monkeypatch):
    """CodeCarbon's set-up (import, hardware detection) overlaps the first phase, which does not wait for
    it: the CPU estimate counts the phase from its start anyway (its CPU seconds are read by zcp), and a
    phase over before the set-up is recorded once the hardware is known."""
    _warm(tmp_path)
    detect = energy.detect_hardware

    def slow(*args):
        time.sleep(1.0)
        return detect(*args)

    monkeypatch.setattr(energy, "detect_hardware", slow)
    meter = energy.energy_meter(tmp_path / "e.json")
    start = time.perf_counter()
    with meter.phase("long"):
        _busy(2.0)
    assert time.perf_counter() - start < 2.5  # the phase did not wait for the set-up
    short = energy.energy_meter(tmp_path / "s.json")
    with short.phase("short"):  # over before the hardware is known
        _busy(0.3)
    assert time.perf_counter() - start < 3.0 and not (tmp_path / "s.json").exists()
    for row in (*meter.rows, *short.rows):  # reading them waits for the set-up
        assert row["cpu_s"] > 0.1 and row["kwh"] > 0 and row["unmeasured_s"] == 0
        estimate = _tdp(row)
        if estimate:
            assert row["cpu_kwh"] * 3.6e6 == pytest.approx(estimate[0] * row["cpu_s"] / estimate[1])
    assert meter.rows[0]["tracker_cpu_s"] > 0  # the set-up's CPU seconds, charged to the first row


class FakeCounter:
    """A CodeCarbon hardware object with an energy counter (as RAPL or NVML) at a steady 50 W."""

    def __init__(self) -> None:
        self.reads = 0

    def start(self) -> None:
        pass

    def measure_power_and_energy(self, last_duration: float) -> tuple[None, SimpleNamespace]:
        self.reads += 1
        return None, SimpleNamespace(kWh=50 * last_duration / 3.6e6)


def test_energy_counters_are_read_during_a_phase_and_cover_the_set_up(tmp_path, monkeypatch):
    """With a counter (RAPL / NVML) the CPU figure is the counter's, read every COUNTER_SECS (a counter that
    wraps stays right); the seconds before the set-up count at the power measured next."""
    counter = FakeCounter()

    def counters(*args):
        time.sleep(1.0)
        return hardware.Hardware({"cpu": [counter]}, None, 2, None, ["CPU: RAPL"])

    monkeypatch.setattr(energy, "detect_hardware", counters)
    monkeypatch.setattr(energy, "COUNTER_SECS", 0.2)
    meter = energy.energy_meter(tmp_path / "e.json")
    with meter.phase("before"):
        pass
    with meter.phase("across"):
        time.sleep(2.0)
    reads = counter.reads
    with meter.phase("after") as row:
        time.sleep(1.0)
        row["networks"] = 4
    before, across, after = meter.rows
    assert reads >= 5 and counter.reads - reads >= 4  # read during the phases, not only at their ends
    assert across["unmeasured_s"] == pytest.approx(1.0, abs=0.5) and "CodeCarbon setting up" in across["method"]
    assert before["unmeasured_s"] == pytest.approx(before["seconds"]) and after["unmeasured_s"] < 0.05
    for row in (before, across, after):
        assert row["cpu_kwh"] * 3.6e6 == pytest.approx(50 * row["seconds"], rel=0.01)
        assert row["measured"] and row["method"].startswith("CPU: RAPL") and row["ram_kwh"] == 0
    assert after["joules_per_network"] == pytest.approx(50 * after["seconds"] / 4, rel=0.01)
    assert "estimated" not in energy.summary(meter.rows)
