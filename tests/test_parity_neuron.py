"""Neuron methods equal Captum 0.9.0 across their argument space."""

import pytest
import torch
from captum.attr import NeuronConductance, NeuronGradient, NeuronGradientShap, NeuronIntegratedGradients

import attrfx
from models import ConvNet, MLP, MultiInput, Residual, SideInput, TupleLayer, randn, seeded
from parity import assert_parity, trapezoid_scale

METHODS = ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre"]


def mlp_case(dtype=torch.float64):
    model = seeded(MLP, dtype=dtype)
    return model, randn(4, 5, dtype=dtype)


def conv_case(dtype=torch.float64):
    model = seeded(ConvNet, dtype=dtype)
    return model, randn(3, 2, 8, 8, dtype=dtype)


# (case, layer name, selector); the selector forms: int, tuple, slices, callable.
SELECTORS = [
    (mlp_case, "fc2", 3),
    (mlp_case, "act1", (2,)),
    (mlp_case, "act2", (slice(1, 5),)),
    (mlp_case, "fc1", lambda h: h[:, 0] - 2 * h[:, 4]),
    (conv_case, "relu1", (1, 2, 3)),
    (conv_case, "conv2", (2, slice(0, 2), 1)),
    (conv_case, "act2", (0, slice(None), slice(None))),
    (conv_case, "pool", lambda h: h[:, 1, 0, 2]),
]


def ids(cases):
    return [f"{c[0].__name__}-{c[1]}-{i}" for i, c in enumerate(cases)]


@pytest.mark.parametrize("case,layer,selector", SELECTORS, ids=ids(SELECTORS))
@pytest.mark.parametrize("at_input", [False, True])
def test_neuron_gradient(case, layer, selector, at_input):
    model, x = case()
    ours = attrfx.neuron_gradient(model, layer, x, selector, attribute_to_neuron_input=at_input)
    theirs = NeuronGradient(model, model.get_submodule(layer)).attribute(
        x, selector, attribute_to_neuron_input=at_input)
    assert_parity(ours, theirs)


@pytest.mark.parametrize("case,layer,selector", SELECTORS, ids=ids(SELECTORS))
@pytest.mark.parametrize("method", METHODS)
def test_neuron_integrated_gradients(case, layer, selector, method):
    model, x = case()
    base = 0.3 * randn(*x.shape, seed=5)
    ours = attrfx.neuron_integrated_gradients(model, layer, x, selector, baselines=base, n_steps=7, method=method)
    theirs = NeuronIntegratedGradients(model, model.get_submodule(layer)).attribute(
        x, selector, baselines=base, n_steps=7, method=method)
    assert_parity(ours, theirs, scale=trapezoid_scale(method, 7))


@pytest.mark.parametrize("case,layer,selector", SELECTORS, ids=ids(SELECTORS))
@pytest.mark.parametrize("method", METHODS)
def test_neuron_conductance(case, layer, selector, method):
    model, x = case()
    target = [1, 0, 2, 1][: x.shape[0]]
    ours = attrfx.neuron_conductance(model, layer, x, selector, target=target, n_steps=6, method=method)
    theirs = NeuronConductance(model, model.get_submodule(layer)).attribute(
        x, selector, target=target, n_steps=6, method=method)
    assert_parity(ours, theirs, scale=trapezoid_scale(method, 6))


BASELINES = [None, 0.5, "full", "one-row"]


def make_baseline(form, x):
    return {"full": 0.2 * randn(*x.shape, seed=9), "one-row": randn(1, *x.shape[1:], seed=8)}.get(form, form)


@pytest.mark.parametrize("form", BASELINES)
@pytest.mark.parametrize("multiply", [True, False])
@pytest.mark.parametrize("at_input", [False, True])
def test_integrated_and_conductance_baselines_flags(form, multiply, at_input):
    model, x = conv_case()
    base = make_baseline(form, x)
    kwargs = dict(baselines=base, n_steps=5, attribute_to_neuron_input=at_input)
    layer = model.conv2
    ours = attrfx.neuron_integrated_gradients(model, "conv2", x, (1, 0, 2), multiply_by_inputs=multiply, **kwargs)
    theirs = NeuronIntegratedGradients(model, layer, multiply_by_inputs=multiply).attribute(x, (1, 0, 2), **kwargs)
    assert_parity(ours, theirs)
    ours = attrfx.neuron_conductance(model, "conv2", x, (1, 0, 2), target=3, multiply_by_inputs=multiply, **kwargs)
    theirs = NeuronConductance(model, layer, multiply_by_inputs=multiply).attribute(x, (1, 0, 2), target=3, **kwargs)
    assert_parity(ours, theirs, scale=5 / 4)


