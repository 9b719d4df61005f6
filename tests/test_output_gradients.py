"""Plain gradients and GradientSHAP at the inputs and at a layer: saliency, input_x_gradient, layer_activation,
gradient_shap, layer_gradient_shap, against Captum 0.9.0 (exactly where the sample cannot matter, in distribution
elsewhere), with their laws (linear models, batch independence, reproducibility from the generator, statelessness
also when the model raises) and their errors."""

import numpy as np
import pytest
import torch
from captum.attr import (GradientShap, InputXGradient, IntegratedGradients, LayerActivation, LayerGradientShap,
                         LayerGradientXActivation, Saliency)
from hypothesis import given, strategies as st
from torch import nn

import attrfx
from attrfx import axioms
from models import ConvNet, MLP, MultiInput, Residual, Reused, TupleLayer, randn, seeded
from parity import assert_parity
from test_faults import Faulty, Trigger


class Grid(nn.Module):
    """Outputs of shape (N, 2, 3): targets are tuples."""

    def __init__(self):
        super().__init__()
        self.fc, self.act, self.head = nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 6)

    def forward(self, x):
        return self.head(self.act(self.fc(x))).reshape(-1, 2, 3)


class LinearTwo(nn.Module):
    """Two inputs and a per-example scale, linear in the inputs: ``a(x1) + b(x2)·scale``."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 3), nn.Linear(3, 3)

    def forward(self, x1, x2, scale=None):
        return self.a(x1) + self.b(x2) * (1.0 if scale is None else scale)


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.fc = nn.Embedding(9, 3), nn.Linear(12, 2)

    def forward(self, ids):
        return self.fc(torch.tanh(self.emb(ids)).flatten(1))


def linear():
    return nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 2))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def oracle(run):
    """Captum's answer with the global RNGs it draws from (torch, numpy) seeded and restored afterwards."""
    state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            np.random.seed(0)
            return run()
    finally:
        np.random.set_state(state)


# --- saliency and input × gradient: exact parity -------------------------------------------------------------------

def scalar_function(dtype):
    model = seeded(MLP, dtype=dtype)
    return lambda x: model(x)[:, 1]


OUTPUT_CASES = {  # name → dtype → (model, inputs, keyword arguments)
    "mlp-int": lambda d: (seeded(MLP, dtype=d), randn(4, 5, dtype=d), dict(target=1)),
    "mlp-list": lambda d: (seeded(MLP, dtype=d), randn(4, 5, dtype=d), dict(target=[0, 2, 1, 1])),
    "mlp-tensor": lambda d: (seeded(MLP, dtype=d), randn(4, 5, dtype=d), dict(target=torch.tensor([2, 0, 1, 0]))),
    "mlp-1-tuple": lambda d: (seeded(MLP, dtype=d), (randn(4, 5, dtype=d),), dict(target=(2,))),
    "conv": lambda d: (seeded(ConvNet, dtype=d), randn(3, 2, 8, 8, dtype=d), dict(target=3)),
    "multi-scale": lambda d: (seeded(MultiInput, dtype=d), (randn(3, 4, dtype=d), randn(3, 3, seed=2, dtype=d)),
                              dict(target=[0, 1, 0], additional_forward_args=randn(3, 1, seed=3, dtype=d))),
    "multi-both": lambda d: (seeded(MultiInput, dtype=d), (randn(3, 4, dtype=d), randn(3, 3, seed=2, dtype=d)),
                             dict(target=1, additional_forward_args=(randn(3, 1, seed=3, dtype=d), True))),
    "residual": lambda d: (seeded(Residual, dtype=d), randn(4, 4, dtype=d), dict(target=1)),
    "grid": lambda d: (seeded(Grid, dtype=d), randn(3, 5, dtype=d), dict(target=[(1, 2), (0, 0), (1, 1)])),
    "function": lambda d: (scalar_function(d), randn(4, 5, dtype=d), dict()),
}
DTYPES = [torch.float64, torch.float32]


@pytest.mark.parametrize("case", sorted(OUTPUT_CASES))
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("signed", [False, True])
def test_saliency_equals_captum(case, dtype, signed):
    model, x, kw = OUTPUT_CASES[case](dtype)
    ours = attrfx.saliency(model, x, abs=not signed, **kw)
    assert_parity(ours, Saliency(model).attribute(x, abs=not signed, **kw), dtype)


