"""neuron_deeplift / neuron_deeplift_shap: parity with Captum 0.9.0, laws, documented deviations."""

import pytest
import torch
from captum.attr import NeuronDeepLift, NeuronDeepLiftShap
from captum.testing.helpers.basic_models import BasicModel_ConvNet
from hypothesis import given, strategies as st
from torch import nn

import attrfx
from _models_rules import (ELEMENTWISE, Chain, GeluNet, Pool1dNet, Pool3dNet, PoolNet, TwoInputs, neuron_value)
from models import randn, seeded
from parity import assert_parity


def pool_case(dtype=torch.float64):
    return seeded(PoolNet, dtype=dtype), randn(3, 2, 8, 8, dtype=dtype), 0.3 * randn(3, 2, 8, 8, seed=4, dtype=dtype)


def pool1d_case(dtype=torch.float64):
    return seeded(Pool1dNet, dtype=dtype), randn(3, 1, 12, dtype=dtype), 0.3 * randn(1, 1, 12, seed=4, dtype=dtype)


def pool3d_case(dtype=torch.float64):
    return seeded(Pool3dNet, dtype=dtype), randn(2, 1, 5, 5, 5, dtype=dtype), 0.5


def chain_case(act):
    def case(dtype=torch.float64):
        return seeded(lambda: Chain(act), dtype=dtype), randn(4, 5, dtype=dtype), None
    case.__name__ = f"chain_{act.__name__}"
    return case


# (case, layer, selector): int, tuple, slices, callable; pools at output and input; Softmax on one example.
CASES = [
    (pool_case, "conv2", (1, 2, 3)),
    (pool_case, "pool", (2, slice(0, 2), 1)),
    (pool_case, "fc1", 4),
    (pool_case, "elu", lambda h: h[:, 0] - 2 * h[:, 3]),
    (pool_case, "fc2", (slice(1, 4),)),
    (pool1d_case, "fc", 1),
    (pool1d_case, "pool", (1, 2)),
    (pool3d_case, "fc", 0),
    (pool3d_case, "pool", (1, 0, 1, slice(None))),
] + [(chain_case(act), layer, sel) for act in ELEMENTWISE for layer, sel in [("fc3", 2), ("act2", (3,))]]


def ids(cases):
    return [f"{c[0].__name__}-{c[1]}-{i}" for i, c in enumerate(cases)]


@pytest.mark.parametrize("case,layer,selector", CASES, ids=ids(CASES))
@pytest.mark.parametrize("at_input", [False, True])
def test_deeplift_parity(case, layer, selector, at_input):
    model, x, base = case()
    ours = attrfx.neuron_deeplift(model, layer, x, selector, baselines=base, attribute_to_neuron_input=at_input)
    theirs = NeuronDeepLift(model, model.get_submodule(layer)).attribute(
        x, selector, baselines=base, attribute_to_neuron_input=at_input)
    assert_parity(ours, theirs.detach())


@pytest.mark.parametrize("baselines", [None, 0.5, "full", "row"])
@pytest.mark.parametrize("multiply_by_inputs", [True, False])
def test_deeplift_parity_tuple_inputs_and_baseline_forms(baselines, multiply_by_inputs):
    model = seeded(TwoInputs)
    x1, x2, scale = randn(3, 4), randn(3, 3, seed=2), randn(3, 1, seed=3)
    base = {None: None, 0.5: (0.5, 0.5), "full": (randn(3, 4, seed=5), randn(3, 3, seed=6)),
            "row": (randn(1, 4, seed=5), 0.2)}[baselines]
    for layer, sel in [("out", 1), ("leaky", (2,)), ("sig", lambda h: h[:, 1] * h[:, 2])]:
        ours = attrfx.neuron_deeplift(model, layer, (x1, x2), sel, baselines=base, additional_forward_args=scale,
                                      multiply_by_inputs=multiply_by_inputs)
        theirs = NeuronDeepLift(model, model.get_submodule(layer), multiply_by_inputs=multiply_by_inputs).attribute(
            (x1, x2), sel, baselines=base, additional_forward_args=scale)
        assert_parity(ours, tuple(t.detach() for t in theirs))


def test_deeplift_parity_float32():
    model, x, base = pool_case(torch.float32)
    for layer, sel in [("fc2", 3), ("conv2", (0, 1, 1))]:
        ours = attrfx.neuron_deeplift(model, layer, x, sel, baselines=base)
        theirs = NeuronDeepLift(model, model.get_submodule(layer)).attribute(x, sel, baselines=base)
        assert_parity(ours, theirs.detach(), dtype=torch.float32)


