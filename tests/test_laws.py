"""The laws of SPEC, checked with hypothesis on generated models and inputs (float64)."""

import pytest
import torch
from hypothesis import assume, given, strategies as st
from torch import nn

import attrfx
from attrfx import axioms
from attrfx.testing import baselines_for, convnet_cases, linear_models, mlp_cases, rules, selectors, tensors, targets

def relative(gap, scale):
    return float(gap.abs().max()) / max(float(scale.abs().max()), 1e-12)


# --- completeness ----------------------------------------------------------------------------------------

@given(case=mlp_cases(), data=st.data())
def test_neuron_integrated_gradients_is_complete_and_converges(case, data):
    selector = data.draw(selectors(case.layer_shape, lists=False), label="selector")
    base = data.draw(baselines_for(case.inputs), label="baselines")
    change = axioms.neuron_difference(case.model, case.layer, case.inputs, selector, baselines=base)
    gaps = {n: axioms.completeness_gap(attrfx.neuron_integrated_gradients(case.model, case.layer, case.inputs,
                                                                          selector, baselines=base, n_steps=n), change)
            for n in (2, 64)}
    assert relative(gaps[64], change) < 1e-6 or float(gaps[64].abs().max()) < 1e-9
    assert float(gaps[64].abs().max()) <= float(gaps[2].abs().max()) + 1e-9


@given(case=mlp_cases(), data=st.data())
def test_layer_conductance_is_complete_with_trapezoid_and_converges(case, data):
    target = data.draw(targets(case.n_outputs, case.inputs.shape[0]), label="target")
    base = data.draw(baselines_for(case.inputs), label="baselines")
    runs = {n: attrfx.layer_conductance(case.model, case.layer, case.inputs, baselines=base, target=target, n_steps=n,
                                        method="riemann_trapezoid", return_convergence_delta=True)
            for n in (16, 256)}
    gap = {n: float(delta.abs().max()) for n, (_, delta) in runs.items()}
    size = float(runs[256][0].abs().flatten(1).sum(1).max())
    # The nodes include 0 and 1, so the sum telescopes; what is left is a first-order error in n.
    assert gap[256] <= 0.25 * gap[16] + 1e-9
    assert gap[256] <= 0.01 * size + 1e-9


@given(case=mlp_cases(), data=st.data())
def test_neuron_conductance_over_a_whole_layer_is_complete(case, data):
    """A hidden layer of an MLP cuts every path, so Σ over its neurons of conductance = F(x) − F(b)."""
    target = data.draw(targets(case.n_outputs, case.inputs.shape[0]), label="target")
    every_neuron = list(range(case.layer_shape[0]))
    conductance = attrfx.neuron_conductance(case.model, case.layer, case.inputs, every_neuron, target=target,
                                            n_steps=64, method="gausslegendre")
    change = axioms.output_difference(case.model, case.inputs, target=target)
    gap = conductance.sum(0).sum(1) - change
    assert relative(gap, change) < 1e-6 or float(gap.abs().max()) < 1e-9


# --- exactness on linear models ---------------------------------------------------------------------------

@given(model=linear_models(), x=tensors((3, 4)), data=st.data())
def test_path_methods_are_exact_on_linear_models(model, x, data):
    method = data.draw(rules(), label="method")
    n_steps = data.draw(st.integers(2, 6), label="n_steps")
    base = data.draw(baselines_for(x), label="baselines")
    k = data.draw(st.integers(0, model[0].out_features - 1), label="neuron")
    w_neuron = model[0].weight[k]
    attr = attrfx.neuron_integrated_gradients(model, "0", x, k, baselines=base, n_steps=n_steps, method=method)
    assert axioms.linear_model_gap(attr, x, w_neuron, baselines=base) < 1e-10
    # conductance of neuron k for output 1: (x − b) · v₁ₖ · Wₖ
    attr = attrfx.neuron_conductance(model, "0", x, k, target=1, baselines=base, n_steps=n_steps, method=method)
    assert axioms.linear_model_gap(attr, x, model[1].weight[1, k] * w_neuron, baselines=base) < 1e-10
    # gradient SHAP: every sample is exact on a linear neuron
    dist = torch.broadcast_to(torch.as_tensor(0.0 if base is None else base, dtype=x.dtype), x.shape)[:1]
    attr = attrfx.neuron_gradient_shap(model, "0", x, k, dist, n_samples=3, generator=torch.Generator().manual_seed(0))
    assert axioms.linear_model_gap(attr, x, w_neuron, baselines=dist) < 1e-10


