"""The ``zcp`` command end to end: outputs, exit codes, and one-line errors (never a traceback)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from evaluation.datasets import DATASETS
from evaluation.groundtruth import read_table
from experiments.cli import main
from tests.nats_fixture import write_archive


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_bench_info_lists_what_was_found(capsys, data_dir):
    code, out, _ = run(capsys, "bench", "info")
    assert code == 0
    assert "nats_tss_ground_truth.csv" in out and "cifar10_test_1017.npz" in out


def test_bench_check_sample_passes(capsys, data_dir):
    code, out, _ = run(capsys, "bench", "check", "--space", "tss", "--dataset", "cifar100", "--limit", "20", "--workers", "1")
    assert code == 0
    assert "tss/cifar100: 20 of 20 networks match" in out


def test_bench_check_reports_mismatch(capsys, tmp_path, data_dir):
    index = int(np.sort(np.random.default_rng(0).choice(15625, 10, replace=False))[0])  # checked by --limit 10
    lines = (data_dir / "nats_tss_ground_truth.csv").read_text().splitlines(keepends=True)
    fields = lines[1 + index].split(",")
    fields[5] = "0.999999"  # its cifar10_params_M
    lines[1 + index] = ",".join(fields)
    (tmp_path / "t.csv").write_text("".join(lines))
    code, out, _ = run(capsys, "bench", "check", "--space", "tss", "--dataset", "cifar10", "--limit", "10",
                       "--tss-table", str(tmp_path / "t.csv"), "--source", "table", "--workers", "1")
    assert code == 1
    assert f"index {index} " in out and "benchmark says 0.999999 M" in out and "9 of 10 networks match" in out


def test_bench_sample_writes_a_readable_file(capsys, tmp_path, data_dir):
    out_file = tmp_path / "s.json"
    code, out, err = run(capsys, "bench", "sample", "--space", "tss", "--dataset", "cifar10", "--split", "heldout",
                         "--kind", "quantile", "--n", "100", "--seed", "0", "--out", str(out_file))
    assert code == 0 and "wrote 100 tss architectures" in out
    record = json.loads(out_file.read_text())
    assert record["kind"] == "quantile" and len(record["architectures"]) == 100
    small, grown = tmp_path / "s20.json", tmp_path / "s40.json"
    assert run(capsys, "bench", "sample", "--space", "tss", "--within", str(out_file), "--n", "20", "--out", str(small))[0] == 0
    code, out, err = run(capsys, "bench", "sample", "--space", "tss", "--within", str(out_file), "--keep", str(small),
                         "--n", "40", "--seed", "1", "--out", str(grown))
    assert code == 0 and f"seed 1, holding the 20 of {small})" in out, err
    archs = [{str(a) for a in json.loads(f.read_text())["architectures"]} for f in (small, grown)]
    assert archs[0] < archs[1] and len(archs[1]) == 40


def test_stratified_sample_says_when_bins_are_short(capsys, tmp_path, data_dir):
    # CIFAR-10 accuracies crowd near the top: the low equal-width bins hold few architectures.
    code, out, err = run(capsys, "bench", "sample", "--space", "tss", "--dataset", "cifar10", "--split", "heldout",
                         "--kind", "stratified", "--n", "1000", "--seed", "0", "--out", str(tmp_path / "s.json"))
    n = len(json.loads((tmp_path / "s.json").read_text())["architectures"])
    assert code == 0 and n < 1000 and f"wrote {n} tss" in out and "zcp: note: bin 1 has 0 < 100" in err


def test_export_table_from_official_archive_format(capsys, tmp_path):
    archive = tmp_path / "NATS-sss-v1_0-50262-simple"
    write_archive(archive, "sss", {i: {d: (70.0 + i / 1e4, 0.5) for d in DATASETS} for i in (0, 32767)})
    out_file = tmp_path / "sss.csv"
    code, out, _ = run(capsys, "bench", "export-table", "--archive", str(archive), "--space", "sss", "--out", str(out_file))
    assert code == 0 and "wrote" in out
    truth = read_table(out_file, "sss")
    assert truth.accuracy["cifar10"][32767] == pytest.approx(73.2767)


@pytest.mark.parametrize("argv,match", [
    (["bench", "check", "--space", "nb201", "--dataset", "cifar10"], "invalid choice: 'nb201'"),
    (["bench", "check", "--space", "tss", "--dataset", "cifar10-valid"], "invalid choice: 'cifar10-valid'"),
    (["bench", "sample", "--space", "tss", "--kind", "stratified", "--n", "10", "--out", "x.json"], "needs --dataset"),
    (["bench", "sample", "--space", "tss", "--n", "0", "--out", "x.json"], "sample size must be >= 1"),
    (["bench", "sample", "--space", "tss", "--n", "5", "--keep", "k.json", "--out", "x.json"], "--keep needs --within"),
    (["bench", "check", "--space", "tss", "--dataset", "cifar10", "--limit", "0"], "--limit must be in"),
    (["bench", "check", "--space", "sss", "--dataset", "cifar10", "--sss-table", "/nonexistent/t.csv",
      "--sss-archive", "/nonexistent/a"], "no sss ground truth"),
    (["bench", "export-table", "--archive", "/nonexistent/archive", "--space", "tss", "--out", "t.csv"], "archive not found"),
])
def test_bad_input_is_one_line(capsys, argv, match):
    code, _, err = run(capsys, *argv)
    assert code == 2 and match in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_console_script_prints_one_line_and_exits_nonzero(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("index,arch\n0,x\n")
    proc = subprocess.run([sys.executable, "-m", "experiments.cli", "bench", "check", "--space", "tss", "--dataset",
                           "cifar10", "--tss-table", str(bad), "--source", "table"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("zcp: error: ") and proc.stderr.count("\n") == 1, proc.stderr
