"""Conductance: the flow of ``F``'s change through a layer's neurons, ``∫ ∂F/∂h · dh`` along the input path.

The neuron form weighs each neuron's input gradient by ``∂F/∂n`` (:func:`~attrfx.gradients.conductance_grads`);
the layer form sums ``∂F/∂h`` against the change of ``h`` between path nodes
(:func:`~attrfx.paths.integrate_differences`).
"""

from __future__ import annotations

from typing import Any

import torch  # noqa: F401 (the examples use torch and nn)
from torch import Tensor, nn  # noqa: F401

from .._api import public
from .._errors import bad_value, check_count
from .._progress import progress
from ..adaptive import (DEFAULT_MAX_STEPS, DEFAULT_TOLERANCE, adaptive_differences, check_auto, is_auto, rows_of,
                        rows_on_path, warn_unconverged)
from ..gradients import conductance_grads, layer_grads_and_output
from ..inputs import fold, format_baselines, repeat_args
from ..paths import integrate_differences, integrate_path, steps_per_chunk, straight_line
from ..problem import LayerProblem, as_layer_result, layer_problem, neuron_problem, times_inputs
from ..quadrature import get_rule
from ..selectors import check_target, format_target
from .integrated import auto_requested, flows, neuron_path_auto


@public
def neuron_conductance(model, layer, inputs, selector, *, baselines=None, target=None, additional_forward_args=None,
                       n_steps=50, method="riemann_trapezoid", internal_batch_size=None,
                       attribute_to_neuron_input=False, multiply_by_inputs=True,
                       tolerance=DEFAULT_TOLERANCE, max_steps=DEFAULT_MAX_STEPS, return_convergence_delta=False,
                       show_progress=False):
    """Conductance of a hidden neuron: the output's flow through it, per input.

    ``(xᵢ − bᵢ)·∫₀¹ ∂F/∂n · ∂n/∂xᵢ dα`` along the straight path, ``F`` the
    target output. One forward pass per chunk gives both factors. Captum:
    ``NeuronConductance`` (its trapezoid weights sum to (n−1)/n; ours to 1).

    Args:
        target: which output ``F`` to explain (None, int, tuple, tensor or list, or a callable from the model
            output to one value per row: see :mod:`attrfx.selectors`).
        n_steps: as in :func:`neuron_integrated_gradients`; with ``"auto"`` the nodes are refined until the
            neuron's value change ``n(x) − n(b) = ∫ dn`` is matched (the conductance ``∫ ∂F/∂n dn`` has no
            known value), and the reported delta is that neuron-value gap on the same nodes.
        Other arguments as in :func:`neuron_integrated_gradients`.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> neuron_conductance(net, net[1], torch.randn(5, 3), 1, target=0).shape
        torch.Size([5, 3])

    References:
        Dhamdhere et al., "How Important Is a Neuron?", 2018.
    """
    p = neuron_problem(model, layer, inputs, selector, additional_forward_args, attribute_to_neuron_input,
                       narrows=True)
    bs = format_baselines(baselines, p.xs)
    target = format_target(target, p.n_examples)
    check_target(p.probe_output, target)
    if auto_requested(n_steps, return_convergence_delta):
        return neuron_path_auto(p, bs, target, "neuron_conductance", tolerance, max_steps, internal_batch_size,
                               multiply_by_inputs, return_convergence_delta, show_progress)
    rule = get_rule(method, n_steps)

    def flow_at(points, times, weigh):
        return conductance_grads(p.model, p.info, p.neurons, points, repeat_args(p.args, p.n_examples, times),
                                 target.repeat(times), each=lambda block, rates: weigh(flows(block, rates)),
                                 only=p.site.only)[0]

    chunk = steps_per_chunk(internal_batch_size, p.n_examples, len(rule))
    with progress("neuron_conductance", -(-len(rule) // chunk), enabled=show_progress) as bar:
        total = integrate_path(bar.counting(flow_at), p.xs, bs, rule, chunk, weighs=True)
    return p.result(times_inputs(total, p.xs, bs, multiply_by_inputs))



@public
def layer_conductance(model, layer, inputs, *, baselines=None, target=None, additional_forward_args=None, n_steps=50,
                      method="gausslegendre", internal_batch_size=None, return_convergence_delta=False,
                      attribute_to_layer_input=False, tolerance=DEFAULT_TOLERANCE, max_steps=DEFAULT_MAX_STEPS,
                      show_progress=False):
    """Conductance of each neuron of a layer: ``∫ ∂F/∂h · dh`` along the input path.

    Discretised on the ``n_steps + 1`` nodes of ``method`` as
    ``Σₛ ∂F/∂h(αₛ)·(h(αₛ₊₁) − h(αₛ))``. With ``riemann_trapezoid`` the nodes
    include 0 and 1, so the differences telescope to ``h(x) − h(b)`` and the
    sum converges to ``F(x) − F(b)`` (exactly so when ``F`` is linear in ``h``);
    ``gausslegendre`` omits the end points. Captum: ``LayerConductance``.

    Args:
        baselines: None (zeros), a number, a tensor broadcastable to each input, or a tuple.
        n_steps, method: the path discretisation (see :mod:`attrfx.quadrature`). ``n_steps="auto"``
            refines nodes per example (0 and 1 included) with the second-order sum
            ``Σₛ ½(∂F/∂h(αₛ) + ∂F/∂h(αₛ₊₁))·(h(αₛ₊₁) − h(αₛ))`` until
            ``|Σ attributions − (F(x) − F(b))| ≤ tolerance·|F(x) − F(b)|`` (see :mod:`attrfx.adaptive`).
        internal_batch_size: at most this many path points (× examples) per forward pass.
        show_progress: draw a progress bar (on stderr, or a notebook widget): one step per chunk of path points;
            with ``n_steps="auto"``, one per example settled, beside the integrand evaluations so far.
        return_convergence_delta: also return ``Σ attributions − (F(x) − F(b))`` per example; with
            ``n_steps="auto"`` an :class:`~attrfx.adaptive.Convergence` (delta, evaluations, converged).
        tolerance, max_steps: with ``n_steps="auto"``, the relative completeness gap to reach and the most
            integrand evaluations per example (an :class:`~attrfx.adaptive.IntegrationBudgetWarning` if
            they run out first).
        Other arguments as in :func:`layer_gradient_x_activation`.

    Returns:
        Attributions shaped like the activation, and the delta if asked.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)).double()
        >>> x = torch.randn(5, 3, dtype=torch.float64)
        >>> attr, delta = layer_conductance(net, "1", x, method="riemann_trapezoid", return_convergence_delta=True)
        >>> bool(delta.abs().max() < 1e-10)
        True

    References:
        Dhamdhere et al., "How Important Is a Neuron?", 2018.
    """
    p = layer_problem(model, [layer], inputs, target, additional_forward_args, attribute_to_layer_input,
                      deferrable=not is_auto(n_steps))
    if not all(x.is_floating_point() for x in p.xs):  # no path points between integer inputs (token ids)
        raise bad_value("inputs", "floating-point tensors, which the path from the baselines interpolates (for token "
                        "ids use layer_gradient_x_activation at the embedding layer, which gives one row per token; "
                        "sum it over the embedding dimension)",
                        f"dtypes {[x.dtype for x in p.xs]}")
    bs = format_baselines(baselines, p.xs)
    if is_auto(n_steps):
        return _conductance_auto(p, bs, tolerance, max_steps, internal_batch_size, return_convergence_delta,
                                 show_progress)
    check_count("n_steps", n_steps, expected="a positive int or 'auto'")
    alphas = get_rule(method, n_steps + 1).alphas
    n = p.n_examples

    def evaluate(nodes: Tensor):
        s = nodes.numel()
        points = tuple(fold(pt) for pt in straight_line(p.xs, bs, nodes))
        (acts,), (grads,) = p.grads(points, s)
        steps_first = lambda t: t.reshape((s, n) + tuple(t.shape[1:]))
        return [steps_first(h) for h in acts], [steps_first(g) for g in grads]

    chunk = max(2, steps_per_chunk(internal_batch_size, n, alphas.numel()))
    with progress("layer_conductance", -(-alphas.numel() // chunk), enabled=show_progress) as bar:
        attrs = integrate_differences(bar.counting(evaluate), alphas, chunk)
    result = as_layer_result(attrs)
    if not return_convergence_delta:
        return result
    endpoints = tuple(torch.broadcast_to(b, x.shape) for x, b in zip(p.xs, bs))
    gap = sum(a.reshape(n, -1).sum(1) for a in attrs) - (p.output(p.xs) - p.output(endpoints))
    return result, gap


def _conductance_auto(p: LayerProblem, bs: tuple[Tensor, ...], tolerance: Any, max_steps: Any,
                      internal_batch_size: Any, return_convergence_delta: bool, show_progress: bool):
    """``n_steps="auto"``: per-example adaptive nodes (:func:`attrfx.adaptive.adaptive_differences`)."""
    tolerance, max_steps = check_auto(tolerance, max_steps)
    n = p.n_examples

    def evaluate(examples: Tensor, alphas: Tensor):
        args, target = rows_of(p.args, p.target, n, examples)
        (acts,), (grads,), output = layer_grads_and_output(p.model, p.infos, rows_on_path(p.xs, bs, examples, alphas),
                                                           args, target)
        return output, acts, grads

    with progress("layer_conductance", n, enabled=show_progress, unit="example") as bar:
        attrs, conv = adaptive_differences(evaluate, n, tolerance=tolerance, max_steps=max_steps,
                                           chunk=steps_per_chunk(internal_batch_size, 1, 1 << 62),
                                           device=p.xs[0].device, report=bar.advance)
    if not bool(conv.converged.all()):
        endpoints = tuple(torch.broadcast_to(b, x.shape) for x, b in zip(p.xs, bs))
        warn_unconverged("layer_conductance", conv, p.output(p.xs) - p.output(endpoints), tolerance, max_steps)
    return (as_layer_result(attrs), conv) if return_convergence_delta else as_layer_result(attrs)
