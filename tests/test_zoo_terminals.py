"""The zoo terminals (issue 13): each equals the zoo proxy it stands for, runs only when asked, leaves
the model as found, exports, caches, and the groups and the label check of the config."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from evaluation.cache import build_cache, load_cache
from evaluation.errors import ZcpError
from evaluation.proxies import get_proxy
from evaluation.samples import make_sample
from evaluation.spaces import get_space
from experiments.campaign import campaign_terminals
from experiments.config import load_config, parse_config
from gp.export.bundle import compile_program
from gp.export.load import load_exported
from gp.export.write import module_source
from primitives.expression import evaluate, parse, terminals_of
from primitives.functions import REGISTRY
from primitives.passes import SWAP_REPEATS
from primitives.terminals import (BASE, GROUPS, TERMINALS, collate, compute_terminals, passes_needed,
                                  resolve_terminals, terminal_types)
from tests.models import MLP, TinyResNet
from tests.test_terminals import _outputs

NETWORKS = (1, 2, 3)  # TSS indices: every one has a path of weights from input to output (synflow > 0)
CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"


def _tss(index):
    torch.manual_seed(0)
    return get_space("tss").build(index, "cifar10")


def _batch(n=16, size=16):  # 16 x 16 inputs (as ImageNet16-120's) keep the TSS tests small
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    return x, torch.arange(n) % 10


def _score(expression, model, x, **options):
    """The expression's score of one network, computed from the terminals it reads."""
    node = parse(expression, REGISTRY, terminal_types())
    names = sorted(terminals_of(node))
    return float(evaluate(node, collate(compute_terminals(model, x, names, **options), names))[0])


EQUAL = {  # zoo proxy -> (the expression that equals it, compute_terminals options beyond the seed)
    "zico": ("layer_sum(log(zico))", {"signal": "ce"}), "synflow": ("n_log(layer_sum(synflow))", {}),
    "jacov": ("jacov", {}), "swap": ("swap", {}),
}


@pytest.mark.parametrize("index", NETWORKS)
@pytest.mark.parametrize("proxy", EQUAL)
def test_zoo_proxy_equals_its_expression(proxy, index):
    model, (x, y) = _tss(index), _batch(size=8)  # 16 samples (all that SWAP reads) of 8 x 8: small and fast
    expression, options = EQUAL[proxy]
    zoo = get_proxy(proxy).score(model, x, y, seed=3)
    assert math.isfinite(zoo)
    assert _score(expression, model, x, labels=y, seed=3, **options) == pytest.approx(zoo, rel=1e-6, abs=0)


@pytest.mark.parametrize("index", NETWORKS[:2])
def test_az_nas_components_equal_the_zoo(index):
    model, x = _tss(index), _batch(size=8)[0]
    zoo = get_proxy("az_nas").score(model, x, seed=5)
    packed = compute_terminals(model, x, ["az_expressivity", "az_progressivity", "az_trainability", "flops"], seed=5)
    for name in ("expressivity", "progressivity", "trainability"):
        assert packed["az_" + name][0] == pytest.approx(zoo[name], rel=1e-6, abs=0), name
    assert packed["flops"][0] == zoo["complexity"]  # AZ-NAS's complexity is the existing flops terminal


def test_per_layer_terms_match_direct_definitions():
    model, (x, y) = TinyResNet(), _batch(size=8)
    packed = compute_terminals(model, x, ["code_logdet", "jacob_corr", "label_kernel"], labels=y)
    for got, (a, _) in zip(packed["code_logdet"], _outputs(model, x)):
        c = (a.flatten(1) > 0).double()
        logdet = float(torch.linalg.slogdet(c @ c.T + (1 - c) @ (1 - c).T).logabsdet)
        assert got == pytest.approx(max(logdet, -1e150), rel=1e-9)  # a singular kernel: -1e150, as m_logdet
    assert np.array_equal(packed["label_kernel"][0], (y[:, None] == y[None, :]).double().numpy())
    xg = x.clone().requires_grad_(True)
    model.train()
    model(xg).sum().backward()
    expected = np.corrcoef(xg.grad.reshape(len(x), -1).double().numpy())
    np.testing.assert_allclose(packed["jacob_corr"][0], expected, rtol=1e-9, atol=1e-12)
    # ZiCo per layer from the weight gradients of the two halves, computed here with autograd
    model.train()
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    running, grads = [torch.zeros_like(w) for w in weights], []
    for xs, ys in zip(x.chunk(2), y.chunk(2)):
        g = torch.autograd.grad(nn.functional.cross_entropy(model(xs), ys), weights)
        running = [r + gi for r, gi in zip(running, g)]
        grads.append([r.double() for r in running])
    packed = compute_terminals(model, x, ["zico", "zico_mean", "zico_std"], labels=y, signal="ce")
    for i in range(len(weights)):
        g = torch.stack([grads[0][i], grads[1][i]])
        m, s = g.abs().mean(0), g.std(0, correction=0)
        assert packed["zico"][i] == pytest.approx(float((m[s != 0] / s[s != 0]).sum()), rel=1e-6)
        assert packed["zico_mean"][i] == pytest.approx(float(m.mean()), rel=1e-6)
        assert packed["zico_std"][i] == pytest.approx(float(s.mean()), rel=1e-6)


