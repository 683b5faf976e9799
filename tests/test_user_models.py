"""Proxies on the models users actually have (issue 14): output conventions, activations however
written, a ResNet-18 and a ViT, bad models, the zoo as a library, and every way of loading an export."""
import copy
import importlib
import importlib.util
import json
import math
import runpy
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from evaluation.errors import ZcpError
from evaluation.proxies import get_proxy, proxy_names
from evaluation.spaces.cells import TinyNetwork
from experiments.config import Config
from gp.export import export_run
from primitives.layers import ModelError, code_kernel, pick_output
from primitives.terminals import TERMINALS, compute_terminals
from tests.models import (ACTIVATIONS, MODULE_ACTIVATIONS, ConvAct, DataclassOutput, DictOutput, ResNet18, TinyResNet,
                          ViT, module_calls, official)

CHEAP = {"swap": {"repeats": 2, "samples": 4}, "dextr": {"curve_size": 16}}
NASWOT, GRADS = "layer_sum(m_logdet(code_kernel))", "n_mul(layer_wsum(v_min(chan_corr_eig)), layer_sum(v_min(grad_sv)))"
EVOLVED = "n_mul(layer_wsum(v_min(noise_chan_corr_eig)), layer_sum(v_min(m_eig(grad_corr_sum))))"


def tiny_tss(seed=0):
    torch.manual_seed(seed)
    genotype = ((("nor_conv_3x3", 0),), (("skip_connect", 0), ("nor_conv_1x1", 1)),
                (("avg_pool_3x3", 0), ("nor_conv_3x3", 1), ("none", 2)))
    return TinyNetwork(genotype, [8, 16, 16], [False, True, False], 10, stem_width=8)


