"""Completeness gap against integrand evaluations: fixed rules, ``n_steps="auto"`` and Captum.

    .venv/bin/python -m benchmarks.adaptive                 # mlp, cnn, tfm (about 10 min on 2 CPU cores)
    .venv/bin/python -m benchmarks.adaptive --models tfm --quick

For each reference model of :mod:`benchmarks.models` (float32, zero baseline,
target logit ``case.target``) it prints, per configuration, the median and
largest relative completeness gap ``|Σ attributions − (F(x) − F(b))| / |F(x) − F(b)|``
over the batch, and the integrand evaluations per example (median / largest):

- integrated gradients of the target logit (``neuron_integrated_gradients`` at
  the output layer; Captum: ``IntegratedGradients``);
- ``layer_conductance`` at the model's "late" layer (a layer every path
  crosses, so completeness holds; Captum: ``LayerConductance``).

First, on a smooth model (a tanh MLP in float64), it compares auto's evaluations
per example with the fewest Gauss–Legendre nodes that reach the same gap; then
the same on analytic integrands with known integrals (smooth ones and narrow
features), through :func:`attrfx.adaptive.adaptive_integrate` directly.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import attrfx  # noqa: E402
from attrfx import axioms  # noqa: E402
from attrfx.adaptive import IntegrationBudgetWarning, adaptive_integrate  # noqa: E402
from attrfx.quadrature import gausslegendre  # noqa: E402
from benchmarks.models import build  # noqa: E402

OUTPUT = {"mlp": "fc3", "cnn": "fc", "tfm": "head"}
TOLERANCES = (1e-2, 5e-3, 2e-3, 1e-3)


def _row(label: str, gaps: torch.Tensor, evals, seconds: float) -> None:
    g = gaps.abs().double()
    ev = evals if isinstance(evals, list) else [evals] * g.numel()
    print(f"  {label:38s} gap median {float(g.median()):9.2e}  max {float(g.max()):9.2e}   "
          f"evals median {statistics.median(ev):6.1f}  max {max(ev):4d}   {seconds:6.1f}s", flush=True)


def _timed(fn):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IntegrationBudgetWarning)
        out = fn()
    return out, time.perf_counter() - start


def run(name: str, quick: bool) -> None:
    from captum.attr import IntegratedGradients, LayerConductance

    case = build(name)
    model, x, target = case.model, case.inputs, case.target
    change = axioms.output_difference(model, x, target=target)
    steps = (8, 16, 32, 64) if quick else (8, 16, 32, 64, 128, 256)
    rules = ("gausslegendre", "riemann_trapezoid") if quick else \
        ("gausslegendre", "riemann_middle", "riemann_trapezoid", "riemann_left")
    print(f"\n{name}: integrated gradients of logit {target} ({x.shape[0]} examples)")
    for method in rules:
        for n in steps:
            attr, s = _timed(lambda: attrfx.neuron_integrated_gradients(model, OUTPUT[name], x, target, n_steps=n,
                                                                        method=method))
            _row(f"attrfx {method} n={n}", axioms.completeness_gap(attr, change) / change.abs(), n, s)
    for n in steps[1::2]:
        (_, delta), s = _timed(lambda: IntegratedGradients(model).attribute(
            x, target=target, n_steps=n, method="gausslegendre", return_convergence_delta=True))
        _row(f"captum IG gausslegendre n={n}", delta / change.abs(), n, s)
    for tol in TOLERANCES:
        (attr, conv), s = _timed(lambda: attrfx.neuron_integrated_gradients(
            model, OUTPUT[name], x, target, n_steps="auto", tolerance=tol, return_convergence_delta=True))
        _row(f"attrfx auto tolerance={tol:g}", axioms.completeness_gap(attr, change) / change.abs(),
             conv.evaluations.tolist(), s)

    layer = case.layers["late"]
    print(f"{name}: layer_conductance at {layer!r}, logit {target}")
    for method in ("gausslegendre", "riemann_trapezoid"):
        for n in steps[1::2]:
            (_, delta), s = _timed(lambda: attrfx.layer_conductance(model, layer, x, target=target, n_steps=n,
                                                                    method=method, return_convergence_delta=True))
            _row(f"attrfx {method} n={n}", delta / change.abs(), n + 1, s)
    for n in steps[1::2]:
        module = model.get_submodule(layer)
        (_, delta), s = _timed(lambda: LayerConductance(model, module).attribute(
            x, target=target, n_steps=n, method="gausslegendre", return_convergence_delta=True))
        _row(f"captum LC gausslegendre n={n}", delta / change.abs(), n + 1, s)
    for tol in TOLERANCES:
        (_, conv), s = _timed(lambda: attrfx.layer_conductance(model, layer, x, target=target, n_steps="auto",
                                                               tolerance=tol, return_convergence_delta=True))
        _row(f"attrfx auto tolerance={tol:g}", conv.delta / change.abs(), conv.evaluations.tolist(), s)


def smooth() -> None:
    """A smooth integrand (tanh MLP, float64): auto's evaluations against Gauss–Legendre's for the same gap."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64), torch.nn.Tanh(),
                                torch.nn.Linear(64, 3)).double().eval()
    x = 3 * torch.randn(8, 16, dtype=torch.float64)
    change = axioms.output_difference(model, x, target=0)

    def relative_gaps(n):
        attr = attrfx.neuron_integrated_gradients(model, "4", x, 0, n_steps=n, method="gausslegendre")
        return (axioms.completeness_gap(attr, change) / change.abs()).abs()

    gl = {n: relative_gaps(n) for n in range(1, 129)}
    print("\nsmooth: tanh MLP 16-64-64-3 (float64), integrated gradients of logit 0, 8 examples")
    for tol in (1e-4, 1e-6, 1e-8, 1e-10):
        attr, conv = attrfx.neuron_integrated_gradients(model, "4", x, 0, n_steps="auto", tolerance=tol,
                                                        return_convergence_delta=True)
        gaps = (axioms.completeness_gap(attr, change) / change.abs()).abs()
        same = [min([n for n in gl if gl[n][i] <= max(float(gaps[i]), 1e-14)], default=999) for i in range(len(x))]
        ratios = [e / g for e, g in zip(conv.evaluations.tolist(), same)]
        print(f"  auto tolerance={tol:g}: evals {conv.evaluations.tolist()}  gausslegendre for the same gap {same}  "
              f"ratio max {max(ratios):.2f}")


