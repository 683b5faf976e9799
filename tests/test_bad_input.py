"""The bad-input table of docs/errors.md: every row runs through ``zcp`` and gives one line on stderr, exit 2.

Each case builds its bad file in a temporary folder and returns the command line; the table in the
docs lists exactly these cases (checked below), so the documentation cannot drift from the code.
"""
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from evaluation.cache import MANIFEST, PACKED, build_cache
from evaluation.samples import make_sample, write_sample
from evaluation.spaces import get_space
from experiments.checkpoint import write_checkpoint
from experiments.cli import main
from tests.campaigns import write_table_without

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = make_sample(get_space("tss"), "random", 2, 5)
SSS_SAMPLE = make_sample(get_space("sss"), "random", 2, 5)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache")
    build_cache(SAMPLE, "cifar10", out, batch_size=4, seed=0, terminals=("params", "snip"), backend="serial",
                image_source="gaussian", progress=False)
    return out


def _sample(tmp: Path, text: str | None = None) -> Path:
    path = write_sample(SAMPLE, tmp / "s.json")
    if text is not None:
        path.write_text(text)
    return path


def _build(tmp: Path, *extra: str, sample: Path | None = None, space: str = "tss") -> list[str]:
    sample = sample or _sample(tmp)
    return ["cache", "build", "--space", space, "--dataset", "cifar10", "--sample", str(sample), "--batch-size", "4",
            "--backend", "serial", "--out", str(tmp / "out"), *extra]


def _config(tmp: Path, text: str) -> list[str]:
    (tmp / "c.toml").write_text(text)
    return ["evolve", str(tmp / "c.toml"), "--out", str(tmp / "run")]


def _table(tmp: Path, text: str) -> list[str]:
    (tmp / "t.csv").write_text(text)
    return ["bench", "check", "--space", "tss", "--dataset", "cifar10", "--limit", "1", "--source", "table",
            "--tss-table", str(tmp / "t.csv")]


def _sss_sample(tmp: Path, arch: str | None = None) -> Path:
    """An SSS sample file; ``arch`` replaces its first channel string."""
    path = write_sample(SSS_SAMPLE, tmp / "sss.json")
    if arch is not None:
        record = json.loads(path.read_text())
        record["architectures"][0][1] = arch
        path.write_text(json.dumps(record))
    return path


def _into_sss_cache(tmp: Path) -> list[str]:
    """Build a one-network SSS cache in DIR/out, then the TSS sample into the same folder."""
    build_cache(SSS_SAMPLE, "cifar10", tmp / "out", batch_size=4, seed=0, terminals=("params",), backend="serial",
                image_source="gaussian", progress=False)
    return _build(tmp)


def _sample_json(tmp: Path, edit) -> Path:
    record = json.loads(_sample(tmp).read_text())
    edit(record)
    return _sample(tmp, json.dumps(record))


def _copy_cache(tmp: Path, cache: Path, edit) -> list[str]:
    import shutil

    shutil.copytree(cache, tmp / "c")
    edit(tmp / "c")
    return ["cache", "info", str(tmp / "c")]


def _other_code(cache: Path) -> None:
    (cache / MANIFEST).write_text((cache / MANIFEST).read_text().replace('"code_version": "', '"code_version": "0'))


def _other_numbers(cache: Path) -> None:
    _other_code(cache)
    np.save(cache / PACKED / "snip.npy", np.load(cache / PACKED / "snip.npy") + 1)


def _npz(tmp: Path, data: bytes) -> list[str]:
    from evaluation.images import _NPZ

    (tmp / "images").mkdir()
    (tmp / "images" / _NPZ["cifar10"][0]).write_bytes(data)
    return _build(tmp, "--images", "npz", "--data-dir", str(tmp))


def _pickle(tmp: Path, data: bytes) -> list[str]:
    (tmp / "cifar-10-batches-py").mkdir()
    (tmp / "cifar-10-batches-py" / "test_batch").write_bytes(data)
    return _build(tmp, "--images", "pickle", "--cifar-dir", str(tmp))


class _Code:
    def __reduce__(self):
        import os

        return os.system, ("touch MARKER",)


