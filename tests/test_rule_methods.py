"""deeplift, deeplift_shap, layer_deeplift, layer_deeplift_shap, guided_backprop, deconvolution, guided_gradcam:
parity with Captum 0.9.0 across the argument space, the laws, documented deviations and errors."""

import pytest
import torch
from captum.attr import (Deconvolution, DeepLift, DeepLiftShap, GuidedBackprop, GuidedGradCam, LayerDeepLift,
                         LayerDeepLiftShap)
from captum.testing.helpers.basic_models import BasicModelWithReusedModules
from hypothesis import given, strategies as st
from torch import nn

import attrfx
from _models_rules import (ELEMENTWISE, Chain, GeluNet, Pool1dNet, Pool3dNet, PoolNet, Raises, TwoInputs, assert_same,
                           snapshot)
from attrfx import axioms
from models import ConvNet, MLP, MultiInput, Residual, TupleLayer, randn, seeded
from parity import assert_parity

RULE_MODULES = (nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softmax, nn.MaxPool1d,
                nn.MaxPool2d, nn.MaxPool3d)


def as_args(args):
    """Captum's SHAP forms expand a bare tensor of extra arguments wrongly: pass them a tuple."""
    return args if args is None or isinstance(args, tuple) else (args,)


def detached(result):
    if isinstance(result, torch.Tensor):
        return result.detach()
    return tuple(detached(r) for r in result)


# --- models and their arguments: (model, inputs, baselines, target, additional_forward_args) -----------------------

def chain(act):
    def case(dtype=torch.float64):
        return seeded(lambda: Chain(act), dtype=dtype), randn(4, 5, dtype=dtype), randn(4, 5, seed=3, dtype=dtype), \
            [0, 2, 1, 2], None
    case.__name__ = f"chain_{act.__name__}"
    return case


def pool(dtype=torch.float64):   # its Softmax output: Captum's mean over the batch equals attrfx's for one example
    return seeded(PoolNet, dtype=dtype), randn(1, 2, 8, 8, dtype=dtype), 0.3 * randn(1, 2, 8, 8, seed=4, dtype=dtype), \
        3, None


def pool1d(dtype=torch.float64):
    return seeded(Pool1dNet, dtype=dtype), randn(3, 1, 12, dtype=dtype), 0.3 * randn(1, 1, 12, seed=4, dtype=dtype), \
        torch.tensor([1, 0, 1]), None


def pool3d(dtype=torch.float64):
    return seeded(Pool3dNet, dtype=dtype), randn(2, 1, 5, 5, 5, dtype=dtype), 0.5, (1,), None


def two_inputs(dtype=torch.float64):
    xs = (randn(3, 4, dtype=dtype), randn(3, 3, seed=2, dtype=dtype))
    return seeded(TwoInputs, dtype=dtype), xs, (randn(1, 4, seed=5, dtype=dtype), 0.2), torch.tensor(1), \
        randn(3, 1, seed=3, dtype=dtype)


def multi(dtype=torch.float64):
    xs = (randn(3, 4, dtype=dtype), randn(3, 3, seed=2, dtype=dtype))
    return seeded(MultiInput, dtype=dtype), xs, None, [1, 0, 1], (randn(3, 1, seed=3, dtype=dtype), True)


def residual(dtype=torch.float64):
    return seeded(Residual, dtype=dtype), randn(3, 4, dtype=dtype), randn(3, 4, seed=7, dtype=dtype), 0, None


def mlp(dtype=torch.float64):
    return seeded(MLP, dtype=dtype), randn(3, 5, dtype=dtype), -0.4, 2, None


INPUT_CASES = [chain(act) for act in ELEMENTWISE] + [pool, pool1d, pool3d, two_inputs, multi, residual, mlp]


def baseline_forms(x, form):
    """The same baselines in Captum's accepted forms: None, a number, a full tensor, one row."""
    if form == "none":
        return None
    one = lambda t, s: {"number": 0.25, "full": 0.5 * randn(*t.shape, seed=s, dtype=t.dtype),
                        "row": 0.5 * randn(1, *t.shape[1:], seed=s, dtype=t.dtype)}[form]
    return tuple(one(t, 11 + i) for i, t in enumerate(x)) if isinstance(x, tuple) else one(x, 11)


