"""The public primitives, on their own and composed by hand into the library's methods."""

import math
import re
import threading
from fractions import Fraction

import mpmath  # (a dependency of torch, through sympy)
import numpy as np
import pytest
import torch
from captum.attr._utils.approximation_methods import approximation_parameters
from torch import nn

import attrfx
from attrfx import gradients, noise, paths, probe, quadrature, selectors
from models import ConvNet, MLP, Residual, randn, seeded

RULE_NAMES = sorted(quadrature.RULES)


# --- quadrature -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", RULE_NAMES)
@pytest.mark.parametrize("n", [2, 3, 7, 50])
def test_nodes_and_weights_match_captum(method, n):
    step_sizes, alphas = approximation_parameters(method)
    rule = quadrature.get_rule(method, n)
    np.testing.assert_allclose(rule.alphas.numpy(), alphas(n), rtol=0, atol=1e-7)  # Captum rounds to float32
    expected = np.asarray(step_sizes(n)) * (n / (n - 1) if method == "riemann_trapezoid" else 1.0)
    np.testing.assert_allclose(rule.weights.numpy(), expected, rtol=1e-12)


def _gauss_legendre_reference(n: int, digits: int = 40) -> tuple[list, list]:
    """Gauss–Legendre nodes and weights on [0, 1] to ``digits`` digits, independently of numpy: Newton's method
    on the three-term recurrence of the Legendre polynomial Pₙ, weights ``2 / ((1 − t²)·Pₙ'(t)²)`` (halved)."""

    def legendre_pair(t):  # Pₙ(t), Pₙ₋₁(t)
        older, old = mpmath.mpf(1), t
        for k in range(2, n + 1):
            older, old = old, ((2 * k - 1) * t * old - (k - 1) * older) / k
        return old, older

    with mpmath.workdps(digits):
        nodes, weights = [], []
        for i in range(1, n + 1):
            t, step = mpmath.cos(mpmath.pi * (i - mpmath.mpf(1) / 4) / (n + mpmath.mpf(1) / 2)), 1
            while abs(step) > mpmath.mpf(10) ** (3 - digits):
                p, q = legendre_pair(t)
                slope = n * (t * p - q) / (t * t - 1)
                step = p / slope
                t -= step
            nodes.append((1 + t) / 2)
            weights.append(1 / ((1 - t * t) * slope ** 2))
        return nodes[::-1], weights[::-1]


EXACT_RULES = {  # nodes and weights as exact fractions (or 40 digits), computed without attrfx or numpy
    "riemann_left": lambda n: ([Fraction(s, n) for s in range(n)], [Fraction(1, n)] * n),
    "riemann_right": lambda n: ([Fraction(s + 1, n) for s in range(n)], [Fraction(1, n)] * n),
    "riemann_middle": lambda n: ([Fraction(2 * s + 1, 2 * n) for s in range(n)], [Fraction(1, n)] * n),
    "riemann_trapezoid": lambda n: ([Fraction(s, n - 1) for s in range(n)],
                                    [Fraction(1, (n - 1) * (2 if s in (0, n - 1) else 1)) for s in range(n)]),
    "gausslegendre": _gauss_legendre_reference,
}


@pytest.mark.parametrize("method", RULE_NAMES)
@pytest.mark.parametrize("n", [2, 3, 7, 50, 64])
def test_rules_are_float64_to_the_last_digits(method, n):
    """Nodes and weights are the exact rule's, rounded once to float64, and the weights sum to 1 to float64 eps.

    (Captum rounds its step sizes, and its Riemann nodes, to float32: ~3e-8 relative, some 10⁸ float64 units.
    The Gauss–Legendre weights, numpy's, carry a few float64 units at large n; 16 units bound them here.)
    """
    alphas, weights = EXACT_RULES[method](n)
    rule = quadrature.get_rule(method, n)
    eps = np.finfo(np.float64).eps
    assert rule.alphas.dtype == rule.weights.dtype == torch.float64
    np.testing.assert_allclose(rule.alphas.numpy(), [float(a) for a in alphas], rtol=0, atol=eps)
    np.testing.assert_allclose(rule.weights.numpy(), [float(w) for w in weights], rtol=0, atol=16 * eps)
    assert abs(math.fsum(rule.weights.tolist()) - 1) <= eps


