"""n_steps="auto": adaptive path integration that stops when completeness holds (attrfx.adaptive)."""

import math
import re

import pytest
import torch
from torch import nn

import attrfx
from attrfx import axioms
from attrfx.adaptive import IntegrationBudgetWarning, adaptive_differences, adaptive_integrate
from attrfx.quadrature import interpolatory_rule
from attrfx.quadrature import gausslegendre

D = torch.float64
SQ = math.sqrt(2.0)

# integrand φ and antiderivative Φ on [0, 1]
ANALYTIC = {
    "polynomial": (lambda a: 8 * a ** 7 - 3 * a ** 2 + 1, lambda a: a ** 8 - a ** 3 + a),
    "runge": (lambda a: 1 / (1 + 25 * (2 * a - 1) ** 2), lambda a: torch.atan(5 * (2 * a - 1)) / 10),
    "spike near 0": (lambda a: torch.exp(-((a - 3e-4) / 1e-4) ** 2 / 2) + 1e-3,
                     lambda a: 1e-4 * math.sqrt(math.pi / 2) * torch.erf((a - 3e-4) / (1e-4 * SQ)) + 1e-3 * a),
    "step smoothed over 1e-4": (lambda a: torch.sigmoid((a - 0.3) / 1e-4),
                                lambda a: 1e-4 * nn.functional.softplus((a - 0.3) / 1e-4)),
    "layernorm-like": (lambda a: 1e-8 / (a * a + 1e-8) ** 1.5, lambda a: a / torch.sqrt(a * a + 1e-8)),
    "sharp runge": (lambda a: 1 / (1 + 100 * (2 * a - 1) ** 2), lambda a: torch.atan(10 * (2 * a - 1)) / 20),
    "gaussian of width 0.03": (lambda a: torch.exp(-((a - 0.5) / 0.03) ** 2),
                               lambda a: 0.015 * math.sqrt(math.pi) * torch.erf((a - 0.5) / 0.03)),
}


def integrate_analytic(phi, Phi, tolerance, max_steps=256):
    def evaluate(examples, alphas):
        return phi(alphas)[None], Phi(alphas)[None], (phi(alphas)[None, :, None],)

    ends = (Phi(torch.zeros(1, 1, dtype=D)), Phi(torch.ones(1, 1, dtype=D)))
    (total,), conv = adaptive_integrate(evaluate, ends, tolerance=tolerance, max_steps=max_steps)
    return total.item(), float(ends[1] - ends[0]), conv


@pytest.mark.parametrize("name", sorted(ANALYTIC))
@pytest.mark.parametrize("tolerance", [1e-3, 1e-6])
def test_analytic_integrands_meet_the_tolerance_within_the_budget(name, tolerance):
    total, exact, conv = integrate_analytic(*ANALYTIC[name], tolerance)
    assert bool(conv.converged.all()) and int(conv.evaluations) <= 256
    assert abs(total - exact) <= tolerance * abs(exact)
    assert abs(conv.delta.item() - (total - exact)) <= 1e-12 * abs(exact)


def test_a_smooth_integrand_costs_what_gausslegendre_costs():
    """A first pass that meets the tolerance is the Gauss–Legendre rule itself."""
    total, exact, conv = integrate_analytic(*ANALYTIC["polynomial"], 1e-8)
    rule = gausslegendre(int(conv.evaluations))
    assert int(conv.evaluations) == 8 and total == pytest.approx(float(rule.weights @ ANALYTIC["polynomial"][0](rule.alphas)))


SMOOTH = {   # analytic on [0, 1], none of them a polynomial of low degree
    "runge": ANALYTIC["runge"],
    "lorentzian near 0.1": (lambda a: 1 / (1 + ((a - 0.1) / 0.05) ** 2), lambda a: 0.05 * torch.atan((a - 0.1) / 0.05)),
    "cos(20α)": (lambda a: torch.cos(20 * a) + 1.1, lambda a: torch.sin(20 * a) / 20 + 1.1 * a),
    "cos(60α)": (lambda a: torch.cos(60 * a) + 1.1, lambda a: torch.sin(60 * a) / 60 + 1.1 * a),   # unresolved at 8
    "gaussian of width 0.1": (lambda a: torch.exp(-((a - 0.3) / 0.1) ** 2),
                              lambda a: 0.05 * math.sqrt(math.pi) * torch.erf((a - 0.3) / 0.1)),
    "pole at -0.05": (lambda a: 1 / (a + 0.05), lambda a: torch.log(a + 0.05)),
    "tanh(10α)": (lambda a: torch.tanh(10 * (a - 0.4)) + 1, lambda a: torch.log(torch.cosh(10 * (a - 0.4))) / 10 + a),
}


def gausslegendre_steps_for(phi, Phi, gap: float) -> int:
    """The fewest Gauss–Legendre nodes whose error is at most ``gap``."""
    exact = float(Phi(torch.ones((), dtype=D)) - Phi(torch.zeros((), dtype=D)))
    for n in range(1, 300):
        rule = gausslegendre(n)
        if abs(float(rule.weights @ phi(rule.alphas)) - exact) <= gap:
            return n
    raise AssertionError("gausslegendre did not reach the gap")