def layers_of(model):
    return [name for name, m in model.named_modules() if name and not isinstance(m, nn.Sequential)]


# --- DeepLift at the inputs ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", INPUT_CASES, ids=[c.__name__ for c in INPUT_CASES])
@pytest.mark.parametrize("multiply_by_inputs", [True, False])
def test_deeplift_parity(case, multiply_by_inputs):
    model, x, base, target, args = case()
    kw = dict(baselines=base, target=target, additional_forward_args=args)
    ours = attrfx.deeplift(model, x, return_convergence_delta=True, multiply_by_inputs=multiply_by_inputs, **kw)
    theirs = DeepLift(model, multiply_by_inputs=multiply_by_inputs).attribute(x, return_convergence_delta=True, **kw)
    assert_parity(ours, detached(theirs))


@pytest.mark.parametrize("form", ["none", "number", "full", "row"])
def test_deeplift_parity_baseline_forms_and_float32(form):
    for dtype in (torch.float64, torch.float32):
        model, x, _, target, args = two_inputs(dtype)
        base = baseline_forms(x, form)
        ours = attrfx.deeplift(model, x, baselines=base, target=target, additional_forward_args=args)
        theirs = DeepLift(model).attribute(x, baselines=base, target=target, additional_forward_args=args)
        assert_parity(ours, detached(theirs), dtype=dtype)
        model, x, _, target, _ = pool1d(dtype)
        base = baseline_forms(x, form)
        assert_parity(attrfx.deeplift(model, x, baselines=base, target=target),
                      detached(DeepLift(model).attribute(x, baselines=base, target=target)), dtype=dtype)


CUSTOM = {1: lambda m: tuple(2 * t for t in m),
          2: lambda m, x: tuple(t * x_ ** 2 for t, x_ in zip(m, x)),
          3: lambda m, x, b: tuple(t * (x_ - b_) + b_ for t, x_, b_ in zip(m, x, b))}


@pytest.mark.parametrize("arity", [1, 2, 3])
def test_custom_attribution_func_parity(arity):
    model, x, base, target, args = two_inputs()
    kw = dict(target=target, additional_forward_args=args, custom_attribution_func=CUSTOM[arity],
              return_convergence_delta=True)
    assert_parity(attrfx.deeplift(model, x, baselines=base, **kw),
                  detached(DeepLift(model).attribute(x, baselines=base, **kw)))
    dist = (randn(3, 4, seed=7), randn(3, 3, seed=8))
    assert_parity(attrfx.deeplift_shap(model, x, dist, **kw),
                  detached(DeepLiftShap(model).attribute(x, dist, **dict(kw, additional_forward_args=(args,)))))
    model, x, base, target, _ = pool1d()
    kw = dict(baselines=base, target=target, custom_attribution_func=CUSTOM[arity])
    for name in ("conv2", "pool"):
        assert_parity(attrfx.layer_deeplift(model, name, x, **kw),
                      detached(LayerDeepLift(model, model.get_submodule(name)).attribute(x, **kw)))


