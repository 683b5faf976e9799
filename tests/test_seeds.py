"""The language can express the seed proxies: from the cache they equal direct implementations.

Direct references are written here from the papers' definitions (NASWOT: Mellor et al. 2021; MeCo:
Jiang et al. 2023; Dextr: Asthana et al. 2025), over this project's layer definition (Conv2d /
Linear calls; ReLU modules for NASWOT), on the same networks, weights and batch as the cache.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from evaluation.cache import build_cache, load_cache
from evaluation.images import load_batch
from evaluation.samples import make_sample
from evaluation.spaces import get_space
from primitives.expression import evaluate, parse
from primitives.functions import REGISTRY
from primitives.registry import check_reachability
from primitives.terminals import terminal_types

SEEDS = {
    "naswot": "layer_sum(m_logdet(code_kernel))",
    "meco": "layer_sum(v_min(chan_corr_eig))",
    "params": "params",
    "dextr": "n_div(n_mul(S, K), n_add(S, K))"
    .replace("S", "n_log(n_add(1.0, layer_sum(div(v_min(chan_sv), v_max(chan_sv)))))")
    .replace("K", "n_log(n_add(1.0, curvature))"),
}
TERMS = ("code_kernel", "chan_corr_eig", "chan_sv", "curvature", "params")


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    sample = make_sample(get_space("tss"), "random", 3, 11)
    out = tmp_path_factory.mktemp("seeds")
    build_cache(sample, "cifar10", out, batch_size=16, seed=3, terminals=TERMS, backend="serial",
                image_source="gaussian", progress=False)
    x = load_batch("cifar10", 16, 3, "gaussian").images
    return sample, load_cache(out), x


def _network(index):
    torch.manual_seed(3)
    return get_space("tss").build(index, "cifar10").train()


def _layer_outputs(model, x):
    outs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outs.append(o.detach()))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    return outs, logits


def naswot(model, x):
    k = np.zeros((len(x), len(x)))

    def hook(m, inp):
        c = (inp[0].detach().flatten(1) > 0).double().numpy()
        k[:] += c @ c.T + (1 - c) @ (1 - c).T

    hooks = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return np.linalg.slogdet(k)[1]


def meco(model, x):
    total = 0.0
    for out in _layer_outputs(model, x)[0]:
        with np.errstate(invalid="ignore", divide="ignore"):
            c = np.nan_to_num(np.corrcoef(out[0].reshape(out.shape[1], -1).double().numpy()), nan=0.0)
        total += np.linalg.eigvalsh(c).min()
    return total


def dextr(model, x):
    s = 0.0
    for out in _layer_outputs(model, x)[0]:
        sv = np.linalg.svd(out[0].reshape(out.shape[1], -1).double().numpy(), compute_uv=False)
        s += sv.min() / sv.max()
    gen = torch.Generator().manual_seed(3 + 1)  # the cache's circle: seed + 1, 64 points
    q, _ = torch.linalg.qr(torch.randn(x[0].numel(), 2, generator=gen, dtype=torch.float64))
    t = np.arange(64) * 2 * math.pi / 64
    circle = np.cos(t)[:, None] * q[:, 0].numpy() + np.sin(t)[:, None] * q[:, 1].numpy()
    with torch.no_grad():
        f = model(torch.tensor(circle, dtype=torch.float32).reshape(64, *x.shape[1:])).double().numpy()
    h = 2 * math.pi / 64
    v, a = (np.roll(f, -1, 0) - np.roll(f, 1, 0)) / (2 * h), (np.roll(f, -1, 0) - 2 * f + np.roll(f, 1, 0)) / h**2
    kappa = np.mean([np.sqrt(max(vi @ vi * (ai @ ai) - (vi @ ai) ** 2, 0)) / (vi @ vi) ** 1.5 for vi, ai in zip(v, a)])
    big_s, big_k = math.log(1 + s), math.log(1 + kappa)
    return big_s * big_k / (big_s + big_k)


DIRECT = {"naswot": naswot, "meco": meco, "params": lambda m, x: sum(p.numel() for p in m.parameters()),
          "dextr": dextr}


@pytest.mark.parametrize("name", SEEDS)
def test_seed_from_cache_equals_direct_implementation(setting, name):
    sample, cache, x = setting
    scores = evaluate(parse(SEEDS[name], REGISTRY, terminal_types(TERMS)), cache.env())
    direct = [DIRECT[name](_network(i), x) for i in sample.indices]
    assert scores.tolist() == pytest.approx(direct, rel=1e-6)
    assert len(set(np.round(direct, 9))) == len(direct), "the seed must tell these networks apart"


def test_every_type_is_reachable_from_the_terminals():
    check_reachability(REGISTRY, set(terminal_types().values()))
