"""Path integrals of gradients: integrated gradients, ``(x − b)·∫₀¹ ∂f/∂x(b + α(x − b)) dα``.

The neuron form integrates ``∂n/∂x`` along the straight path (:func:`attrfx.paths.integrate_path`);
``n_steps="auto"`` chooses nodes per example (:func:`neuron_path_auto`, shared with conductance).
"""

from __future__ import annotations

from typing import Any

import torch  # noqa: F401 (the examples use torch and nn)
from torch import Tensor, nn  # noqa: F401

from .._api import public
from .._errors import bad_value
from .._progress import progress
from ..adaptive import (DEFAULT_MAX_STEPS, DEFAULT_TOLERANCE, Convergence, adaptive_integrate, check_auto, is_auto,
                        rows_of, rows_on_path, warn_unconverged)
from ..gradients import conductance_grads_and_values, neuron_input_grads_and_values, neuron_values
from ..inputs import format_baselines
from ..paths import integrate_path, steps_per_chunk
from ..problem import NeuronProblem, neuron_problem, times_inputs
from ..quadrature import get_rule


@public
def neuron_integrated_gradients(model, layer, inputs, selector, *, baselines=None, additional_forward_args=None,
                                n_steps=50, method="gausslegendre", internal_batch_size=None,
                                attribute_to_neuron_input=False, multiply_by_inputs=True,
                                tolerance=DEFAULT_TOLERANCE, max_steps=DEFAULT_MAX_STEPS, return_convergence_delta=False,
                                show_progress=False):
    """Integrated gradients of a hidden neuron: ``(x − b)·∫₀¹ ∂n/∂x(b + α(x − b)) dα``.

    Integrated gradients of the function ``x ↦ n(x)``; sums to ``n(x) − n(b)``
    (completeness). Captum: ``NeuronIntegratedGradients``.

    Args:
        baselines: None (zeros), a number, a tensor broadcastable to each input, or a tuple.
        n_steps, method: the quadrature rule (see :mod:`attrfx.quadrature`); ``n_steps="auto"``
            chooses nodes per example until ``|Σ attributions − (n(x) − n(b))| ≤ tolerance·|n(x) − n(b)|``
            (see :mod:`attrfx.adaptive`; ``method`` is then unused).
        internal_batch_size: at most this many path points (× examples) per forward pass.
        multiply_by_inputs: multiply by ``x − b`` (global) or not (local).
        tolerance, max_steps: with ``n_steps="auto"``, the relative completeness gap to reach and the
            most integrand evaluations per example (an :class:`~attrfx.adaptive.IntegrationBudgetWarning` if
            they run out first).
        return_convergence_delta: with ``n_steps="auto"``, also return an
            :class:`~attrfx.adaptive.Convergence` (delta, evaluations, converged per example).
        show_progress: draw a progress bar (on stderr, or a notebook widget): one step per chunk of path points;
            with ``n_steps="auto"``, one per example settled, beside the integrand evaluations so far.
        Other arguments as in :func:`neuron_gradient`.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
        >>> x = torch.randn(5, 3, dtype=torch.float64); net = net.double()
        >>> attr = neuron_integrated_gradients(net, "1", x, 0)
        >>> torch.allclose(attr.sum(1), torch.tanh(net[0](x))[:, 0] - torch.tanh(net[0].bias[0]))
        True

    References:
        Sundararajan et al., "Axiomatic Attribution for Deep Networks", 2017.
    """
    p = neuron_problem(model, layer, inputs, selector, additional_forward_args, attribute_to_neuron_input,
                       batch_total_ok=True, deferrable=not is_auto(n_steps), narrows=True)
    bs = format_baselines(baselines, p.xs)
    if auto_requested(n_steps, return_convergence_delta):
        return neuron_path_auto(p, bs, None, "neuron_integrated_gradients", tolerance, max_steps, internal_batch_size,
                               multiply_by_inputs, return_convergence_delta, show_progress)
    rule = get_rule(method, n_steps)
    chunk = steps_per_chunk(internal_batch_size, p.n_examples, len(rule))
    with progress("neuron_integrated_gradients", -(-len(rule) // chunk), enabled=show_progress) as bar:
        total = integrate_path(bar.counting(p.input_grads), p.xs, bs, rule, chunk, weighs=True)
    return p.result(times_inputs(total, p.xs, bs, multiply_by_inputs))


def auto_requested(n_steps: Any, return_convergence_delta: Any) -> bool:
    if is_auto(n_steps):
        return True
    if return_convergence_delta:
        raise bad_value("return_convergence_delta", "False unless n_steps='auto' (neuron methods report "
                        "convergence for adaptive integration only)", f"True with n_steps={n_steps!r}")
    return False


def neuron_path_auto(p: NeuronProblem, bs: tuple[Tensor, ...], target: Any, name: str, tolerance: Any, max_steps: Any,
                    internal_batch_size: Any, multiply_by_inputs: bool, return_convergence_delta: bool,
                    show_progress: bool):
    """``n_steps="auto"``: per-example adaptive nodes (:func:`attrfx.adaptive.adaptive_integrate`), refined until
    the neurons' value change is matched; ``target`` (conductance) or None (integrated gradients)."""
    tolerance, max_steps = check_auto(tolerance, max_steps)
    n = p.n_examples
    chunk = steps_per_chunk(internal_batch_size, 1, 1 << 62)
    values = neuron_values(p.model, p.layer, p.neurons, p.args, p.at_input, p.site.only)
    full_bs = tuple(torch.broadcast_to(b, x.shape) for x, b in zip(p.xs, bs))
    diffs = tuple(x - b for x, b in zip(p.xs, full_bs))
    ends = (values(*full_bs), values(*p.xs))

    def evaluate(examples: Tensor, alphas: Tensor):
        points = rows_on_path(p.xs, bs, examples, alphas)
        args, rows_target = rows_of(p.args, target, n, examples)
        if target is None:
            grads, at = neuron_input_grads_and_values(p.model, p.layer, p.neurons, points, args, at_input=p.at_input,
                                                      only=p.site.only)
            integrand = grads
        else:
            grads, rates, at = conductance_grads_and_values(p.model, p.info, p.neurons, points, args, rows_target,
                                                            only=p.site.only)
            integrand = flows(grads, rates)
        speed = sum((g * d[examples]).reshape(g.shape[0], g.shape[1], -1).sum(2) for g, d in zip(grads, diffs))
        return speed, at, integrand

    with progress(name, n, enabled=show_progress, unit="example") as bar:
        total, conv = adaptive_integrate(evaluate, ends, tolerance=tolerance, max_steps=max_steps, chunk=chunk,
                                         report=bar.advance)
    warn_unconverged(name, conv, ends[1] - ends[0], tolerance, max_steps)
    result = p.result(times_inputs(total, p.xs, bs, multiply_by_inputs))
    if not return_convergence_delta:
        return result
    return result, conv if p.is_list else Convergence(conv.delta[0], conv.evaluations, conv.converged)


def flows(grads: tuple[Tensor, ...], rates: Tensor) -> tuple[Tensor, ...]:
    """``∂F/∂n_k · ∂n_k/∂x``: input gradients ``[k, rows, ...]`` times their neurons' rates ``[k, rows]``."""
    return tuple(g * rates.reshape(rates.shape + (1,) * (g.dim() - 2)) for g in grads)
