"""Every public method on each available device: the CPU, and CUDA where a GPU is present.

On the device, each method equals Captum 0.9.0 run on that device and attrfx's own CPU result (float64, SPEC
tolerance), keeps its result on the inputs' device, copies baselines and masks given on the CPU to it, and leaves
the model, the inputs and the global RNGs as they were. The adaptive ``n_steps="auto"`` path and many neurons in one
call (a list of selectors, the fast path of a Linear's rows included) run there too. The ``device`` fixture
(tests/conftest.py) lists the devices; ``pytest -m device`` selects these tests.
"""

from typing import Callable, NamedTuple, Union

import pytest
import torch
from captum.attr import LayerActivation, LayerGradientShap
from captum.attr import LayerIntegratedGradients
from captum.attr import LayerLRP
from captum.attr import LayerDeepLift, LayerDeepLiftShap
from captum.attr import LayerFeatureAblation, LayerFeaturePermutation
from captum.attr import (LayerAttribution, LayerConductance, LayerGradCam, LayerGradientXActivation,
                         NeuronConductance, NeuronDeconvolution, NeuronDeepLift, NeuronDeepLiftShap,
                         NeuronFeatureAblation, NeuronGradient, NeuronGradientShap, NeuronGuidedBackprop,
                         NeuronIntegratedGradients)
from torch import nn

import attrfx
from attrfx import axioms
from _models_rules import PoolNet
from models import MLP, ConvNet, randn, seeded
from parity import assert_parity, flat

pytestmark = pytest.mark.device


def mlp():
    return seeded(MLP), randn(4, 5)


def conv():
    return seeded(ConvNet), randn(3, 2, 8, 8)


def pool():
    return seeded(PoolNet), randn(3, 2, 8, 8)


def linear():
    """For GradientSHAP: on a linear neuron, with equal baseline rows, the random sample cannot change the result,
    so Captum's must agree."""
    return seeded(lambda: nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 2))), randn(3, 5)


def moved(case, device):
    model, x = case
    return model.to(device), x.to(device)


class Neuron(NamedTuple):
    """A neuron method's case: model and inputs (built on the CPU), layer, one selector of each form, single
    neurons (a list of them reading at most half of a Linear's rows takes the fast path), the oracle, keyword
    arguments both take (built for the inputs, on their device) and those only attrfx takes."""

    build: Callable
    layer: str
    selectors: list
    neurons: list
    captum: type
    options: Callable = lambda x: {}
    own: Callable = lambda: {}


GROUPS = torch.arange(64).reshape(1, 1, 8, 8) // 16      # four row bands, shared by both channels

