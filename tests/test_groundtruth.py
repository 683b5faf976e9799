import math
import time
from pathlib import Path

import nats_bench
import numpy as np
import pytest

from evaluation.datasets import DATASETS
from evaluation.errors import ZcpError
from evaluation.groundtruth import (TABLE_COLUMNS, describe_sources, export_table, load_ground_truth, read_archive,
                                    read_table, write_table)
from evaluation.paths import resolve_paths
from evaluation.spaces import get_space
from nats_fixture import FULL_HP, HPS, SEED_OFFSETS, SEEDS, write_archive

# index -> dataset -> (seed-mean test accuracy under the full schedule, params in millions)
KNOWN = {
    "tss": {
        0: {"cifar10": (85.863333, 0.129306), "cifar100": (52.913333, 0.135156), "ImageNet16-120": (26.633333, 0.136456)},
        1: {"cifar10": (93.66, 0.802426), "cifar100": (70.293333, 0.808276), "ImageNet16-120": (44.033333, 0.809576)},
        15624: {"cifar10": (91.25, 0.5)},  # the last index; no cifar100 / ImageNet16-120 results
    },
    "sss": {
        0: {"cifar10": (80.125, 0.011714), "cifar100": (50.5, 0.012524), "ImageNet16-120": (25.75, 0.012704)},
        12: {"cifar10": (85.5, 0.067378), "cifar100": (60.25, 0.071068), "ImageNet16-120": (30.0, 0.071888)},
        32767: {"cifar100": (72.0, 0.719524)},
    },
}


@pytest.fixture(scope="session")
def archives(tmp_path_factory) -> dict[str, Path]:
    """One small official-format archive per space, written once (read-only for the tests)."""
    root = tmp_path_factory.mktemp("archives")
    return {space: write_archive(root / space, space, KNOWN[space]) for space in KNOWN}


# ---------------------------------------------------------------------------- the fixture itself

@pytest.mark.parametrize("space", ["tss", "sss"])
def test_fixture_is_read_by_the_official_api(archives, space):
    api = nats_bench.create(str(archives[space]), space, fast_mode=True, verbose=False)
    full = FULL_HP[space]
    assert len(api) == get_space(space).size
    for index, per_dataset in KNOWN[space].items():
        for dataset, (acc, params) in per_dataset.items():
            assert api.get_more_info(index, dataset, hp=full, is_random=False)["test-accuracy"] == pytest.approx(acc, abs=1e-9)
            assert api.get_cost_info(index, dataset, hp=full)["params"] == pytest.approx(params, abs=1e-12)
            # decoys: single seeds, the short schedules, and cifar10-valid hold other numbers
            for seed, offset in zip(SEEDS, SEED_OFFSETS):
                assert api.get_more_info(index, dataset, hp=full, is_random=seed)["test-accuracy"] == pytest.approx(acc + offset)
            for hp in set(HPS[space]) - {full}:
                assert api.get_more_info(index, dataset, hp=hp, is_random=False)["test-accuracy"] != pytest.approx(acc)
                assert api.get_cost_info(index, dataset, hp=hp)["params"] != params
        if "cifar10" in per_dataset:
            valid = api.get_more_info(index, "cifar10-valid", hp=full, is_random=False)["test-accuracy"]
            assert valid != pytest.approx(per_dataset["cifar10"][0])


# ---------------------------------------------------------------------------- archive backend

@pytest.mark.parametrize("space", ["tss", "sss"])
def test_archive_gives_full_schedule_seed_mean_and_nan_elsewhere(archives, space):
    truth = read_archive(archives[space], space)
    sp = get_space(space)
    assert truth.space == space and truth.source == f"archive {archives[space]}"
    assert len(truth.arch) == sp.size and truth.arch[12] == sp.arch_str(12)
    for dataset in DATASETS:
        acc, params = truth.accuracy[dataset], truth.params_m[dataset]
        assert acc.shape == params.shape == (sp.size,) and acc.dtype == np.float64
        assert not acc.flags.writeable
        expected = {i: v[dataset] for i, v in KNOWN[space].items() if dataset in v}
        assert set(np.flatnonzero(~np.isnan(acc))) == set(expected)
        assert set(np.flatnonzero(~np.isnan(params))) == set(expected)
        for index, (a, p) in expected.items():
            assert acc[index] == pytest.approx(a, abs=1e-9)
            assert params[index] == pytest.approx(p, abs=1e-12)


def test_missing_archive_names_path_and_how_to_set_it(tmp_path):
    with pytest.raises(ZcpError, match=r"tss archive not found: .*nowhere.*--tss-archive, \$ZCP_TSS_ARCHIVE or tss_archive"):
        read_archive(tmp_path / "nowhere", "tss")
    with pytest.raises(ZcpError, match=r"ZCP_SSS_ARCHIVE"):
        read_archive(tmp_path / "nowhere", "sss")