@pytest.mark.parametrize("internal_batch_size", [1, 4, 7, 50])
def test_internal_batch_size(internal_batch_size):
    model, x = mlp_case()
    cases = [(attrfx.neuron_integrated_gradients, NeuronIntegratedGradients, dict(method="gausslegendre")),
             (attrfx.neuron_conductance, NeuronConductance, dict(method="riemann_middle", target=1))]
    for ours_fn, cls, kwargs in cases:
        ours = ours_fn(model, "act2", x, 2, n_steps=9, internal_batch_size=internal_batch_size, **kwargs)
        theirs = cls(model, model.act2).attribute(x, 2, n_steps=9, internal_batch_size=internal_batch_size, **kwargs)
        assert_parity(ours, theirs)


TARGETS = [0, (1,), torch.tensor(2), torch.tensor([2, 0, 1, 1]), [0, 2, 2, 1]]


@pytest.mark.parametrize("target", TARGETS, ids=["int", "tuple", "0d-tensor", "tensor", "list"])
def test_conductance_targets(target):
    model, x = mlp_case()
    ours = attrfx.neuron_conductance(model, "fc2", x, 1, target=target, n_steps=5, method="gausslegendre")
    theirs = NeuronConductance(model, model.fc2).attribute(x, 1, target=target, n_steps=5, method="gausslegendre")
    assert_parity(ours, theirs)


def multi_input_case():
    model = seeded(MultiInput)
    xs = (randn(3, 4, seed=2), randn(3, 3, seed=3))
    args = (randn(3, 1, seed=4), True)
    return model, xs, args


@pytest.mark.parametrize("at_input", [False, True])
def test_tuple_inputs_and_additional_args(at_input):
    model, xs, args = multi_input_case()
    bases = (0.1, randn(1, 3, seed=6))
    flags = dict(additional_forward_args=args, attribute_to_neuron_input=at_input)
    assert_parity(attrfx.neuron_gradient(model, "act", xs, 2, **flags),
                  NeuronGradient(model, model.act).attribute(xs, 2, **flags))
    assert_parity(attrfx.neuron_integrated_gradients(model, "act", xs, (slice(0, 3),), baselines=bases, n_steps=6,
                                                     internal_batch_size=5, **flags),
                  NeuronIntegratedGradients(model, model.act).attribute(xs, (slice(0, 3),), baselines=bases,
                                                                        n_steps=6, internal_batch_size=5, **flags))
    assert_parity(attrfx.neuron_conductance(model, "act", xs, 4, baselines=bases, target=1, n_steps=6,
                                            method="riemann_right", **flags),
                  NeuronConductance(model, model.act).attribute(xs, 4, baselines=bases, target=1, n_steps=6,
                                                                method="riemann_right", **flags))


