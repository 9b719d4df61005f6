"""Models that change tensors in place: every method attributes to the tensor as the layer receives it.

The truth at a layer's input is the gradient with respect to that tensor as the
layer receives it: detach it, require its gradient, run the rest of the model
(``prefix``/``rest`` below, written by hand per model). In-place activations
(``ReLU(inplace=True)`` and friends), torchvision-style residual blocks
(``out += identity; out = self.relu(out)``), in-place tensor ops in ``forward``
and a residual that reads a layer's input again after the layer are checked
against that truth and against Captum 0.9.0; the row slicing of the neuron
methods against the whole Linear; and the caller's inputs stay untouched. Captum's
path methods round their step sizes to float32, hence ``rtol=1e-6`` against them.
"""

from __future__ import annotations

import captum.attr as ca
import pytest
import torch
from torch import nn

import attrfx
from models import MLP, randn, seeded


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: one in-place ReLU module run twice, ``out += identity``."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class TinyResNet(nn.Module):
    """A ResNet stem (conv, BN, in-place ReLU, max pool), three BasicBlocks, average pool, fc; [N, 3, 12, 12]."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, 1, 1, bias=False), nn.BatchNorm2d(4)
        self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(2)
        self.layer1 = nn.Sequential(BasicBlock(4, 4), BasicBlock(4, 4))
        self.layer2 = nn.Sequential(BasicBlock(4, 6, stride=2))
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(6, 3)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet():
    net = TinyResNet()
    with torch.no_grad():  # running statistics that make the BatchNorms do something
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return net


def head(net, x):
    return net.fc(torch.flatten(net.avgpool(x), 1))


RESNET_SPLITS = {  # layer (its input) → (prefix: x ↦ the input as the layer receives it, rest: that input ↦ output)
    "maxpool": (lambda n, x: n.relu(n.bn1(n.conv1(x))),
                lambda n, h: head(n, n.layer2(n.layer1(n.maxpool(h))))),
    "layer1.1": (lambda n, x: n.layer1[0](n.maxpool(n.relu(n.bn1(n.conv1(x))))),
                 lambda n, h: head(n, n.layer2(n.layer1[1](h)))),
    "layer2.0.conv1": (lambda n, x: n.layer1(n.maxpool(n.relu(n.bn1(n.conv1(x))))),
                       lambda n, h: head(n, n.layer2(h))),
    "avgpool": (lambda n, x: n.layer2(n.layer1(n.maxpool(n.relu(n.bn1(n.conv1(x)))))),
                lambda n, h: head(n, h)),
}


def vgg(act=lambda: nn.ReLU(inplace=True)):
    """A VGG-style stack: conv, in-place activation, conv, activation, max pool, ...; [N, 3, 8, 8] → 3."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), act(), nn.Conv2d(4, 4, 3, padding=1), act(),
                         nn.MaxPool2d(2), nn.Conv2d(4, 5, 3, padding=1), act(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(5 * 2 * 2, 3))


class InplaceOps(nn.Module):
    """In-place tensor ops in ``forward`` (``mul_``, ``add_``, ``+=``, ``relu_``) between a Linear and a layer."""

    def __init__(self):
        super().__init__()
        self.fc1, self.skip, self.fc2, self.out = nn.Linear(5, 6), nn.Linear(5, 6), nn.Linear(6, 6), nn.Linear(6, 3)

    def prefix(self, x):
        h = self.fc1(x)
        h.mul_(1.5)
        h.add_(x.sum(-1, keepdim=True))
        h += self.skip(x)
        return h.relu_()

    def rest(self, h):
        return self.out(torch.tanh(self.fc2(h)))

    def forward(self, x):
        return self.rest(self.prefix(x))


class InplaceResidual(InplaceOps):
    """In-place ops in ``forward``, then a layer whose input a residual reads again after the layer."""

    def prefix(self, x):
        h = self.fc1(x)
        h.mul_(1.5)
        h += self.skip(x)
        return h

    def rest(self, h):
        return self.out(torch.tanh(self.fc2(h) + h))


class PreNorm(nn.Module):
    """A pre-norm residual block: the norm's input is made by an op and read again by the residual."""

    def __init__(self):
        super().__init__()
        self.attn, self.norm, self.mlp, self.out = nn.Linear(5, 5), nn.LayerNorm(5), nn.Linear(5, 5), nn.Linear(5, 3)

    def prefix(self, x):
        return x + self.attn(x)

    def rest(self, h):
        return self.out(h + self.mlp(self.norm(h)))

    def forward(self, x):
        return self.rest(self.prefix(x))


