"""The proxy zoo: every proxy on several kinds of network, restoration, and formulas on tiny networks."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from evaluation.errors import ZcpError
from evaluation.proxies import PROXIES, get_proxy, proxy_names
from evaluation.proxies.az_nas import aggregate
from evaluation.proxies.dextr import extrinsic_curvature
from evaluation.proxies.swap import distinct, pattern_keys
from evaluation.spaces.cells import TinyNetwork
from evaluation.proxies.zen import _pre_pool_features
from tests.models import MLP, Branches, TinyResNet, ViT

CHEAP = {"swap": {"repeats": 2, "samples": 8}}  # options that keep the tests fast


def tiny_tss(seed=0):
    """A NATS-style network (stem, cells, residual block) small enough for tests."""
    torch.manual_seed(seed)
    genotype = ((("nor_conv_3x3", 0),), (("skip_connect", 0), ("nor_conv_1x1", 1)),
                (("avg_pool_3x3", 0), ("nor_conv_3x3", 1), ("none", 2)))
    return TinyNetwork(genotype, [8, 16, 16], [False, True, False], 10, stem_width=8)


MODELS = {"tss": tiny_tss, "resnet": lambda: TinyResNet(), "mlp": lambda: MLP(), "branches": lambda: Branches()}


def _batch(n=12, size=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def _expect_error(name, model_name):
    """SWAP needs activations on 4-D maps and AZ-NAS blocks with 4-D maps: the MLP has neither."""
    return model_name == "mlp" and name in {"swap", "az_nas"}


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("name", proxy_names())
def test_proxy_returns_a_float_and_restores_the_model(name, model_name):
    torch.manual_seed(1)
    model = MODELS[model_name]()
    model.eval()
    x, y = _batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    proxy = get_proxy(name)
    if _expect_error(name, model_name):
        with pytest.raises(ZcpError):
            proxy.score(model, x, y, **CHEAP.get(name, {}))
    else:
        result = proxy.score(model, x, y, **CHEAP.get(name, {}))
        values = list(result.values()) if isinstance(result, dict) else [result]
        assert all(isinstance(v, float) for v in values)
        assert all(math.isfinite(v) for v in values), result
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_proxies_are_deterministic_in_the_seed():
    x, y = _batch()
    for name in ("swap", "zen", "meco_opt", "dextr"):
        a = get_proxy(name).score(tiny_tss(), x, y, seed=3, **CHEAP.get(name, {}))
        b = get_proxy(name).score(tiny_tss(), x, y, seed=3, **CHEAP.get(name, {}))
        assert a == b, name


def test_unknown_proxy_lists_the_known_ones():
    with pytest.raises(ZcpError, match="unknown proxy 'nope'; known: .*naswot.*zico"):
        get_proxy("nope")


@pytest.mark.parametrize("name", [n for n in proxy_names() if PROXIES[n].needs_labels])
def test_label_proxies_refuse_a_batch_without_labels(name):
    x, _ = _batch()
    with pytest.raises(ZcpError, match=f"proxy {name} needs labels"):
        get_proxy(name).score(tiny_tss(), x, None)
    with pytest.raises(ZcpError, match="needs labels"):
        get_proxy(name).score(tiny_tss(), x, torch.full((x.shape[0],), -1))


def test_the_zoo_has_every_required_proxy():
    required = {"params", "flops", "grad_norm", "snip", "grasp", "fisher", "synflow", "jacov", "naswot", "zen",
                "zico", "meco", "meco_opt", "dextr", "wrcor", "swap", "az_nas"}
    assert required <= set(proxy_names())
    assert {n for n in proxy_names() if PROXIES[n].needs_labels} == {"grad_norm", "snip", "grasp", "fisher", "zico", "wrcor"}


# ---- formulas on networks small enough to compute by hand --------------------------------------------------


class TwoLinear(nn.Module):
    def __init__(self, bias=False):
        super().__init__()
        self.a, self.b = nn.Linear(4, 3, bias=bias), nn.Linear(3, 2, bias=bias)

    def forward(self, x):
        return self.b(torch.relu(self.a(x.flatten(1))))


def _pair(seed=2):
    torch.manual_seed(seed)
    return TwoLinear(bias=True), torch.randn(6, 4), torch.tensor([0, 1, 1, 0, 1, 0])


def _grads(model, x, y):
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return [(m.weight.detach().clone(), m.weight.grad.clone()) for m in (model.a, model.b)]


def test_grad_norm_and_snip_match_hand_computation():
    model, x, y = _pair()
    pairs = _grads(model, x, y)
    model.zero_grad(set_to_none=True)
    assert get_proxy("grad_norm").score(model, x, y) == pytest.approx(sum(float(g.norm()) for _, g in pairs), rel=1e-6)
    assert get_proxy("snip").score(model, x, y) == pytest.approx(sum(float((w * g).abs().sum()) for w, g in pairs), rel=1e-6)


def test_grasp_is_minus_weight_times_hessian_gradient():
    model, x, y = _pair()
    params = [model.a.weight, model.b.weight]
    loss = F.cross_entropy(model(x), y)
    g = torch.autograd.grad(loss, params, create_graph=True)
    hg = torch.autograd.grad(sum((gi * gi.detach()).sum() for gi in g), params)
    expected = sum(float(-(w.detach() * h).sum()) for w, h in zip(params, hg))
    model.zero_grad(set_to_none=True)
    assert get_proxy("grasp").score(model, x, y) == pytest.approx(expected, rel=1e-5)


def test_fisher_matches_hand_computation():
    model, x, y = _pair()
    h = model.a(x)
    h.retain_grad()
    z = model.b(torch.relu(h))
    z.retain_grad()
    F.cross_entropy(z, y).backward()
    fan_in = {"a": 4, "b": 3}
    expected = sum(float((0.5 * (t.detach() * t.grad).pow(2).mean(0)).sum()) * fan_in[k] for k, t in (("a", h), ("b", z)))
    model.zero_grad(set_to_none=True)
    assert get_proxy("fisher").score(model, x, y) == pytest.approx(expected, rel=1e-5)


def test_synflow_of_a_bias_free_linear_chain_is_log_layers_times_flow():
    # Synaptic flow is conserved: each layer's sum of |W * dR/dW| equals R = 1^T |W2| relu(|W1| 1).
    torch.manual_seed(0)
    model = TwoLinear(bias=False)
    r = (model.b.weight.detach().abs() @ (model.a.weight.detach().abs() @ torch.ones(4))).sum()
    value = get_proxy("synflow").score(model, torch.zeros(5, 4))
    assert value == pytest.approx(math.log(2 * float(r)), rel=1e-6)


def test_synflow_drops_batchnorm_unless_told_to_keep_it_in_train_mode():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5))
    with_bn = nn.Sequential(plain[0], nn.BatchNorm2d(4), *plain[1:])
    x = torch.zeros(2, 3, 6, 6)
    synflow = get_proxy("synflow")
    assert synflow.score(with_bn, x) == synflow.score(plain, x) == synflow.score(with_bn, x, batchnorm="drop")
    kept = synflow.score(with_bn, x, batchnorm="train")
    assert math.isfinite(kept) and kept != pytest.approx(synflow.score(plain, x), rel=1e-3)
    assert synflow.score(plain, x, batchnorm="train") == synflow.score(plain, x)
    with pytest.raises(ZcpError, match="batchnorm must be 'drop' or 'train', not 'eval'"):
        synflow.score(with_bn, x, batchnorm="eval")


def test_naswot_is_logdet_of_the_code_kernel():
    model, x, _ = _pair()
    c = (model.a(x) > 0).double()
    k = c @ c.T + (1 - c) @ (1 - c).T
    assert get_proxy("naswot").score(nn.Sequential(model.a, nn.ReLU()), x) == pytest.approx(
        float(np.linalg.slogdet(k.numpy())[1]), abs=1e-9)


def test_jacov_of_a_linear_map_has_identical_jacobian_rows():
    # y = W x: every sample's Jacobian of sum(y) is the column sums of W, so corr = all ones:
    # eigenvalues N, 0, ..., 0.
    torch.manual_seed(0)
    n, k = 5, 1e-5
    eig = np.array([n] + [0.0] * (n - 1))
    expected = -np.sum(np.log(eig + k) + 1 / (eig + k))
    assert get_proxy("jacov").score(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), torch.randn(n, 3, 2, 2)) == \
        pytest.approx(expected, rel=1e-6)


def test_zico_accumulates_gradients_like_the_official_code():
    model, x, y = _pair()
    g1 = _grads(model, x[:3], y[:3])
    g2 = _grads(model, x[3:], y[3:])
    expected = 0.0
    for (_, a), (_, b) in zip(g1, g2):
        stack = torch.stack([a, a + b]).double().numpy()  # no zero_grad between the batches
        s = stack.std(0)
        ratio = np.sum(np.abs(stack).mean(0)[s != 0] / s[s != 0])
        expected += math.log(ratio) if ratio != 0 else 0.0
    assert expected != 0.0
    model.zero_grad(set_to_none=True)
    assert get_proxy("zico").score(model, x, y) == pytest.approx(expected, rel=1e-6)


def test_meco_sums_min_eigenvalues_over_every_module():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    model = nn.Sequential(conv)  # the container repeats its child's output: counted twice
    x = torch.randn(2, 3, 6, 6)
    rows = conv(x[:1])[0].reshape(4, -1).detach().double()
    expected = 2 * float(np.linalg.eigvalsh(np.corrcoef(rows.numpy())).min())
    assert get_proxy("meco").score(model, x) == pytest.approx(expected, rel=1e-9)


class PooledResNet(TinyResNet):
    """TinyResNet with its global pooling as an nn.AdaptiveAvgPool2d module instead of ``x.mean((2, 3))``."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        x = self.stem(x)
        x = self.relu(x + self.block(x))
        return self.head(self.pool(self.relu(self.down(x))).flatten(1))