@pytest.mark.parametrize("arity", [1, 2, 3])
def test_custom_attribution_func(arity):
    model = seeded(TwoInputs)
    x1, x2, scale = randn(3, 4), randn(3, 3, seed=2), randn(3, 1, seed=3)
    base = (randn(1, 4, seed=5), 0.3)
    funcs = {1: lambda m: tuple(2 * t for t in m),
             2: lambda m, x: tuple(t * x_ ** 2 for t, x_ in zip(m, x)),
             3: lambda m, x, b: tuple(t * (x_ - b_) + b_ for t, x_, b_ in zip(m, x, b))}
    ours = attrfx.neuron_deeplift(model, "out", (x1, x2), 0, baselines=base, additional_forward_args=scale,
                                  custom_attribution_func=funcs[arity])
    theirs = NeuronDeepLift(model, model.out).attribute((x1, x2), 0, baselines=base, additional_forward_args=scale,
                                                        custom_attribution_func=funcs[arity])
    assert_parity(ours, tuple(t.detach() for t in theirs))
    dist = (randn(4, 4, seed=7), randn(4, 3, seed=8))
    ours = attrfx.neuron_deeplift_shap(model, "leaky", (x1, x2), 1, dist, additional_forward_args=scale,
                                       custom_attribution_func=funcs[arity])
    theirs = NeuronDeepLiftShap(model, model.leaky).attribute((x1, x2), 1, dist, additional_forward_args=(scale,),
                                                              custom_attribution_func=funcs[arity])
    assert_parity(ours, tuple(t.detach() for t in theirs))


@pytest.mark.parametrize("form", ["tensor", "callable", "no_args"])
@pytest.mark.parametrize("multiply_by_inputs", [True, False])
def test_deeplift_shap_parity(form, multiply_by_inputs):
    model, x, _ = pool_case()
    dist = randn(4, 2, 8, 8, seed=9)
    base = {"tensor": dist, "callable": lambda inputs: dist * inputs.mean(), "no_args": lambda: dist}[form]
    for layer, sel in [("fc2", 2), ("pool", (1, 0, slice(0, 2)))]:
        ours = attrfx.neuron_deeplift_shap(model, layer, x, sel, base, multiply_by_inputs=multiply_by_inputs)
        theirs = NeuronDeepLiftShap(model, model.get_submodule(layer), multiply_by_inputs=multiply_by_inputs
                                    ).attribute(x, sel, base)
        assert_parity(ours, theirs.detach())


def test_list_of_selectors_is_the_stack_of_single_calls():
    model, x, base = pool_case()
    sels = [(1, 2, 3), (0, slice(None), 1), lambda h: h[:, 2, 1, 1] ** 2]
    many = attrfx.neuron_deeplift(model, "conv2", x, sels, baselines=base)
    assert many.shape == (3,) + x.shape
    for k, s in enumerate(sels):
        torch.testing.assert_close(many[k], attrfx.neuron_deeplift(model, "conv2", x, s, baselines=base))
    dist = randn(3, 2, 8, 8, seed=9)
    many = attrfx.neuron_deeplift_shap(model, "fc2", x, [0, 4], dist)
    torch.testing.assert_close(many[1], attrfx.neuron_deeplift_shap(model, "fc2", x, 4, dist))


# --- laws ----------------------------------------------------------------------------------------

relu_nets = st.sampled_from([lambda: Chain(nn.ReLU), lambda: Chain(lambda: nn.ReLU(inplace=True), width=4)])


@given(relu_nets, st.integers(0, 10_000), st.integers(0, 2), st.sampled_from(["fc2", "act2", "fc3"]))
def test_summation_to_delta_on_relu_networks(factory, seed, neuron, layer):
    model = seeded(factory, seed=seed)
    x, b = randn(3, 5, seed=seed + 1), randn(3, 5, seed=seed + 2)
    attr = attrfx.neuron_deeplift(model, layer, x, neuron, baselines=b)
    delta = neuron_value(model, layer, (x,), neuron) - neuron_value(model, layer, (b,), neuron)
    torch.testing.assert_close(attr.sum(1), delta, rtol=1e-9, atol=1e-9)


@given(st.integers(0, 10_000))
def test_summation_to_delta_with_maxpool(seed):
    model = seeded(BasicModel_ConvNet, seed=seed)
    x, b = 10 * randn(2, 1, 10, 10, seed=seed), randn(2, 1, 10, 10, seed=seed + 1)
    attr = attrfx.neuron_deeplift(model, "fc1", x, 3, baselines=b)
    delta = neuron_value(model, "fc1", (x,), 3) - neuron_value(model, "fc1", (b,), 3)
    torch.testing.assert_close(attr.sum((1, 2, 3)), delta, rtol=1e-9, atol=1e-9)


@given(st.integers(0, 10_000), st.integers(0, 2))
def test_linear_model_is_weight_times_difference(seed, neuron):
    model = seeded(lambda: nn.Sequential(nn.Linear(4, 3)), seed=seed)
    x, b = randn(5, 4, seed=seed), randn(5, 4, seed=seed + 1)
    attr = attrfx.neuron_deeplift(model, "0", x, neuron, baselines=b)
    torch.testing.assert_close(attr, (x - b) * model[0].weight[neuron])


