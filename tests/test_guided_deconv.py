"""neuron_guided_backprop / neuron_deconvolution: parity with Captum 0.9.0 and laws."""

import pytest
import torch
from captum.attr import NeuronDeconvolution, NeuronGuidedBackprop
from captum.testing.helpers.basic_models import BasicModel_ConvNet, BasicModelWithReusedModules

import attrfx
from _models_rules import Chain, GeluNet, PoolNet, ReusedRelu, TwoInputs
from models import randn, seeded
from parity import assert_parity

METHODS = [(attrfx.neuron_guided_backprop, NeuronGuidedBackprop), (attrfx.neuron_deconvolution, NeuronDeconvolution)]
NAMES = ["guided_backprop", "deconvolution"]


def conv_case(dtype=torch.float64):
    return seeded(BasicModel_ConvNet, dtype=dtype), 3 * randn(3, 1, 10, 10, dtype=dtype)


def pool_case(dtype=torch.float64):
    return seeded(PoolNet, dtype=dtype), randn(3, 2, 8, 8, dtype=dtype)


def reused_case(dtype=torch.float64):
    return seeded(ReusedRelu, dtype=dtype), randn(4, 3, dtype=dtype)


CASES = [
    (conv_case, "conv2", (1, 0, 1)),
    (conv_case, "relu2", (slice(0, 3), 1, 1)),
    (conv_case, "pool1", lambda h: h[:, 0, 1, 2] * h[:, 1, 0, 0]),
    (conv_case, "fc2", 4),
    (pool_case, "elu", (2,)),
    (pool_case, "relu", (1, 2, 3)),
    (reused_case, "fc3", 1),
]


@pytest.mark.parametrize("ours,theirs", METHODS, ids=NAMES)
@pytest.mark.parametrize("case,layer,selector", CASES, ids=[f"{c[0].__name__}-{c[1]}" for c in CASES])
@pytest.mark.parametrize("at_input", [False, True])
def test_parity(ours, theirs, case, layer, selector, at_input):
    model, x = case()
    got = ours(model, layer, x, selector, attribute_to_neuron_input=at_input)
    want = theirs(model, model.get_submodule(layer)).attribute(x, selector, attribute_to_neuron_input=at_input)
    assert_parity(got, want)


@pytest.mark.parametrize("ours,theirs", METHODS, ids=NAMES)
def test_parity_tuple_inputs_float32_and_reused_relu(ours, theirs):
    model = seeded(TwoInputs, dtype=torch.float32)
    xs, scale = (randn(3, 4, dtype=torch.float32), randn(3, 3, seed=2, dtype=torch.float32)), randn(3, 1, seed=3)
    got = ours(model, "out", xs, 1, additional_forward_args=scale.float())
    want = theirs(model, model.out).attribute(xs, 1, additional_forward_args=scale.float())
    assert_parity(got, want, dtype=torch.float32)
    model, x = BasicModelWithReusedModules(), randn(4, 3, dtype=torch.float32)   # a ReLU used twice
    assert_parity(ours(model, "lin2", x, 0), theirs(model, model.lin2).attribute(x, 0), dtype=torch.float32)


@pytest.mark.parametrize("ours", [m[0] for m in METHODS], ids=NAMES)
def test_list_of_selectors_is_the_stack_of_single_calls(ours):
    model, x = conv_case()
    sels = [(1, 0, 1), (0, slice(None), 0), lambda h: h[:, 2, 1, 0] ** 2]
    many = ours(model, "conv2", x, sels)
    assert many.shape == (3,) + x.shape
    for k, s in enumerate(sels):
        torch.testing.assert_close(many[k], ours(model, "conv2", x, s))


@pytest.mark.parametrize("ours", [m[0] for m in METHODS], ids=NAMES)
def test_without_relu_modules_it_is_the_gradient(ours):
    model, x = seeded(GeluNet), randn(4, 5)
    torch.testing.assert_close(ours(model, "fc2", x, 2), attrfx.neuron_gradient(model, "fc2", x, 2))


def test_rules_as_stated():
    """One ReLU between two linear maps: guided = W1ᵀ·(relu(w2)·[z > 0]); deconvolution = W1ᵀ·relu(w2)."""
    model, x = seeded(lambda: Chain(width=4)), randn(3, 5)
    z = model.fc1(x).detach()
    w2 = model.fc2.weight[1].detach()
    guided = (w2.clamp(min=0) * (z > 0)) @ model.fc1.weight.detach()
    torch.testing.assert_close(attrfx.neuron_guided_backprop(model, "fc2", x, 1), guided)
    deconv = (w2.clamp(min=0) @ model.fc1.weight.detach()).expand_as(x)
    torch.testing.assert_close(attrfx.neuron_deconvolution(model, "fc2", x, 1), deconv)


@pytest.mark.parametrize("ours", [m[0] for m in METHODS], ids=NAMES)
def test_plain_callable_is_rejected(ours):
    net = seeded(Chain)
    with pytest.raises(TypeError, match=f"{ours.__name__}: `model` must be an nn.Module"):
        ours(lambda x: net(x), net.fc2, randn(2, 5), 0)