def test_zen_reads_the_map_before_global_pooling_whether_pooled_by_a_module_or_functionally():
    torch.manual_seed(0)
    functional, pooled = TinyResNet(), PooledResNet()
    pooled.load_state_dict(functional.state_dict())
    x, _ = _batch()
    assert get_proxy("zen").score(functional, x, seed=4) == get_proxy("zen").score(pooled, x, seed=4)
    assert _pre_pool_features(functional, x).shape == (12, 16, 8, 8)
    vit = ViT(image=16)  # tokens, not maps, before the head: the head's input
    assert _pre_pool_features(vit, x).shape == (12, 64)


def test_zen_blends_bn_statistics_with_pytorch_s_default_momentum_whatever_the_model_s():
    torch.manual_seed(0)
    default, tf_like = TinyResNet(), TinyResNet()  # NB101's BN: TF decay 0.997, PyTorch momentum 0.003
    tf_like.load_state_dict(default.state_dict())
    bns = [m for m in tf_like.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.momentum = 0.003
    x, _ = _batch()
    assert get_proxy("zen").score(tf_like, x, seed=4) == get_proxy("zen").score(default, x, seed=4)
    assert all(m.momentum == 0.003 for m in bns)


def test_swap_counts_distinct_activation_patterns():
    code = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 0, 1], [1, 0, 1, 1, 1]], dtype=torch.bool)
    # columns: (1,0,1), (0,0,0), (1,0,1), (1,0,1), (0,1,1): three distinct patterns
    assert distinct([pattern_keys(code)], 3) == 3
    assert distinct([pattern_keys(code), pattern_keys(code[:, :2])], 30) == 3