NEURON = {
    "neuron_gradient": Neuron(conv, "conv2", [(2, 1, 1), (0, slice(0, 2), 1), lambda h: h[:, 1, 0, 2]],
                              [(2, 1, 1), (0, 0, 2), (1, 2, 0)], NeuronGradient),
    "neuron_integrated_gradients": Neuron(
        mlp, "act1", [2, (slice(1, 5),), lambda h: h[:, 0] - 2 * h[:, 4]], [0, 3, 6], NeuronIntegratedGradients,
        lambda x: dict(baselines=0.3 * randn(4, 5, seed=5).to(x.device), n_steps=7)),
    "neuron_conductance": Neuron(
        mlp, "act2", [1, (slice(1, 5),), lambda h: h[:, 0] - 2 * h[:, 4]], [0, 3, 5], NeuronConductance,
        lambda x: dict(target=[1, 0, 2, 1], n_steps=6, method="riemann_middle")),
    "neuron_gradient_shap": Neuron(
        linear, "0", [1, (slice(0, 3),), lambda h: h[:, 2]], [0, 3], NeuronGradientShap,
        lambda x: dict(baselines=randn(1, 5, seed=7).repeat(6, 1).to(x.device), n_samples=7),
        lambda: dict(generator=torch.Generator().manual_seed(0))),
    "neuron_deeplift": Neuron(pool, "fc1", [4, (slice(1, 4),), lambda h: h[:, 0] - 2 * h[:, 3]], [4, 0, 5],
                              NeuronDeepLift, lambda x: dict(baselines=0.3 * randn(3, 2, 8, 8, seed=4).to(x.device))),
    "neuron_deeplift_shap": Neuron(pool, "pool", [(1, 0, slice(0, 2)), (2, 1, 1), lambda h: h[:, 3, 0, 0]],
                                   [(1, 0, 0), (3, 2, 2), (0, 1, 2)], NeuronDeepLiftShap,
                                   lambda x: dict(baselines=randn(4, 2, 8, 8, seed=9).to(x.device))),
    "neuron_guided_backprop": Neuron(pool, "elu", [(2,), 4, lambda h: h[:, 1] * h[:, 3]], [2, 4, 0],
                                     NeuronGuidedBackprop),
    "neuron_deconvolution": Neuron(pool, "relu", [(1, 2, 3), (0, slice(1, 4), 2), lambda h: h[:, 2, 0, 0]],
                                   [(1, 2, 3), (0, 5, 5), (2, 0, 1)], NeuronDeconvolution),
    "neuron_feature_ablation": Neuron(
        pool, "pool", [(2, slice(0, 2), 1), (0, 1, 1), lambda h: h[:, 1, 0, 0]], [(2, 1, 1), (0, 0, 0), (3, 2, 1)],
        NeuronFeatureAblation,
        lambda x: dict(feature_mask=GROUPS.to(x.device), baselines=0.5, perturbations_per_eval=3)),
}


def ours(name, model, x, selector, options=None):
    case = NEURON[name]
    options = case.options(x) if options is None else options
    return getattr(attrfx, name)(model, case.layer, x, selector, **options, **case.own())


def theirs(name, model, x, selector):
    case = NEURON[name]
    return each(torch.Tensor.detach,
                case.captum(model, model.get_submodule(case.layer)).attribute(x, selector, **case.options(x)))


def each(fn, result):
    """``fn`` applied to every tensor of a result (a tensor, or a tuple or list of results)."""
    if isinstance(result, torch.Tensor):
        return fn(result)
    return type(result)(each(fn, part) for part in result)


class Layer(NamedTuple):
    """A layer method's case: model and inputs, layer (or list of layers), the oracle, keyword arguments."""

    build: Callable
    layer: Union[str, list]
    captum: type
    options: Callable


LAYER = {
    "layer_deeplift": Layer(conv, "conv2", LayerDeepLift, lambda x: dict(
        baselines=0.3 * randn(3, 2, 8, 8, seed=4).to(x.device), target=[2, 0, 1], return_convergence_delta=True)),
    "layer_deeplift_shap": Layer(conv, "pool", LayerDeepLiftShap, lambda x: dict(
        baselines=randn(4, 2, 8, 8, seed=9).to(x.device), target=[0, 3, 1])),
    "layer_gradient_x_activation": Layer(conv, ["relu1", "conv2"], LayerGradientXActivation,
                                         lambda x: dict(target=[0, 3, 1])),
    "layer_lrp": Layer(mlp, "fc2", LayerLRP, lambda x: dict(target=[0, 2, 1, 0], attribute_to_layer_input=True,
                                                           return_convergence_delta=True)),
    "layer_gradcam": Layer(conv, "conv2", LayerGradCam, lambda x: dict(target=[0, 3, 1], relu_attributions=True)),
    "layer_conductance": Layer(conv, "act2", LayerConductance, lambda x: dict(
        baselines=0.1 * randn(3, 2, 8, 8, seed=4).to(x.device), target=1, n_steps=6, method="gausslegendre",
        return_convergence_delta=True)),
    "layer_activation": Layer(conv, ["relu1", "pool"], LayerActivation, lambda x: {}),
    "layer_gradient_shap": Layer(linear, "0", LayerGradientShap, lambda x: dict(   # one baseline row: exact
        baselines=randn(1, 5, seed=7).repeat(4, 1).to(x.device), target=[1, 0, 1], n_samples=3,
        return_convergence_delta=True)),
    "layer_integrated_gradients": Layer(conv, "conv2", LayerIntegratedGradients, lambda x: dict(
        baselines=0.1 * randn(1, 2, 8, 8, seed=4).to(x.device), target=[2, 0, 1], n_steps=6,
        method="riemann_middle", internal_batch_size=7)),
    "layer_feature_ablation": Layer(conv, "pool", LayerFeatureAblation, lambda x: dict(
        layer_baselines=0.2, target=[2, 0, 1], layer_mask=torch.arange(4, device=x.device).reshape(1, 4, 1, 1))),
    "layer_feature_permutation": Layer(lambda: (seeded(ConvNet), randn(2, 2, 8, 8)), "act2",  # two examples: a swap
                                       lambda model, layer: OneTarget(LayerFeaturePermutation, model, layer),
                                       lambda x: dict(target=3)),
}


