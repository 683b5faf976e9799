"""Terminals against direct, independent implementations of the statistics they stand for."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from evaluation.spaces import get_space
from primitives.layers import SameValues, exact_kernels
from primitives.terminals import BASE, TERMINALS, collate, compute_terminals
from primitives.types import Matrix, NetScalar, RowScalar, Vector
from tests.models import MLP, Branches, TinyResNet, module_calls


def _tss(index=1, seed=0):
    torch.manual_seed(seed)
    return get_space("tss").build(index, "cifar10")


def _batch(n=16, size=32, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _outputs(model, x):
    """(module input, module output) of every Conv2d / Linear call, in call order, train mode."""
    return module_calls(model, x, [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))])


def _split(packed, name):
    """Per-layer vectors of one network from the packed format."""
    return np.split(packed[name], np.cumsum(packed[name + ".len"])[:-1])


@pytest.mark.parametrize("model_fn", [_tss, TinyResNet])
def test_code_kernel_is_naswot(model_fn):
    model, x = model_fn(), _batch()
    k = torch.zeros(16, 16, dtype=torch.float64)

    def hook(m, inp):
        c = (inp[0].detach().flatten(1) > 0).double()
        k.add_(c @ c.T + (1 - c) @ (1 - c).T)

    hooks = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    model.train()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    packed = compute_terminals(model, x, ["code_kernel"])
    assert np.array_equal(packed["code_kernel"][0], k.numpy())


@pytest.mark.parametrize("model_fn", [_tss, TinyResNet, MLP, Branches])
def test_channel_terms_match_meco_and_dextr_definitions(model_fn):
    model, x = model_fn(), _batch()
    meco, dextr_s = 0.0, 0.0
    for _, out in _outputs(model, x):
        z0 = out[0].reshape(out.shape[1], -1).double().numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            c = np.nan_to_num(np.corrcoef(z0), nan=0.0)
        meco += np.linalg.eigvalsh(c).min()
        sv = np.linalg.svd(z0, compute_uv=False)
        dextr_s += sv.min() / sv.max()
    packed = compute_terminals(model, x, ["chan_corr_eig", "chan_sv"])
    assert sum(v.min() for v in _split(packed, "chan_corr_eig")) == pytest.approx(meco, rel=1e-6, abs=1e-9)
    assert sum(v.min() / v.max() for v in _split(packed, "chan_sv")) == pytest.approx(dextr_s, rel=1e-6)


ALL_CONV = "|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|"


@pytest.mark.parametrize("model_fn", [TinyResNet, lambda: get_space("tss").build(ALL_CONV, "cifar10")])
def test_activation_spectra_and_moments(model_fn):
    """Also on a cell whose nodes feed several convolutions (equal inputs share their statistics)."""
    model, x = model_fn(), _batch()
    outs = _outputs(model, x)
    packed = compute_terminals(model, x, ["act_sv", "act_corr_eig", "act_mean", "act_std", "act_pos", "preact_std",
                                          "act_corr_sum"])
    assert packed["layers"][0] == len(outs)
    expected_sum = sum(np.nan_to_num(np.corrcoef(a.flatten(1).double().numpy())) for a, _ in outs)
    assert packed["act_corr_sum"][0] == pytest.approx(expected_sum, abs=1e-9)
    for layer, (a, z) in enumerate(outs):
        a2 = a.flatten(1).double().numpy()
        assert _split(packed, "act_sv")[layer] == pytest.approx(np.linalg.svd(a2, compute_uv=False), rel=1e-5, abs=1e-5)
        assert _split(packed, "act_corr_eig")[layer] == pytest.approx(np.linalg.eigvalsh(np.corrcoef(a2))[::-1], abs=1e-5)
        assert packed["act_mean"][layer] == pytest.approx(a2.mean(), rel=1e-6)
        assert packed["act_std"][layer] == pytest.approx(a2.std(ddof=1), rel=1e-6)
        assert packed["act_pos"][layer] == pytest.approx((a2 > 0).mean())
        assert packed["preact_std"][layer] == pytest.approx(z.double().std().item(), rel=1e-5)


def test_same_values_reuses_only_equal_tensors():
    seen, calls = SameValues(), []

    def compute(t):
        calls.append(t)
        return t.sum().item()

    x = torch.randn(4, 100)
    assert seen.get(x, compute) == seen.get(x.clone(), compute) == x.sum().item()
    y = x.clone()
    y[0, 1] += 1.0  # off the fingerprint's stride: found as a candidate, refused by torch.equal
    nan = torch.full((4, 100), math.nan)
    for t in (y, nan, nan.clone(), x[:2], x.bfloat16(), x.bfloat16()):
        seen.get(t, compute)
    assert len(calls) == 6


def test_gradient_terms_use_the_backward_signal():
    model, x = MLP(), _batch()
    labels = torch.arange(16) % 10
    packed = compute_terminals(model, x, ["snip", "wgrad_norm"], labels=labels, signal="ce")
    model.train()
    loss = nn.functional.cross_entropy(model(x), labels)
    grads = torch.autograd.grad(loss, [m.weight for m in model.modules() if isinstance(m, nn.Linear)])
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    assert packed["wgrad_norm"] == pytest.approx([g.double().norm().item() for g in grads], rel=1e-5)
    assert packed["snip"] == pytest.approx([(w * g).abs().sum().item() for w, g in zip(weights, grads)], rel=1e-5)


def test_curvature_matches_finite_difference_definition():
    model, x = _tss(3), _batch()
    packed = compute_terminals(model, x, ["curvature"], seed=5, curve_points=32)
    # the same circle, built independently: orthonormal pair from QR of the seeded Gaussian draw
    gen = torch.Generator().manual_seed(6)
    q, _ = torch.linalg.qr(torch.randn(3 * 32 * 32, 2, generator=gen, dtype=torch.float64))
    t = np.arange(32) * 2 * math.pi / 32
    inputs = (np.cos(t)[:, None] * q[:, 0].numpy() + np.sin(t)[:, None] * q[:, 1].numpy()).reshape(32, 3, 32, 32)
    model.train()
    with torch.no_grad():
        f = model(torch.tensor(inputs, dtype=torch.float32)).double().numpy()
    h = 2 * math.pi / 32
    v = (np.roll(f, -1, 0) - np.roll(f, 1, 0)) / (2 * h)
    a = (np.roll(f, -1, 0) - 2 * f + np.roll(f, 1, 0)) / h**2
    kappa = [np.sqrt(max(vi @ vi * (ai @ ai) - (vi @ ai) ** 2, 0)) / (vi @ vi) ** 1.5 for vi, ai in zip(v, a)]
    assert packed["curvature"][0] == pytest.approx(np.mean(kappa), rel=1e-6)


def test_params_flops_depth():
    model = TinyResNet()
    packed = compute_terminals(model, _batch(size=8), ["params", "flops", "depth", "layer_params"])
    assert packed["params"][0] == sum(p.numel() for p in model.parameters())
    macs = 8 * 8 * 8 * 27 + 2 * 8 * 8 * 8 * 72 + 16 * 4 * 4 * 72 + 16 * 10
    assert packed["flops"][0] == macs and packed["depth"][0] == 5
    assert packed["layer_params"].sum() == sum(p.numel() for m in model.modules()
                                               if isinstance(m, (nn.Conv2d, nn.Linear)) for p in m.parameters())


def test_model_is_left_as_found():
    model, x = _tss(2), _batch()
    model.eval()
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    compute_terminals(model, x)
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())


def test_passes_run_with_exact_kernels_and_restore_the_callers_settings():
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    seen = []

    class Spy(MLP):
        def forward(self, x):
            seen.append((cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark))
            return super().forward(x)

    saved = cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark
    try:
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark = True, True, False, True
        compute_terminals(Spy(), _batch(), ["act_sv"])
        assert seen == [(False, False, True, False)]
        with pytest.raises(RuntimeError):
            with exact_kernels():
                raise RuntimeError("inside")
        assert (cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark) == (True, True, False, True)
    finally:
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark = saved


def test_only_the_needed_passes_run():
    model, x = MLP(), _batch()
    calls = {"forward": 0, "backward": 0}
    model.register_forward_pre_hook(lambda m, i: calls.__setitem__("forward", calls["forward"] + 1))
    model.net[-1].register_full_backward_hook(lambda m, gi, go: calls.__setitem__("backward", calls["backward"] + 1))
    expected = {("params",): (0, 0), ("act_sv",): (1, 0), ("curvature",): (1, 0), ("grad_sv",): (1, 1),
                ("act_sv", "noise_grad_sv"): (2, 1), ("snip", "noise_act_std", "curvature"): (3, 1)}
    for names, (fwd, bwd) in expected.items():
        calls.update(forward=0, backward=0)
        compute_terminals(model, x, names)
        assert (calls["forward"], calls["backward"]) == (fwd, bwd), names


def test_models_without_what_a_terminal_needs_fail_clearly():
    no_relu = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 30 * 30, 5))
    with pytest.raises(ValueError, match="calls no ReLU-like activation"):
        compute_terminals(no_relu, _batch(), ["code_kernel"])
    with pytest.raises(ValueError, match="calls no nn.Conv2d / nn.Linear module"):
        compute_terminals(nn.Sequential(nn.Flatten(), nn.ReLU()), _batch(), ["act_sv"])
    with pytest.raises(ValueError, match="unknown terminal"):
        compute_terminals(MLP(), _batch(), ["bogus"])


def test_collate_builds_typed_values_with_shared_rows():
    x = _batch()
    packs = [compute_terminals(m, x) for m in (MLP(), TinyResNet())]
    packed = {k: np.concatenate([p[k] for p in packs]) for k in packs[0]}
    env = collate(packed, BASE)  # compute_terminals computes the @base group by default
    kinds = {Vector: 0, RowScalar: 0, Matrix: 0, NetScalar: 0}
    for name, value in env.items():
        assert isinstance(value, TERMINALS[name].type)
        kinds[type(value)] += 1
    assert all(kinds.values())
    assert env["act_sv"].rows is env["snip"].rows and env["act_sv"].rows.seg.tolist() == [0, 0, 0] + [1] * 5
    assert env["code_kernel"].data.shape == (2, 16, 16) and env["params"].data.shape == (2,)
    lens = packed["act_sv.len"]
    assert env["act_sv"].mask.sum(1).tolist() == lens.tolist()
