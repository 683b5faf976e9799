"""Exported proxies: same scores as the campaign, standalone (torch + numpy only), any nn.Module, bad input."""
import ast
import inspect
import json
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import sympy
import torch
import torch.nn as nn

from evaluation.cache import load_cache
from evaluation.errors import ZcpError
from evaluation.images import load_batch
from evaluation.spaces import get_space
from experiments import campaign
from experiments.cli import main
from gp.export import bundle, export_run, load_proxy
from gp.export.write import export_expression
from gp.export.simplify import simplify
from primitives import ops
from primitives.expression import evaluate, parse, terminals_of
from primitives.functions import REGISTRY
from primitives.terminals import collate, compute_terminals, terminal_types
from tests.models import MLP, Branches, TinyResNet

CONFIG = """
[campaign]
datasets = ["cifar10"]
[sample]
search_n = 8
heldout_n = 8
[cache]
batch_size = 4
images = "gaussian"
terminals = ["params", "flops", "code_kernel", "chan_corr_eig", "act_sv", "grad_sv", "snip", "curvature",
             "act_corr_sum", "noise_act_std", "wgrad_norm"]
dir = "{cache_dir}"
[gp]
population = 16
generations = 2
[parallel]
backend = "serial"
"""
HAND = [
    "layer_sum(m_logdet(code_kernel))",  # NASWOT
    "layer_sum(log(v_min(chan_corr_eig)))",  # MeCo over layers
    "layer_sum(v_sum(grad_sv))",  # gradient spectra
    "n_add(layer_mean(mul(snip, 0.5)), n_log(curvature))",  # SNIP and curvature
    "layer_max(v_std(m_svd(act_corr_sum)))",  # SVD of a kernel
    "n_div(layer_wsum(v_max(act_sv)), n_sqrt(params))",  # activation spectra (SVD) and a static terminal
    "layer_mean(sub(wgrad_norm, mul(-1.25, noise_act_std)))",  # weight gradients and the noise pass
]
OPTIONS = {"seed": 0, "signal": "pseudo_ce", "curve_points": 64}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    (tmp / "c.toml").write_text(CONFIG.format(cache_dir=tmp / "caches"))
    campaign.start(tmp / "c.toml", tmp / "run", progress=False)
    return tmp / "run"


@pytest.fixture(scope="module")
def hand_dir(run_dir):
    """The same run with a hall of fame of hand-written expressions."""
    out = run_dir.parent / "hand"
    shutil.copytree(run_dir, out)
    entries = [{"expression": e, "fitness": 0.5, "canonical": e} for e in HAND]
    (out / "hall_of_fame.json").write_text(json.dumps({"status": "running", "entries": entries}))
    return out


@pytest.fixture(scope="module")
def exported(run_dir, hand_dir):
    """name -> (expression, path of the exported file) for 4 evolved and all hand-written expressions."""
    files = {}
    for tag, source, top in (("evolved", run_dir, 4), ("hand", hand_dir, len(HAND))):
        for r in export_run(source, run_dir.parent / f"out-{tag}", top=top, timeout=30):
            files[f"{tag}-{r['rank']}"] = (r["expression"], run_dir.parent / f"out-{tag}" / r["files"]["py"])
    return files


def _tss(index):
    torch.manual_seed(0)  # as the cache builds it: the campaign's seed right before the build
    return get_space("tss").build(int(index), "cifar10")


def _compare_with_cache(run_dir, exported, count):
    cache = load_cache(next((run_dir.parent / "caches").glob("cifar10-search-*")))
    images = load_batch("cifar10", 4, 0, "gaussian").images
    env = cache.env()
    assert {"grad_sv", "snip", "act_sv", "curvature", "act_corr_sum", "noise_act_std"} <= set(env)
    networks = [_tss(i) for i in cache.indices[:count]]
    for name, (text, path) in exported.items():
        in_campaign = evaluate(parse(text, REGISTRY, terminal_types(cache.manifest["terminals"])), env).numpy()
        score = load_proxy(path)
        got = np.array([score(model, images) for model in networks])
        np.testing.assert_allclose(got, in_campaign[:count], rtol=1e-6, atol=0, err_msg=f"{name}: {text}")


def test_exported_score_equals_the_campaign_cache_score(run_dir, exported):
    _compare_with_cache(run_dir, exported, 1)