@pytest.mark.parametrize("case", sorted(OUTPUT_CASES))
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_input_x_gradient_equals_captum(case, dtype):
    model, x, kw = OUTPUT_CASES[case](dtype)
    theirs = InputXGradient(model).attribute(x, **kw)
    assert_parity(attrfx.input_x_gradient(model, x, **kw), tuple(t.detach() for t in theirs)
                  if isinstance(theirs, tuple) else theirs.detach(), dtype)


def test_saliency_is_the_absolute_gradient_of_a_linear_model():
    model, x = seeded(linear), randn(3, 5)
    w = model[1].weight @ model[0].weight
    assert torch.equal(attrfx.saliency(model, x, target=1, abs=False), w[1].expand(3, 5))
    assert torch.equal(attrfx.saliency(model, x, target=1), w[1].abs().expand(3, 5))
    assert torch.equal(attrfx.input_x_gradient(model, x, target=0), x * w[0])


def test_an_input_that_cannot_reach_the_output_gets_zeros():
    """Captum raises here; attrfx gives zeros of the input's shape."""
    model = lambda a, b: a.sum(1, keepdim=True) * 2  # noqa: E731
    xs = (randn(2, 3), randn(2, 4, seed=2))
    for result in (attrfx.saliency(model, xs, target=0), attrfx.input_x_gradient(model, xs, target=0)):
        assert torch.equal(result[1], torch.zeros(2, 4, dtype=torch.float64))
        assert result[0].abs().min() > 0


# --- layer_activation ----------------------------------------------------------------------------------------------

LAYER_CASES = {  # name → dtype → (model, inputs, layer (names), additional forward args)
    "mlp": lambda d: (seeded(MLP, dtype=d), randn(4, 5, dtype=d), "act1", None),
    "mlp-list": lambda d: (seeded(MLP, dtype=d), randn(4, 5, dtype=d), ["fc3", "fc1", "act2"], None),
    "conv-list": lambda d: (seeded(ConvNet, dtype=d), randn(3, 2, 8, 8, dtype=d), ["relu1", "pool", "fc"], None),
    "tuple-layer": lambda d: (seeded(TupleLayer, dtype=d), randn(3, 3, dtype=d), "pair", None),
    "multi": lambda d: (seeded(MultiInput, dtype=d), (randn(3, 4, dtype=d), randn(3, 3, seed=2, dtype=d)),
                        ["fc_b", "act"], (randn(3, 1, seed=3, dtype=d), True)),
    "in-place-after": lambda d: (seeded(lambda: nn.Sequential(nn.Linear(5, 4), nn.ReLU(inplace=True), nn.Linear(4, 2)),
                                        dtype=d), randn(4, 5, dtype=d), ["0", "1"], None),
}


def modules(model, layer):
    return [model.get_submodule(n) for n in layer] if isinstance(layer, list) else model.get_submodule(layer)


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("at_input", [False, True])
def test_layer_activation_equals_captum(case, dtype, at_input):
    model, x, layer, afa = LAYER_CASES[case](dtype)
    ours = attrfx.layer_activation(model, layer, x, additional_forward_args=afa, attribute_to_layer_input=at_input)
    theirs = LayerActivation(model, modules(model, layer)).attribute(x, additional_forward_args=afa,
                                                                     attribute_to_layer_input=at_input)
    if isinstance(layer, list):
        assert isinstance(ours, list) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert_parity(a, b, dtype)
    else:
        assert_parity(ours, theirs, dtype)


def test_layer_activation_of_token_ids_needs_no_float_inputs():
    model, ids = seeded(Tokens), torch.randint(0, 9, (3, 4), generator=gen())
    assert torch.equal(attrfx.layer_activation(model, "emb", ids, attribute_to_layer_input=True), ids)
    assert_parity(attrfx.layer_activation(model, "emb", ids), LayerActivation(model, model.emb).attribute(ids))


def test_layer_activation_stops_once_the_last_layer_has_run():
    """The real pass (4 rows) never reaches the modules after the last layer (the shape pass sees no rows)."""
    model, x, rows = seeded(MLP), randn(4, 5), []
    handle = model.fc3.register_forward_pre_hook(lambda m, i: rows.append(i[0].shape[0]))
    try:
        attrfx.layer_activation(model, ["act1", "fc2"], x)
        attrfx.layer_activation(model, "fc2", x)
    finally:
        handle.remove()
    assert rows and set(rows) == {0}