def test_rules_are_values():
    rule = quadrature.riemann_middle(4)
    assert isinstance(rule, quadrature.Rule) and len(rule) == 4
    assert rule.slice(1, 3).alphas.tolist() == [0.375, 0.625]


def test_gauss_legendre_nodes_are_computed_once_per_size_and_each_rule_is_its_own_value(monkeypatch):
    calls = []
    leggauss = np.polynomial.legendre.leggauss
    monkeypatch.setattr(np.polynomial.legendre, "leggauss", lambda n: calls.append(n) or leggauss(n))
    quadrature._legendre.cache_clear()                    # other tests may have asked for this size already
    first = quadrature.gausslegendre(37)
    first.alphas.add_(1.0)                                # a caller may change its own rule in place
    second = quadrature.gausslegendre(37)
    assert calls == [37]                                  # the nodes of a size are found once per process
    np.testing.assert_allclose(second.alphas.numpy(), 0.5 * (1 + leggauss(37)[0]), rtol=0, atol=0)
    np.testing.assert_allclose(second.weights.numpy(), 0.5 * leggauss(37)[1], rtol=0, atol=0)


def _exactness_degree(rule: quadrature.Rule) -> int:
    """The largest d with Σ w·Pₖ(2α − 1) = ∫₀¹ Pₖ(2α − 1) dα (1 for k = 0, else 0) for every k ≤ d (Legendre Pₖ)."""
    t = 2 * rule.alphas.numpy() - 1
    for k in range(4 * len(rule)):
        if abs(rule.weights.numpy() @ np.polynomial.legendre.legval(t, np.eye(k + 1)[k]) - (k == 0)) > 1e-12:
            return k - 1
    raise AssertionError("exact beyond any degree")


@pytest.mark.parametrize("level, size, degree", [(0, 8, 15), (1, 17, 25), (2, 35, 53), (3, 71, 107)])
def test_gauss_kronrod_patterson_levels_are_nested_with_their_degree(level, size, degree):
    rule = quadrature.gauss_kronrod_patterson(level)
    assert len(rule) == size and bool((rule.weights > 0).all()) and bool(((rule.alphas > 0) & (rule.alphas < 1)).all())
    assert _exactness_degree(rule) >= degree
    below = quadrature.gausslegendre(8) if level == 0 else quadrature.gauss_kronrod_patterson(level - 1)
    assert bool(torch.isin(below.alphas, rule.alphas).all())
    if level == 0:
        assert torch.allclose(rule.weights, below.weights, rtol=0, atol=1e-15)


def test_gauss_kronrod_patterson_from_three_nodes_is_the_classic_sequence():
    """Patterson's 3, 7, 15, 31-node rules; degrees 5, 11, 23, 47."""
    for level, (size, degree) in enumerate([(3, 5), (7, 11), (15, 23), (31, 47)]):
        rule = quadrature.gauss_kronrod_patterson(level, first=3)
        assert len(rule) == size and _exactness_degree(rule) == degree


@pytest.mark.parametrize("level, first, fragment", [(-1, 8, "`level` must be at least 0"),
                                                    (4, 8, "`level` must be at most 3"),
                                                    (1.5, 8, "`level` must be an int"),
                                                    (0, 0, "`first` must be at least 1")])
def test_gauss_kronrod_patterson_rejects_bad_levels(level, first, fragment):
    with pytest.raises((ValueError, TypeError), match=re.escape(fragment)):
        quadrature.gauss_kronrod_patterson(level, first)


def test_interpolant_integrals_split_the_interpolatory_rule():
    nodes = quadrature.gausslegendre(5).alphas.numpy()
    cuts = np.array([0.0, 0.1, 0.5, 1.0])
    pieces = quadrature.interpolant_integrals(nodes, cuts)
    cubic = lambda a: 4 * a ** 3 - a + 2          # noqa: E731  (through 5 nodes: the interpolant is itself)
    antiderivative = lambda a: a ** 4 - a ** 2 / 2 + 2 * a   # noqa: E731
    np.testing.assert_allclose(pieces @ cubic(nodes), np.diff(antiderivative(cuts)), rtol=1e-13)
    np.testing.assert_allclose(pieces.sum(0), quadrature.gausslegendre(5).weights.numpy(), rtol=1e-13)