def test_curvature_of_a_linear_map_is_that_of_an_ellipse():
    # x(t) = u1 cos t + u2 sin t, out = W x + b: at t = 0, v = W u2 and a = -W u1.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    gen = torch.Generator().manual_seed(5)
    kappa = extrinsic_curvature(model, (3, 2, 2), gen, torch.device("cpu"))
    basis = torch.linalg.svd(torch.randn(12, 2, generator=torch.Generator().manual_seed(5)), full_matrices=False)[0]
    w = model[1].weight.detach().double()
    v, a = w @ basis[:, 1].double(), -(w @ basis[:, 0].double())
    expected = math.sqrt(float((v @ v) * (a @ a) - (v @ a) ** 2)) / float(v @ v) ** 1.5
    assert kappa == pytest.approx(expected, rel=1e-5)


def test_az_nas_aggregates_log_ranks_over_the_set():
    comps = {"expressivity": np.array([1.0, 3.0, 2.0]), "progressivity": np.array([0.0, 0.0, 1.0]),
             "trainability": np.array([-np.inf, -1.0, -2.0]), "complexity": np.array([10.0, 30.0, 20.0])}
    ranks = np.array([[1, 3, 2], [1.5, 1.5, 3], [1, 3, 2], [1, 3, 2]])
    assert aggregate(comps) == pytest.approx(np.log(ranks / 3).sum(0))


def test_az_nas_trainability_of_an_identity_block_is_minus_infinity():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.cells = nn.Sequential(nn.Identity(), nn.Conv2d(4, 4, 3, padding=1))

        def forward(self, x):
            return self.cells(self.stem(x)).mean((2, 3))

    x, _ = _batch()
    result = get_proxy("az_nas").score(Net(), x)
    assert result["trainability"] == -math.inf and math.isfinite(result["expressivity"])