@pytest.mark.parametrize("name", sorted(SMOOTH))
@pytest.mark.parametrize("tolerance", [1e-3, 1e-6, 1e-9])
def test_smooth_integrands_cost_at_most_a_quarter_more_than_gausslegendre(name, tolerance):
    """For the gap auto reaches, Gauss–Legendre needs at least 80% of auto's evaluations."""
    phi, Phi = SMOOTH[name]
    total, exact, conv = integrate_analytic(phi, Phi, tolerance)
    assert bool(conv.converged.all())
    gap = max(abs(total - exact), 1e-15 * abs(exact))
    assert int(conv.evaluations) <= 1.25 * gausslegendre_steps_for(phi, Phi, gap)


@pytest.mark.parametrize("name, most", [("spike near 0", 40), ("layernorm-like", 64), ("gaussian of width 0.03", 72)])
def test_narrow_features_are_met_at_1e_6_with_few_evaluations(name, most):
    """Splits grade towards a narrow feature and the split-off panel climbs its own ladder
    (Gauss–Legendre needs 441, 563 and 65 nodes for these gaps)."""
    total, exact, conv = integrate_analytic(*ANALYTIC[name], 1e-6)
    assert abs(total - exact) <= 1e-6 * abs(exact) and int(conv.evaluations) <= most


@pytest.mark.parametrize("name", ["sharp runge", "step smoothed over 1e-4", "gaussian of width 0.03"])
def test_every_evaluation_gets_a_stable_weight(name):
    """Panel rules never amplify noise in the integrand: ``Σ|w| ≤ 1.5`` over all evaluations.

    Each evaluated row integrates its own one-hot vector, so the result lists the weights.
    """
    phi, Phi = ANALYTIC[name]
    seen = []

    def evaluate(examples, alphas):
        rows = torch.arange(len(seen), len(seen) + len(alphas))
        seen.extend(alphas.tolist())
        return phi(alphas)[None], Phi(alphas)[None], (nn.functional.one_hot(rows, 300).to(D)[None],)

    ends = (Phi(torch.zeros(1, 1, dtype=D)), Phi(torch.ones(1, 1, dtype=D)))
    (weights,), conv = adaptive_integrate(evaluate, ends, tolerance=1e-6)
    assert bool(conv.converged.all()) and len(seen) == int(conv.evaluations)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(weights.abs().sum()) <= 1.5


def test_interpolatory_rule_on_gauss_nodes_is_gausslegendre():
    rule = gausslegendre(6)
    same = interpolatory_rule(rule.alphas, 0.0, 1.0)
    assert torch.allclose(same.weights, rule.weights, atol=1e-14)
    shifted = interpolatory_rule(0.25 + rule.alphas / 2, 0.25, 0.75)
    assert torch.allclose(shifted.weights, rule.weights / 2, atol=1e-14)


def test_stieltjes_sum_meets_the_tolerance():
    def evaluate(examples, alphas):      # h = (α, α²), F = sin h₁ + h₂³
        h = torch.stack([alphas, alphas ** 2], 1)
        return torch.sin(h[:, 0]) + h[:, 1] ** 3, (h,), (torch.stack([torch.cos(h[:, 0]), 3 * h[:, 1] ** 2], 1),)

    (attr,), conv = adaptive_differences(evaluate, 2, tolerance=1e-4)   # second order: ~ 1/n²
    assert torch.allclose(attr.sum(1), torch.full((2,), math.sin(1.0) + 1.0, dtype=D), rtol=1e-4, atol=0)
    assert torch.allclose(attr[:, 1], torch.ones(2, dtype=D), rtol=1e-3)
    assert bool(conv.converged.all())


# --- on models ------------------------------------------------------------------------------------------------

class Normed(nn.Module):
    """A LayerNorm near the input makes a narrow spike at small α (zero baseline)."""

    def __init__(self):
        super().__init__()
        self.lin1, self.norm, self.act, self.lin2 = nn.Linear(6, 8), nn.LayerNorm(8, eps=1e-6), nn.Tanh(), nn.Linear(8, 3)
        with torch.no_grad():
            self.lin1.bias.zero_()

    def forward(self, x):
        return self.lin2(self.act(self.norm(self.lin1(x))))


def models():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 10), nn.Softplus(), nn.Linear(10, 3)).double()
    return {"mlp": (mlp, "4", "2"), "normed": (Normed().double(), "lin2", "act")}


X = torch.randn(5, 6, generator=torch.Generator().manual_seed(1), dtype=D)


