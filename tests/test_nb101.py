"""NAS-Bench-101: cell rules, module hash, identity by hash, exact networks, table reader, samples, cache."""
from __future__ import annotations

import csv
import gzip
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from evaluation.cache import build_cache, load_cache
from evaluation.check import count_params
from evaluation.errors import ZcpError
from evaluation.groundtruth import load_ground_truth
from evaluation.paths import resolve_paths
from evaluation.samples import make_sample, read_sample, split_indices, write_sample
from evaluation.spaces import get_space
from evaluation.spaces.nb101 import NB101
from evaluation.spaces.nb101.network import MaxPool3x3, NB101Network
from evaluation.spaces.nb101.spec import cell_hash, validate, vertex_channels
from evaluation.spaces.nb101.table import COLUMNS, read_nb101_table
from experiments.bench import nb101_pool
from experiments.config import load_config, parse_config

C3, C1, MP = "conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3"
# The example cell of the nasbench README (google-research/nasbench).
README_CELL = ([[0, 1, 1, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 0, 0],
                [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]],
               ["input", C1, C3, C3, C3, MP, "output"])


@pytest.fixture(scope="module")
def nb101_path() -> Path:
    path = resolve_paths().nb101_table
    if not path.is_file():
        pytest.skip(f"NB101 ground-truth table not found at {path} (set ZCP_DATA_DIR or ZCP_NB101_TABLE)")
    return path