@given(model=linear_models(), x=tensors((3, 4)), n_steps=st.integers(1, 5))
def test_layer_conductance_is_exact_on_linear_models(model, x, n_steps):
    attr, delta = attrfx.layer_conductance(model, "0", x, target=2, n_steps=n_steps, method="riemann_trapezoid",
                                           return_convergence_delta=True)
    hidden = model[0](x) - model[0](torch.zeros_like(x))
    torch.testing.assert_close(attr, hidden * model[1].weight[2], rtol=1e-10, atol=1e-10)
    assert float(delta.abs().max()) < 1e-10


# --- linearity, batch independence, internal_batch_size ------------------------------------------------------

@given(case=mlp_cases(n_outputs=2))
def test_layer_and_conductance_methods_are_linear_in_the_explained_output(case):
    layer = case.model.get_submodule(case.layer)
    calls = [lambda f: attrfx.layer_gradient_x_activation(f, layer, case.inputs),
             lambda f: attrfx.layer_conductance(f, layer, case.inputs, n_steps=5),
             lambda f: attrfx.layer_gradcam(f, layer, case.inputs, attr_dim_summation=False),
             lambda f: attrfx.neuron_conductance(f, layer, case.inputs, 0, n_steps=5)]
    for call in calls:
        assert axioms.linearity_gap(call, case.model) < 1e-10


METHOD_CALLS = {
    "neuron_gradient": lambda c, s, t: attrfx.neuron_gradient(c.model, c.layer, c.inputs, s),
    "neuron_integrated_gradients": lambda c, s, t: attrfx.neuron_integrated_gradients(c.model, c.layer, c.inputs, s,
                                                                                      n_steps=5),
    "neuron_conductance": lambda c, s, t: attrfx.neuron_conductance(c.model, c.layer, c.inputs, s, target=t, n_steps=5),
    "layer_gradient_x_activation": lambda c, s, t: attrfx.layer_gradient_x_activation(c.model, c.layer, c.inputs,
                                                                                      target=t),
    "layer_gradcam": lambda c, s, t: attrfx.layer_gradcam(c.model, c.layer, c.inputs, target=t),
    "layer_conductance": lambda c, s, t: attrfx.layer_conductance(c.model, c.layer, c.inputs, target=t, n_steps=5),
}


@pytest.mark.parametrize("name", sorted(METHOD_CALLS))
@given(case=st.one_of(mlp_cases(batch=(2, 4)), convnet_cases(batch=(2, 3))), data=st.data())
def test_batch_independence(name, case, data):
    selector = data.draw(selectors(case.layer_shape, lists=False), label="selector")
    label = data.draw(st.integers(0, case.n_outputs - 1), label="target")

    def attribute(inputs):
        return METHOD_CALLS[name](case._replace(inputs=inputs), selector, label)

    assert axioms.batch_independence_gap(attribute, case.inputs) < 1e-10