def _compare_from(tmp: Path, text: str | None) -> list[str]:
    """``zcp compare`` taking scores from ``tmp/scores.csv`` (``text``; None: no such file)."""
    if text is not None:
        (tmp / "scores.csv").write_text(text)
    return ["compare", "--proxies", "params", "--space", "tss", "--dataset", "cifar10", "--sample", str(_sample(tmp)),
            "--backend", "serial", "--no-energy", "--score-cache", str(tmp / "sc"), "--out", str(tmp / "o"),
            "--scores-from", str(tmp / "scores.csv")]


def _checkpoint(tmp: Path, damage) -> list[str]:
    (tmp / "run").mkdir()
    (tmp / "run" / "config.toml").write_text("")
    path = write_checkpoint(tmp / "run" / "checkpoint.json", {"config_digest": "x", "primitive_set": "y", "engine": {}})
    path.write_text(damage(path.read_text()))
    return ["resume", str(tmp / "run")]


HEADER = "index,arch," + ",".join(f"{d}_test_acc" for d in ("cifar10", "cifar100", "ImageNet16-120")) + "," + \
    ",".join(f"{d}_params_M" for d in ("cifar10", "cifar100", "ImageNet16-120"))

# id -> (what is wrong, how to make the command, a fragment of the one-line error)
CASES = {
    "config-missing": ("campaign config file does not exist",
                       lambda t, c: ["evolve", str(t / "none.toml"), "--out", str(t / "run")], "does not exist"),
    "config-toml": ("config is not TOML", lambda t, c: _config(t, "[campaign\n"), "is not valid TOML"),
    "config-key": ("config has an unknown key", lambda t, c: _config(t, "[campaign]\nspaces = 'tss'\n"),
                   "unknown key campaign.spaces"),
    "config-type": ("config value of the wrong type", lambda t, c: _config(t, "[gp]\npopulation = 'many'\n"),
                    "gp.population must be int"),
    "config-range": ("config value out of range", lambda t, c: _config(t, "[campaign]\ntime_limit = 0\n"),
                     "time_limit must be > 0 seconds"),
    "config-islands": ("more islands than individuals",
                       lambda t, c: _config(t, "[gp]\npopulation = 4\nislands = 5\n"),
                       "[gp] islands (5) is larger than population (4, the total over all islands)"),
    "config-dataset": ("config names an unknown dataset",
                       lambda t, c: _config(t, "[campaign]\ndatasets = ['cifar10-valid']\n"), "unknown dataset"),
    "config-kind": ("config names an unknown search sample kind",
                    lambda t, c: _config(t, "[sample]\nsearch_kind = ['random', 'strata']\n"),
                    "search_kind 'strata' is not one of random, stratified, quantile"),
    "config-subsets": ("config asks for more search subsets than its sample can fill",
                       lambda t, c: _config(t, "[sample]\nsearch_n = 50\nsubsets = 6\n"), "subsets = 6 needs search_n >= 60"),
    "config-search-n": ("config gives search sizes that do not match its search kinds",
                        lambda t, c: _config(t, "[sample]\nsearch_kind = ['random', 'stratified']\nsearch_n = [200, 100, 50]\n"),
                        "search_n lists 3 sizes for 2 search kinds (random, stratified): give one size, or one per kind"),
    "config-sample-n": ("config asks for a random sample larger than its split",
                        lambda t, c: _config(t, "[sample]\nsearch_n = 7900\n"),
                        "cannot hold more than the 7813 networks of the tss search split"),
    "config-spaces": ("cross-space config whose spaces disagree on datasets",
                      lambda t, c: [*_config(t, "[campaign]\nspace = ['tss', 'sss']\ndatasets = ['cifar100']\n"),
                                    "--sss-table", str(write_table_without(t / "sss.csv", "sss", "cifar100"))],
                      "has no cifar100 accuracy: the spaces tss, sss disagree on datasets"),
    "config-labels": ("config asks for a label-needing terminal on a label-free backward signal",
                      lambda t, c: _config(t, "[cache]\nsignal = 'logit_sum'\nterminals = ['@base', 'label_kernel']\n"),
                      "terminal label_kernel needs the batch's true labels, but the backward signal 'logit_sum'"),
    "arg-choice": ("unknown search space on the command line",
                   lambda t, c: _build(t, space="nb201"), "invalid choice: 'nb201'"),
    "arg-int": ("a number argument that is not a number", lambda t, c: _build(t, "--batch-size", "many"),
                "invalid int value: 'many'"),
    "arg-range": ("batch size of 0", lambda t, c: _build(t, "--batch-size", "0"), "batch_size must be an integer >= 1"),
    "arg-device": ("unknown device", lambda t, c: _build(t, "--device", "tpu9"), "unknown device 'tpu9'"),
    "arg-terminal": ("unknown terminal name", lambda t, c: _build(t, "--terminals", "snip,bogus"),
                     "unknown terminal(s) bogus"),
    "run-empty": ("resume of a folder without a campaign", lambda t, c: ["resume", str(t)], "nothing to resume"),
    "run-taken": ("evolve into a folder that holds a campaign",
                  lambda t, c: [(t / "run").mkdir(), (t / "run" / "checkpoint.json").write_text("{}"),
                                _config(t, "")][2], "already holds a campaign"),
    "sample-missing": ("sample file does not exist",
                       lambda t, c: _build(t, sample=t / "none.json"), "sample file"),
    "sample-json": ("sample file truncated", lambda t, c: _build(t, sample=_sample(t, '{"format": "zcp-s')),
                    "is not valid JSON"),
    "sample-space": ("sample of another space", lambda t, c: _build(t, space="sss"), "from space 'tss', not 'sss'"),
    "sample-arch": ("sample names an architecture not in the space",
                    lambda t, c: _build(t, sample=_sample_json(t, lambda r: r["architectures"][0].__setitem__(1, "|x~0|"))),
                    "which is not in the tss space"),
    "sample-twice": ("sample lists an architecture twice",
                     lambda t, c: _build(t, sample=_sample_json(t, lambda r: r["architectures"].append(r["architectures"][0]))),
                     "lists an architecture twice"),
    "cache-none": ("cache folder without a manifest", lambda t, c: ["cache", "info", str(t)], "is not a terminal cache"),
    "cache-truncated": ("cache array truncated",
                        lambda t, c: _copy_cache(t, c, lambda d: (d / PACKED / "snip.npy").write_bytes(
                            (d / PACKED / "snip.npy").read_bytes()[:100])), "is truncated or corrupt"),
    "cache-version": ("cache made by other code", lambda t, c: _copy_cache(t, c, _other_code), "made by other code"),
    "cache-recheck": ("adopting a cache made by other code that gives other numbers",
                      lambda t, c: ["cache", "recheck", _copy_cache(t, c, _other_numbers)[2]], "is not what this code makes"),
    "cache-recheck-none": ("adopting a cache after rechecking no network",
                           lambda t, c: ["cache", "recheck", str(c), "--networks", "0"], "--networks must be >= 1"),
    "cache-incomplete": ("cache whose build never finished",
                         lambda t, c: _copy_cache(t, c, lambda d: __import__("shutil").rmtree(d / PACKED)), "is incomplete"),
    "cache-mixed": ("building into a cache made with other settings",
                    lambda t, c: [__import__("shutil").copytree(c, t / "out"), *_build(t, "--images", "gaussian",
                                                                                     "--seed", "1", "--terminals", "params,snip")][1:],
                    "made differently"),
    "table-columns": ("ground-truth table with wrong columns", lambda t, c: _table(t, "index,arch\n0,x\n"), "column"),
    "table-value": ("ground-truth table with a non-number",
                    lambda t, c: _table(t, f"{HEADER}\n0,{get_space('tss').arch_str(0)},abc,1,1,1,1,1\n"),
                    "abc"),
    "table-missing": ("no ground truth anywhere",
                      lambda t, c: ["bench", "check", "--space", "tss", "--dataset", "cifar10", "--tss-table",
                                    str(t / "none.csv"), "--tss-archive", str(t / "none")], "no tss ground truth"),
    "table-nb101-truncated": ("NAS-Bench-101 gzip table truncated",
                              lambda t, c: [(t / "t.csv.gz").write_bytes(__import__("gzip").compress(b"index,hash\n" * 99)[:30]),
                                            "bench", "check", "--space", "nb101", "--nb101-table", str(t / "t.csv.gz")][1:],
                              "is truncated or not a valid gzip file"),
    "scores-missing": ("scores of an earlier comparison that do not exist", lambda t, c: _compare_from(t, None),
                       "scores file"),
    "scores-header": ("scores of an earlier comparison without its header", lambda t, c: _compare_from(t, "a,b\n"),
                      "is not a per-network scores file"),
    "scores-arch": ("scores of an earlier comparison naming other architectures",
                    lambda t, c: _compare_from(t, f"index,arch,params\n{SAMPLE.indices[0]},|x~0|,1.0\n"),
                    "(another search space?)"),
    "scores-settings": ("scores of an earlier comparison that this run's do not match",
                        lambda t, c: _compare_from(t, f"index,arch,params\n{SAMPLE.indices[0]},{SAMPLE.archs[0]},1.0\n"),
                        "those scores were made with other settings"),
    "images-none": ("no image file where one is expected", lambda t, c: _build(t, "--images", "npz", "--data-dir", str(t)),
                    "not found"),
    "images-npz": ("image npz truncated", lambda t, c: _npz(t, b"PK\x03\x04garbage"), "cannot read"),
    "images-code": ("image pickle that would run code", lambda t, c: _pickle(t, pickle.dumps({b"data": _Code()})),
                    "refusing to load"),
    "images-truncated": ("image pickle truncated",
                         lambda t, c: _pickle(t, pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)})[:60]),
                         "corrupt or truncated pickle"),
    "checkpoint-edited": ("checkpoint edited or damaged", lambda t, c: _checkpoint(t, lambda s: s.replace('"x"', '"z"')),
                          "fails its checksum"),
    "checkpoint-truncated": ("checkpoint truncated", lambda t, c: _checkpoint(t, lambda s: s[:20]), "is not valid JSON"),
    "energy-option": ("energy option of the wrong kind", lambda t, c: _config(t, "[campaign]\nenergy = 'rapl'\n"),
                      "campaign.energy must be bool"),
    "energy-region": ("unknown energy region", lambda t, c: _build(t, "--energy-region", "XYZ"),
                      "unknown energy region 'XYZ'"),
    "energy-dir": ("no writable folder for the energy figures",
                   lambda t, c: [(t / "f").write_text(""), _build(t, "--out", str(t / "f" / "out"))][1],
                   "energy tracking cannot write its figures"),
    "sss-arch-range": ("SSS sample with a channel count out of range",
                       lambda t, c: _build(t, sample=_sss_sample(t, "8:16:24:32:72"), space="sss"),
                       "channel count 72 is not one of 8, 16, 24, 32, 40, 48, 56, 64"),
    "sss-arch-malformed": ("SSS sample with a malformed channel string",
                           lambda t, c: _build(t, sample=_sss_sample(t, "8:16:24:32"), space="sss"),
                           "expected 5 channel counts separated by ':', got 4"),
    "sss-sample-tss": ("SSS sample given to a TSS command", lambda t, c: _build(t, sample=_sss_sample(t)),
                       "from space 'sss', not 'tss'"),
    "sss-into-tss-cache": ("SSS sample built into a TSS cache",
                           lambda t, c: [__import__("shutil").copytree(c, t / "out"),
                                         *_build(t, sample=_sss_sample(t), space="sss")][1:],
                           "space is 'tss' there, 'sss' here"),
    "tss-into-sss-cache": ("TSS sample built into an SSS cache", lambda t, c: _into_sss_cache(t),
                           "space is 'sss' there, 'tss' here"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_exit_2(case, cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _, make, fragment = CASES[case]
    argv = make(tmp_path, cache)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert re.match(r"zcp( [a-z]+)*: error: ", err) and err.count("\n") == 1, err  # argparse names the subcommand
    assert fragment in err, err
    assert not (tmp_path / "MARKER").exists()


def test_the_docs_table_lists_every_case():
    rows = re.findall(r"^\| `([a-z0-9-]+)` \|", (ROOT / "docs" / "errors.md").read_text(), flags=re.M)
    assert rows == list(CASES)
    assert len(rows) >= 15