def test_non_tensor_additional_arg_alone():
    model, xs, _ = multi_input_case()
    ours = attrfx.neuron_gradient(model, "act", xs, 1, additional_forward_args=(None, True))
    theirs = NeuronGradient(model, model.act).attribute(xs, 1, additional_forward_args=(None, True))
    assert_parity(ours, theirs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float32_and_float64(dtype):
    model, x = conv_case(dtype)
    assert_parity(attrfx.neuron_integrated_gradients(model, "act2", x, (1, 1, 1), n_steps=8),
                  NeuronIntegratedGradients(model, model.act2).attribute(x, (1, 1, 1), n_steps=8), dtype)
    assert_parity(attrfx.neuron_conductance(model, "act2", x, (1, 1, 1), target=0, n_steps=8,
                                            method="gausslegendre"),
                  NeuronConductance(model, model.act2).attribute(x, (1, 1, 1), target=0, n_steps=8,
                                                                 method="gausslegendre"), dtype)


@pytest.mark.parametrize("at_input", [False, True])
def test_layer_inside_residual_branch(at_input):
    model, x = seeded(Residual), randn(3, 4)
    ours = attrfx.neuron_conductance(model, "inner", x, 2, target=1, attribute_to_neuron_input=at_input,
                                     method="gausslegendre")
    theirs = NeuronConductance(model, model.inner).attribute(x, 2, target=1, attribute_to_neuron_input=at_input,
                                                             method="gausslegendre")
    assert_parity(ours, theirs)


def test_tuple_output_layer_with_callable_selector():
    model, x = seeded(TupleLayer), randn(3, 3)
    select = lambda pair: pair[0][:, 1] + pair[1][:, 2]
    assert_parity(attrfx.neuron_gradient(model, "pair", x, select),
                  NeuronGradient(model, model.pair).attribute(x, select))
    assert_parity(attrfx.neuron_integrated_gradients(model, "pair", x, select, n_steps=5),
                  NeuronIntegratedGradients(model, model.pair).attribute(x, select, n_steps=5))


@pytest.mark.parametrize("multiply", [True, False])
def test_gradient_shap_on_linear_model_is_exact(multiply):
    """For a linear neuron the sample is irrelevant: the gradient is constant."""
    model = seeded(lambda: torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Linear(4, 2)))
    x, dist = randn(3, 5), torch.zeros(6, 5, dtype=torch.float64)
    ours = attrfx.neuron_gradient_shap(model, "0", x, 1, dist, n_samples=7, multiply_by_inputs=multiply,
                                       generator=torch.Generator().manual_seed(0))
    theirs = NeuronGradientShap(model, model[0], multiply_by_inputs=multiply).attribute(x, 1, dist, n_samples=7)
    assert_parity(ours, theirs)


def test_gradient_shap_agrees_in_distribution():
    """Without input noise, E[GradientSHAP] is the mean over baselines of integrated gradients.

    Both attrfx's and Captum's estimates converge to that exact value.
    """
    model, x = mlp_case()
    dist = randn(4, 5, seed=11)
    exact = torch.stack([attrfx.neuron_integrated_gradients(model, "act2", x, 3, baselines=b[None], n_steps=200)
                         for b in dist]).mean(0)
    ours = attrfx.neuron_gradient_shap(model, "act2", x, 3, dist, n_samples=50000,
                                       generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    theirs = NeuronGradientShap(model, model.act2).attribute(x, 3, dist, n_samples=16000)
    scale = exact.abs().max()
    assert (ours - exact).abs().max() < 0.03 * scale
    assert (theirs - exact).abs().max() < 0.08 * scale


def test_side_input_gets_zero_attribution():
    """``x2`` cannot reach the neuron: zeros of the right shape (Captum raises here)."""
    model = seeded(SideInput)
    xs = (randn(2, 3), randn(2, 4, seed=3))
    for result in [attrfx.neuron_gradient(model, "act", xs, 1),
                   attrfx.neuron_integrated_gradients(model, "act", xs, 1, n_steps=4),
                   attrfx.neuron_conductance(model, "act", xs, 1, target=0, n_steps=4)]:
        assert result[1].shape == xs[1].shape and torch.equal(result[1], torch.zeros_like(xs[1]))
        assert result[0].abs().sum() > 0


def test_callable_selector_may_return_the_batch_total_for_gradient_methods():
    """As in Captum, ``lambda h: h[:, 2:].sum()`` works where only the neuron's gradient is needed."""
    model, x = mlp_case()
    total = lambda h: h[:, 2:].sum()
    assert_parity(attrfx.neuron_gradient(model, "act2", x, total),
                  NeuronGradient(model, model.act2).attribute(x, total))
    assert_parity(attrfx.neuron_integrated_gradients(model, "act2", x, total, n_steps=6, internal_batch_size=9),
                  NeuronIntegratedGradients(model, model.act2).attribute(x, total, n_steps=6, internal_batch_size=9))
    assert_parity(attrfx.neuron_gradient(model, "act2", x, [total, 1])[0],
                  NeuronGradient(model, model.act2).attribute(x, total))


def test_conductance_needs_one_value_per_example():
    model, x = mlp_case()
    with pytest.raises(ValueError, match=r"neuron_conductance: `selector` \(a callable\) must return one value "
                                         r"per example, a tensor of shape \(N,\); it returned shape \(\)"):
        attrfx.neuron_conductance(model, "act2", x, lambda h: h.sum(), target=0)