@given(case=mlp_cases(batch=(1, 4)), data=st.data())
def test_internal_batch_size_never_changes_the_result(case, data):
    size = data.draw(st.integers(1, 40), label="internal_batch_size")
    method = data.draw(rules(), label="method")
    selector = data.draw(selectors(case.layer_shape), label="selector")
    common = dict(n_steps=7, method=method)
    for call in [lambda **kw: attrfx.neuron_integrated_gradients(case.model, case.layer, case.inputs, selector, **kw),
                 lambda **kw: attrfx.neuron_conductance(case.model, case.layer, case.inputs, selector, target=1, **kw),
                 lambda **kw: attrfx.layer_conductance(case.model, case.layer, case.inputs, target=1,
                                                       return_convergence_delta=True, **kw)]:
        whole, chunked = call(**common), call(internal_batch_size=size, **common)
        for a, b in zip(axioms._flat(whole), axioms._flat(chunked)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@given(case=mlp_cases(), data=st.data())
def test_list_of_selectors_equals_one_call_per_selector(case, data):
    many = data.draw(selectors(case.layer_shape).filter(lambda s: isinstance(s, list)), label="selectors")
    for call in [lambda s: attrfx.neuron_gradient(case.model, case.layer, case.inputs, s),
                 lambda s: attrfx.neuron_integrated_gradients(case.model, case.layer, case.inputs, s, n_steps=4),
                 lambda s: attrfx.neuron_conductance(case.model, case.layer, case.inputs, s, target=0, n_steps=4)]:
        together = call(many)
        assert together.shape == (len(many),) + tuple(case.inputs.shape)
        for k, selector in enumerate(many):
            torch.testing.assert_close(together[k], call(selector), rtol=1e-12, atol=1e-12)


# --- quadrature rules ----------------------------------------------------------------------------------------

@given(method=rules(), n=st.integers(2, 80), c0=st.floats(-10, 10), c1=st.floats(-10, 10))
def test_every_rule_is_exact_on_constants_and_the_symmetric_ones_on_lines(method, n, c0, c1):
    rule = attrfx.quadrature.get_rule(method, n)
    assert abs(float(rule.weights.sum()) - 1.0) < 1e-13
    line = float((rule.weights * (c0 + c1 * rule.alphas)).sum())
    exact = c0 + c1 / 2
    expected_error = {"riemann_left": -c1 / (2 * n), "riemann_right": c1 / (2 * n)}.get(method, 0.0)
    assert abs(line - (exact + expected_error)) < 1e-11 * (1 + abs(c0) + abs(c1))


@given(n=st.integers(1, 30), degree=st.integers(0, 59))
def test_gauss_legendre_is_exact_up_to_degree_2n_minus_1(n, degree):
    assume(degree <= 2 * n - 1)
    rule = attrfx.quadrature.gausslegendre(n)
    assert abs(float((rule.weights * rule.alphas ** degree).sum()) - 1 / (degree + 1)) < 1e-12


# --- statelessness ----------------------------------------------------------------------------------------------

class Exploding(nn.Module):
    """A BatchNorm model in training mode that raises in its forward when told to."""

    def __init__(self):
        super().__init__()
        self.fc, self.bn, self.act, self.out = nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 2)
        self.explode_after = None

    def forward(self, x):
        h = self.act(self.bn(self.fc(x)))
        if self.explode_after is not None and h.shape[0] > self.explode_after:
            raise RuntimeError("boom")
        return self.out(h)


ALL_CALLS = {
    "neuron_gradient": lambda m, x: attrfx.neuron_gradient(m, "act", x, 1),
    "neuron_integrated_gradients": lambda m, x: attrfx.neuron_integrated_gradients(m, "act", x, [1, 2], n_steps=4),
    "neuron_conductance": lambda m, x: attrfx.neuron_conductance(m, "act", x, 1, target=1, n_steps=4,
                                                                 internal_batch_size=4),
    "neuron_gradient_shap": lambda m, x: attrfx.neuron_gradient_shap(m, "act", x, 1, torch.zeros(3, 4), n_samples=3),
    "layer_gradient_x_activation": lambda m, x: attrfx.layer_gradient_x_activation(m, ["act", "fc"], x, target=0),
    "layer_gradcam": lambda m, x: attrfx.layer_gradcam(m, "bn", x, target=0, attribute_to_layer_input=True),
    "layer_conductance": lambda m, x: attrfx.layer_conductance(m, "act", x, target=0, n_steps=3,
                                                               return_convergence_delta=True),
}


@pytest.mark.parametrize("name", sorted(ALL_CALLS))
@given(explode_after=st.one_of(st.none(), st.integers(1, 12)), requires_grad=st.booleans())
def test_calls_leave_model_and_inputs_as_they_were(name, explode_after, requires_grad):
    torch.manual_seed(0)
    model = Exploding().train()
    model.explode_after = explode_after
    x = torch.randn(3, 4).requires_grad_(requires_grad)
    assert axioms.statelessness_violations(lambda: ALL_CALLS[name](model, x), model, x) == []
    rng = torch.get_rng_state()
    model.explode_after = None
    before = ALL_CALLS[name](model, x)  # and the model still works afterwards, with the same answer
    again = ALL_CALLS[name](model, x)
    if name != "neuron_gradient_shap":
        for a, b in zip(axioms._flat(before), axioms._flat(again)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(rng, torch.get_rng_state()), "the global RNG was touched"