def test_layer_activation_refuses_a_layer_that_runs_twice():
    with pytest.raises(attrfx.AttrfxValueError, match=r"layer_activation: .*`layer`.*'act'.*ran 2 times"):
        attrfx.layer_activation(seeded(Reused), ["fc1", "act"], randn(2, 3))


# --- gradient_shap: exact where the sample cannot matter -----------------------------------------------------------

def two_inputs(dtype=torch.float64):
    model = seeded(LinearTwo, dtype=dtype)
    xs = (randn(3, 4, dtype=dtype), randn(3, 3, seed=2, dtype=dtype))
    return model, xs, randn(3, 1, seed=3, dtype=dtype)


def one_row(xs, rows, seed=7):
    """A baseline distribution of ``rows`` equal rows (the drawn row cannot matter)."""
    return tuple(0.5 * randn(1, *x.shape[1:], seed=seed + i, dtype=x.dtype).expand(rows, *x.shape[1:]).clone()
                 for i, x in enumerate(xs))


EXACT_SHAP = [  # (multiply_by_inputs, stdevs, distinct baseline rows): the sample cannot matter on a linear model
    (True, 0.0, False), (False, 0.0, False), (False, 0.4, True), (False, (0.2, 0.7), True)]


@pytest.mark.parametrize("multiply,stdevs,distinct", EXACT_SHAP)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("target", [1, [0, 2, 1]], ids=["int", "list"])
def test_gradient_shap_on_a_linear_model_equals_captum(multiply, stdevs, distinct, dtype, target):
    model, xs, scale = two_inputs(dtype)
    dist = tuple(randn(5, *x.shape[1:], seed=9 + i, dtype=dtype) for i, x in enumerate(xs)) if distinct \
        else one_row(xs, 5)
    kw = dict(n_samples=4, stdevs=stdevs, target=target, additional_forward_args=scale)
    ours = attrfx.gradient_shap(model, xs, dist, multiply_by_inputs=multiply, generator=gen(), **kw)
    theirs = oracle(lambda: GradientShap(model, multiply_by_inputs=multiply).attribute(xs, dist, **kw))
    assert_parity(ours, theirs, dtype)


@pytest.mark.parametrize("callable_baselines", [False, True])
def test_gradient_shap_of_one_tensor_with_one_baseline_is_exact(callable_baselines):
    model, x = seeded(linear), randn(4, 5)
    dist = 0.3 * randn(1, 5, seed=4)
    baselines = (lambda inputs: dist) if callable_baselines else dist
    ours = attrfx.gradient_shap(model, x, baselines, n_samples=3, target=0, generator=gen())
    theirs = oracle(lambda: GradientShap(model).attribute(x, baselines, n_samples=3, target=0))
    assert_parity(ours, theirs)
    w = model[1].weight @ model[0].weight
    assert axioms.linear_model_gap(ours, x, w[0], baselines=dist) < 1e-12


def test_gradient_shap_convergence_delta_equals_captum_in_its_order():
    """Local attributions of a linear model: per draw Σ w − (F(x) − F(b)), one value per example, repeated over its
    draws in Captum's order (each example's draws together)."""
    model, xs, scale = two_inputs()
    dist = one_row(xs, 2)
    kw = dict(n_samples=2, target=[0, 2, 1], additional_forward_args=scale, return_convergence_delta=True)
    ours = attrfx.gradient_shap(model, xs, dist, multiply_by_inputs=False, generator=gen(), **kw)
    theirs = oracle(lambda: GradientShap(model, multiply_by_inputs=False).attribute(xs, dist, **kw))
    assert ours[1].shape == (6,) and not torch.allclose(ours[1][:3], ours[1][3:])
    assert_parity(ours, theirs)
    global_ = attrfx.gradient_shap(model, xs, dist, generator=gen(), **kw)
    assert global_[1].abs().max() < 1e-12   # a linear model: completeness per draw