@pytest.mark.slow
def test_exported_score_equals_the_campaign_cache_score_on_every_network(run_dir, exported):
    _compare_with_cache(run_dir, exported, 8)


@pytest.mark.parametrize("model_fn", [TinyResNet, MLP, Branches])
def test_foreign_networks_score_as_in_campaign_and_are_left_as_found(model_fn, exported, hand_dir):
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    for rank, text in enumerate(HAND, 1):
        torch.manual_seed(0)
        model = model_fn().eval()
        for p in model.parameters():
            p.grad = torch.full_like(p, 7.0)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        names = sorted(terminals_of(parse(text, REGISTRY, terminal_types())))
        in_campaign = float(evaluate(parse(text, REGISTRY, terminal_types()), collate(compute_terminals(
            model, x, names, **OPTIONS), names))[0])
        got = load_proxy(exported[f"hand-{rank}"][1])(model, x)
        from_hof = load_proxy(hand_dir, rank)(model, x)
        assert got == pytest.approx(in_campaign, rel=1e-6) and from_hof == pytest.approx(in_campaign, rel=1e-6), text
        assert not model.training
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
        assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in model.parameters())


class _Counter(nn.Module):
    """TinyResNet that counts forward and backward passes."""

    def __init__(self):
        super().__init__()
        self.net, self.forwards, self.backwards = TinyResNet(), 0, 0
        self.net.head.register_full_backward_hook(lambda *a: setattr(self, "backwards", self.backwards + 1))

    def forward(self, x):
        self.forwards += 1
        return self.net(x)


@pytest.mark.parametrize("rank,forwards,backwards", [(1, 1, 0), (3, 1, 1), (4, 2, 1), (6, 1, 0), (7, 2, 1)])
def test_only_the_needed_passes_run(exported, rank, forwards, backwards):
    model = _Counter()
    load_proxy(exported[f"hand-{rank}"][1])(model, torch.randn(4, 3, 16, 16))
    assert (model.forwards, model.backwards) == (forwards, backwards), HAND[rank - 1]