def test_archive_given_as_a_file(tmp_path):
    tar = tmp_path / "NATS-tss-v1_0-3ffb9-simple.tar"
    tar.write_bytes(b"not a folder")
    with pytest.raises(ZcpError, match=r"is a file, expected the unpacked fast-mode folder NATS-tss-v1_0-3ffb9-simple"):
        read_archive(tar, "tss")


def test_wrong_folder_suggests_the_archive_inside(tmp_path, archives):
    (tmp_path / "NATS-tss-v1_0-3ffb9-simple").symlink_to(archives["tss"], target_is_directory=True)
    with pytest.raises(ZcpError, match=r"not a NATS-Bench archive folder: it holds no meta.pickle.pbz2 \(did you mean .*simple\?"):
        read_archive(tmp_path, "tss")


def test_archive_of_the_other_space(archives):
    with pytest.raises(ZcpError, match=r"is not the NATS-Bench sss archive: it lists 15625 architectures \(the size of the tss space\)"):
        read_archive(archives["tss"], "sss")
    with pytest.raises(ZcpError, match=r"is not the NATS-Bench tss archive: it lists 32768"):
        read_archive(archives["sss"], "tss")


def test_archive_with_a_different_order(tmp_path):
    archs = [get_space("tss").arch_str(i) for i in range(get_space("tss").size)]
    archs[1], archs[2] = archs[2], archs[1]
    write_archive(tmp_path, "tss", {}, meta_archs=archs)
    with pytest.raises(ZcpError, match=r"is not the NATS-Bench tss archive: its architecture 1 is"):
        read_archive(tmp_path, "tss")


def test_archive_without_architecture_files(tmp_path):
    write_archive(tmp_path, "sss", {})
    with pytest.raises(ZcpError, match=r"holds meta.pickle.pbz2 but no architecture files"):
        read_archive(tmp_path, "sss")


def test_corrupt_architecture_file(tmp_path):
    write_archive(tmp_path, "sss", {3: KNOWN["sss"][0]})
    (tmp_path / "000003.pickle.pbz2").write_bytes(b"garbage")
    with pytest.raises(ZcpError, match=r"cannot read architecture 3 \(hp=90\) from .*000003.pickle.pbz2"):
        read_archive(tmp_path, "sss")


def test_corrupt_meta_file(tmp_path):
    (tmp_path / "meta.pickle.pbz2").write_bytes(b"garbage")
    with pytest.raises(ZcpError, match=r"cannot read NATS-Bench archive"):
        read_archive(tmp_path, "tss")


# ---------------------------------------------------------------------------- export

@pytest.mark.parametrize("space", ["tss", "sss"])
def test_export_round_trips_through_the_table_backend(archives, space, tmp_path):
    out = tmp_path / "sub" / f"{space}.csv"
    out.parent.mkdir()
    out.write_text("stale\n")  # replaced whole
    assert export_table(archives[space], space, out) == out
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp file left behind
    table, archive = read_table(out, space), read_archive(archives[space], space)
    assert table.arch == archive.arch and table.source == f"table {out}"
    for dataset in DATASETS:
        np.testing.assert_array_equal(table.accuracy[dataset], np.round(archive.accuracy[dataset], 6))
        np.testing.assert_array_equal(table.params_m[dataset], np.round(archive.params_m[dataset], 6))
    lines = out.read_text().splitlines()
    assert lines[0] == ",".join(TABLE_COLUMNS) and len(lines) == get_space(space).size + 1


def test_export_format_matches_the_reference_table(archives, tmp_path):
    out = export_table(archives["tss"], "tss", tmp_path / "t.csv")
    lines = out.read_text().splitlines()
    assert lines[1] == ("0,|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|,"
                        "85.863333,52.913333,26.633333,0.129306,0.135156,0.136456")
    assert lines[15625].endswith("91.250000,,,0.500000,,")


# ---------------------------------------------------------------------------- table backend

class TinySpace:
    """A 4-architecture stand-in, so table checks run on 5-line files."""

    name, size = "tiny", 4

    def arch_str(self, index: int) -> str:
        return f"a{index}"


TINY = TinySpace()


def tiny_rows() -> list[list[str]]:
    return [[str(i), f"a{i}", *(f"{80 + i + k:.6f}" for k in range(3)), *(f"{0.1 * (i + 1):.6f}" for _ in range(3))]
            for i in range(4)]


def write_rows(path: Path, rows: list[list[str]], header=TABLE_COLUMNS) -> Path:
    path.write_text("\n".join(",".join(r) for r in [list(header), *rows]) + "\n")
    return path