def test_swap_per_layer_counts_distinct_patterns():
    model, (x, _) = TinyResNet(), _batch(size=8)
    packed = compute_terminals(model, x, ["swap_layer", "swap"])
    assert len(packed["swap_layer"]) == packed["layers"][0] == 5
    assert (packed["swap_layer"] >= 1).all() and (packed["swap_layer"] <= 2**16).all()
    assert packed["swap"][0] == get_proxy("swap").score(model, x)


def test_zoo_passes_leave_base_terminals_and_the_model_untouched():
    model, (x, y) = TinyResNet(), _batch(size=8)
    model.eval()
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    alone = compute_terminals(model, x, ["@base"], labels=y)
    both = compute_terminals(model, x, ["@all"], labels=y)
    assert all(np.array_equal(alone[k], both[k]) for k in alone)  # bitwise: the new passes run after
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())


CALLS = {"forward": 0, "backward": 0}  # outside the model: synflow counts on a deep copy of it


class _Counter(TinyResNet):
    """TinyResNet (the same blocks, for AZ-NAS) counting its forward calls and the backward calls that
    reach its head."""

    def __init__(self):
        super().__init__()
        self.head.register_full_backward_hook(lambda *a: CALLS.__setitem__("backward", CALLS["backward"] + 1))

    def forward(self, x):
        CALLS["forward"] += 1
        return super().forward(x)


@pytest.mark.parametrize("names,forwards,backwards", [
    (("zico",), 2, 2), (("zico_mean", "zico_std"), 2, 2), (("synflow",), 1, 1), (("swap", "swap_layer"), SWAP_REPEATS, 0),
    (("az_expressivity",), 1, 0), (("jacov", "jacob_corr"), 1, 1), (("code_logdet",), 1, 0),
    (("noise_code_logdet", "label_kernel"), 1, 0), (("zico", "synflow", "snip"), 4, 4)])
def test_only_the_needed_passes_run_and_are_counted(names, forwards, backwards):
    model = _Counter()
    CALLS.update(forward=0, backward=0)
    compute_terminals(model, _batch(size=8)[0], names, labels=torch.arange(16) % 10)
    assert (CALLS["forward"], CALLS["backward"]) == (forwards, backwards)
    assert passes_needed(names) == forwards + backwards
    assert passes_needed(["az_trainability"]) == 2  # its local backward passes do not reach the head


def test_groups():
    assert len(BASE) == len(GROUPS["base"]) == 48
    assert set(GROUPS["base"]) | set(GROUPS["zoo"]) | set(GROUPS["labels"]) == set(GROUPS["all"]) == set(TERMINALS)
    assert GROUPS["labels"] == ("label_kernel",) and not set(GROUPS["zoo"]) & set(BASE)
    assert resolve_terminals(["snip", "@labels", "snip"]) == ("label_kernel", "snip")
    with pytest.raises(ValueError, match=r"unknown terminal\(s\) @zo, bogus; known: the groups @base"):
        resolve_terminals(["@zo", "bogus"])
    assert set(compute_terminals(MLP(), _batch(size=8)[0])) == set(BASE) | {"layers"} | {
        n + ".len" for n in BASE if TERMINALS[n].type.__name__ == "Vector"}