def test_gradient_shap_expectation_on_a_linear_model_is_x_minus_mean_baseline_times_w():
    """With input noise and distinct baselines: the mean over draws estimates (x − E[b])·w within its standard error
    (per draw, (x̃ − b)·w has variance w²·(σ² + Var b))."""
    model, x = seeded(linear), randn(3, 5)
    w = (model[1].weight @ model[0].weight)[1]
    dist, sigma, n = randn(4, 5, seed=8), 0.5, 20000
    attr = attrfx.gradient_shap(model, x, dist, n_samples=n, stdevs=sigma, target=1, generator=gen(3))
    expected = (x - dist.mean(0)) * w
    se = (w.abs() * (sigma ** 2 + dist.var(0, unbiased=False)).sqrt()) / n ** 0.5
    assert ((attr - expected).abs() < 5 * se).all()


def test_gradient_shap_agrees_with_captum_in_distribution():
    """Without noise, E[GradientSHAP] is the mean over baselines of integrated gradients (Captum's, n_steps=100)."""
    model, x = seeded(MLP), randn(3, 5)
    dist = randn(3, 5, seed=11)
    exact = torch.stack([IntegratedGradients(model).attribute(x, b[None], target=2, n_steps=100) for b in dist]).mean(0)
    ours = attrfx.gradient_shap(model, x, dist, n_samples=20000, target=2, generator=gen(1))
    theirs = oracle(lambda: GradientShap(model).attribute(x, dist, n_samples=4000, target=2))
    scale = exact.abs().max()
    assert (ours - exact).abs().max() < 0.03 * scale
    assert (theirs - exact).abs().max() < 0.08 * scale


def test_gradient_shap_and_neuron_gradient_shap_are_one_kernel():
    """An output unit as the neuron: the same draws from the same generator state give the same attributions."""
    model, x, dist = seeded(MLP), randn(4, 5), randn(3, 5, seed=2)
    kw = dict(n_samples=6, stdevs=0.1)
    assert torch.equal(attrfx.gradient_shap(model, x, dist, target=2, generator=gen(5), **kw),
                       attrfx.neuron_gradient_shap(model, "fc3", x, 2, dist, generator=gen(5), **kw))


SAMPLED = {
    "gradient_shap": lambda m, x, g: attrfx.gradient_shap(m, x, randn(3, 5, seed=2), n_samples=4, stdevs=0.2,
                                                          target=1, generator=g),
    "layer_gradient_shap": lambda m, x, g: attrfx.layer_gradient_shap(m, "act1", x, randn(3, 5, seed=2), n_samples=4,
                                                                      stdevs=0.2, target=1, generator=g),
}


@pytest.mark.parametrize("name", sorted(SAMPLED))
def test_the_generator_state_fixes_the_result_and_the_global_rng_is_untouched(name):
    model, x = seeded(MLP), randn(4, 5)
    before = torch.get_rng_state()
    first, again = SAMPLED[name](model, x, gen(1)), SAMPLED[name](model, x, gen(1))
    other = SAMPLED[name](model, x, gen(2))
    unseeded = SAMPLED[name](model, x, None)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(first, again) and not torch.allclose(first, other)
    assert unseeded.shape == first.shape
    g = gen(1)
    SAMPLED[name](model, x, g)
    assert not torch.equal(g.get_state(), gen(1).get_state())   # the draws advanced the caller's generator


# --- layer_gradient_shap --------------------------------------------------------------------------------------------

LAYER_SHAP = [  # (layer, at_input, multiply, stdevs, distinct rows): exact on a linear model
    ("0", False, True, 0.0, False), ("1", True, True, 0.0, False), ("0", False, False, 0.3, True),
    ("1", True, False, 0.0, True)]


@pytest.mark.parametrize("layer,at_input,multiply,stdevs,distinct", LAYER_SHAP)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_layer_gradient_shap_on_a_linear_model_equals_captum(layer, at_input, multiply, stdevs, distinct, dtype):
    model, x = seeded(linear, dtype=dtype), randn(3, 5, dtype=dtype)
    dist = randn(4, 5, seed=6, dtype=dtype) if distinct else one_row((x,), 4)[0]
    kw = dict(n_samples=3, stdevs=stdevs, target=[1, 0, 1], attribute_to_layer_input=at_input,
              return_convergence_delta=not distinct)   # F(x̃) − F(b) depends on the draws of distinct rows
    ours = attrfx.layer_gradient_shap(model, layer, x, dist, multiply_by_inputs=multiply, generator=gen(), **kw)
    theirs = oracle(lambda: LayerGradientShap(model, model.get_submodule(layer), multiply_by_inputs=multiply)
                    .attribute(x, dist, **kw))
    assert_parity(ours, theirs, dtype)