def test_tiny_table_loads_with_missing_values_extra_columns_any_order(tmp_path):
    rows = tiny_rows()
    rows[2][3] = ""  # no cifar100 accuracy for index 2
    header = ["note", *reversed(TABLE_COLUMNS)]
    path = write_rows(tmp_path / "t.csv", [["x", *reversed(r)] for r in reversed(rows)], header)
    truth = read_table(path, TINY)
    assert truth.arch == ("a0", "a1", "a2", "a3")
    assert truth.accuracy["cifar10"].tolist() == [80.0, 81.0, 82.0, 83.0]
    assert math.isnan(truth.accuracy["cifar100"][2]) and truth.accuracy["cifar100"][3] == 84.0
    assert truth.params_m["ImageNet16-120"].tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_write_table_round_trips_missing_values(tmp_path):
    rows = tiny_rows()
    rows[1][7] = ""
    truth = read_table(write_rows(tmp_path / "a.csv", rows), TINY)
    again = read_table(write_table(truth, tmp_path / "b.csv"), TINY)
    for dataset in DATASETS:
        np.testing.assert_array_equal(again.accuracy[dataset], truth.accuracy[dataset])
        np.testing.assert_array_equal(again.params_m[dataset], truth.params_m[dataset])


def _drop(rows, i):
    del rows[i]


def _set(row, col, value):
    def edit(rows):
        rows[row][col] = value
    return edit


def _swap_arch(rows):
    rows[1][1], rows[2][1] = rows[2][1], rows[1][1]


def _short_row(rows):
    rows[3] = rows[3][:3]


@pytest.mark.parametrize("edit,match", [
    (_swap_arch, r"line 3: arch 'a2' is not tiny architecture 1 \('a1'\)"),
    (_set(2, 0, "1"), r"line 4: index 1 appears again \(first on line 3\)"),
    (lambda rows: _drop(rows, 1), r"lacks 1 of 4 tiny architectures \(index 1\)"),
    (lambda rows: _drop(rows, 3), r"lacks 1 of 4 tiny architectures \(index 3\): truncated"),
    (_short_row, r"line 5: 3 fields, expected 8 \(truncated"),
    (_set(0, 0, "4"), r"line 2: index '4' is not an architecture index of tiny \(0..3\)"),
    (_set(0, 0, "-1"), r"index '-1' is not an architecture index"),
    (_set(0, 0, "x"), r"index 'x' is not an architecture index"),
    (_set(1, 2, "abc"), r"line 3: cifar10_test_acc 'abc' is not a number"),
    (_set(1, 3, "nan"), r"line 3: cifar100_test_acc 'nan' is not a finite number"),
    (_set(1, 6, "inf"), r"cifar100_params_M 'inf' is not a finite number"),
    (_set(1, 4, "100.5"), r"ImageNet16-120_test_acc 100.5 is outside 0..100"),
    (_set(1, 2, "-0.1"), r"cifar10_test_acc -0.1 is outside 0..100"),
    (_set(1, 5, "0"), r"cifar10_params_M 0 is not a positive parameter count"),
])
def test_bad_rows(tmp_path, edit, match):
    rows = tiny_rows()
    edit(rows)
    with pytest.raises(ZcpError, match=match):
        read_table(write_rows(tmp_path / "t.csv", rows), TINY)


def test_missing_columns_are_named(tmp_path):
    header = [c for c in TABLE_COLUMNS if c not in ("cifar100_params_M", "ImageNet16-120_test_acc")]
    rows = [[v for c, v in zip(TABLE_COLUMNS, r) if c in header] for r in tiny_rows()]
    with pytest.raises(ZcpError, match=r"lacks column\(s\) ImageNet16-120_test_acc, cifar100_params_M; expected index,arch"):
        read_table(write_rows(tmp_path / "t.csv", rows, header), TINY)


def test_duplicate_column(tmp_path):
    header = [*TABLE_COLUMNS, "cifar10_test_acc"]
    rows = [[*r, "1"] for r in tiny_rows()]
    with pytest.raises(ZcpError, match=r"duplicate column\(s\) cifar10_test_acc"):
        read_table(write_rows(tmp_path / "t.csv", rows, header), TINY)


def test_file_cut_mid_line(tmp_path):
    path = write_rows(tmp_path / "t.csv", tiny_rows())
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ZcpError, match=r"does not end with a newline: truncated file\?"):
        read_table(path, TINY)