@given(st.integers(0, 10_000), st.sampled_from(ELEMENTWISE))
def test_deeplift_shap_is_mean_of_deeplift(seed, act):
    model = seeded(lambda: Chain(act), seed=seed)
    x, dist = randn(3, 5, seed=seed), randn(4, 5, seed=seed + 1)
    shap = attrfx.neuron_deeplift_shap(model, "fc3", x, 1, dist)
    each = torch.stack([attrfx.neuron_deeplift(model, "fc3", x, 1, baselines=dist[j:j + 1]) for j in range(4)])
    torch.testing.assert_close(shap, each.mean(0))


# --- policies and deviations ---------------------------------------------------------------------

def test_unsupported_nonlinearities_keep_their_ordinary_gradient():
    """GELU and functional ReLU are not rewritten (Captum's policy): multipliers are the plain gradient."""
    model, x, b = seeded(GeluNet), randn(4, 5), randn(4, 5, seed=3)
    with pytest.warns(attrfx.RuleCoverageWarning, match="'gelu' \\(GELU\\)"):   # and says so
        local = attrfx.neuron_deeplift(model, "fc2", x, 1, baselines=b, multiply_by_inputs=False)
    torch.testing.assert_close(local, attrfx.neuron_gradient(model, "fc2", x, 1))
    theirs = NeuronDeepLift(model, model.fc2).attribute(x, 1, baselines=b)
    with pytest.warns(attrfx.RuleCoverageWarning):
        assert_parity(attrfx.neuron_deeplift(model, "fc2", x, 1, baselines=b), theirs.detach())
    delta = neuron_value(model, "fc2", (x,), 1) - neuron_value(model, "fc2", (b,), 1)
    assert not torch.allclose(theirs.sum(1), delta, atol=1e-3)   # so no summation-to-delta: documented


def test_adjacent_rule_modules_deviation():
    """ReLU straight into MaxPool: Captum's ReLU hook reads the gradient before MaxPool's rule rewrites it,
    so Captum loses summation-to-delta; attrfx applies both rules and keeps it."""
    model = seeded(BasicModel_ConvNet)
    x, b = 10 * randn(2, 1, 10, 10), randn(2, 1, 10, 10, seed=2)
    delta = neuron_value(model, "conv2", (x,), (1, 0, 0)) - neuron_value(model, "conv2", (b,), (1, 0, 0))
    ours = attrfx.neuron_deeplift(model, "conv2", x, (1, 0, 0), baselines=b)
    theirs = NeuronDeepLift(model, model.conv2).attribute(x, (1, 0, 0), baselines=b).detach()
    torch.testing.assert_close(ours.sum((1, 2, 3)), delta)
    assert (theirs.sum((1, 2, 3)) - delta).abs().max() > 1e-3


def test_softmax_mean_is_per_example():
    """Captum subtracts the softmax multipliers' mean over the whole batch; attrfx per example.
    Equal for one example; attrfx is batch independent."""
    model, x, b = pool_case()
    whole = attrfx.neuron_deeplift(model, "softmax", x, 2, baselines=b)
    for i in range(x.shape[0]):
        one = attrfx.neuron_deeplift(model, "softmax", x[i:i + 1], 2, baselines=b[i:i + 1])
        torch.testing.assert_close(whole[i:i + 1], one)
        theirs = NeuronDeepLift(model, model.softmax).attribute(x[i:i + 1], 2, baselines=b[i:i + 1])
        assert_parity(one, theirs.detach())


def test_inplace_relu_equals_out_of_place():
    a, b = seeded(lambda: Chain(nn.ReLU)), seeded(lambda: Chain(lambda: nn.ReLU(inplace=True)))
    x = randn(4, 5)
    for method in (attrfx.neuron_deeplift, attrfx.neuron_guided_backprop, attrfx.neuron_deconvolution):
        torch.testing.assert_close(method(a, "fc3", x, 0), method(b, "fc3", x, 0))


def test_errors():
    model, x = seeded(TwoInputs), randn(3, 4)
    with pytest.raises(TypeError, match="neuron_deeplift: `model` must be an nn.Module"):
        attrfx.neuron_deeplift(lambda t: t * 2, nn.Identity(), x, 0)
    chain = seeded(Chain)
    with pytest.raises(ValueError, match="custom_attribution_func"):
        attrfx.neuron_deeplift(chain, "fc3", randn(2, 5), 0, custom_attribution_func=lambda a, b, c, d: a)
    with pytest.raises(ValueError, match="custom_attribution_func"):
        attrfx.neuron_deeplift(chain, "fc3", randn(2, 5), 0, custom_attribution_func=lambda m: (m[0][:, :2],))
    with pytest.raises(ValueError, match="neuron_deeplift_shap: `baselines\\[0\\]`"):
        attrfx.neuron_deeplift_shap(chain, "fc3", randn(2, 5), 0, randn(3, 4))