def test_eps_parity():
    """Inputs equal to the baseline in some features: |Δx| = 0 at some units, below any eps."""
    model, x, _, target, _ = chain(nn.Tanh)()
    base = x.clone()
    base[:, :2] += 1e-4 * randn(4, 2)
    for eps in (1e-10, 1e-3, 1.0):
        ours = attrfx.deeplift(model, x, baselines=base, target=target, eps=eps, multiply_by_inputs=False)
        theirs = DeepLift(model, eps=eps, multiply_by_inputs=False).attribute(x, baselines=base, target=target)
        assert_parity(ours, theirs.detach())
    far = randn(4, 5, seed=3)
    ours = attrfx.layer_deeplift(model, "fc2", x, baselines=far, target=target, eps=1e3)
    plain = attrfx.layer_gradient_x_activation(model, "fc2", x, target=target, multiply_by_inputs=False)
    torch.testing.assert_close(ours, plain * (model.fc2(model.act1(model.fc1(x))) - model.fc2(model.act1(
        model.fc1(far)))))   # eps reaches the layer form's rules: above every |Δx|, the plain gradient
    ordinary = attrfx.deeplift(model, x, baselines=base, target=target, eps=1e9, multiply_by_inputs=False)
    with torch.enable_grad():
        leaf = x.clone().requires_grad_()
        (grad,) = torch.autograd.grad(model(leaf)[range(4), target].sum(), leaf)
    torch.testing.assert_close(ordinary, grad)   # eps above every |Δx|: the plain gradient


# --- DeepLiftSHAP -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["tensor", "callable", "no_args"])
@pytest.mark.parametrize("multiply_by_inputs", [True, False])
def test_deeplift_shap_parity(form, multiply_by_inputs):
    for case in (pool1d, two_inputs, residual):
        model, x, _, target, args = case()
        xs = x if isinstance(x, tuple) else (x,)
        dist = tuple(randn(3, *t.shape[1:], seed=9 + i) for i, t in enumerate(xs))
        dist = dist if isinstance(x, tuple) else dist[0]
        base = {"tensor": dist, "callable": lambda inputs: dist, "no_args": lambda: dist}[form]
        kw = dict(target=target, additional_forward_args=args, return_convergence_delta=True)
        ours = attrfx.deeplift_shap(model, x, base, multiply_by_inputs=multiply_by_inputs, **kw)
        theirs = DeepLiftShap(model, multiply_by_inputs=multiply_by_inputs).attribute(
            x, base, **dict(kw, additional_forward_args=as_args(args)))
        assert_parity(ours, detached(theirs))


def test_deeplift_shap_float32():
    model, x, _, target, _ = chain(nn.ELU)(torch.float32)
    dist = randn(3, 5, seed=9, dtype=torch.float32)
    assert_parity(attrfx.deeplift_shap(model, x, dist, target=target),
                  DeepLiftShap(model).attribute(x, dist, target=target).detach(), dtype=torch.float32)


# --- at a layer -------------------------------------------------------------------------------------------------

LAYER_CASES = [chain(nn.ReLU), chain(nn.Sigmoid), pool, pool1d, pool3d, two_inputs, multi, residual, mlp]


def layer_sites(model):
    """(layer, at_input) pairs Captum computes as DeepLift does: not the input of a rule module (see the deviation)."""
    return [(name, at) for name in layers_of(model) for at in (False, True)
            if not (at and isinstance(model.get_submodule(name), RULE_MODULES))]


@pytest.mark.parametrize("case", LAYER_CASES, ids=[c.__name__ for c in LAYER_CASES])
def test_layer_deeplift_parity(case):
    model, x, base, target, args = case()
    for i, (name, at) in enumerate(layer_sites(model)):
        multiply = i % 2 == 0
        kw = dict(baselines=base, target=target, additional_forward_args=args, attribute_to_layer_input=at,
                  return_convergence_delta=True)
        ours = attrfx.layer_deeplift(model, name, x, multiply_by_inputs=multiply, **kw)
        theirs = LayerDeepLift(model, model.get_submodule(name), multiply_by_inputs=multiply).attribute(x, **kw)
        assert_parity(ours, detached(theirs))


@pytest.mark.parametrize("case", [pool1d, two_inputs, residual, chain(nn.Softplus)],
                         ids=["pool1d", "two_inputs", "residual", "chain_softplus"])