@pytest.mark.parametrize("content,match", [
    (b"", r"is empty"),
    (("\n".join([",".join(TABLE_COLUMNS)]) + "\n").encode(), r"lacks 4 of 4 tiny architectures \(index 0, 1, 2, 3\)"),
    (b"\xff\xfe index\n", r"cannot read ground-truth table .*: not UTF-8 text"),
    (b'index,"arch\n', r"line 1: malformed CSV"),
    (",".join(TABLE_COLUMNS).encode() + b'\n0,"a0"x,1,2,3,4,5,6\n', r"line 2: malformed CSV"),
])
def test_bad_files(tmp_path, content, match):
    path = tmp_path / "t.csv"
    path.write_bytes(content)
    with pytest.raises(ZcpError, match=match):
        read_table(path, TINY)


def test_missing_table_and_folder_given_as_table(tmp_path):
    with pytest.raises(ZcpError, match=r"tss ground-truth table not found: .*none.csv \(set it with --tss-table, \$ZCP_TSS_TABLE"):
        read_table(tmp_path / "none.csv", "tss")
    with pytest.raises(ZcpError, match=r"cannot read ground-truth table"):
        read_table(tmp_path, "tss")


def test_table_of_the_other_space(archives, tmp_path):
    out = export_table(archives["sss"], "sss", tmp_path / "sss.csv")
    with pytest.raises(ZcpError, match=r"line 2: arch '8:8:8:8:8' is not tss architecture 0"):
        read_table(out, "tss")


# ---------------------------------------------------------------------------- choosing a source

def test_auto_prefers_the_table_then_the_archive(archives, tmp_path):
    table = export_table(archives["tss"], "tss", tmp_path / "tss.csv")
    both = resolve_paths(tss_table=table, tss_archive=archives["tss"])
    assert load_ground_truth("tss", both).source == f"table {table}"
    assert load_ground_truth("tss", both, "archive").source == f"archive {archives['tss']}"
    only_archive = resolve_paths(tss_table=tmp_path / "none.csv", tss_archive=archives["tss"])
    truth = load_ground_truth(get_space("tss"), only_archive)
    assert truth.source == f"archive {archives['tss']}" and truth.accuracy["cifar10"][1] == pytest.approx(93.66)
    with pytest.raises(ZcpError, match=r"table not found"):
        load_ground_truth("tss", only_archive, "table")


def test_auto_with_nothing_names_both_places(tmp_path):
    paths = resolve_paths(sss_table=tmp_path / "t.csv", sss_archive=tmp_path / "arch")
    with pytest.raises(ZcpError, match=r"no sss ground truth: looked for the table .*t.csv and the archive .*arch, found neither"):
        load_ground_truth("sss", paths)


def test_unknown_source():
    with pytest.raises(ZcpError, match=r"unknown ground-truth source 'csv'; known: auto, table, archive"):
        load_ground_truth("tss", resolve_paths(), "csv")


def test_describe_sources(archives, tmp_path):
    table = export_table(archives["tss"], "tss", tmp_path / "tss.csv")
    paths = resolve_paths(tss_table=table, tss_archive=archives["tss"], sss_table=tmp_path / "no.csv",
                          sss_archive=tmp_path / "no-archive", nb101_table=tmp_path / "no.csv.gz")
    found = {s.what: s for s in describe_sources(paths)}
    assert list(found) == ["tss table", "tss archive", "sss table", "sss archive", "nb101 table"]
    assert not found["nb101 table"].found and "$ZCP_NB101_TABLE" in found["nb101 table"].detail
    assert found["tss table"].found and found["tss table"].path == table
    assert found["tss archive"].found and found["tss archive"].detail.startswith("3 architecture files")
    assert not found["sss table"].found and "$ZCP_SSS_TABLE" in found["sss table"].detail
    assert not found["sss archive"].found and "$ZCP_SSS_ARCHIVE" in found["sss archive"].detail
    assert "NOT FOUND" in str(found["sss archive"]) and str(tmp_path / "no-archive") in str(found["sss archive"])


# ---------------------------------------------------------------------------- the real shared table

def test_shared_tss_table():
    path = resolve_paths().tss_table
    if not path.is_file():
        pytest.skip(f"shared TSS table not found at {path} (set ZCP_DATA_DIR or ZCP_TSS_TABLE to point at it)")
    start = time.perf_counter()
    truth = load_ground_truth("tss", resolve_paths(), "table")
    assert time.perf_counter() - start < 5.0  # about 0.2 s; the official API takes minutes
    assert len(truth.arch) == 15625 and truth.source == f"table {path}"
    assert truth.accuracy["cifar10"][0] == 85.863333 and truth.params_m["cifar10"][0] == 0.129306
    assert truth.accuracy["ImageNet16-120"][1] == 44.033333 and truth.params_m["cifar100"][1] == 0.808276
    for dataset in DATASETS:
        assert not np.isnan(truth.accuracy[dataset]).any() and not np.isnan(truth.params_m[dataset]).any()
    assert truth.accuracy["cifar10"][2] == 85.74 and truth.params_m["ImageNet16-120"][3] == 0.080456
