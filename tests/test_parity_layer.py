"""Layer methods equal Captum 0.9.0 across their argument space."""

import pytest
import torch
from captum.attr import LayerAttribution, LayerConductance, LayerGradCam, LayerGradientXActivation

import attrfx
from models import ConvNet, MultiInput, Residual, SideInput, TupleLayer, randn, seeded
from parity import assert_parity

METHODS = ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre"]
TARGETS = [1, (2,), torch.tensor(0), torch.tensor([3, 0, 1]), [2, 2, 0]]
TARGET_IDS = ["int", "tuple", "0d-tensor", "tensor", "list"]


def conv(dtype=torch.float64):
    return seeded(ConvNet, dtype=dtype), randn(3, 2, 8, 8, dtype=dtype)


@pytest.mark.parametrize("layer", ["conv1", "relu1", "pool", "conv2", "act2", "fc"])
@pytest.mark.parametrize("at_input", [False, True])
@pytest.mark.parametrize("multiply", [True, False])
def test_gradient_x_activation(layer, at_input, multiply):
    model, x = conv()
    ours = attrfx.layer_gradient_x_activation(model, layer, x, target=2, attribute_to_layer_input=at_input,
                                              multiply_by_inputs=multiply)
    theirs = LayerGradientXActivation(model, model.get_submodule(layer), multiply_by_inputs=multiply).attribute(
        x, target=2, attribute_to_layer_input=at_input)
    assert_parity(ours, theirs)


@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
def test_gradient_x_activation_list_of_layers_and_targets(target):
    model, x = conv()
    ours = attrfx.layer_gradient_x_activation(model, ["relu1", model.conv2], x, target=target)
    theirs = LayerGradientXActivation(model, [model.relu1, model.conv2]).attribute(x, target=target)
    assert isinstance(ours, list)
    assert_parity(tuple(ours), tuple(theirs))


@pytest.mark.parametrize("layer", ["conv1", "relu1", "conv2", "act2", "fc"])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("summation", [True, False])
@pytest.mark.parametrize("at_input", [False, True])
def test_gradcam(layer, relu, summation, at_input):
    model, x = conv()
    flags = dict(relu_attributions=relu, attr_dim_summation=summation, attribute_to_layer_input=at_input)
    ours = attrfx.layer_gradcam(model, layer, x, target=[0, 3, 1], **flags)
    theirs = LayerGradCam(model, model.get_submodule(layer)).attribute(x, target=[0, 3, 1], **flags)
    assert_parity(ours, theirs)


@pytest.mark.parametrize("mode,size", [("nearest", (8, 8)), ("bilinear", (9, 7)), ("area", (3, 3))])
def test_interpolate(mode, size):
    model, x = conv()
    cam = attrfx.layer_gradcam(model, "relu1", x, target=1)
    assert_parity(attrfx.interpolate(cam, size, mode), LayerAttribution.interpolate(cam, size, mode))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("layer", ["relu1", "conv2", "fc"])
def test_conductance_methods(method, layer):
    model, x = conv()
    base = 0.1 * randn(*x.shape, seed=4)
    ours = attrfx.layer_conductance(model, layer, x, baselines=base, target=1, n_steps=6, method=method,
                                    return_convergence_delta=True)
    theirs = LayerConductance(model, model.get_submodule(layer)).attribute(
        x, baselines=base, target=1, n_steps=6, method=method, return_convergence_delta=True)
    assert_parity(ours, theirs)


@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
@pytest.mark.parametrize("baseline", [None, -0.25, "one-row"])
def test_conductance_targets_and_baselines(target, baseline):
    model, x = conv()
    base = randn(1, 2, 8, 8, seed=7) if baseline == "one-row" else baseline
    ours = attrfx.layer_conductance(model, "act2", x, baselines=base, target=target, n_steps=5)
    theirs = LayerConductance(model, model.act2).attribute(x, baselines=base, target=target, n_steps=5)
    assert_parity(ours, theirs)