def test_layer_deeplift_shap_parity(case):
    model, x, _, target, args = case()
    xs = x if isinstance(x, tuple) else (x,)
    dist = tuple(randn(3, *t.shape[1:], seed=9 + i) for i, t in enumerate(xs))
    dist = dist if isinstance(x, tuple) else dist[0]
    for i, (name, at) in enumerate(layer_sites(model)):
        multiply = i % 2 == 1
        kw = dict(target=target, additional_forward_args=args, attribute_to_layer_input=at,
                  return_convergence_delta=True)
        ours = attrfx.layer_deeplift_shap(model, name, x, dist, multiply_by_inputs=multiply, **kw)
        theirs = LayerDeepLiftShap(model, model.get_submodule(name), multiply_by_inputs=multiply).attribute(
            x, dist, **dict(kw, additional_forward_args=as_args(args)))
        assert_parity(ours, detached(theirs))


def test_layer_forms_float32_and_a_layer_of_two_tensors():
    model, x, base, target, _ = pool1d(torch.float32)
    for name in ("conv1", "pool"):
        assert_parity(attrfx.layer_deeplift(model, name, x, baselines=base, target=target),
                      LayerDeepLift(model, model.get_submodule(name)).attribute(x, base, target).detach(),
                      dtype=torch.float32)
    model, x = seeded(TupleLayer), randn(3, 3)
    ours = attrfx.layer_deeplift(model, "pair", x, baselines=0.1, target=1, return_convergence_delta=True)
    theirs = LayerDeepLift(model, model.pair).attribute(x, 0.1, 1, return_convergence_delta=True)
    assert isinstance(ours[0], tuple) and len(ours[0]) == 2
    assert_parity(ours, detached(theirs))


# --- guided backpropagation, deconvolution, guided Grad-CAM --------------------------------------------------------

GUIDED = [(attrfx.guided_backprop, GuidedBackprop), (attrfx.deconvolution, Deconvolution)]


@pytest.mark.parametrize("ours,theirs", GUIDED, ids=["guided_backprop", "deconvolution"])
def test_guided_and_deconvolution_parity(ours, theirs):
    for case in (chain(nn.ReLU), pool, two_inputs, multi, mlp):
        for dtype in (torch.float64, torch.float32):
            model, x, _, target, args = case(dtype)
            assert_parity(ours(model, x, target=target, additional_forward_args=args),
                          detached(theirs(model).attribute(x, target=target, additional_forward_args=args)),
                          dtype=dtype)
    model, x = seeded(ConvNet), randn(3, 2, 8, 8)
    assert_parity(ours(model, x, target=[3, 0, 1]), theirs(model).attribute(x, target=[3, 0, 1]))
    model, x = BasicModelWithReusedModules(), randn(4, 3, dtype=torch.float32)   # a ReLU run twice
    assert_parity(ours(model, x, target=1), theirs(model).attribute(x, target=1), dtype=torch.float32)


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "area", "bicubic"])
@pytest.mark.parametrize("at_input", [False, True])
def test_guided_gradcam_parity(mode, at_input):
    model, x = seeded(ConvNet), randn(3, 2, 8, 8)
    for name in ("conv1", "relu1", "pool", "act2"):
        ours = attrfx.guided_gradcam(model, name, x, target=[1, 3, 0], interpolate_mode=mode,
                                     attribute_to_layer_input=at_input)
        theirs = GuidedGradCam(model, model.get_submodule(name)).attribute(
            x, target=[1, 3, 0], interpolate_mode=mode, attribute_to_layer_input=at_input)
        assert_parity(ours, theirs.detach())


class ImageAndVector(nn.Module):
    """An image and a vector input: the Grad-CAM map fits the image only."""

    def __init__(self):
        super().__init__()
        self.conv, self.relu, self.fc, self.side = nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Linear(32, 2), nn.Linear(3, 2)

    def forward(self, image, vector):
        return self.fc(self.relu(self.conv(image)).flatten(1)) + self.side(vector)


def test_guided_gradcam_input_without_the_maps_rank_is_empty_as_in_captum():
    model, xs = seeded(ImageAndVector), (randn(2, 1, 6, 6), randn(2, 3, seed=2))
    with pytest.warns(UserWarning, match="input 1 of shape \\(2, 3\\).*empty tensor"):
        ours = attrfx.guided_gradcam(model, "conv", xs, target=1)
    theirs = GuidedGradCam(model, model.conv).attribute(xs, target=1)
    assert_parity(ours[0], theirs[0].detach())
    assert ours[1].shape == theirs[1].shape == (0,)