def batch(n=4, size=16, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> path of an exported file, for a forward-only, a gradient and the README's CIFAR-10 proxy."""
    root = tmp_path_factory.mktemp("exports")
    config = Config()
    run = root / "run"
    run.mkdir()
    (run / "config.toml").write_text(config.to_toml())
    entries = [{"expression": e, "fitness": 0.0} for e in (NASWOT, GRADS, EVOLVED)]
    (run / "hall_of_fame.json").write_text(json.dumps({"status": "finished", "entries": entries}))
    records = export_run(run, root / "out", top=3, timeout=5)
    return {name: root / "out" / r["files"]["py"] for name, r in zip(("naswot", "grads", "evolved"), records)}


def load(path, name="user_proxy"):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    del sys.modules[name]
    return module.score


def snapshot(model):
    """Everything a proxy must leave as found: values, grads, flags, mode, hooks."""
    return ({k: v.clone() for k, v in model.state_dict(keep_vars=True).items()},
            [(p.grad, p.requires_grad) for p in model.parameters()], [m.training for m in model.modules()],
            [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()])


def assert_as_found(model, before):
    state, grads, modes, hooks = snapshot(model)
    assert state.keys() == before[0].keys() and all(torch.equal(state[k], before[0][k]) for k in state)
    assert all(g is b and f == c for (g, f), (b, c) in zip(grads, before[1]))
    assert (modes, hooks) == (before[2], before[3])


# ---- outputs -------------------------------------------------------------------------------------------------


def test_pick_output_defaults_and_overrides():
    t, u = torch.zeros(2, 3), torch.ones(2, 5)
    assert pick_output(t) is t and pick_output((u, t)) is t and pick_output([t]) is t
    assert pick_output({"features": u, "logits": t}) is t and pick_output({"out": t}) is t
    assert pick_output((u, t, u), output=1) is t and pick_output({"a": u, "b": t}, output="b") is t
    assert pick_output((u, (t,)), output=lambda o: o[1][0]) is t
    with pytest.raises(ModelError, match=r"returned a tuple \(tensor\(2, 5\), tensor\(2, 3\), tensor\(2, 5\)\); "
                                         r"pass output=INDEX or output=callable"):
        pick_output((u, t, u))
    with pytest.raises(ModelError, match=r"a dict \{'a': tensor\(2, 5\), 'b': tensor\(2, 3\)\}; pass output=KEY"):
        pick_output({"a": u, "b": t})
    with pytest.raises(ModelError, match="output='c' does not select anything"):
        pick_output({"a": u}, output="c")
    with pytest.raises(ModelError, match="output=0 selects a str"):
        pick_output(("x", t), output=0)


@pytest.mark.parametrize("wrap", [official, DictOutput, DataclassOutput], ids=["tuple", "dict", "dataclass"])
def test_every_output_convention_scores_as_the_plain_logits(wrap, exported):
    x, y = batch(), torch.tensor([0, 3, 7, 1])
    plain, wrapped = tiny_tss(), wrap(tiny_tss())
    score = load(exported["grads"])
    assert score(wrapped, x) == score(plain, x)
    for name in ("zico", "naswot", "snip", "jacov", "synflow", "meco"):
        assert get_proxy(name).score(wrapped, x, y) == get_proxy(name).score(plain, x, y), name
    if wrap is official:  # the same modules: block-based proxies see the same blocks
        for name in ("az_nas", "wrcor"):
            assert get_proxy(name).score(wrapped, x, y) == get_proxy(name).score(plain, x, y), name


def test_ambiguous_outputs_say_what_was_found_and_how_to_choose(exported):
    x = batch()
    model = DictOutput(tiny_tss(), key="scores")  # {"features": ..., "scores": ...}: no "logits"
    score = load(exported["grads"])
    with pytest.raises(ValueError, match=r"cannot tell which output is the logits: .*'scores': tensor\(4, 10\).*"
                                         "pass output=KEY") as info:
        score(model, x)
    assert "\n" not in str(info.value)
    assert score(model, x, output="scores") == score(tiny_tss(), x)
    with pytest.raises(ZcpError, match="pass output=KEY"):
        get_proxy("zico")(model, x)
    assert get_proxy("zico")(model, x, output=lambda o: o["scores"]) == get_proxy("zico")(tiny_tss(), x)


# ---- activations however written -----------------------------------------------------------------------------


@pytest.mark.parametrize("form", sorted(ACTIVATIONS) + sorted(MODULE_ACTIVATIONS))
def test_code_kernel_sees_every_activation_form(form):
    torch.manual_seed(0)
    act = ACTIVATIONS[form] if form in ACTIVATIONS else MODULE_ACTIVATIONS[form]()
    model, x = ConvAct(act), batch()
    expected = sum(code_kernel(z) for _, z in module_calls(model, x, [model.b1, model.b2]))  # activation inputs
    assert np.array_equal(compute_terminals(model, x, ["code_kernel"])["code_kernel"][0], expected.numpy())
    assert math.isfinite(get_proxy("naswot")(model, x))


def test_relu_forms_give_bitwise_the_same_terminals():
    """In-place, functional and module ReLUs: the hooks see pre-activations, gradients included."""
    x, results = batch(), {}
    for form in ("nn.ReLU", "nn.ReLU(inplace)", "F.relu", "torch.relu", "x.relu()", "F.relu(inplace)", "x.relu_()"):
        torch.manual_seed(0)
        model = ConvAct(ACTIVATIONS[form] if form in ACTIVATIONS else MODULE_ACTIVATIONS[form]())
        results[form] = compute_terminals(model, x)
    reference = results.pop("nn.ReLU")
    for form, packed in results.items():
        assert packed.keys() == reference.keys()
        for k in reference:
            assert np.array_equal(packed[k], reference[k], equal_nan=True), (form, k)


def test_a_model_without_activations_or_layers_is_one_line(exported):
    x = batch()
    no_act = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 14 * 14, 5))
    with pytest.raises(ValueError, match="calls no ReLU-like activation .*code_kernel \\(NASWOT\\) needs them"):
        load(exported["naswot"])(no_act, x)
    assert math.isfinite(load(exported["grads"])(no_act, x))  # what a gradient proxy needs is there
    for name in ("naswot", "wrcor", "swap"):
        with pytest.raises(ZcpError, match="ReLU-like"):
            get_proxy(name)(no_act, x, **CHEAP.get(name, {}))

    class Scale(nn.Module):  # parameters, but no Conv2d / Linear call
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return F.relu(x.mean((2, 3)) * self.w)

    with pytest.raises(ValueError, match="calls no nn.Conv2d / nn.Linear module"):
        load(exported["grads"])(Scale(), x)


def test_terminal_needs_are_stated():
    assert "ReLU-like" in TERMINALS["code_kernel"].doc or "ReLU" in TERMINALS["code_kernel"].doc
    import primitives.terminals as terminals
    assert "What each terminal needs" in terminals.__doc__


# ---- beyond cell CNNs ------------------------------------------------------------------------------------------

