"""Laws on generated models that change tensors in place (``attrfx.testing.inplace_mlps``), against plain autograd.

At a layer's input the truth is Captum's: a forward pre-hook keeps the tensor
the layer receives, and ``torch.autograd.grad`` differentiates the output with
respect to it. That holds because nothing overwrites that tensor after the
layer reads it (``attrfx.testing.input_layers``). A neuron's truth is autograd
through the whole model, and the same method on a copy whose Linears carry a
hook of their own (so no row slicing applies).
"""

import copy

import torch
from hypothesis import given, strategies as st
from torch import nn

import attrfx
from attrfx import axioms
from attrfx.testing import inplace_mlp_cases


def received_and_gradient(model, layer, x, target):
    """``(h, ∂F_target/∂h)`` for the tensor ``h`` that ``layer`` receives, by plain autograd."""
    seen = []
    handle = model.get_submodule(layer).register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0]))
    try:
        with torch.enable_grad():
            out = model(x.clone().requires_grad_())
            (grad,) = torch.autograd.grad(out[:, target].sum(), seen[0])
    finally:
        handle.remove()
    return seen[0].detach(), grad


def neuron_gradient_truth(model, layer, x, neuron):
    """``∂n/∂x`` for neuron ``neuron`` of ``layer``'s output (its value as the layer returns it), by autograd."""
    seen = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, out: seen.append(out[:, neuron].clone()))
    x = x.clone().requires_grad_()
    try:
        with torch.enable_grad():
            model(x)
            (grad,) = torch.autograd.grad(seen[0].sum(), x)
    finally:
        handle.remove()
    return grad


def whole_linears(model):
    """A copy of ``model`` whose Linears have a forward hook that does nothing: the neuron methods run them whole."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.register_forward_hook(lambda *args: None)
    return model


@given(case=inplace_mlp_cases(at_input=True), data=st.data())
def test_gradient_x_activation_at_a_layer_input_is_autograd_at_the_tensor_it_receives(case, data):
    target = data.draw(st.integers(0, case.n_outputs - 1), label="target")
    h, grad = received_and_gradient(case.model, case.layer, case.inputs, target)
    local = attrfx.layer_gradient_x_activation(case.model, case.layer, case.inputs, target=target,
                                               attribute_to_layer_input=True, multiply_by_inputs=False)
    torch.testing.assert_close(local, grad, rtol=1e-10, atol=1e-12)
    ours = attrfx.layer_gradient_x_activation(case.model, case.layer, case.inputs, target=target,
                                              attribute_to_layer_input=True)
    torch.testing.assert_close(ours, grad * h, rtol=1e-10, atol=1e-12)


@given(case=inplace_mlp_cases(at_input=True), data=st.data())
def test_layer_conductance_at_a_layer_input_is_the_trapezoid_sum_of_autograd(case, data):
    """``Σₛ ∂F/∂h(αₛ)·(h(αₛ₊₁) − h(αₛ))`` on the nodes ``αₛ = s/n`` from the zero baseline."""
    target = data.draw(st.integers(0, case.n_outputs - 1), label="target")
    points = [received_and_gradient(case.model, case.layer, a * case.inputs, target)
              for a in torch.linspace(0, 1, 5, dtype=case.inputs.dtype)]
    expected = sum(g * (h1 - h0) for (h0, g), (h1, _) in zip(points, points[1:]))
    ours = attrfx.layer_conductance(case.model, case.layer, case.inputs, target=target, n_steps=4,
                                    method="riemann_trapezoid", attribute_to_layer_input=True)
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-11)


@given(case=inplace_mlp_cases(), data=st.data())
def test_neuron_gradient_is_autograd_through_the_whole_model(case, data):
    neuron = data.draw(st.integers(0, case.layer_shape[0] - 1), label="neuron")
    ours = attrfx.neuron_gradient(case.model, case.layer, case.inputs, neuron)
    torch.testing.assert_close(ours, neuron_gradient_truth(case.model, case.layer, case.inputs, neuron),
                               rtol=1e-10, atol=1e-12)


@given(case=inplace_mlp_cases(), data=st.data())
def test_neuron_integrated_gradients_is_that_of_the_whole_linears(case, data):
    neuron = data.draw(st.integers(0, case.layer_shape[0] - 1), label="neuron")
    ours = attrfx.neuron_integrated_gradients(case.model, case.layer, case.inputs, neuron, n_steps=8)
    whole = attrfx.neuron_integrated_gradients(whole_linears(case.model), case.layer, case.inputs, neuron, n_steps=8)
    torch.testing.assert_close(ours, whole, rtol=1e-9, atol=1e-11)


@given(case=inplace_mlp_cases(activations=("elu_", "tanh"), residuals=(None, "post")), data=st.data())
def test_neuron_integrated_gradients_is_complete(case, data):
    """ELU (α = 1: its second derivative jumps at 0) and tanh, no LayerNorm: 64 Gauss–Legendre nodes suffice."""
    neuron = data.draw(st.integers(0, case.layer_shape[0] - 1), label="neuron")
    ours = attrfx.neuron_integrated_gradients(case.model, case.layer, case.inputs, neuron, n_steps=64)
    change = axioms.neuron_difference(case.model, case.layer, case.inputs, neuron)
    gap = axioms.completeness_gap(ours, change)
    assert float(gap.abs().max()) <= 1e-4 * max(float(change.abs().max()), 1.0)