def test_guided_gradcam_without_spatial_dims_is_the_product():
    """A map of one value per example and an input without spatial dims: no resizing is needed, so attrfx
    multiplies (Captum's resize fails there and it returns an empty tensor)."""
    model, x = seeded(MLP), randn(3, 5)
    cam = attrfx.layer_gradcam(model, "act2", x, target=1, relu_attributions=True)
    assert cam.shape == (3, 1)
    torch.testing.assert_close(attrfx.guided_gradcam(model, "act2", x, target=1),
                               attrfx.guided_backprop(model, x, target=1) * cam)
    assert GuidedGradCam(model, model.act2).attribute(x, target=1).shape == (0,)


# --- laws --------------------------------------------------------------------------------------------------------

relu_nets = st.sampled_from([lambda: Chain(nn.ReLU), lambda: Chain(lambda: nn.ReLU(inplace=True), width=4)])


@given(relu_nets, st.integers(0, 10_000), st.integers(0, 2), st.sampled_from([None, "fc2", "act1", "fc3"]))
def test_summation_to_delta_on_relu_networks(factory, seed, target, layer):
    """Σ attributions = F(x) − F(b) exactly, at the inputs and at any layer that cuts the network."""
    model = seeded(factory, seed=seed)
    x, b = randn(3, 5, seed=seed + 1), randn(3, 5, seed=seed + 2)
    change = axioms.output_difference(model, x, baselines=b, target=target)
    if layer is None:
        attr, delta = attrfx.deeplift(model, x, baselines=b, target=target, return_convergence_delta=True)
    else:
        attr, delta = attrfx.layer_deeplift(model, layer, x, baselines=b, target=target, return_convergence_delta=True)
    torch.testing.assert_close(axioms.total(attr), change, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(delta, axioms.total(attr) - change, rtol=0, atol=1e-12)
    dist = torch.stack([b[0], x[1], 2 * b[2]])
    _, deltas = attrfx.deeplift_shap(model, x, dist, target=target, return_convergence_delta=True)
    assert deltas.shape == (9,) and float(deltas.abs().max()) < 1e-9


@given(st.integers(0, 10_000), st.integers(0, 1))
def test_linear_model_is_weight_times_difference(seed, target):
    model = seeded(lambda: nn.Sequential(nn.Linear(4, 2)), seed=seed)
    x, b = randn(5, 4, seed=seed), randn(5, 4, seed=seed + 1)
    w = model[0].weight[target]
    assert axioms.linear_model_gap(attrfx.deeplift(model, x, baselines=b, target=target), x, w, baselines=b) < 1e-12
    assert axioms.linear_model_gap(attrfx.layer_deeplift(model, "0", x, baselines=b, target=target,
                                                         attribute_to_layer_input=True), x, w, baselines=b) < 1e-12
    dist = randn(3, 4, seed=seed + 2)   # the mean over baselines: (x − mean b)·w
    shap = attrfx.deeplift_shap(model, x, dist, target=target)
    torch.testing.assert_close(shap, (x - dist.mean(0)) * w)
    for method in (attrfx.guided_backprop, attrfx.deconvolution):   # no ReLU: the gradient
        torch.testing.assert_close(method(model, x, target=target), w.expand_as(x))


@given(st.integers(0, 10_000), st.sampled_from(["deeplift", "deeplift_shap", "layer_deeplift",
                                                "layer_deeplift_shap", "guided_backprop", "deconvolution",
                                                "guided_gradcam"]))
def test_batch_independence(seed, method):
    model = seeded(PoolNet, seed=seed)   # Softmax too: its mean is taken per example
    x = randn(3, 2, 8, 8, seed=seed)
    dist = randn(2, 2, 8, 8, seed=seed + 1)
    calls = {
        "deeplift": lambda t: attrfx.deeplift(model, t, baselines=0.1, target=2),
        "deeplift_shap": lambda t: attrfx.deeplift_shap(model, t, dist, target=2),
        "layer_deeplift": lambda t: attrfx.layer_deeplift(model, "conv2", t, target=1),
        "layer_deeplift_shap": lambda t: attrfx.layer_deeplift_shap(model, "pool", t, dist, target=1),
        "guided_backprop": lambda t: attrfx.guided_backprop(model, t, target=0),
        "deconvolution": lambda t: attrfx.deconvolution(model, t, target=4),
        "guided_gradcam": lambda t: attrfx.guided_gradcam(model, "conv2", t, target=3),
    }
    assert axioms.batch_independence_gap(calls[method], x) < 1e-12


STATELESS = {
    "deeplift": lambda m, x: attrfx.deeplift(m, x, target=1, return_convergence_delta=True),
    "deeplift_shap": lambda m, x: attrfx.deeplift_shap(m, x, torch.zeros(2, 3, dtype=x.dtype), target=1),
    "layer_deeplift": lambda m, x: attrfx.layer_deeplift(m, "relu", x, target=0, attribute_to_layer_input=True),
    "layer_deeplift_shap": lambda m, x: attrfx.layer_deeplift_shap(m, "fc1", x, torch.ones(2, 3, dtype=x.dtype),
                                                                   target=0),
    "guided_backprop": lambda m, x: attrfx.guided_backprop(m, x, target=1),
    "deconvolution": lambda m, x: attrfx.deconvolution(m, x, target=0),
    "guided_gradcam": lambda m, x: attrfx.guided_gradcam(m, "fc1", x, target=0),
}


@pytest.mark.parametrize("method", sorted(STATELESS))
def test_stateless_also_when_the_model_raises(method):
    model, x = seeded(Raises), randn(2, 3).requires_grad_()
    before = snapshot(model, x)
    with pytest.raises(RuntimeError, match="boom"):
        STATELESS[method](model, x)
    assert_same(before, snapshot(model, x))
    model = seeded(lambda: Chain(lambda: nn.ReLU(inplace=True), width=3))
    model.fc1 = nn.Linear(3, 3).double()
    model.relu, model.act1 = model.act1, nn.Identity()   # rename so "relu" names the in-place ReLU
    model.train()
    assert axioms.statelessness_violations(lambda: STATELESS[method](model, x), model, x) == []


# --- deviations (README, "Deliberate differences") and errors -----------------------------------------------------

def test_layer_input_of_a_rule_module_takes_its_rule():
    """At the input of a nonlinearity, attrfx applies the layer's own rescale rule, so Σ attributions =
    F(x) − F(b); Captum registers the rule but its layer-input gradient bypasses it (the plain derivative)."""
    model, x, b, target, _ = chain(nn.ReLU)()
    change = axioms.output_difference(model, x, baselines=b, target=target)
    ours = attrfx.layer_deeplift(model, "act2", x, baselines=b, target=target, attribute_to_layer_input=True)
    torch.testing.assert_close(axioms.total(ours), change)
    theirs = LayerDeepLift(model, model.act2).attribute(x, b, target, attribute_to_layer_input=True).detach()
    assert (axioms.total(theirs) - change).abs().max() > 1e-3
    plain = attrfx.layer_gradient_x_activation(model, "act2", x, target=target, attribute_to_layer_input=True,
                                               multiply_by_inputs=False)
    z_b = model.fc2(model.act1(model.fc1(b)))
    torch.testing.assert_close(theirs, plain * (model.fc2(model.act1(model.fc1(x))) - z_b))


def test_adjacent_rule_modules_keep_summation_to_delta():
    """ReLU straight into MaxPool (ConvNet): Captum's deltas are off, attrfx's are float rounding."""
    model, x, b = seeded(ConvNet), 3 * randn(3, 2, 8, 8), randn(3, 2, 8, 8, seed=2)
    _, ours = attrfx.deeplift(model, x, baselines=b, target=1, return_convergence_delta=True)
    _, theirs = DeepLift(model).attribute(x, baselines=b, target=1, return_convergence_delta=True)
    assert float(ours.abs().max()) < 1e-12 < 1e-3 < float(theirs.abs().max())


def test_uncovered_modules_are_named_once_per_call():
    model, x = seeded(GeluNet), randn(4, 5)
    for call in (lambda: attrfx.deeplift(model, x, target=1), lambda: attrfx.layer_deeplift(model, "fc1", x, target=1),
                 lambda: attrfx.deeplift_shap(model, x, randn(2, 5), target=0),
                 lambda: attrfx.layer_deeplift_shap(model, "fc1", x, randn(2, 5), target=2)):
        with pytest.warns(attrfx.RuleCoverageWarning, match="'gelu' \\(GELU\\).*the output's change") as seen:
            call()
        assert len(seen) == 1 and seen[0].filename == __file__
    attrfx.layer_deeplift_shap(model, "fc2", x, randn(2, 5), target=2)   # the GELU runs before the layer: silent


def test_errors_name_the_argument():
    model, x = seeded(lambda: Chain(nn.ReLU)), randn(2, 5)
    fn = lambda t: model(t)
    for call, name in [
        (lambda: attrfx.deeplift(fn, x, target=0), "deeplift"),
        (lambda: attrfx.deeplift_shap(fn, x, x, target=0), "deeplift_shap"),
        (lambda: attrfx.layer_deeplift(fn, model.fc2, x, target=0), "layer_deeplift"),
        (lambda: attrfx.layer_deeplift_shap(fn, model.fc2, x, x, target=0), "layer_deeplift_shap"),
        (lambda: attrfx.guided_backprop(fn, x, target=0), "guided_backprop"),
        (lambda: attrfx.deconvolution(fn, x, target=0), "deconvolution"),
        (lambda: attrfx.guided_gradcam(fn, model.fc2, x, target=0), "guided_gradcam"),
    ]:
        with pytest.raises(TypeError, match=f"^{name}: `model` must be an nn.Module"):
            call()
    for eps in (-1.0, "small", True, None):
        with pytest.raises((ValueError, TypeError), match="^deeplift: `eps` must be a non-negative number"):
            attrfx.deeplift(model, x, target=0, eps=eps)
    with pytest.raises(ValueError, match="^layer_deeplift: `eps`"):
        attrfx.layer_deeplift(model, "fc2", x, target=0, eps=float("nan"))
    with pytest.raises(ValueError, match="^deeplift: `custom_attribution_func`"):
        attrfx.deeplift(model, x, target=0, custom_attribution_func=lambda m: (m[0][:, :2],))
    with pytest.raises(ValueError, match="^layer_deeplift: `custom_attribution_func`"):
        attrfx.layer_deeplift(model, "fc2", x, target=0, custom_attribution_func=lambda a, b, c, d: a)
    with pytest.raises(ValueError, match="^deeplift_shap: `baselines\\[0\\]`"):
        attrfx.deeplift_shap(model, x, randn(3, 4), target=0)
    with pytest.raises(ValueError, match="^layer_deeplift_shap: `baselines\\[0\\]`"):
        attrfx.layer_deeplift_shap(model, "fc2", x, randn(3, 4), target=0)
    with pytest.raises(ValueError, match="^deeplift: `target`"):
        attrfx.deeplift(model, x)
    with pytest.raises(ValueError, match="^layer_deeplift: `layer`"):
        attrfx.layer_deeplift(model, "fc9", x, target=0)
    image = seeded(ConvNet), randn(2, 2, 8, 8)
    with pytest.raises(ValueError, match="^guided_gradcam: `interpolate_mode` must be one of"):
        attrfx.guided_gradcam(*image[:1], "conv1", image[1], target=0, interpolate_mode="cubic")
    with pytest.raises(ValueError, match="^guided_gradcam: `layer` must be a layer whose activation is one tensor"):
        attrfx.guided_gradcam(seeded(TupleLayer), "pair", randn(2, 3), target=0)