def test_exported_file_is_standalone_and_importing_only_defines(exported, tmp_path):
    path = exported["hand-4"][1]
    text = path.read_text()
    tree = ast.parse(text)
    doc = ast.get_docstring(tree)
    assert doc.count(HAND[3]) == 1 and "held-out scores:\n    not computed (the campaign had not finished)" in doc
    assert "Simplified (sympy.simplify):\n    layer_mean(0.5*snip) + log(Abs(curvature))" in doc
    assert r"\operatorname{layer\_mean}{\left(0.5 \mathrm{snip} \right)}" in path.with_suffix(".tex").read_text()
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert roots <= {"torch", "numpy"} | set(sys.stdlib_module_names), roots
    allowed = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign, ast.Expr, ast.For)
    ifs = [n for n in tree.body if isinstance(n, ast.If)]  # only the stand-in entry of sys.modules (write.LOADER)
    assert len(ifs) == 2 and all("_sys.modules" in ast.unparse(n) for n in ifs)
    assert all(isinstance(n, allowed + (ast.If,)) for n in tree.body)
    assert all(isinstance(n.value, ast.Constant) for n in tree.body if isinstance(n, ast.Expr))
    # one implementation: the file carries the project's own code, not a copy of it
    for fn in (ops.m_svd, ops.layer_sum, compute_terminals):
        assert inspect.getsource(fn) in text
    script = textwrap.dedent(f"""
        import importlib.abc, importlib.util, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {{"primitives", "gp", "evaluation", "experiments", "tests", "sympy",
                                           "scipy", "deap", "ray"}}:
                    raise ImportError("blocked " + name)
        sys.meta_path.insert(0, Block())
        import torch, numpy
        before = set(sys.modules)
        spec = importlib.util.spec_from_file_location("proxy", {str(path)!r})
        module = importlib.util.module_from_spec(spec)
        sys.modules["proxy"] = module
        spec.loader.exec_module(module)
        new = {{m.split(".")[0] for m in set(sys.modules) - before}} - {{"proxy"}}
        assert new <= set(sys.stdlib_module_names), new
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                    torch.nn.Linear(4 * 6 * 6, 5))
        print(module.score(model, torch.randn(4, 3, 8, 8)))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert np.isfinite(float(done.stdout.strip()))  # printed by the script only: importing printed nothing


def test_bad_inputs_are_one_line_value_errors(exported):
    naswot, grads = load_proxy(exported["hand-1"][1]), load_proxy(exported["hand-3"][1])
    x = torch.randn(4, 3, 16, 16)
    cases = [
        (naswot, nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 14 * 14, 5)), x,
         "calls no ReLU-like activation"),
        (grads, nn.Sequential(nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten()), x, "calls no nn.Conv2d / nn.Linear module"),
        (grads, nn.Sequential(nn.Flatten(), nn.ReLU()), x, "has no parameters"),
        (grads, TinyResNet(), torch.randn(4, 5, 16, 16), r"failed on inputs of shape \(4, 5, 16, 16\)"),
        (grads, TinyResNet(), torch.randn(1, 3, 16, 16), "at least 2 samples"),
        (grads, TinyResNet(), torch.ones(4, 3, 16, 16, dtype=torch.int64), "floating-point"),
        (grads, TinyResNet(), [[1.0]], "floating-point torch.Tensor"),
        (grads, "model", x, "must be a torch.nn.Module"),
    ]
    for score, model, inputs, match in cases:
        with pytest.raises(ValueError, match=match) as info:
            score(model, inputs)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="unknown backward signal"):
        grads(TinyResNet(), x, signal="mse")
    with pytest.raises(ValueError, match="unknown option 'sed'"):
        load_proxy(exported["hand-1"][1].parent.parent / "hand")(TinyResNet(), x, sed=1)


def test_export_files_and_record(run_dir, exported):
    out = exported["evolved-1"][1].parent
    record = json.loads((out / "proxy_01.json").read_text())
    hof = json.loads((run_dir / "hall_of_fame.json").read_text())
    best = hof["entries"][0]
    checkpoint = json.loads((run_dir / "checkpoint.json").read_text())
    assert record["expression"] == best["expression"] and record["fitness"] == best["fitness"]
    assert record["heldout"] == best["heldout"] and record["config_hash"] == checkpoint["config_digest"]
    assert record["run_id"] == run_dir.name and record["options"] == OPTIONS
    assert (out / "proxy_01.sympy").read_text().strip() == record["simplified"]
    assert record["latex"] in (out / "proxy_01.tex").read_text()
    doc = ast.get_docstring(ast.parse(exported["evolved-1"][1].read_text()))
    assert best["expression"] in doc and record["simplified"] in doc
    assert f"kendall {best['heldout']['cifar10']['kendall']:+.4f}" in doc


def test_simplify_has_a_time_limit():
    a = sympy.Symbol("a")
    m = sympy.Function("m_eig")(a)
    expr = -a * m + (a + 1) * m
    assert simplify(expr, 60) == (m, "simplified")
    start = time.perf_counter()
    form, how = simplify(expr, 0.001)
    assert form == expr and how.startswith("not simplified: sympy took longer than")
    assert time.perf_counter() - start < 10  # the child was killed, not waited for


def test_cli_export_and_its_errors(run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir), "--top", "2", "--out", str(tmp_path / "o"), "--simplify-timeout", "0.001"]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [f"proxy_0{r}.{k}" for r in (1, 2)
                                                                  for k in ("json", "py", "sympy", "tex")]
    record = json.loads((tmp_path / "o" / "proxy_01.json").read_text())
    assert record["simplify"].startswith("not simplified") and record["simplified"] == record["canonical"]
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    for name, entries in (("unparsable", [{"expression": "foo(params)", "fitness": 0.1}]), ("none", [])):
        (tmp_path / name).mkdir()
        shutil.copy(run_dir / "config.toml", tmp_path / name)
        (tmp_path / name / "hall_of_fame.json").write_text(json.dumps({"entries": entries}))
    for argv, match in [([str(tmp_path / "empty")], "has no hall_of_fame.json"),
                        ([str(tmp_path / "unparsable")], "hall-of-fame entry 1 of"),
                        ([str(tmp_path / "none")], "holds no entries yet"),
                        ([str(tmp_path / "nowhere")], "does not exist"),
                        ([str(run_dir), "--top", "0"], "--top must be at least 1")]:
        assert main(["export", *argv, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("zcp: error: ") and match in err and err.count("\n") == 1
    best = json.loads((run_dir / "hall_of_fame.json").read_text())["entries"][0]["expression"]
    assert load_proxy(run_dir / "hall_of_fame.json").expression == best
    with pytest.raises(ZcpError, match="rank 99 is not in"):
        load_proxy(run_dir, 99)
    (tmp_path / "bad.py").write_text("x = 1\n")
    with pytest.raises(ZcpError, match="defines no score"):
        load_proxy(tmp_path / "bad.py")


def test_export_expression_scores_like_the_run_export_of_the_same_expression(exported, tmp_path, capsys):
    """An expression typed in (from a README or paper) exports to the same score as that expression in a
    hall of fame, with its own defaults; the record says it came from no run."""
    text, from_run = HAND[3], exported["hand-4"][1]
    assert main(["export", "--expression", text, "--seed", "0", "--signal", "pseudo_ce",
                 "--out", str(tmp_path / "e")]) == 0
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'e'}/proxy_01.py")
    record = json.loads((tmp_path / "e" / "proxy_01.json").read_text())
    assert record["expression"] == text and record["options"] == OPTIONS
    assert record["run_id"] is None and record["fitness"] is None and record["heldout"] is None
    assert "from an expression" in ast.get_docstring(ast.parse((tmp_path / "e" / "proxy_01.py").read_text()))
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    model = TinyResNet()
    assert load_proxy(tmp_path / "e" / "proxy_01.py")(model, x) == load_proxy(from_run)(model, x)
    export_expression(text, tmp_path / "ce", seed=3, signal="ce")
    record = json.loads((tmp_path / "ce" / "proxy_01.json").read_text())
    assert record["options"] == {"seed": 3, "signal": "ce", "curve_points": 64}


def test_export_expression_bad_input(run_dir, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    for argv, match in [(["--expression", "foo(params)"], "--expression: "),
                        (["--expression", "layer_sum("], "--expression: "),
                        (["--expression", "params", "--signal", "mse"], "unknown backward signal 'mse'"),
                        ([str(run_dir), "--expression", "params"], "either a run directory or --expression"),
                        ([str(run_dir), "--seed", "1"], "--seed and --signal go with --expression"),
                        ([], "either a run directory or --expression")]:
        assert main(["export", *argv, "--out", str(tmp_path / "x")]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("zcp: error: ") and match in err and err.count("\n") == 1, (argv, err)
    assert main(["export", "--expression", "params", "--out", str(tmp_path / "file")]) == 2
    assert "exists and is not a directory" in capsys.readouterr().err


def test_bundle_refuses_foreign_imports_and_name_clashes(tmp_path, monkeypatch):
    (tmp_path / "uses_sympy.py").write_text("import sympy\n")
    (tmp_path / "clash.py").write_text("import torch\n\ndef gram(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RuntimeError, match="imports sympy"):
        bundle._module_body("uses_sympy", {})
    with pytest.raises(RuntimeError, match="both define 'gram'"):
        bundle._module_body("clash", {"gram": "primitives.layers"})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_model_and_inputs(exported):
    """On CUDA: the same score as the campaign path on CUDA, close to the CPU score, the model stays put."""
    text, path = HAND[3], exported["hand-4"][1]
    torch.manual_seed(0)
    model = TinyResNet()
    x = torch.randn(8, 3, 16, 16)
    on_cpu = load_proxy(path)(model, x)
    model, x = model.cuda(), x.cuda()
    names = sorted(terminals_of(parse(text, REGISTRY, terminal_types())))
    in_campaign = float(evaluate(parse(text, REGISTRY, terminal_types()),
                                 collate(compute_terminals(model, x, names, **OPTIONS), names))[0])
    on_cuda = load_proxy(path)(model, x)
    # cuDNN's weight-gradient kernels may sum in any order; TF32 convolutions make CUDA differ from the CPU
    assert on_cuda == pytest.approx(in_campaign, rel=1e-5) and on_cuda == pytest.approx(on_cpu, rel=1e-2)
    assert all(p.is_cuda for p in model.parameters())
    with pytest.raises(ValueError, match="but the inputs are on cpu"):
        load_proxy(path)(model, x.cpu())
