"""Models and checks for the rule-based and ablation tests.

Rule modules are never adjacent here (an affine op sits between any two), the
regime where Captum's DeepLift hooks are correct: for adjacent rule modules
(e.g. ReLU straight into MaxPool) Captum's first module reads the gradient
before the second module's rule rewrites it (see test_deeplift.py).
"""

import torch
from torch import nn

ELEMENTWISE = [nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus]


class Chain(nn.Module):
    """Linear → act → Linear → act → Linear, one nonlinearity type."""

    def __init__(self, act=nn.ReLU, width=6):
        super().__init__()
        self.fc1, self.act1 = nn.Linear(5, width), act()
        self.fc2, self.act2 = nn.Linear(width, width), act()
        self.fc3 = nn.Linear(width, 3)

    def forward(self, x):
        return self.fc3(self.act2(self.fc2(self.act1(self.fc1(x)))))


class PoolNet(nn.Module):
    """[B, 2, 8, 8]: conv → in-place ReLU → conv → MaxPool2d → fc → ELU → fc → Softmax."""

    def __init__(self):
        super().__init__()
        self.conv1, self.relu = nn.Conv2d(2, 3, 3), nn.ReLU(inplace=True)
        self.conv2, self.pool = nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2)
        self.fc1, self.elu = nn.Linear(36, 6), nn.ELU()
        self.fc2, self.softmax = nn.Linear(6, 5), nn.Softmax(dim=1)

    def forward(self, x):
        h = self.pool(self.conv2(self.relu(self.conv1(x))))
        return self.softmax(self.fc2(self.elu(self.fc1(h.flatten(1)))))


class Pool1dNet(nn.Module):
    """[B, 1, 12]: conv1d → ReLU → conv1d → MaxPool1d → fc."""

    def __init__(self):
        super().__init__()
        self.conv1, self.relu = nn.Conv1d(1, 2, 3), nn.ReLU()
        self.conv2, self.pool = nn.Conv1d(2, 3, 3), nn.MaxPool1d(2)
        self.fc = nn.Linear(12, 2)

    def forward(self, x):
        return self.fc(self.pool(self.conv2(self.relu(self.conv1(x)))).flatten(1))


class Pool3dNet(nn.Module):
    """[B, 1, 5, 5, 5]: conv3d → Tanh → conv3d → MaxPool3d → fc."""

    def __init__(self):
        super().__init__()
        self.conv1, self.tanh = nn.Conv3d(1, 2, 2), nn.Tanh()
        self.conv2, self.pool = nn.Conv3d(2, 2, 1), nn.MaxPool3d(2)
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        return self.fc(self.pool(self.conv2(self.tanh(self.conv1(x)))).flatten(1))


class TwoInputs(nn.Module):
    """Two inputs and a per-example extra argument; Sigmoid and LeakyReLU."""

    def __init__(self):
        super().__init__()
        self.fa, self.fb = nn.Linear(4, 5), nn.Linear(3, 5)
        self.sig, self.fc, self.leaky = nn.Sigmoid(), nn.Linear(5, 4), nn.LeakyReLU(0.2)
        self.out = nn.Linear(4, 2)

    def forward(self, x1, x2, scale):
        h = self.sig(self.fa(x1) + self.fb(x2) * scale)
        return self.out(self.leaky(self.fc(h)))


class GeluNet(nn.Module):
    """Only an unsupported nonlinearity (GELU) and a functional ReLU."""

    def __init__(self):
        super().__init__()
        self.fc1, self.gelu, self.fc2 = nn.Linear(5, 6), nn.GELU(), nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.gelu(self.fc1(x))))


class Raises(nn.Module):
    """A ReLU net that raises after its ReLU (rules applied) on every call with examples (not an empty inspection pass)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.relu, self.fc2 = nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)

    def forward(self, x):
        h = self.relu(self.fc1(x))
        if x.shape[0]:
            raise RuntimeError("boom")
        return self.fc2(h)


class ReusedRelu(nn.Module):
    """``relu`` runs twice before ``fc3``."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.relu, self.fc3 = nn.Linear(3, 4), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))


def neuron_value(model, layer, xs, selector, args=()):
    """The neuron's value per example, by a plain forward hook (reference for the laws)."""
    seen = {}
    def keep(module, inp, out):
        seen["h"] = out.clone()   # before any in-place op downstream

    handle = model.get_submodule(layer).register_forward_hook(keep)
    try:
        with torch.no_grad():
            model(*xs, *args)
    finally:
        handle.remove()
    h = seen["h"]
    if callable(selector):
        return selector(h)
    index = selector if isinstance(selector, tuple) else (selector,)
    value = h[(slice(None),) + index]
    return value.reshape(value.shape[0], -1).sum(1)


def snapshot(model, inputs):
    """Everything a call must leave as it was: hooks, parameters, buffers, training flags, inputs."""
    xs = inputs if isinstance(inputs, tuple) else (inputs,)
    return dict(
        hooks=[(name, dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks),
                dict(getattr(m, "_backward_pre_hooks", {}))) for name, m in model.named_modules()],
        params=[(n, p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()],
        buffers=[(n, b.clone()) for n, b in model.named_buffers()],
        training=[m.training for m in model.modules()],
        attrs=[sorted(vars(m)) for m in model.modules()],
        inputs=[(x.clone(), x.requires_grad) for x in xs],
    )


def assert_same(before, after):
    assert before["hooks"] == after["hooks"]
    assert before["training"] == after["training"]
    assert before["attrs"] == after["attrs"]
    for (n, p, g), (n2, p2, g2) in zip(before["params"], after["params"]):
        assert n == n2 and g == g2 and torch.equal(p, p2)
    for (n, b), (n2, b2) in zip(before["buffers"], after["buffers"]):
        assert n == n2 and torch.equal(b, b2)
    for (x, g), (x2, g2) in zip(before["inputs"], after["inputs"]):
        assert g == g2 and torch.equal(x, x2)
