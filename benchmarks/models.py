"""The three reference models of the benchmarks, with their inputs, layers and neurons.

- ``mlp``: 784-512-512-10, ReLU modules between the linear layers;
- ``cnn``: a ResNet-style CNN on 3×32×32 — a stem, 3 stages × 2 residual
  blocks of widths 32/64/128 (stride 2 at the start of stages 2 and 3),
  BatchNorm, one ReLU module per use (so every module runs once per forward);
- ``tfm``: a transformer encoder classifier — token embedding 1000×128 plus a
  learned position embedding, 2 pre-norm encoder layers with 4 heads and a
  512-wide feed-forward block, mean pooling, a 10-way head, sequences of 64.

Token ids are integers, so gradients with respect to them do not exist. As in
Captum's practice for text (attributing to the embedding), the benchmarked
transformer is :class:`EmbeddedClassifier`: the same network taking the
*token embeddings* ``[B, 64, 128]`` as its input, so every method attributes
to the embedding vectors (sum over the last dim for a per-token score).

Every model is written with modules only (no fused fast paths such as
``nn.TransformerEncoderLayer``'s, which skip submodules in eval mode and would
make the hooked layers vanish), and is put in eval mode.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MLP(nn.Module):
    """784-512-512-10 with ReLU modules."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.relu1 = nn.Linear(784, 512), nn.ReLU()
        self.fc2, self.relu2 = nn.Linear(512, 512), nn.ReLU()
        self.fc3 = nn.Linear(512, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc3(self.relu2(self.fc2(self.relu1(self.fc1(x)))))


class Block(nn.Module):
    """A basic residual block: conv-bn-relu-conv-bn, plus the (projected) input, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1, self.relu1 = nn.BatchNorm2d(c_out), nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2, self.relu2 = nn.BatchNorm2d(c_out), nn.ReLU()
        self.shortcut = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                         if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.shortcut(x))


class ResNet(nn.Module):
    """3×32×32 → 10: stem (32), stages of widths 32/64/128 with 2 blocks each."""

    def __init__(self, widths=(32, 64, 128), blocks: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages, c_in = [], widths[0]
        for i, w in enumerate(widths):
            stages.append(nn.Sequential(*[Block(c_in if b == 0 else w, w, 2 if (i > 0 and b == 0) else 1)
                                          for b in range(blocks)]))
            c_in = w
        self.layer1, self.layer2, self.layer3 = stages
        self.pool, self.flatten = nn.AdaptiveAvgPool2d(1), nn.Flatten()
        self.fc = nn.Linear(widths[-1], 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.flatten(self.pool(x)))


class SelfAttention(nn.Module):
    """Multi-head self-attention from plain modules."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        weights = self.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads))
        return self.proj((weights @ v).transpose(1, 2).reshape(b, t, d))


class EncoderLayer(nn.Module):
    """Pre-norm encoder layer: x + attn(norm1(x)), then x + ff(norm2(x))."""

    def __init__(self, d: int, heads: int, d_ff: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(d), SelfAttention(d, heads)
        self.norm2, self.linear1, self.act, self.linear2 = nn.LayerNorm(d), nn.Linear(d, d_ff), nn.ReLU(), nn.Linear(d_ff, d)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.linear2(self.act(self.linear1(self.norm2(x))))


class EmbeddedClassifier(nn.Module):
    """The encoder classifier from token embeddings ``[B, T, d]`` to 10 logits."""

    def __init__(self, d: int = 128, heads: int = 4, layers: int = 2, d_ff: int = 512, seq: int = 64) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.randn(seq, d) * 0.02)
        self.layers = nn.ModuleList([EncoderLayer(d, heads, d_ff) for _ in range(layers)])
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 10)

    def forward(self, embedded: Tensor) -> Tensor:
        x = embedded + self.position
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x).mean(1))


class TokenClassifier(nn.Module):
    """The full classifier on token ids: embedding 1000×128, then :class:`EmbeddedClassifier`."""

    def __init__(self, vocab: int = 1000, d: int = 128) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, d)
        self.body = EmbeddedClassifier(d)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.body(self.embedding(tokens))


class Case(NamedTuple):
    """One benchmark model with its input batch and its layers / neurons / target."""

    name: str
    model: nn.Module
    inputs: Tensor
    layers: dict            # "early" / "late" -> dotted layer name
    neurons: dict           # "early" / "late" -> neuron selector (tuple of ints)
    target: int
    feature_mask: Tensor    # for ablation methods: groups of input features


def _patch_mask(shape, patch: int) -> Tensor:
    """Feature ids for square patches of the last two dims, shared over leading dims; shape ``(1, *shape)``."""
    h, w = shape[-2], shape[-1]
    ids = (torch.arange(h)[:, None] // patch) * math.ceil(w / patch) + torch.arange(w)[None, :] // patch
    return ids.expand(shape).reshape((1,) + tuple(shape)).contiguous()


def build(name: str, device: str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0) -> Case:
    """The model ``name`` (``mlp``, ``cnn`` or ``tfm``) in eval mode, with its batch, on ``device``."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if name == "mlp":
        model, x = MLP(), torch.rand(8, 784, generator=g)
        layers, neurons = {"early": "relu1", "late": "relu2"}, {"early": (17,), "late": (301,)}
        mask = _patch_mask((28, 28), 2).reshape(1, 784)          # 196 features of 2×2 pixels
    elif name == "cnn":
        model, x = ResNet(), torch.randn(8, 3, 32, 32, generator=g)
        with torch.no_grad():                                       # non-trivial BatchNorm statistics
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.1, generator=g)
                    m.running_var.uniform_(0.5, 1.5, generator=g)
        layers = {"early": "layer1.0.relu2", "late": "layer3.1.relu2"}
        neurons = {"early": (5, 10, 12), "late": (7, 3, 4)}
        mask = _patch_mask((3, 32, 32), 4)                         # 64 features of 4×4 patches, all channels
    elif name == "tfm":
        full = TokenClassifier()
        tokens = torch.randint(0, 1000, (4, 64), generator=g)
        with torch.no_grad():
            x = full.embedding(tokens)
        model = full.body
        layers = {"early": "layers.0.act", "late": "layers.1"}
        neurons = {"early": (10, 37), "late": (63, 5)}
        mask = torch.arange(64)[None, :, None].expand(1, 64, 128).contiguous()   # one feature per token
    else:
        raise ValueError(f"unknown model {name!r}; expected 'mlp', 'cnn' or 'tfm'")
    model = model.to(device=device, dtype=dtype).eval()
    return Case(name, model, x.to(device=device, dtype=dtype), layers, neurons, 3, mask.to(device))


NAMES = ("mlp", "cnn", "tfm")
