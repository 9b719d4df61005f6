"""Plain autograd (outside transforms) and ``torch.func`` (inside them) give the same attributions; nothing leaks.

:func:`attrfx.gradients.vjp` runs ``torch.autograd.grad`` when no ``torch.func``
transform is active and ``torch.func.vjp`` inside one. Every method is
therefore run twice here: plainly, and under ``vmap`` (which switches every
kernel to ``torch.func``), and the results must be equal.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import attrfx
from attrfx import gradients, probe


def make():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double().eval()
    return net, torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


METHODS = {
    "neuron_gradient": lambda net, x: attrfx.neuron_gradient(net, "2", x, [1, (slice(0, 3),)]),
    "neuron_integrated_gradients": lambda net, x: attrfx.neuron_integrated_gradients(net, "2", x, [1, 2], n_steps=4),
    "neuron_conductance": lambda net, x: attrfx.neuron_conductance(net, "2", x, [1, 2], target=0, n_steps=4),
    "neuron_deeplift": lambda net, x: attrfx.neuron_deeplift(net, "3", x, 1),
    "neuron_guided_backprop": lambda net, x: attrfx.neuron_guided_backprop(net, "4", x, 1),
    "neuron_deconvolution": lambda net, x: attrfx.neuron_deconvolution(net, "4", x, [0, 1]),
    "layer_gradient_x_activation": lambda net, x: attrfx.layer_gradient_x_activation(net, ["1", "3"], x,
                                                                                     target=2)[1],
    "layer_conductance": lambda net, x: attrfx.layer_conductance(net, "3", x, target=2, n_steps=4),
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_plain_autograd_and_torch_func_give_equal_results(method):
    net, x = make()
    fn = METHODS[method]
    plain = torch.stack([fn(net, x), fn(net, 2 * x)])
    transformed = torch.func.vmap(lambda xi: fn(net, xi))(torch.stack([x, 2 * x]))
    torch.testing.assert_close(transformed, plain, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_no_graph_and_no_parameter_gradient_is_left(method):
    net, x = make()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    out = METHODS[method](net, x)
    assert not out.requires_grad and out.grad_fn is None and torch.is_grad_enabled()
    for name, p in net.named_parameters():
        assert p.grad is None and p.requires_grad and torch.equal(p, before[name])


@pytest.mark.parametrize("method", sorted(METHODS))
def test_results_are_the_same_under_no_grad(method):
    net, x = make()
    with torch.no_grad():
        inside = METHODS[method](net, x)
    torch.testing.assert_close(inside, METHODS[method](net, x), rtol=0, atol=0)


def test_nested_layers_with_one_output_get_the_same_gradient():
    """A block and its last module give the same tensor: a probe at each must see the other's shift too."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Sequential(nn.Linear(4, 6), nn.Tanh()), nn.Linear(6, 3)).double().eval()
    x = torch.randn(5, 4, dtype=torch.float64)
    outer, inner = attrfx.layer_gradient_x_activation(net, ["0", "0.1"], x, target=1)
    torch.testing.assert_close(outer, inner, rtol=0, atol=0)
    h = net[0](x)
    torch.testing.assert_close(outer, h * net[1].weight[1], rtol=1e-12, atol=1e-12)


def test_the_primitive_matches_torch_func_vjp():
    x, y, unused = torch.randn(3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64), torch.ones(4)

    def fn(a, pair):
        b, _ = pair[0]
        return (a * b, (a.exp() * b[1]).sum()), a.sin()

    cot = (torch.randn(2, 3, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64))
    out, pull, aux = gradients.vjp(fn, x, [(y, unused)], has_aux=True)
    ref_out, ref_pull, ref_aux = torch.func.vjp(fn, x, [(y, unused)], has_aux=True)
    torch.testing.assert_close((out, aux), (ref_out, ref_aux))
    got, want = pull(cot), ref_pull(cot)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    assert torch.equal(got[1][0][1], torch.zeros(4))                   # not reached: zeros
    batch = tuple(torch.stack([c, 3 * c]) for c in cot)
    torch.testing.assert_close(pull(batch, batched=True), torch.func.vmap(ref_pull)(batch), rtol=1e-12, atol=0)