def truth(prefix, rest, x, target):
    """``(h, ∂F/∂h)`` at the tensor as the layer receives it: detached, requiring grad, the rest run from it."""
    with torch.no_grad():
        h = prefix(x.clone())
    h = h.detach().requires_grad_()
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(rest(h)[:, target].sum(), h)
    return h.detach(), grad


def cases():
    """``(name, model, layer, inputs, prefix, rest)`` for every model above, at layers whose input is made or
    changed in place."""
    out = []
    for layer, (prefix, rest) in RESNET_SPLITS.items():
        net = seeded(resnet)
        out.append((f"resnet-{layer}", net, layer, randn(3, 3, 12, 12, seed=2),
                    lambda x, n=net, p=prefix: p(n, x), lambda h, n=net, r=rest: r(n, h)))
    acts = {"relu": lambda: nn.ReLU(inplace=True), "leaky": lambda: nn.LeakyReLU(0.2, inplace=True),
            "hardtanh": lambda: nn.Hardtanh(-0.5, 0.5, inplace=True), "elu": lambda: nn.ELU(inplace=True),
            "relu6": lambda: nn.ReLU6(inplace=True)}
    for name, act in acts.items():
        net = seeded(lambda: vgg(act))
        out.append((f"vgg-{name}", net, "4", randn(3, 3, 8, 8, seed=3) * 2,
                    lambda x, n=net: n[:4](x), lambda h, n=net: n[4:](h)))
    for cls, layer in ((InplaceOps, "fc2"), (InplaceResidual, "fc2"), (PreNorm, "norm")):
        net = seeded(cls)
        out.append((cls.__name__, net, layer, randn(4, 5, seed=4), net.prefix, net.rest))
    return out


CASES = {c[0]: c[1:] for c in cases()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_x_activation_at_a_layer_input_is_the_tensor_as_received(case):
    net, layer, x, prefix, rest = CASES[case]
    h, grad = truth(prefix, rest, x, 1)
    local = attrfx.layer_gradient_x_activation(net, layer, x, target=1, attribute_to_layer_input=True,
                                               multiply_by_inputs=False)
    torch.testing.assert_close(local, grad, rtol=1e-10, atol=1e-12)
    ours = attrfx.layer_gradient_x_activation(net, layer, x, target=1, attribute_to_layer_input=True)
    torch.testing.assert_close(ours, grad * h, rtol=1e-10, atol=1e-12)
    theirs = ca.LayerGradientXActivation(net, net.get_submodule(layer)).attribute(
        x.clone(), target=1, attribute_to_layer_input=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("case", sorted(c for c in CASES if CASES[c][2].dim() == 4))
def test_gradcam_at_a_layer_input_is_the_tensor_as_received(case):
    net, layer, x, prefix, rest = CASES[case]
    h, grad = truth(prefix, rest, x, 2)
    expected = (grad.mean((2, 3), keepdim=True) * h).sum(1, keepdim=True)
    ours = attrfx.layer_gradcam(net, layer, x, target=2, attribute_to_layer_input=True)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-12)


def conductance_truth(prefix, rest, x, target, n_steps):
    """``Σₛ ∂F/∂h(αₛ)·(h(αₛ₊₁) − h(αₛ))`` on the nodes ``αₛ = s/n`` from the zero baseline, ``h`` as received."""
    alphas = torch.linspace(0, 1, n_steps + 1, dtype=x.dtype)
    hs, grads = zip(*(truth(prefix, rest, a * x, target) for a in alphas))
    return sum(g * (h1 - h0) for g, h0, h1 in zip(grads, hs, hs[1:]))


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_conductance_at_a_layer_input_is_the_tensor_as_received(case):
    net, layer, x, prefix, rest = CASES[case]
    ours = attrfx.layer_conductance(net, layer, x, target=0, n_steps=6, method="riemann_trapezoid",
                                    attribute_to_layer_input=True)
    torch.testing.assert_close(ours, conductance_truth(prefix, rest, x, 0, 6), rtol=1e-9, atol=1e-11)
    theirs = ca.LayerConductance(net, net.get_submodule(layer)).attribute(
        x.clone(), target=0, n_steps=6, method="gausslegendre", attribute_to_layer_input=True)
    ours_gl = attrfx.layer_conductance(net, layer, x, target=0, n_steps=6, attribute_to_layer_input=True)
    torch.testing.assert_close(ours_gl, theirs, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("case", ["resnet-layer2.0.conv1", "resnet-avgpool", "vgg-relu", "InplaceOps",
                                  "InplaceResidual", "PreNorm"])
def test_neuron_conductance_at_a_neuron_input_matches_captum(case):
    net, layer, x, prefix, rest = CASES[case]
    neuron = (1,) + (0,) * (prefix(x[:1]).dim() - 2)
    ours = attrfx.neuron_conductance(net, layer, x, neuron, target=1, n_steps=6, method="gausslegendre",
                                     attribute_to_neuron_input=True)
    theirs = ca.NeuronConductance(net, net.get_submodule(layer)).attribute(
        x.clone(), neuron, target=1, n_steps=6, method="gausslegendre", attribute_to_neuron_input=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-10)


def test_the_issue_example_has_four_ones():
    net = nn.Sequential(nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4, 1)).double()
    with torch.no_grad():
        net[3].weight.fill_(1.0)
    x = -torch.ones(1, 1, 4, 4, dtype=torch.float64)
    x[0, 0, 0, 0] = 1
    kept = x.clone()
    attr = attrfx.layer_gradient_x_activation(net, "1", x, attribute_to_layer_input=True, multiply_by_inputs=False)
    expected = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    expected[0, 0, ::2, ::2] = 1  # each window's maximum (0 everywhere after the ReLU: its first element)
    torch.testing.assert_close(attr, expected)
    assert torch.equal(x, kept)


# -- row slicing with an op that changes the Linear's output in place --------------------------------------------

class Centred(nn.Module):
    """``h -= h.mean(-1)`` between the Linear and the layer: every neuron reads every row."""

    def __init__(self, op="center"):
        super().__init__()
        self.fc1, self.act, self.fc2, self.op = nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2), op

    def pre(self, x):
        h = self.fc1(x)
        if self.op == "center":
            h -= h.mean(-1, keepdim=True)
        elif self.op == "roll":
            h.copy_(h.roll(1, -1))
        else:  # an in-place op that mixes nothing (still no narrowing: it is not a module of the chain)
            h.mul_(2.0)
        return h

    def forward(self, x):
        return self.fc2(self.act(self.pre(x)))