class OneTarget:
    """Captum's LayerFeaturePermutation applies ``target`` twice (to the output, then to the selected values): give it
    a model of the target's output alone."""

    def __init__(self, cls, model, layer):
        self.cls, self.model, self.layer = cls, model, layer

    def attribute(self, x, target):
        return self.cls(lambda v: self.model(v)[:, target], self.layer).attribute(x)


def ours_layer(name, model, x, options=None):
    case = LAYER[name]
    return getattr(attrfx, name)(model, case.layer, x, **(case.options(x) if options is None else options))


def theirs_layer(name, model, x):
    case = LAYER[name]
    layer = case.layer
    modules = [model.get_submodule(n) for n in layer] if isinstance(layer, list) else model.get_submodule(layer)
    return each(torch.Tensor.detach, case.captum(model, modules).attribute(x, **case.options(x)))


CASES = {**NEURON, **LAYER}


def test_every_method_is_covered():
    assert set(CASES) == {n for n in attrfx.__all__ if n.startswith(("neuron_", "layer_"))}


# --- parity with Captum and with the CPU ----------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(NEURON))
def test_neuron_method_on_the_device_matches_captum_and_the_cpu(name, device):
    case = NEURON[name]
    model, x = case.build()
    on_cpu = [ours(name, model, x, selector) for selector in case.selectors]
    model, x = moved((model, x), device)
    for selector, expected in zip(case.selectors, on_cpu):
        result = ours(name, model, x, selector)
        assert result.device == x.device
        assert_parity(result, theirs(name, model, x, selector))
        assert_parity(result.cpu(), expected)


@pytest.mark.parametrize("name", sorted(LAYER))
def test_layer_method_on_the_device_matches_captum_and_the_cpu(name, device):
    model, x = LAYER[name].build()
    expected = ours_layer(name, model, x)
    model, x = moved((model, x), device)
    result = ours_layer(name, model, x)
    assert all(t.device == x.device for t in flat(result))
    assert_parity(result, theirs_layer(name, model, x))
    assert_parity(each(torch.Tensor.cpu, result), expected)


def test_interpolate_on_the_device_matches_captum(device):
    model, x = moved(conv(), device)
    cam = attrfx.layer_gradcam(model, "relu1", x, target=1)
    result = attrfx.interpolate(cam, (9, 7), "bilinear")
    assert result.device == x.device
    assert_parity(result, LayerAttribution.interpolate(cam, (9, 7), "bilinear"))


# --- many neurons in one call -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(NEURON))
@pytest.mark.parametrize("which", ["selectors", "neurons"])
def test_many_neurons_on_the_device_match_one_captum_call_each(name, which, device):
    case = NEURON[name]
    selectors = getattr(case, which)
    model, x = moved(case.build(), device)
    together = ours(name, model, x, selectors)
    assert together.shape == (len(selectors),) + tuple(x.shape) and together.device == x.device
    for k, selector in enumerate(selectors):
        assert_parity(together[k], theirs(name, model, x, selector))