def test_layer_gradient_shap_with_two_inputs_and_extra_arguments_equals_captum():
    model, xs, scale = two_inputs()
    dist = one_row(xs, 3)
    kw = dict(n_samples=2, target=[2, 0, 1], additional_forward_args=scale)
    ours = attrfx.layer_gradient_shap(model, "b", xs, dist, generator=gen(), **kw)
    theirs = oracle(lambda: LayerGradientShap(model, model.b).attribute(xs, dist, **kw))
    assert_parity(ours, theirs)


def test_layer_gradient_shap_of_a_tuple_layer_equals_captum():
    """``pair`` gives two tensors and the model after it is linear, so with one baseline the sample cannot matter."""
    model, x, base = seeded(TupleLayer), randn(3, 3), 0.2 * randn(2, 3, seed=5)[:1].expand(2, 3)
    ours = attrfx.layer_gradient_shap(model, "pair", x, base, target=1, generator=gen())
    theirs = oracle(lambda: LayerGradientShap(model, model.pair).attribute(x, base, target=1))
    assert isinstance(ours, tuple) and len(ours) == 2
    assert_parity(ours, theirs)


def test_layer_gradient_shap_agrees_with_captum_in_distribution():
    """Without noise, E = mean over b of (h(x) − h(b))·∫₀¹ ∂F/∂h(b + u(x − b)) du, composed from Captum's layer
    activation and local gradient × activation (gauss–legendre nodes)."""
    model, x = seeded(MLP), randn(3, 5)
    dist = randn(3, 5, seed=11)
    nodes, weights = np.polynomial.legendre.leggauss(40)
    act, grad = LayerActivation(model, model.act1), LayerGradientXActivation(model, model.act1,
                                                                              multiply_by_inputs=False)
    exact = torch.stack([
        (act.attribute(x) - act.attribute(b[None])) *
        sum(w / 2 * grad.attribute(b + (a + 1) / 2 * (x - b), target=0) for a, w in zip(nodes, weights))
        for b in dist]).mean(0)
    ours = attrfx.layer_gradient_shap(model, "act1", x, dist, n_samples=20000, target=0, generator=gen(1))
    theirs = oracle(lambda: LayerGradientShap(model, model.act1).attribute(x, dist, n_samples=4000, target=0))
    scale = exact.abs().max()
    assert (ours - exact).abs().max() < 0.03 * scale
    assert (theirs - exact).abs().max() < 0.08 * scale


# --- laws -----------------------------------------------------------------------------------------------------------

DETERMINISTIC = {
    "saliency": lambda m, x: attrfx.saliency(m, x, target=1, abs=False),
    "input_x_gradient": lambda m, x: attrfx.input_x_gradient(m, x, target=2),
    "layer_activation": lambda m, x: attrfx.layer_activation(m, ["fc2", "act1"], x),
}


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
@given(seed=st.integers(0, 2**16), batch=st.integers(1, 5))
def test_batch_independence(name, seed, batch):
    model, x = seeded(MLP), randn(batch, 5, seed=seed)
    assert axioms.batch_independence_gap(lambda inputs: DETERMINISTIC[name](model, inputs), x) < 1e-12


@given(seed=st.integers(0, 2**16), batch=st.integers(1, 4), n_samples=st.integers(1, 4), multiply=st.booleans())
def test_gradient_shap_of_a_linear_model_with_one_baseline_is_x_minus_b_times_w(seed, batch, n_samples, multiply):
    model, x = seeded(linear, seed=seed % 7), randn(batch, 5, seed=seed)
    base = randn(1, 5, seed=seed + 1)
    w = (model[1].weight @ model[0].weight)[0]
    attr = attrfx.gradient_shap(model, x, base.expand(3, 5), n_samples=n_samples, target=0,
                                multiply_by_inputs=multiply, generator=gen(seed))
    if multiply:
        assert axioms.linear_model_gap(attr, x, w, baselines=base) < 1e-12
    else:
        assert (attr - w).abs().max() < 1e-12


