"""Small networks this project did not build, for testing the layer definition on any nn.Module."""
import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from evaluation.spaces.cells import TinyNetwork


def module_calls(model: nn.Module, x: torch.Tensor, modules: list[nn.Module]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input, output) copies of every call of ``modules`` in one train-mode forward, in call order."""
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((i[0].detach().clone(), o.detach().clone())))
             for m in modules]
    model.train()
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


class TinyResNet(nn.Module):
    """Two residual blocks with BN and nn.ReLU modules."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                   nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.relu(x + self.block(x))
        x = self.relu(self.down(x))
        return self.head(x.mean((2, 3)))


class MLP(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                                 nn.Linear(32, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x[:, :, :8, :8])


class Branches(nn.Module):
    """Two parallel conv branches, no BatchNorm, functional torch.relu (activation units all the same)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.b = nn.Conv2d(3, 6, 1)
        self.mix = nn.Conv2d(12, 8, 3, padding=1)
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([torch.relu(self.a(x)), torch.tanh(self.b(x))], 1)
        return self.head(torch.relu(self.mix(x)).mean((2, 3)))


# ---- models as users have them (issue 14): other output conventions, activations, families ------------------


class NatsOfficial(TinyNetwork):
    """The NATS-Bench cell network as xautodl's official ``TinyNetwork`` is: the same modules, and a
    forward that returns ``(features, logits)``."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.global_pooling(self.lastact(self.cells(self.stem(x)))).flatten(1)
        return features, self.classifier(features)


def official(net: TinyNetwork) -> NatsOfficial:
    """A copy of ``net`` (same weights) that returns what the official network returns."""
    out = copy.deepcopy(net)
    out.__class__ = NatsOfficial
    return out


class DictOutput(nn.Module):
    """Returns ``{"features": ..., "logits": ...}`` (or under another key than "logits")."""

    def __init__(self, net: nn.Module, key: str = "logits") -> None:
        super().__init__()
        self.net, self.key = net, key

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": x.mean((2, 3)), self.key: self.net(x)}


@dataclass
class Output:
    """A ModelOutput-like result (as Hugging Face models return)."""

    logits: torch.Tensor
    hidden: torch.Tensor | None = None


class DataclassOutput(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> Output:
        return Output(self.net(x), x)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "F.relu": F.relu, "torch.relu": torch.relu, "x.relu()": lambda x: x.relu(),
    "F.relu(inplace)": lambda x: F.relu(x, inplace=True), "x.relu_()": lambda x: x.relu_(),
    "F.gelu": F.gelu, "F.silu": F.silu, "F.leaky_relu": lambda x: F.leaky_relu(x, 0.1),
}
MODULE_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "nn.ReLU": nn.ReLU, "nn.ReLU(inplace)": lambda: nn.ReLU(inplace=True), "nn.GELU": nn.GELU, "nn.SiLU": nn.SiLU,
    "nn.LeakyReLU(inplace)": lambda: nn.LeakyReLU(0.1, inplace=True),
}


class ConvAct(nn.Module):
    """Conv-BN-act twice, pool, linear; ``act`` is a function (as in ACTIVATIONS) or a module."""

    def __init__(self, act: Callable[[torch.Tensor], torch.Tensor], classes: int = 10) -> None:
        super().__init__()
        self.act = act
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.b1(self.c1(x)))
        x = self.act(self.b2(self.c2(x)))
        return self.head(x.mean((2, 3)))


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: conv-bn-relu(in-place)-conv-bn, ``+=`` shortcut, relu(in-place)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet18(nn.Module):
    """torchvision's resnet18 layout (7x7 stem, max-pool, 4 stages of 2 BasicBlocks, 64..512 channels,
    ``width`` scales them), without torchvision."""

    def __init__(self, classes: int = 10, width: int = 64) -> None:
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width]
        self.conv1 = nn.Conv2d(3, w[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, c = [], w[0]
        for i, c_out in enumerate(w):
            stages.append(nn.Sequential(BasicBlock(c, c_out, 1 if i == 0 else 2), BasicBlock(c_out, c_out, 1)))
            c = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * (d // self.heads) ** -0.5).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-norm transformer block: LayerNorm, multi-head attention, LayerNorm, GELU MLP."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """A small vision transformer: conv patch embedding, class token, learned positions, blocks, head."""

    def __init__(self, classes: int = 10, image: int = 32, patch: int = 4, dim: int = 64, depth: int = 4,
                 heads: int = 4) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])