def test_the_primitive_is_torch_func_inside_a_transform():
    seen = []

    def inner(t):
        seen.append(probe.transformed())
        return gradients.vjp(torch.sin, t)[1](torch.ones_like(t))[0]

    x = torch.randn(3, 2, dtype=torch.float64)
    torch.testing.assert_close(torch.func.vmap(inner)(x), inner(x))
    assert seen == [True, False]


def test_layer_methods_record_no_graph_before_the_layer():
    net, x = make()
    (site,) = probe.inspect_layers(net, [net[3]], (x,), ())
    with torch.enable_grad():
        delta = torch.zeros(5, 5, dtype=torch.float64, requires_grad=True)
        acts, out = probe.forward_with_probe(net, [site], (x,), (), [(delta,)])
    assert out.requires_grad and not acts[0][0].requires_grad       # the parameters before it recorded nothing


class GradInside(nn.Module):
    """Turns grad mode on by itself around the layer (as models computing forces in forward do)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)

    def forward(self, x):
        with torch.enable_grad():
            h = self.act(self.fc1(x))
        return self.fc2(h)


def test_a_model_that_sets_grad_mode_itself_gets_the_full_graph():
    torch.manual_seed(0)
    net, x = GradInside().double().eval(), torch.randn(3, 4, dtype=torch.float64)
    got = attrfx.layer_gradient_x_activation(net, "act", x, target=1)
    expected = torch.tanh(net.fc1(x)) * net.fc2.weight[1]
    torch.testing.assert_close(got, expected.detach(), rtol=1e-12, atol=1e-12)


class InferenceArg(nn.Module):
    """Uses a second argument before the layer ``act`` (``early``) or after it."""

    def __init__(self, early: bool):
        super().__init__()
        self.early = early
        self.first = nn.Bilinear(4, 3, 6) if early else nn.Linear(4, 6)
        self.act = nn.Tanh()
        self.last = nn.Linear(6, 2) if early else nn.Bilinear(6, 3, 2)

    def forward(self, x, other):
        h = self.act(self.first(x, other) if self.early else self.first(x))
        return self.last(h) if self.early else self.last(h, other)


WITH_ARG = {
    "layer_gradient_x_activation": lambda net, x, a: attrfx.layer_gradient_x_activation(
        net, "act", x, target=0, additional_forward_args=a),
    "layer_conductance": lambda net, x, a: attrfx.layer_conductance(net, "act", x, target=0, n_steps=4,
                                                                    additional_forward_args=a),
    "neuron_gradient": lambda net, x, a: attrfx.neuron_gradient(net, "act", x, 1, additional_forward_args=a),
    "neuron_conductance": lambda net, x, a: attrfx.neuron_conductance(net, "act", x, 1, target=0, n_steps=4,
                                                                      additional_forward_args=a),
    "neuron_guided_backprop": lambda net, x, a: attrfx.neuron_guided_backprop(net, "act", x, 1,
                                                                              additional_forward_args=a),
    "neuron_deeplift": lambda net, x, a: attrfx.neuron_deeplift(net, "act", x, 1, additional_forward_args=a),
}


@pytest.mark.parametrize("early", [True, False], ids=["before-the-layer", "after-the-layer"])
@pytest.mark.parametrize("method", sorted(WITH_ARG))
def test_an_inference_tensor_argument_gives_the_same_result(method, early):
    """Autograd cannot save a tensor made under ``torch.inference_mode``; the call falls back to torch.func."""
    torch.manual_seed(0)
    net = InferenceArg(early).double().eval()
    x, other = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    with torch.inference_mode():
        frozen = other.clone()
    expected = WITH_ARG[method](net, x, other)
    torch.testing.assert_close(WITH_ARG[method](net, x, frozen), expected, rtol=0, atol=0)


def test_inference_mode_tensors_fall_back_to_torch_func():
    torch.manual_seed(0)
    net, x = nn.Bilinear(4, 3, 2).double(), torch.randn(5, 4, dtype=torch.float64)
    other = torch.randn(5, 3, dtype=torch.float64)
    with torch.inference_mode():
        frozen = other.clone()       # an inference tensor, e.g. an embedding from an encode() call
    expected = attrfx.layer_gradient_x_activation(net, net, x, target=0, additional_forward_args=other,
                                                  attribute_to_layer_input=True)
    got = attrfx.layer_gradient_x_activation(net, net, x, target=0, additional_forward_args=frozen,
                                             attribute_to_layer_input=True)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