ON_FAULTY = {  # calls on tests/test_faults.py's Faulty model (4 inputs, 2 outputs, its layer "act")
    "saliency": lambda m, x: attrfx.saliency(m, x, target=1, abs=False),
    "input_x_gradient": lambda m, x: attrfx.input_x_gradient(m, x, target=1),
    "layer_activation": lambda m, x: attrfx.layer_activation(m, ["act", "fc2"], x),
    "gradient_shap": lambda m, x: attrfx.gradient_shap(m, x, torch.zeros(3, 4), n_samples=3, target=1,
                                                       return_convergence_delta=True, generator=gen()),
    "layer_gradient_shap": lambda m, x: attrfx.layer_gradient_shap(m, "act", x, torch.zeros(3, 4), n_samples=3,
                                                                   target=0, attribute_to_layer_input=True,
                                                                   generator=gen()),
}


@pytest.mark.parametrize("name", sorted(ON_FAULTY))
@pytest.mark.parametrize("where", ["before", "at", "after", "backward"])
@pytest.mark.parametrize("train", [False, True])
def test_a_model_that_raises_is_left_as_it_was(name, where, train):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        trigger = Trigger(where, 1)
        model, x = Faulty(trigger).train(train), torch.randn(3, 4).requires_grad_()
    before = axioms.state_of(model, x)
    try:
        ON_FAULTY[name](model, x)
    except RuntimeError as err:
        assert err is trigger.raised
    assert axioms.state_changes(before, axioms.state_of(model, x)) == []
    trigger.where = None
    ON_FAULTY[name](model, x)
    assert axioms.state_changes(before, axioms.state_of(model, x)) == []


def test_show_progress_leaves_the_result_alone(capsys):
    model, x, dist = seeded(MLP), randn(2, 5), randn(3, 5, seed=2)
    for name, passes in [("gradient_shap", 1), ("layer_gradient_shap", 2)]:
        call = lambda **kw: getattr(attrfx, name)(model, *(["act2"] if name.startswith("layer") else []), x, dist,
                                                  target=0, generator=gen(), **kw)
        quiet = call()
        assert capsys.readouterr().err == ""
        assert torch.equal(call(show_progress=True), quiet)
        assert f"{name}: 100%|" in capsys.readouterr().err.split("\r")[-1]


# --- errors ---------------------------------------------------------------------------------------------------------

ERRORS = [
    (lambda: attrfx.gradient_shap(seeded(MLP), randn(4, 5), torch.zeros(3, 4), target=0),
     "gradient_shap: `baselines\\[0\\]`.*\\(n_baselines, 5\\).*shape \\(3, 4\\)"),
    (lambda: attrfx.gradient_shap(seeded(MLP), randn(4, 5), torch.zeros(3, 5), n_samples=0, target=0),
     "gradient_shap: `n_samples`.*positive int"),
    (lambda: attrfx.gradient_shap(seeded(MLP), randn(4, 5), torch.zeros(3, 5), stdevs=-0.5, target=0),
     "gradient_shap: `stdevs`.*non-negative"),
    (lambda: attrfx.gradient_shap(seeded(MLP), randn(4, 5), torch.zeros(3, 5), target=0, generator=1),
     "gradient_shap: `generator`.*torch.Generator"),
    (lambda: attrfx.gradient_shap(seeded(MLP), randn(4, 5), torch.zeros(3, 5), target=7),
     "gradient_shap: `target`"),
    (lambda: attrfx.layer_gradient_shap(seeded(MLP), ["fc1", "fc2"], randn(4, 5), torch.zeros(3, 5), target=0),
     "layer_gradient_shap: `layer`.*nn.Module"),
    (lambda: attrfx.layer_gradient_shap(seeded(Reused), "act", randn(2, 3), torch.zeros(3, 3), target=0),
     "layer_gradient_shap: `layer`.*ran 2 times"),
    (lambda: attrfx.layer_activation(seeded(MLP), [], randn(4, 5)), "layer_activation: `layer`.*non-empty"),
    (lambda: attrfx.layer_activation(seeded(MLP), "fc9", randn(4, 5)), "layer_activation: `layer`"),
    (lambda: attrfx.saliency(seeded(MLP), torch.zeros(4, 5, dtype=torch.long), target=0),
     "saliency: `inputs`.*floating-point"),
    (lambda: attrfx.input_x_gradient(seeded(MLP), randn(4, 5), target=[0, 1]), "input_x_gradient: `target`"),
]


@pytest.mark.parametrize("call,message", ERRORS, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(ERRORS)])
def test_bad_arguments_are_named(call, message):
    with pytest.raises((attrfx.AttrfxValueError, attrfx.AttrfxTypeError), match=message):
        call()