D = torch.float64
SMOOTH = {   # integrand φ and antiderivative Φ on [0, 1]
    "Runge 1/(1+25(2α−1)²)": (lambda a: 1 / (1 + 25 * (2 * a - 1) ** 2), lambda a: torch.atan(5 * (2 * a - 1)) / 10),
    "Runge 1/(1+100(2α−1)²)": (lambda a: 1 / (1 + 100 * (2 * a - 1) ** 2),
                               lambda a: torch.atan(10 * (2 * a - 1)) / 20),
    "Lorentzian at 0.1, width 0.05": (lambda a: 1 / (1 + ((a - 0.1) / 0.05) ** 2),
                                      lambda a: 0.05 * torch.atan((a - 0.1) / 0.05)),
    "cos(20α) + 1.1": (lambda a: torch.cos(20 * a) + 1.1, lambda a: torch.sin(20 * a) / 20 + 1.1 * a),
    "cos(40α) + 1.1": (lambda a: torch.cos(40 * a) + 1.1, lambda a: torch.sin(40 * a) / 40 + 1.1 * a),
    "cos(60α) + 1.1": (lambda a: torch.cos(60 * a) + 1.1, lambda a: torch.sin(60 * a) / 60 + 1.1 * a),
    "Gaussian at 0.3, width 0.1": (lambda a: torch.exp(-((a - 0.3) / 0.1) ** 2),
                                   lambda a: 0.05 * math.sqrt(math.pi) * torch.erf((a - 0.3) / 0.1)),
    "Gaussian at 0.5, width 0.03": (lambda a: torch.exp(-((a - 0.5) / 0.03) ** 2),
                                    lambda a: 0.015 * math.sqrt(math.pi) * torch.erf((a - 0.5) / 0.03)),
    "1/(α + 0.05)": (lambda a: 1 / (a + 0.05), lambda a: torch.log(a + 0.05)),
    "tanh(10(α − 0.4)) + 1": (lambda a: torch.tanh(10 * (a - 0.4)) + 1,
                              lambda a: torch.log(torch.cosh(10 * (a - 0.4))) / 10 + a),
}
FEATURES = {
    "Gaussian spike at 3e-4, width 1e-4": (
        lambda a: torch.exp(-((a - 3e-4) / 1e-4) ** 2 / 2) + 1e-3,
        lambda a: 1e-4 * math.sqrt(math.pi / 2) * torch.erf((a - 3e-4) / (1e-4 * math.sqrt(2))) + 1e-3 * a),
    "step smoothed over 1e-4": (lambda a: torch.sigmoid((a - 0.3) / 1e-4),
                                lambda a: 1e-4 * torch.nn.functional.softplus((a - 0.3) / 1e-4)),
    "LayerNorm-like 1e-8/(α²+1e-8)^1.5": (lambda a: 1e-8 / (a * a + 1e-8) ** 1.5, lambda a: a / torch.sqrt(a * a + 1e-8)),
    "7 unit steps ⌊7.3α⌋ + 1": (lambda a: torch.floor(7.3 * a) + 1,
                               lambda a: (torch.floor(7.3 * a) * (torch.floor(7.3 * a) + 1) / 2
                                          + (torch.floor(7.3 * a) + 1) * (7.3 * a - torch.floor(7.3 * a))) / 7.3),
}