FAMILIES = {"resnet18": lambda: ResNet18(width=4), "vit": lambda: ViT(image=16, dim=16, depth=2, heads=2)}
# (family, proxy) pairs whose definition does not apply, with the reason the error line gives
CANNOT = {("resnet18", "meco"): "Expected more than 1 value per channel", ("resnet18", "meco_opt"): "Expected more",
          ("resnet18", "dextr"): "Expected more", ("vit", "az_nas"): "4-D feature maps",
          ("vit", "swap"): "4-D feature maps"}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("name", proxy_names())
def test_every_zoo_proxy_on_resnet18_and_vit(family, name):
    torch.manual_seed(0)
    model, x = FAMILIES[family](), batch()
    model.eval()
    before = snapshot(model)
    options = dict(CHEAP.get(name, {}), **({"curve_size": 16} if name == "dextr" else {}))
    if (family, name) in CANNOT:
        with pytest.raises(ZcpError, match=CANNOT[family, name]) as info:
            get_proxy(name)(model, x, **options)
        assert "\n" not in str(info.value)
    else:
        result = get_proxy(name)(model, x, **options)
        values = list(result.values()) if isinstance(result, dict) else [result]
        assert all(isinstance(v, float) and math.isfinite(v) for v in values), result
    assert_as_found(model, before)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_exported_proxies_on_resnet18_and_vit(family, exported):
    torch.manual_seed(0)
    model, x = FAMILIES[family](), batch()
    before = snapshot(model)
    for name, path in exported.items():
        assert math.isfinite(load(path)(model, x)), name
    assert_as_found(model, before)


def test_bad_models_are_one_line(exported):
    x = batch()

    class NoParams(nn.Module):
        def forward(self, x):
            return x.flatten(1)

    class Raises(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            raise KeyError("the model's own bug")

    class NoBatch(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 16 * 16, 10)

        def forward(self, x):
            return self.fc(x.flatten(1)).mean(0)

    cases = [(NoParams(), "has no parameters"), (Raises(), r"failed on inputs of shape \(4, 3, 16, 16\): KeyError"),
             (NoBatch(), r"output is a torch.float32 tensor of shape \(10,\) for a batch of [24]")]
    for model, match in cases:
        for run in (lambda m: load(exported["grads"])(m, x), lambda m: get_proxy("zico")(m, x),
                    lambda m: get_proxy("naswot")(m, x)):
            with pytest.raises((ValueError, ZcpError), match=match) as info:
                run(model)
            assert "\n" not in str(info.value)


# ---- the zoo as a library --------------------------------------------------------------------------------------


def test_the_zoo_as_a_library():
    x, model = batch(), TinyResNet()
    before = snapshot(model)
    assert isinstance(get_proxy("zico")(model, x), float)
    drawn = torch.randint(0, 10, (4,), generator=torch.Generator().manual_seed(3))
    assert get_proxy("zico")(model, x, seed=3) == get_proxy("zico").score(model, x, drawn, seed=3)
    assert get_proxy("zico")(model, x, labels=drawn) == get_proxy("zico").score(model, x, drawn)
    assert set(get_proxy("az_nas")(model, x)) == {"expressivity", "progressivity", "trainability", "complexity"}
    with pytest.raises(ZcpError, match=r"proxy zico takes the options \['splits'\], not \['split'\]"):
        get_proxy("zico")(model, x, split=2)
    assert_as_found(model, before)


# ---- every way of loading an exported file ---------------------------------------------------------------------


def test_exported_files_load_every_usual_way(exported, tmp_path, monkeypatch):
    path, x = exported["grads"], batch()
    model = TinyResNet()
    expected = load(path)(model, x)
    monkeypatch.syspath_prepend(str(path.parent))
    module = importlib.import_module(path.stem)  # import proxy_02
    assert module.score(model, x) == expected
    spec = importlib.util.spec_from_file_location("unregistered", path)  # the importlib recipe, not registered
    unregistered = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(unregistered)
    assert unregistered.score(model, x) == expected and "unregistered" not in sys.modules
    assert runpy.run_path(str(path))["score"](model, x) == expected
    namespace = {"__name__": "__main__"}  # a notebook cell: exec(open(path).read())
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    assert namespace["score"](model, x) == expected
    bare: dict = {}
    exec(path.read_text(), bare)
    assert bare["score"](copy.deepcopy(model), x) == expected
    del sys.modules[path.stem]
