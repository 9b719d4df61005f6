"""Small reference models for the tests (named submodules, so layers have dotted names)."""

import torch
from torch import nn


def seeded(factory, seed=0, dtype=torch.float64):
    """Build ``factory()`` with fixed weights in ``dtype``, in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory().to(dtype).eval()


def randn(*shape, seed=1, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act1 = nn.Linear(5, 7), nn.Tanh()
        self.fc2, self.act2 = nn.Linear(7, 6), nn.ReLU()
        self.fc3 = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc3(self.act2(self.fc2(self.act1(self.fc1(x)))))


class ConvNet(nn.Module):
    """[B, 2, 8, 8] → 4 logits."""

    def __init__(self):
        super().__init__()
        self.conv1, self.relu1, self.pool = nn.Conv2d(2, 4, 3), nn.ReLU(), nn.MaxPool2d(2)
        self.conv2, self.act2 = nn.Conv2d(4, 3, 3, padding=1), nn.Softplus()
        self.fc = nn.Linear(3 * 3 * 3, 4)

    def forward(self, x):
        h = self.act2(self.conv2(self.pool(self.relu1(self.conv1(x)))))
        return self.fc(h.flatten(1))


class MultiInput(nn.Module):
    """Two inputs plus extra forward args: a per-example scale tensor and a non-tensor flag."""

    def __init__(self):
        super().__init__()
        self.fc_a, self.fc_b = nn.Linear(4, 6), nn.Linear(3, 6)
        self.act = nn.Sigmoid()
        self.out = nn.Linear(6, 2)

    def forward(self, x1, x2, scale=None, double=False):
        h = self.fc_a(x1) + self.fc_b(x2) * (1.0 if scale is None else scale)
        y = self.out(self.act(h))
        return 2 * y if double else y


class Residual(nn.Module):
    """A residual block: ``inner`` sits on a branch the skip connection bypasses."""

    def __init__(self):
        super().__init__()
        self.fc_in, self.inner, self.act = nn.Linear(4, 5), nn.Linear(5, 5), nn.Tanh()
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        h = self.fc_in(x)
        return self.head(self.act(h + self.inner(h)))


class SideInput(nn.Module):
    """``x2`` joins after ``act``; ``unused`` runs but never reaches the output."""

    def __init__(self):
        super().__init__()
        self.fc, self.act, self.unused = nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x1, x2):
        h = self.act(self.fc(x1))
        self.unused(h)
        return self.out(h + x2)


class Pair(nn.Module):
    def forward(self, x):
        return torch.tanh(x), x * x


class TupleLayer(nn.Module):
    """``pair`` returns two tensors."""

    def __init__(self):
        super().__init__()
        self.fc, self.pair, self.out = nn.Linear(3, 4), Pair(), nn.Linear(8, 2)

    def forward(self, x):
        a, b = self.pair(self.fc(x))
        return self.out(torch.cat([a, b], 1))


class Reused(nn.Module):
    """``act`` runs twice in one forward pass."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(3, 3), nn.Linear(3, 2), nn.Tanh()

    def forward(self, x):
        return self.fc2(self.act(self.fc1(self.act(x))))


class ReusedResidual(Reused):
    """``act`` runs twice, and its first output meets the input: the rest cannot run on an empty batch."""

    def forward(self, x):
        return self.fc2(self.act(self.fc1(self.act(x)) + x))