def _auto_on(phi, Phi, tolerance: float) -> tuple[float, int]:
    """Relative gap and evaluations of ``n_steps="auto"`` on ``∫₀¹ φ``."""
    def evaluate(examples, alphas):
        return phi(alphas)[None], Phi(alphas)[None], (phi(alphas)[None, :, None],)

    ends = (Phi(torch.zeros(1, 1, dtype=D)), Phi(torch.ones(1, 1, dtype=D)))
    exact = float(ends[1] - ends[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IntegrationBudgetWarning)
        (total,), conv = adaptive_integrate(evaluate, ends, tolerance=tolerance)
    return abs(total.item() - exact) / abs(exact), int(conv.evaluations)


def _gausslegendre_for(phi, Phi, gap: float) -> int:
    """The fewest Gauss–Legendre nodes whose relative gap is at most ``gap`` (floored at 1e-15)."""
    exact = float(Phi(torch.ones((), dtype=D)) - Phi(torch.zeros((), dtype=D)))
    for n in range(1, 1000):
        rule = gausslegendre(n)
        if abs(float(rule.weights @ phi(rule.alphas)) - exact) <= max(gap, 1e-15) * abs(exact):
            return n
    return 1000


def analytic() -> None:
    """Analytic integrands (float64): auto's evaluations, and Gauss–Legendre's for the gap auto reached."""
    print("\nanalytic integrands (float64): auto evaluations / Gauss–Legendre nodes for the same gap (ratio)")
    for label, group in (("smooth", SMOOTH), ("narrow features", FEATURES)):
        print(f"  {label}:")
        for name, (phi, Phi) in group.items():
            cells = []
            for tol in (1e-3, 1e-6, 1e-9):
                gap, evals = _auto_on(phi, Phi, tol)
                same = _gausslegendre_for(phi, Phi, gap)
                cells.append(f"tol {tol:g}: {evals:3d} / {same:4d} ({evals / same:4.2f}) gap {gap:7.1e}")
            print(f"    {name:38s} " + "   ".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn", "tfm"], choices=["mlp", "cnn", "tfm"])
    parser.add_argument("--quick", action="store_true", help="fewer rules and step counts")
    args = parser.parse_args()
    torch.set_num_threads(2)
    smooth()
    analytic()
    for name in args.models:
        run(name, args.quick)


if __name__ == "__main__":
    main()