@pytest.mark.parametrize("name", ["mlp", "normed"])
def test_auto_integrated_gradients_agrees_with_a_fine_fixed_rule(name):
    model, out, _ = models()[name]
    change = axioms.neuron_difference(model, out, X, 1)
    attr, conv = attrfx.neuron_integrated_gradients(model, out, X, 1, n_steps="auto", tolerance=1e-5,
                                                    return_convergence_delta=True)
    fine = attrfx.neuron_integrated_gradients(model, out, X, 1, n_steps=500)
    assert bool(conv.converged.all()) and int(conv.evaluations.max()) <= 256
    assert torch.allclose(conv.delta, axioms.completeness_gap(attr, change), atol=1e-10)
    assert float(conv.delta.abs().max()) <= 1e-5 * float(change.abs().max())
    assert torch.allclose(attr, fine, rtol=1e-2, atol=1e-4 * float(fine.abs().max()))


def test_auto_layer_conductance_agrees_with_a_fine_fixed_rule():
    model, _, layer = models()["normed"]
    attr, conv = attrfx.layer_conductance(model, layer, X, target=1, n_steps="auto", tolerance=1e-5,
                                          return_convergence_delta=True)
    fine = attrfx.layer_conductance(model, layer, X, target=1, n_steps=4000, method="riemann_trapezoid")
    change = axioms.output_difference(model, X, target=1)
    assert bool(conv.converged.all())
    assert torch.allclose(conv.delta, axioms.completeness_gap(attr, change), atol=1e-10)
    assert torch.allclose(attr, fine, rtol=1e-3, atol=1e-3 * float(fine.abs().max()))


def test_auto_neuron_conductance_agrees_with_a_fine_fixed_rule():
    model, _, layer = models()["mlp"]
    attr, conv = attrfx.neuron_conductance(model, layer, X, [0, 3], target=2, n_steps="auto", tolerance=1e-5,
                                           return_convergence_delta=True)
    fine = attrfx.neuron_conductance(model, layer, X, [0, 3], target=2, n_steps=400, method="gausslegendre")
    assert conv.delta.shape == (2, 5) and bool(conv.converged.all())
    assert torch.allclose(attr, fine, rtol=1e-2, atol=1e-4 * float(fine.abs().max()))


@pytest.mark.parametrize("method", ["ig", "lc"])
def test_auto_is_batch_independent(method):
    model, out, layer = models()["normed"]

    def attribute(x):
        if method == "ig":
            return attrfx.neuron_integrated_gradients(model, out, x, 0, n_steps="auto", tolerance=1e-4)
        return attrfx.layer_conductance(model, layer, x, target=0, n_steps="auto", tolerance=1e-4)

    assert axioms.batch_independence_gap(attribute, X) < 1e-12


def test_running_out_of_budget_warns_and_reports():
    model, out, layer = models()["normed"]
    with pytest.warns(IntegrationBudgetWarning, match=r"neuron_integrated_gradients: .*max_steps=8 .*tolerance=1e-12"):
        _, conv = attrfx.neuron_integrated_gradients(model, out, X, 0, n_steps="auto", tolerance=1e-12, max_steps=8,
                                                     return_convergence_delta=True)
    assert not bool(conv.converged.any()) and int(conv.evaluations.max()) <= 8
    with pytest.warns(IntegrationBudgetWarning, match="layer_conductance"):
        attrfx.layer_conductance(model, "norm", X, target=0, n_steps="auto", tolerance=1e-12, max_steps=8)


def test_fixed_n_steps_is_unchanged():
    model, out, layer = models()["mlp"]
    assert isinstance(attrfx.neuron_integrated_gradients(model, out, X, 1), torch.Tensor)
    attr, delta = attrfx.layer_conductance(model, layer, X, target=0, return_convergence_delta=True)
    assert isinstance(delta, torch.Tensor) and delta.shape == (5,)


@pytest.mark.parametrize("kwargs, error, fragments", [
    (dict(tolerance=0.0), ValueError, ["`tolerance`", "(0, 1)", "0.0"]),
    (dict(tolerance="tight"), TypeError, ["`tolerance`", "float", "str"]),
    (dict(max_steps=3), ValueError, ["`max_steps`", "at least 8", "3"]),
    (dict(max_steps=100.0), TypeError, ["`max_steps`", "int", "float"]),
])
@pytest.mark.parametrize("method", ["neuron_integrated_gradients", "neuron_conductance", "layer_conductance"])
def test_bad_auto_arguments_are_named(kwargs, error, fragments, method):
    model, out, layer = models()["mlp"]
    call = {"neuron_integrated_gradients": lambda: attrfx.neuron_integrated_gradients(model, out, X, 0, n_steps="auto",
                                                                                       **kwargs),
            "neuron_conductance": lambda: attrfx.neuron_conductance(model, layer, X, 0, target=0, n_steps="auto",
                                                                    **kwargs),
            "layer_conductance": lambda: attrfx.layer_conductance(model, layer, X, n_steps="auto", target=0,
                                                                  **kwargs)}[method]
    with pytest.raises(error, match=".*".join(re.escape(f) for f in [f"{method}:"] + fragments)):
        call()


def test_convergence_report_needs_auto_for_neuron_methods():
    model, out, _ = models()["mlp"]
    with pytest.raises(ValueError, match=r"neuron_integrated_gradients: `return_convergence_delta`.*auto"):
        attrfx.neuron_integrated_gradients(model, out, X, 0, n_steps=10, return_convergence_delta=True)