# --- paths ------------------------------------------------------------------------------------------------

def test_straight_line_runs_from_baseline_to_input_path_axis_first():
    x, b = randn(3, 2), randn(1, 2, seed=2)
    (points,) = paths.straight_line((x,), (b,), torch.tensor([0.0, 0.25, 1.0]))
    assert points.shape == (3, 3, 2)
    torch.testing.assert_close(points[0], b.expand(3, 2))
    torch.testing.assert_close(points[1], b + 0.25 * (x - b))
    torch.testing.assert_close(points[2], x)


def test_path_velocity_of_a_curved_path():
    path = lambda xs, bs, a: tuple(b + a[:, None, None] ** 2 * (x - b) for x, b in zip(xs, bs))
    x, b = randn(2, 3), torch.zeros(())
    (v,) = paths.path_velocity(path, (x,), (b,), torch.tensor([0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(v, torch.stack([1.0 * x, 2.0 * x]))


def test_integrate_in_chunks_equals_integrate_at_once():
    g = lambda r: (torch.sin(3 * r.alphas)[:, None] * torch.arange(1.0, 4.0, dtype=torch.float64),)
    rule = quadrature.gausslegendre(11)
    whole, chunked = paths.integrate(g, rule, 11)[0], paths.integrate(g, rule, 3)[0]
    torch.testing.assert_close(whole, chunked, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(whole, (1 - np.cos(3)) / 3 * torch.arange(1.0, 4.0, dtype=torch.float64))


def test_integrate_differences_telescopes_for_constant_g():
    h = lambda a: (torch.exp(a)[:, None],)
    ev = lambda a: (h(a), (torch.ones(len(a), 1, dtype=torch.float64),))
    nodes = torch.linspace(0, 1, 9, dtype=torch.float64)
    for chunk in (1, 2, 4, 9):
        (total,) = paths.integrate_differences(ev, nodes, chunk)
        torch.testing.assert_close(total, torch.tensor([np.e - 1], dtype=torch.float64))


# --- probe --------------------------------------------------------------------------------------------------

class Counting(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_forward_to_layer_stops_at_the_layer():
    net = nn.Sequential(nn.Linear(3, 4), Counting(nn.Tanh()), Counting(nn.Linear(4, 2)))
    h = probe.forward_to_layer(net, net[1], (torch.ones(5, 3),))
    assert h[0].shape == (5, 4) and net[1].calls == 1 and net[2].calls == 0


def test_forward_with_probe_gradient_is_the_layer_gradient():
    model, x = seeded(MLP), randn(4, 5)
    sites = probe.inspect_layers(model, [model.act1], (x,), ())
    target = selectors.format_target(2, 4)
    (acts,), (grads,) = gradients.layer_grads(model, sites, (x,), (), target)
    h = model.act1(model.fc1(x)).requires_grad_()
    expected = torch.autograd.grad(model.fc3(model.act2(model.fc2(h)))[:, 2].sum(), h)[0]
    torch.testing.assert_close(acts[0], h.detach())
    torch.testing.assert_close(grads[0], expected)


def test_layer_input_is_shifted_where_it_is_made():
    model = seeded(Residual)
    (site,) = probe.inspect_layers(model, [model.inner], (randn(2, 4),), (), at_input=True)
    assert site.sources == (probe.Source("output", model.fc_in, 0, 0),)
    (first,) = probe.inspect_layers(model, [model.fc_in], (randn(2, 4),), (), at_input=True)
    assert first.sources == (probe.Source("input", None, 0, 0),)


def test_hooks_are_removed_when_the_model_raises():
    class Fails(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            self.fc(x)
            raise KeyError("inside the model")

    model = Fails()
    with pytest.raises(KeyError, match="inside the model"):
        attrfx.layer_gradient_x_activation(model, "fc", torch.ones(2, 2), target=0)
    assert not model.fc._forward_hooks and not model.fc._forward_pre_hooks and not model._forward_hooks


def test_hooks_act_only_on_the_calling_thread():
    model, x = seeded(ConvNet), randn(3, 2, 8, 8)
    expected = attrfx.layer_conductance(model, "conv2", x, target=1, n_steps=20)
    results, errors = [], []

    def attribute():
        try:
            results.append(attrfx.layer_conductance(model, "conv2", x, target=1, n_steps=20))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    def plain_forwards():
        for _ in range(30):
            model(x)

    threads = [threading.Thread(target=attribute) for _ in range(3)] + [threading.Thread(target=plain_forwards)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 3
    for r in results:
        torch.testing.assert_close(r, expected, rtol=0, atol=0)


# --- noise ---------------------------------------------------------------------------------------------------

def test_noise_is_reproducible_from_the_generator_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    draws = []
    for _ in range(2):
        g = torch.Generator().manual_seed(7)
        draws.append((noise.gaussian_noise((torch.zeros(2, 3),), 0.5, 4, g)[0],
                      noise.sample_baselines((torch.arange(10.0)[:, None],), 4, 2, g)[0],
                      noise.uniform(4, 2, torch.zeros(1), g)))
    for a, b in zip(*draws):
        assert torch.equal(a, b)
    assert torch.equal(state, torch.get_rng_state())
    assert draws[0][0].shape == (4, 2, 3) and draws[0][1].shape == (4, 2, 1) and draws[0][2].shape == (4, 2)


def test_gradient_shap_is_reproducible_from_the_generator():
    model, x = seeded(MLP), randn(3, 5)
    run = lambda seed: attrfx.neuron_gradient_shap(model, "act2", x, 1, randn(6, 5, seed=3), n_samples=4, stdevs=0.2,
                                                   generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))


# --- the methods composed by hand from the same primitives ------------------------------------------------------

def test_neuron_integrated_gradients_by_hand():
    model, x = seeded(ConvNet), randn(2, 2, 8, 8)
    layer = model.relu1
    (site,) = probe.inspect_layers(model, [layer], (x,), ())
    neurons, _ = selectors.neuron_selectors((1, 2, 2), site)
    zero = (torch.zeros((), dtype=x.dtype),)
    rule = quadrature.riemann_middle(6)
    with torch.no_grad():
        (total,) = paths.integrate_path(lambda pts, s: gradients.neuron_input_grads(model, layer, neurons, pts, ()),
                                        (x,), zero, rule, chunk=6)
    expected = attrfx.neuron_integrated_gradients(model, "relu1", x, (1, 2, 2), n_steps=6, method="riemann_middle")
    torch.testing.assert_close(total[0] * x, expected, rtol=1e-12, atol=1e-12)


def test_layer_gradient_x_activation_by_hand():
    model, x = seeded(ConvNet), randn(2, 2, 8, 8)
    sites = probe.inspect_layers(model, [model.conv2], (x,), ())
    with torch.no_grad():
        (acts,), (grads,) = gradients.layer_grads(model, sites, (x,), (), selectors.format_target(3, 2))
    torch.testing.assert_close(acts[0] * grads[0], attrfx.layer_gradient_x_activation(model, "conv2", x, target=3))


def test_neuron_conductance_by_hand():
    model, x = seeded(MLP), randn(3, 5)
    (site,) = probe.inspect_layers(model, [model.act2], (x,), ())
    neurons, _ = selectors.neuron_selectors(4, site)
    target = selectors.format_target(0, 3)
    zero = (torch.zeros((), dtype=x.dtype),)

    def flow(points, s):
        grads, rates = gradients.conductance_grads(model, site, neurons, points, (), target.repeat(s))
        return (grads[0] * rates[..., None],)

    with torch.no_grad():
        (total,) = paths.integrate_path(flow, (x,), zero, quadrature.gausslegendre(9), chunk=4)
    expected = attrfx.neuron_conductance(model, "act2", x, 4, target=0, n_steps=9, method="gausslegendre")
    torch.testing.assert_close(total[0] * x, expected, rtol=1e-12, atol=1e-12)