@pytest.mark.parametrize("internal_batch_size", [1, 3, 7, 10, 100])
@pytest.mark.parametrize("method", ["riemann_trapezoid", "gausslegendre"])
def test_conductance_internal_batch_size(internal_batch_size, method):
    model, x = conv()
    ours = attrfx.layer_conductance(model, "relu1", x, target=2, n_steps=7, method=method,
                                    internal_batch_size=internal_batch_size, return_convergence_delta=True)
    theirs = LayerConductance(model, model.relu1).attribute(x, target=2, n_steps=7, method=method,
                                                            internal_batch_size=internal_batch_size,
                                                            return_convergence_delta=True)
    assert_parity(ours, theirs)


@pytest.mark.parametrize("at_input", [False, True])
def test_multi_input_model_with_additional_args(at_input):
    model = seeded(MultiInput)
    xs, args = (randn(3, 4, seed=2), randn(3, 3, seed=3)), (randn(3, 1, seed=4), True)
    flags = dict(target=1, additional_forward_args=args, attribute_to_layer_input=at_input)
    for layer in ["fc_b", "act", "out"]:
        module = model.get_submodule(layer)
        assert_parity(attrfx.layer_conductance(model, layer, xs, baselines=(0.2, randn(1, 3, seed=9)), n_steps=6,
                                               internal_batch_size=4, return_convergence_delta=True, **flags),
                      LayerConductance(model, module).attribute(xs, baselines=(0.2, randn(1, 3, seed=9)), n_steps=6,
                                                                internal_batch_size=4,
                                                                return_convergence_delta=True, **flags))
        assert_parity(attrfx.layer_gradient_x_activation(model, layer, xs, **flags),
                      LayerGradientXActivation(model, module).attribute(xs, **flags))
        assert_parity(attrfx.layer_gradcam(model, layer, xs, **flags),
                      LayerGradCam(model, module).attribute(xs, **flags))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float32_and_float64(dtype):
    model, x = conv(dtype)
    assert_parity(attrfx.layer_conductance(model, "conv2", x, target=0, return_convergence_delta=True),
                  LayerConductance(model, model.conv2).attribute(x, target=0, return_convergence_delta=True), dtype)
    assert_parity(attrfx.layer_gradcam(model, "conv2", x, target=0),
                  LayerGradCam(model, model.conv2).attribute(x, target=0), dtype)


@pytest.mark.parametrize("at_input", [False, True])
def test_layer_inside_residual_branch(at_input):
    """The layer's input also feeds the skip connection: its gradient counts both paths, as Captum's."""
    model, x = seeded(Residual), randn(3, 4)
    flags = dict(target=0, attribute_to_layer_input=at_input)
    assert_parity(attrfx.layer_conductance(model, "inner", x, return_convergence_delta=True, **flags),
                  LayerConductance(model, model.inner).attribute(x, return_convergence_delta=True, **flags))
    assert_parity(attrfx.layer_gradient_x_activation(model, "inner", x, **flags),
                  LayerGradientXActivation(model, model.inner).attribute(x, **flags))


def test_tuple_output_layer():
    model, x = seeded(TupleLayer), randn(3, 3)
    ours = attrfx.layer_gradient_x_activation(model, "pair", x, target=1)
    assert isinstance(ours, tuple) and len(ours) == 2
    assert_parity(ours, LayerGradientXActivation(model, model.pair).attribute(x, target=1))
    assert_parity(attrfx.layer_conductance(model, "pair", x, target=1, n_steps=5),
                  LayerConductance(model, model.pair).attribute(x, target=1, n_steps=5))


def test_layer_that_cannot_reach_the_output_gets_zeros():
    """``unused`` runs but does not reach the output: zeros of its shape (Captum raises here)."""
    model = seeded(SideInput)
    xs = (randn(2, 3), randn(2, 4, seed=3))
    results = [attrfx.layer_gradient_x_activation(model, "unused", xs, target=0),
               attrfx.layer_gradcam(model, "unused", xs, target=0, attr_dim_summation=False),
               attrfx.layer_conductance(model, "unused", xs, target=0, n_steps=4)]
    for result in results:
        assert result.shape == (2, 4) and torch.equal(result, torch.zeros(2, 4, dtype=result.dtype))


def test_model_given_as_forward_function():
    model, x = conv()
    forward = lambda inp: model(inp)
    assert_parity(attrfx.layer_conductance(forward, model.conv2, x, target=1, n_steps=4),
                  LayerConductance(forward, model.conv2).attribute(x, target=1, n_steps=4))