@pytest.fixture(scope="module")
def nb101_rows(nb101_path: Path) -> list[list[str]]:
    """Rows of the shared table read with gzip + csv (independent of the project's reader)."""
    with gzip.open(nb101_path, "rt", newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == COLUMNS
    return rows[1:]


@pytest.fixture(scope="module")
def picks(nb101_rows) -> np.ndarray:
    return np.random.default_rng(0).choice(len(nb101_rows), 3000, replace=False)


@pytest.fixture(scope="module")
def smallest(nb101_rows) -> list[int]:
    """Ranks of the 3 networks with the fewest parameters (cheap to run on CPU)."""
    return sorted(range(len(nb101_rows)), key=lambda i: int(nb101_rows[i][4]))[:3]


def test_registered_as_nb101():
    assert get_space("nb101") is NB101 and NB101.size == 423624 and NB101.datasets == ("cifar10",)


def test_module_hash_equals_the_benchmark_hash(nb101_rows, picks):
    for i in picks:
        _, digest, adjacency, ops, _, _ = nb101_rows[i]
        assert cell_hash(json.loads(adjacency), json.loads(ops)) == digest, i


def test_identity_is_the_hash_and_index_its_rank(nb101_rows, picks):
    assert NB101.size == len(nb101_rows)
    for i in picks:
        index, digest, adjacency, ops, _, _ = nb101_rows[i]
        assert NB101.arch_str(int(index)) == digest and NB101.index_of(digest) == int(index) == i
        matrix, op_list = NB101.cell(digest)
        assert matrix.tolist() == json.loads(adjacency) and list(op_list) == json.loads(ops)
    assert NB101.index_of_cell(*README_CELL) == NB101.index_of(cell_hash(*README_CELL))


def test_isomorphic_and_unpruned_cells_share_the_hash():
    matrix, ops = np.array(README_CELL[0]), README_CELL[1]
    order = [0, 5, 1, 3, 4, 2, 6]  # swap vertices 2 and 5 (both feed only the output): same graph
    permuted = matrix[np.ix_(order, order)]
    assert cell_hash(permuted, [ops[v] for v in order]) == cell_hash(matrix, ops)
    moved = [ops[v] for v in (0, 3, 2, 1, 4, 5, 6)]  # the 1x1 conv moves into the chain 3 -> 4: another cell
    assert cell_hash(matrix, moved) != cell_hash(matrix, ops)
    dangling = [[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]  # vertex 2 reaches no output
    assert cell_hash(dangling, ["input", C3, C1, "output"]) == cell_hash([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", C3, "output"])


def test_vertex_channels_follow_the_official_split():
    fan_in_3 = np.array([[0, 1, 1, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]])
    assert vertex_channels(128, 128, fan_in_3) == [128, 43, 43, 42, 128]
    chain = np.array([[0, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0]])
    assert vertex_channels(64, 256, chain) == [64, 128, 128, 128, 256]  # vertex 1 takes the max it feeds
    assert vertex_channels(128, 256, np.array([[0, 1], [0, 0]])) == [128, 256]


def test_hand_counted_parameters_without_the_table():
    # input -> conv3x3 -> output; per cell (in, out): 1x1 projection in*out + BN 2*out, conv 9*out^2 + BN 2*out
    def cell(i: int, o: int) -> int:
        return i * o + 9 * o * o + 4 * o
    expected = (3 * 128 * 9 + 256 + 3 * cell(128, 128) + cell(128, 256) + 2 * cell(256, 256) + cell(256, 512)
                + 2 * cell(512, 512) + 512 * 10 + 10)
    with torch.device("meta"):
        model = NB101Network(*validate([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", C3, "output"]))
    assert sum(p.numel() for p in model.parameters()) == expected == 10177674


def test_parameter_counts_match_the_benchmark_on_a_sample(nb101_rows):
    # CI's builder check: 200 random cells on the meta device (the full check: zcp bench check --space nb101)
    for i in np.random.default_rng(1).choice(len(nb101_rows), 200, replace=False):
        assert count_params("nb101", int(i), "cifar10") == int(nb101_rows[i][4]), i


def test_forward_gives_logits_with_relu_modules(smallest):
    torch.manual_seed(0)
    model = NB101.build(smallest[0])
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert relus and not any(m.inplace for m in relus)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(abs(m.momentum - 0.003) < 1e-12 and m.eps == 1e-5 for m in bns)
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))


def _output_and_grads(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    out = model(x)
    out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
    return [out, x.grad, *(p.grad for p in model.parameters())]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())


def test_cpu_maxpool_is_bitwise_the_official_pool():
    # ties (zeros after ReLU, repeated values), negative maps, -inf, NaN and a channel slice, as a cell feeds it
    x = torch.randint(-2, 3, (3, 9, 7, 6)).float()
    x[:, :6] = x[:, :6].relu()
    x[0, 0, :2, :3] = float("-inf")
    x[1, 2, 3, 3] = x[1, 2, 4, 5] = float("nan")
    for inp in (x, x[:, :5]):
        with torch.no_grad():  # the shifted-views path
            fast, official = MaxPool3x3()(inp), nn.MaxPool2d(3, 1, 1)(inp)
        assert _same(fast, official) and fast.isnan().any() and fast.isneginf().any()
        ours, official = _output_and_grads(MaxPool3x3(), inp), _output_and_grads(nn.MaxPool2d(3, 1, 1), inp)
        assert all(_same(a, b) for a, b in zip(ours, official))
        assert ours[0].is_contiguous()


def test_network_with_the_cpu_maxpool_equals_the_official_pools():
    torch.manual_seed(0)
    model = NB101Network(*validate(*README_CELL))
    official = nb101_pool.official_pools(model)
    assert sum(isinstance(m, MaxPool3x3) for m in model.modules()) == 9
    assert not any(isinstance(m, MaxPool3x3) for m in official.modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the pools' shifted-views path
        assert model(x).equal(official(x))
    assert all(a.equal(b) for a, b in zip(_output_and_grads(model, x), _output_and_grads(official, x)))


@pytest.mark.parametrize("flag", ["--networks", "--reps", "--batch", "--threads"])
def test_pool_bench_rejects_counts_below_one(flag, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["nb101_pool", flag, "0"])
    with pytest.raises(SystemExit) as exc:
        nb101_pool.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and err[-1].endswith(f"error: {flag} must be at least 1, got 0")


def test_build_by_hash_equals_build_by_rank(nb101_rows, smallest):
    torch.manual_seed(3)
    a = NB101.build(smallest[1])
    torch.manual_seed(3)
    b = NB101.build(nb101_rows[smallest[1]][1])
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("arch,match", [
    ("00005c142e6f48ac74fdcf73e343987", "malformed NB101 hash"),
    ("00005C142E6F48AC74FDCF73E3439874", "malformed NB101 hash"),
    ("|nor_conv_3x3~0|", "malformed NB101 hash"),
    ("ffffffffffffffffffffffffffffffff", "unknown NB101 hash"),
])
def test_bad_hashes_are_one_line_errors(nb101_rows, arch, match):
    with pytest.raises(ZcpError, match=match) as info:
        NB101.index_of(arch)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("adjacency,ops,match", [
    ([[0, 1, 0], [1, 0, 1], [0, 0, 0]], ["input", C3, "output"], "not upper-triangular"),
    ([[0, 1], [0, 1]], ["input", "output"], "not upper-triangular"),
    (np.triu(np.ones((8, 8), int), 1).tolist(), ["input"] + [C3] * 6 + ["output"], "8 vertices; at most 7"),
    (np.triu(np.ones((7, 7), int), 1).tolist(), ["input"] + [C3] * 5 + ["output"], "21 edges; at most 9"),
    ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "conv5x5-bn-relu", "output"], "op 'conv5x5-bn-relu' is not in the space"),
    ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", C3], "list of 3 op names"),
    ([[0, 1, 0], [0, 0, 1], [0, 0, 0]], [C3, C3, "output"], "start with 'input'"),
    ([[0, 1, 0], [0, 0, 2], [0, 0, 0]], ["input", C3, "output"], "only 0 and 1"),
    ([[0, 1, 0], [0, 0, 0], [0, 0, 0]], ["input", C3, "output"], "no path from input to output"),
    ("not a matrix", ["input", "output"], "not a square"),
])
def test_bad_cells_are_one_line_errors(adjacency, ops, match):
    with pytest.raises(ZcpError, match=match) as info:
        cell_hash(adjacency, ops)
    assert "\n" not in str(info.value)


def test_only_cifar10_has_ground_truth():
    with pytest.raises(ZcpError, match="nb101 space has ground truth for cifar10 only"):
        NB101.build(0, "cifar100")


def _gzip(path: Path, text: str) -> Path:
    path.write_bytes(gzip.compress(text.encode()))
    return path


def _table_text(rows: list[list[str]]) -> str:
    lines = [",".join(COLUMNS)]
    for row in rows:
        lines.append(",".join(f'"{c}"' if "," in c else c for c in [c.replace('"', '""') for c in row]))
    return "\n".join(lines) + "\n"


def test_reader_on_a_small_table(tmp_path, nb101_rows):
    rows = [[str(i), *r[1:]] for i, r in enumerate(nb101_rows[:50])]
    rows[3][5] = ""  # no accuracy: NaN
    table = read_nb101_table(_gzip(tmp_path / "t.csv.gz", _table_text(rows)))
    assert [h.decode() for h in table.hashes] == [r[1] for r in rows]
    assert table.params.tolist() == [int(r[4]) for r in rows] and np.isnan(table.accuracy[3])
    with pytest.raises(ZcpError, match="has 50 cells, the space has 423624: truncated or incomplete"):
        read_nb101_table(tmp_path / "t.csv.gz", 423624)


def test_truncated_or_damaged_tables_are_one_line_errors(tmp_path, nb101_rows):
    rows = [[str(i), *r[1:]] for i, r in enumerate(nb101_rows[:50])]
    whole = gzip.compress(_table_text(rows).encode())
    cases = {
        "truncated or not a valid gzip file": whole[: len(whole) // 2],
        "not a valid gzip file": b"index,hash\n",
    }
    for match, data in cases.items():
        (tmp_path / "t.csv.gz").write_bytes(data)
        with pytest.raises(ZcpError, match=match) as info:
            read_nb101_table(tmp_path / "t.csv.gz")
        assert "\n" not in str(info.value)
    edits = {
        "hash 'xyz' is not 32 lowercase hex": (7, 1, "xyz"),
        "is not after the previous row": (7, 1, rows[6][1]),
        "index '9', expected 8": (8, 0, "9"),
        "params 'many' is not a positive integer": (2, 4, "many"),
        "cifar10_test_acc '101' is not a number in 0..100": (2, 5, "101"),
        "line 4: NB101 op 'conv5x5' is not in the space": (2, 3, '["input","conv5x5","output"]'),
        "line 5: NB101 adjacency is not upper-triangular": (3, 2, "[[0,1,0],[1,0,1],[0,0,0]]"),
        "line 6: the cell is not pruned": (4, 2, "[[0,1,1],[0,0,0],[0,0,0]]"),
    }
    for match, (r, c, value) in edits.items():
        bad = [list(row) for row in rows]
        bad[r][c] = value
        with pytest.raises(ZcpError, match=match) as info:
            read_nb101_table(_gzip(tmp_path / "t.csv.gz", _table_text(bad)))
        assert "\n" not in str(info.value)
    with pytest.raises(ZcpError, match="not found"):
        read_nb101_table(tmp_path / "none.csv.gz")


def test_ground_truth_and_samples_list_hashes(nb101_path, tmp_path):
    truth = load_ground_truth("nb101")
    assert set(truth.accuracy) == {"cifar10"} and len(truth.arch) == 423624
    assert truth.arch[5] == NB101.arch_str(5) and abs(np.nanmax(truth.accuracy["cifar10"]) - 94.3176) < 1e-4
    search, heldout = split_indices(NB101.size, "search"), split_indices(NB101.size, "heldout")
    assert not np.intersect1d(search, heldout).size and len(search) + len(heldout) == NB101.size
    for kind in ("random", "stratified", "quantile"):
        sample = make_sample(NB101, kind, 40, 0, "heldout", "cifar10", truth.accuracy["cifar10"])
        assert set(sample.indices) <= set(heldout.tolist()) and len(sample.indices) == 40
        assert list(sample.archs) == [truth.arch[i] for i in sample.indices]
        back = read_sample(write_sample(sample, tmp_path / f"{kind}.json"), "nb101")
        assert back.archs == sample.archs


def test_tiny_cache_of_two_networks(smallest, tmp_path):
    # CI's cache: the 2 smallest networks, batch 2, no curvature pass (NB101 networks are slow on CPU)
    drawn = make_sample(NB101, "random", 2, 0, "all")
    sample = replace(drawn, indices=tuple(smallest[:2]), archs=tuple(NB101.arch_str(i) for i in smallest[:2]))
    terminals = ("params", "snip", "chan_corr_eig", "code_kernel", "flops")
    build_cache(sample, "cifar10", tmp_path / "c", batch_size=2, seed=0, terminals=terminals, backend="serial",
                image_source="gaussian", progress=False)
    cache = load_cache(tmp_path / "c")
    assert cache.manifest["space"] == "nb101" and list(cache.indices) == list(sample.indices)
    params = cache.arrays["params"].ravel()
    assert params.tolist() == [float(NB101.table.params[i]) for i in sample.indices]


def test_campaign_config_and_datasets():
    root = Path(__file__).resolve().parent.parent
    config = load_config(root / "experiments" / "configs" / "nb101-cifar10.toml")
    assert config.campaign.space == "nb101" and config.campaign.datasets == ("cifar10",)
    with pytest.raises(ZcpError, match="nb101 space has ground truth for cifar10 only, not 'cifar100'"):
        parse_config("[campaign]\nspace = 'nb101'\ndatasets = ['cifar100']\n")


def test_cli_check_and_sample(nb101_path, tmp_path, capsys):
    from experiments.cli import main

    assert main(["bench", "check", "--space", "nb101", "--limit", "20", "--workers", "1"]) == 0
    assert "20 of 20 networks match" in capsys.readouterr().out
    out = tmp_path / "s.json"
    assert main(["bench", "sample", "--space", "nb101", "--kind", "stratified", "--dataset", "cifar10", "--n", "30",
                 "--split", "heldout", "--out", str(out)]) == 0
    sample = read_sample(out, "nb101")
    assert len(sample.indices) == 30 and all(NB101.index_of(h) == i for i, h in zip(sample.indices, sample.archs))
    capsys.readouterr()
    assert main(["bench", "check", "--space", "nb101", "--dataset", "cifar100", "--limit", "1"]) == 2
    assert "ground truth for cifar10 only" in capsys.readouterr().err