# --- where inputs, baselines and masks live ------------------------------------------------------------------------

TAKES_TENSORS = ["neuron_integrated_gradients", "neuron_gradient_shap", "neuron_deeplift", "neuron_deeplift_shap",
                 "neuron_feature_ablation"]


@pytest.mark.parametrize("name", TAKES_TENSORS + ["layer_conductance"])
def test_baselines_and_masks_on_the_cpu_follow_the_inputs_to_the_device(name, device):
    """Baselines, baseline distributions and feature masks given on the CPU give the on-device result."""
    model, x = moved(CASES[name].build(), device)
    if name in NEURON:
        selector = NEURON[name].selectors[0]
        on_cpu = ours(name, model, x, selector, NEURON[name].options(x.cpu()))
        on_device = ours(name, model, x, selector)
    else:
        on_cpu = ours_layer(name, model, x, LAYER[name].options(x.cpu()))
        on_device = ours_layer(name, model, x)
    for a, b in zip(flat(on_cpu), flat(on_device)):   # (CUDA kernels may add in another order from run to run)
        assert a.device == x.device
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def rng_states():
    """The global RNG states (the CPU's, and each GPU's where CUDA is present)."""
    return [torch.get_rng_state()] + (torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])


ALL = {**{name: lambda m, x, name=name: ours(name, m, x, NEURON[name].selectors[:2]) for name in NEURON},
       **{name: lambda m, x, name=name: ours_layer(name, m, x) for name in LAYER}}


@pytest.mark.parametrize("name", sorted(ALL))
def test_calls_on_the_device_leave_model_inputs_and_rngs_as_they_were(name, device):
    model, x = moved(CASES[name].build(), device)
    model.train()
    x.requires_grad_()
    before, results = rng_states(), []
    assert axioms.statelessness_violations(lambda: results.append(ALL[name](model, x)), model, x) == []
    assert len(results) == 1, "the call raised"
    assert all(t.device == x.device for t in flat(results[0]))
    assert all(torch.equal(a, b) for a, b in zip(before, rng_states())), "a global RNG was touched"


# --- n_steps="auto" -------------------------------------------------------------------------------------------------

AUTO = {   # (case, call returning (attributions, Convergence), the exact change the attributions add up to)
    "neuron_integrated_gradients": (
        conv, lambda m, x: attrfx.neuron_integrated_gradients(m, "act2", x, (1, 1, 1), n_steps="auto", tolerance=1e-5,
                                                              return_convergence_delta=True),
        lambda m, x: axioms.neuron_difference(m, "act2", x, (1, 1, 1))),
    "neuron_conductance": (
        mlp, lambda m, x: attrfx.neuron_conductance(m, "act2", x, [0, 3], target=2, n_steps="auto", tolerance=1e-5,
                                                    return_convergence_delta=True),
        None),
    "layer_conductance": (
        conv, lambda m, x: attrfx.layer_conductance(m, "relu1", x, target=[1, 0, 3], n_steps="auto", tolerance=1e-4,
                                                    return_convergence_delta=True),
        lambda m, x: axioms.output_difference(m, x, target=[1, 0, 3])),
}


@pytest.mark.parametrize("name", sorted(AUTO))
def test_auto_n_steps_on_the_device_converges_and_matches_the_cpu(name, device):
    build, call, change = AUTO[name]
    model, x = build()
    expected, expected_report = call(model, x)
    model, x = moved((model, x), device)
    attributions, report = call(model, x)
    assert all(t.device == x.device for t in flat(attributions) + list(report))
    assert bool(report.converged.all())
    if change is not None:
        gap = axioms.completeness_gap(attributions, change(model, x))
        torch.testing.assert_close(report.delta, gap, rtol=0, atol=1e-10)
    assert_parity(attributions.cpu(), expected)
    torch.testing.assert_close(report.delta.cpu(), expected_report.delta, rtol=1e-6, atol=1e-12)