SLICED = {
    "neuron_gradient": lambda m, x: attrfx.neuron_gradient(m, "act", x, 3),
    "neuron_gradient_list": lambda m, x: attrfx.neuron_gradient(m, "act", x, [3, 5]),
    "neuron_integrated_gradients": lambda m, x: attrfx.neuron_integrated_gradients(m, "act", x, 3, n_steps=6),
    "neuron_integrated_gradients_auto": lambda m, x: attrfx.neuron_integrated_gradients(
        m, "act", x, 3, n_steps="auto", tolerance=1e-9),
    "neuron_conductance": lambda m, x: attrfx.neuron_conductance(m, "act", x, 3, target=1, n_steps=6),
    "neuron_gradient_shap": lambda m, x: attrfx.neuron_gradient_shap(
        m, "act", x, 3, torch.zeros(3, 6, dtype=x.dtype), n_samples=4, generator=torch.Generator().manual_seed(0)),
    "neuron_deeplift": lambda m, x: attrfx.neuron_deeplift(m, "act", x, 3),
    "neuron_feature_ablation": lambda m, x: attrfx.neuron_feature_ablation(m, "act", x, 3),
}


class Whole(nn.Module):
    """The same model, its Linear hidden behind a functional call, so no row slicing applies."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.act = inner, inner.act

    def forward(self, x):
        return self.inner.fc2(self.act(self.inner.pre(x) + 0.0))


@pytest.mark.parametrize("op", ["center", "roll", "scale"])
@pytest.mark.parametrize("method", sorted(SLICED))
def test_slicing_equals_the_whole_linear_with_an_in_place_op_after_it(method, op):
    model = seeded(lambda: Centred(op))
    x = randn(3, 6, seed=5)
    ours = SLICED[method](model, x)
    whole = SLICED[method](Whole(model).eval(), x)
    torch.testing.assert_close(ours, whole, rtol=1e-9, atol=1e-11)


def test_neuron_gradient_with_an_in_place_centring_is_the_hand_written_gradient():
    model = seeded(Centred)
    x = randn(3, 6, seed=5).requires_grad_()
    with torch.enable_grad():
        (expected,) = torch.autograd.grad(model.act(model.pre(x))[:, 3].sum(), x)
    ours = attrfx.neuron_gradient(model, "act", x.detach(), 3)
    torch.testing.assert_close(ours, expected)
    theirs = ca.NeuronGradient(model, model.act).attribute(x.detach().clone().requires_grad_(), 3)
    torch.testing.assert_close(ours, theirs)


# -- the caller's inputs ------------------------------------------------------------------------------------------

def first_inplace():
    return nn.Sequential(nn.ReLU(inplace=True), nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))


class Copying(nn.Module):
    """``model`` on a copy of its input."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x.clone())