def test_shipped_configs_use_the_base_terminals_and_zoo_ones_only_where_named():
    for path in sorted(CONFIGS.glob("*.toml")):
        config = load_config(path)
        extra = set(campaign_terminals(config)) - set(BASE)
        assert set(BASE) <= set(campaign_terminals(config)), path.name
        assert (extra and extra <= set(GROUPS["zoo"])) if "zoo" in path.stem else not extra, path.name
    assert campaign_terminals(parse_config("[cache]\nterminals = ['@all']\nsignal = 'ce'\n")) == tuple(sorted(TERMINALS))


@pytest.mark.parametrize("signal", ["pseudo_ce", "logit_sum"])
def test_label_terminal_on_a_label_free_signal_is_one_line_at_config_time(signal):
    text = f"[cache]\nsignal = '{signal}'\nterminals = ['@zoo', 'label_kernel']\n"
    with pytest.raises(ZcpError, match=f"label_kernel needs the batch's true labels, but the backward signal '{signal}'"
                       ) as info:
        parse_config(text, "c.toml")
    assert "\n" not in str(info.value) and str(info.value).startswith("c.toml: cache.terminals:")
    parse_config(text.replace(signal, "ce"))  # with true labels it is fine
    with pytest.raises(ZcpError, match="unknown terminal"):
        parse_config("[cache]\nterminals = ['@nonsense']\n")
    with pytest.raises(ValueError, match="label_kernel needs the batch's true labels"):
        compute_terminals(MLP(), _batch(size=8)[0], ["label_kernel"])


def test_cache_of_zoo_terminals(tmp_path):
    sample = make_sample(get_space("tss"), "random", 2, 3)
    with pytest.raises(ZcpError, match="label_kernel needs"):
        build_cache(sample, "cifar10", tmp_path / "bad", terminals=("label_kernel",), backend="serial")
    names = ("@zoo", "params")
    build_cache(sample, "cifar10", tmp_path / "c", batch_size=8, terminals=names, backend="serial",
                image_source="gaussian", progress=False)
    cache = load_cache(tmp_path / "c")
    assert tuple(cache.manifest["terminals"]) == resolve_terminals(names)
    env = cache.env()
    assert all(isinstance(env[n], TERMINALS[n].type) for n in resolve_terminals(names))
    from evaluation.images import load_batch

    images = load_batch("cifar10", 8, 0, "gaussian").images
    for row, index in enumerate(cache.indices):
        packed = compute_terminals(_tss(int(index)), images, resolve_terminals(names))
        assert np.array_equal(packed["swap_layer"], cache.arrays["swap_layer"][
            sum(cache.arrays["layers"][:row]):sum(cache.arrays["layers"][:row + 1])])
        assert packed["jacov"][0] == cache.arrays["jacov"][row]


EXPORTED = ["layer_sum(log(zico))", "n_log(layer_sum(synflow))", "n_add(swap, layer_mean(swap_layer))",
            "n_sub(az_expressivity, n_mul(az_trainability, az_progressivity))", "n_add(jacov, layer_max(m_fro(jacob_corr)))",
            "layer_wsum(div(code_logdet, zico_std))", "layer_sum(m_trace(m_mul(grad_corr_sum, label_kernel)))"]


@pytest.mark.parametrize("expression", EXPORTED)
def test_exported_zoo_terminals_score_as_computed(expression, tmp_path):
    node = parse(expression, REGISTRY, terminal_types())
    needed = sorted(terminals_of(node))
    record = {"run_id": "test", "rank": 1, "expression": expression, "simplify": "canonical", "simplified": expression,
              "fitness": 0.0, "metric": "kendall", "heldout": None, "config_hash": "-", "terminals": needed,
              "options": {"seed": 0, "signal": "ce", "curve_points": 64}}
    path = tmp_path / "proxy.py"
    path.write_text(module_source(record, compile_program(node)))
    score = load_exported(path)
    x, y = _batch(8, 16)
    for model in (_tss(2), TinyResNet()):
        model.eval()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        got = score(model, x, labels=y)
        assert got == pytest.approx(_score(expression, model, x, labels=y, signal="ce"), rel=1e-6), expression
        assert not model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    if "label_kernel" in needed:
        with pytest.raises(ValueError, match="label_kernel needs"):
            score(TinyResNet(), x, signal="pseudo_ce")
