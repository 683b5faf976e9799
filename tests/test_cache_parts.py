"""Campaign caches in parts (evaluation.cache.cache_parts): the @base terminals in one folder, every other
pass in its own, so a campaign that adds terminals builds only their passes, and the merged cache holds
the numbers of computing everything at once."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from evaluation.cache import cache_parts, load_cache, merge_caches
from evaluation.errors import ZcpError
from evaluation.images import load_batch
from evaluation.samples import make_sample
from evaluation.spaces import get_space
from experiments.campaign import cache_for
from experiments.config import parse_config
from primitives.terminals import BASE, TERMINALS, compute_terminals
from tests.campaigns import TINY
from tests.models import TinyResNet


def test_parts_split_base_from_each_other_pass():
    parts = cache_parts(["@all"])
    assert parts[0] == tuple(sorted(BASE)) and sorted(t for p in parts for t in p) == sorted(TERMINALS)
    assert all(len({TERMINALS[t].pass_ for t in part}) == 1 for part in parts[1:])
    assert len(parts) == 1 + len({TERMINALS[t].pass_ for t in TERMINALS if t not in BASE})
    assert cache_parts(["snip", "params"]) == [("params", "snip")]  # a campaign over @base terminals: one part
    assert cache_parts(["synflow", "@base"]) == [tuple(sorted(BASE)), ("synflow",)]


@pytest.mark.parametrize("model", [TinyResNet(), get_space("tss").build(7, "cifar10")], ids=["resnet", "tss"])
def test_each_part_alone_equals_computing_all_at_once(model):
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 10
    together = compute_terminals(model, x, ["@all"], labels=y, signal="ce")
    for part in cache_parts(["@all"]):
        alone = compute_terminals(model, x, part, labels=y, signal="ce")
        assert alone["layers"][0] in (0, together["layers"][0]), part
        assert all(np.array_equal(alone[k], together[k]) for k in alone if k != "layers"), part


def _config(tmp_path, terminals, seed=0):
    text = TINY.format(space="tss", terminals=terminals, cache_dir=tmp_path / "caches", population=8,
                       generations=1, backend="serial")
    return parse_config(text.replace('datasets = ["cifar10"]', f'datasets = ["cifar10"]\nseed = {seed}'))


def test_a_campaign_adding_terminals_builds_only_their_passes(tmp_path):
    sample = make_sample(get_space("tss"), "random", 3, 0, "search", "cifar10")
    first = cache_for(_config(tmp_path, '["snip", "act_std"]'), sample, "cifar10", tmp_path)
    assert len(first.folders) == 1 and first.manifest["terminals"] == ["act_std", "snip"]

    said = []
    wide = _config(tmp_path, '["snip", "act_std", "synflow", "zico"]')
    merged = cache_for(wide, sample, "cifar10", tmp_path, say=said.append)
    assert said[0].startswith("cifar10 search cache: 0 networks to build, 3 cached, 2 terminals") and len(said) == 3
    assert all(line.startswith("cifar10 search cache: 3 networks to build") for line in said[1:])
    assert merged.folders[0] == first.folders[0] and len(merged.folders) == 3
    assert merged.manifest["terminals"] == ["act_std", "snip", "synflow", "zico"]
    assert set(merged.env()) == {"act_std", "snip", "synflow", "zico"}

    images, rows = load_batch("cifar10", 4, 0, "gaussian").images, merged.arrays["layers"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the serial build: another thread count sums in another order
    try:
        for row, index in enumerate(merged.indices):
            torch.manual_seed(0)
            model = get_space("tss").build(int(index), "cifar10")
            packed = compute_terminals(model, images, merged.manifest["terminals"])
            start = int(rows[:row].sum())
            for name in ("snip", "synflow", "zico"):
                assert np.array_equal(packed[name], merged.arrays[name][start:start + rows[row]]), name
    finally:
        torch.set_num_threads(threads)


def test_merging_caches_of_other_networks_or_settings_is_one_line(tmp_path):
    sample = make_sample(get_space("tss"), "random", 2, 0, "search", "cifar10")
    other = make_sample(get_space("tss"), "random", 2, 5, "search", "cifar10")
    a = cache_for(_config(tmp_path, '["snip", "synflow"]'), sample, "cifar10", tmp_path)
    b = cache_for(_config(tmp_path, '["snip", "synflow"]'), other, "cifar10", tmp_path)
    c = cache_for(_config(tmp_path, '["synflow"]', seed=1), sample, "cifar10", tmp_path)
    mixed = (((a.folders[0], b.folders[1]), "sample_sha differs"), ((a.folders[0], c.path), "seed differs"))
    for parts, match in mixed:
        with pytest.raises(ZcpError, match=f"cannot be merged: {match}") as info:
            merge_caches([load_cache(folder) for folder in parts])
        assert "\n" not in str(info.value)
    base, synflow = (load_cache(folder) for folder in a.folders)
    other_model = replace(synflow, arrays={**synflow.arrays, "layers": synflow.arrays["layers"] + 1})
    with pytest.raises(ZcpError, match="count different layers for one network"):
        merge_caches([base, other_model])


def test_a_campaign_over_parts_evolves_and_reports(tmp_path):
    from experiments import campaign, heldout
    from gp.single import single_terminal_expressions
    from primitives.functions import REGISTRY
    from primitives.terminals import terminal_types
    names = ("act_std", "chan_corr_eig", "code_kernel", "flops", "params", "snip", "synflow")  # the report's baselines
    path = tmp_path / "c.toml"
    path.write_text(TINY.format(space="tss", terminals=list(names), cache_dir=tmp_path / "caches", population=16,
                                generations=2, backend="serial").replace("'", '"'))
    campaign.start(path, tmp_path / "run", progress=False)
    assert len(list((tmp_path / "caches").iterdir())) == 4  # search and held-out samples, each @base + synflow
    result = heldout.report([tmp_path / "run"], tmp_path / "out", stratified_n=10, resamples=20, track_energy=False)
    assert len(list((tmp_path / "caches").iterdir())) == 6  # and the stratified held-out sample
    singles = single_terminal_expressions(REGISTRY, terminal_types(names))
    assert result["single_terminal"]["count"] == sum(map(len, singles.values())) and singles["synflow"]


def test_cache_cost_bench_refuses_an_unknown_terminal_in_one_line(tmp_path):
    import subprocess
    import sys

    from evaluation.samples import write_sample
    write_sample(make_sample(get_space("tss"), "random", 1, 0), tmp_path / "s.json")
    proc = subprocess.run([sys.executable, "-m", "experiments.bench.cache_cost", "--space", "tss", "--sample",
                           str(tmp_path / "s.json"), "--out", str(tmp_path / "out"), "--terminals", "@base,bogus"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and not (tmp_path / "out").exists()
    assert proc.stderr.strip().startswith("cache_cost: error: unknown terminal(s) bogus")
    assert proc.stderr.strip().count("\n") == 0