D = torch.float64
EVERY_METHOD = {
    "neuron_gradient": (lambda m, x: attrfx.neuron_gradient(m, "2", x, 1),
                        lambda f, m, x: ca.NeuronGradient(f, m[2]).attribute(x, 1)),
    "neuron_integrated_gradients": (lambda m, x: attrfx.neuron_integrated_gradients(m, "2", x, 1, n_steps=5),
                                    lambda f, m, x: ca.NeuronIntegratedGradients(f, m[2]).attribute(x, 1, n_steps=5)),
    "neuron_conductance": (lambda m, x: attrfx.neuron_conductance(m, "2", x, 1, target=0, n_steps=5,
                                                                  method="gausslegendre"),
                           lambda f, m, x: ca.NeuronConductance(f, m[2]).attribute(x, 1, target=0, n_steps=5,
                                                                                method="gausslegendre")),
    "neuron_gradient_shap": (lambda m, x: attrfx.neuron_gradient_shap(m, "2", x, 1, torch.zeros(1, 5, dtype=D)),
                             None),
    "neuron_deeplift": (lambda m, x: attrfx.neuron_deeplift(m, "2", x, 1),
                        lambda f, m, x: ca.NeuronDeepLift(f, m[2]).attribute(x, 1)),
    "neuron_deeplift_shap": (lambda m, x: attrfx.neuron_deeplift_shap(m, "2", x, 1, torch.zeros(2, 5, dtype=D)),
                             lambda f, m, x: ca.NeuronDeepLiftShap(f, m[2]).attribute(x, 1, torch.zeros(2, 5, dtype=D))),
    "neuron_guided_backprop": (lambda m, x: attrfx.neuron_guided_backprop(m, "2", x, 1),
                               lambda f, m, x: ca.NeuronGuidedBackprop(f, m[2]).attribute(x, 1)),
    "neuron_deconvolution": (lambda m, x: attrfx.neuron_deconvolution(m, "2", x, 1),
                             lambda f, m, x: ca.NeuronDeconvolution(f, m[2]).attribute(x, 1)),
    "neuron_feature_ablation": (lambda m, x: attrfx.neuron_feature_ablation(m, "2", x, 1),
                                lambda f, m, x: ca.NeuronFeatureAblation(f, m[2]).attribute(x, 1)),
    "layer_gradient_x_activation": (lambda m, x: attrfx.layer_gradient_x_activation(m, "2", x, target=0),
                                    lambda f, m, x: ca.LayerGradientXActivation(f, m[2]).attribute(x, target=0)),
    "layer_gradient_x_activation_input": (
        lambda m, x: attrfx.layer_gradient_x_activation(m, "1", x, target=0, attribute_to_layer_input=True),
        lambda f, m, x: ca.LayerGradientXActivation(f, m[1]).attribute(x, target=0, attribute_to_layer_input=True)),
    "layer_conductance": (lambda m, x: attrfx.layer_conductance(m, "2", x, target=0, n_steps=5),
                          lambda f, m, x: ca.LayerConductance(f, m[2]).attribute(x, target=0, n_steps=5)),
}


@pytest.mark.parametrize("method", sorted(EVERY_METHOD))
@pytest.mark.parametrize("grad", [False, True])
def test_a_model_that_starts_in_place_leaves_the_inputs_alone(method, grad):
    ours_fn, theirs_fn = EVERY_METHOD[method]
    model = seeded(first_inplace)
    x = randn(3, 5, seed=6).requires_grad_(grad)
    kept = x.detach().clone()
    ours = ours_fn(model, x)
    assert torch.equal(x.detach(), kept) and x.requires_grad == grad and x.grad is None
    if theirs_fn is not None:  # (Captum needs the model to copy its input: it passes a leaf that requires grad)
        theirs = theirs_fn(Copying(model), model, kept.clone())
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-10)


def test_inputs_in_shared_memory_are_attributed():
    """A DataLoader worker's batches live in shared memory, where no copy-on-write copy can be made."""
    model, x = seeded(MLP), randn(3, 5)
    shared = x.clone().share_memory_()
    torch.testing.assert_close(attrfx.saliency(model, shared, target=1), attrfx.saliency(model, x, target=1))
    torch.testing.assert_close(attrfx.neuron_gradient(model, "act1", shared, 2),
                               attrfx.neuron_gradient(model, "act1", x, 2))
    assert shared.is_shared() and torch.equal(shared, x)
