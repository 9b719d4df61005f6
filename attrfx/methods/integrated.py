"""Path integrals of gradients: integrated gradients, ``(x − b)·∫₀¹ ∂f/∂x(b + α(x − b)) dα``.

One kernel, :func:`integrated`, integrates a gradient along the straight path
(:func:`attrfx.paths.integrate_path`); the forms differ in *what* and *where*:

- :func:`integrated_gradients` — an output ``F`` at the inputs;
- :func:`neuron_integrated_gradients` — a neuron ``n`` at the inputs;
- :func:`layer_integrated_gradients` — ``F`` at a layer, the path running in the layer's activation space
  between ``h(b)`` and ``h(x)`` (the model's inputs stay ``x``);
- :func:`internal_influence` — ``∂F/∂h`` at a layer along the *input* path, not multiplied.

``n_steps="auto"`` chooses nodes per example (:func:`attrfx.adaptive.adaptive_path`) for every form.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn  # noqa: F401 (the examples use nn)

from .._api import public
from .._errors import bad_value
from .._progress import progress
from ..adaptive import (DEFAULT_MAX_STEPS, DEFAULT_TOLERANCE, Convergence, adaptive_path, check_auto, is_auto,
                        rows_of, warn_unconverged)
from ..gradients import conductance_grads_and_values, neuron_input_grads_and_values, neuron_values, vjp
from ..inputs import as_tuple, format_baselines, repeat_args
from ..paths import integrate_path, steps_per_chunk
from ..probe import (Activation, call_model, forward_to_layers, forward_with_probe, forward_with_replacement,
                     zero_deltas)
from ..problem import (LayerProblem, NeuronProblem, OutputProblem, as_layer_result, layer_problem, neuron_problem,
                       output_problem, times_inputs)
from ..quadrature import Rule, get_rule
from ..selectors import select_target

GradsAt = Callable[[tuple[Tensor, ...], int, Callable], tuple[Tensor, ...]]


def integrated(grads_at: GradsAt, xs: Sequence[Tensor], bs: Sequence[Tensor], rule: Rule, internal_batch_size: Any,
               multiply_by_inputs: bool, name: str, show_progress: bool) -> tuple[Tensor, ...]:
    """``(x − b)·Σₛ wₛ·g(b + αₛ(x − b))`` (or without ``x − b``), ``[K, B, ...]`` per tensor of ``xs``.

    ``grads_at(points, s, weigh)`` gets ``s`` path points folded into ``[s·B, ...]`` tensors and returns
    ``weigh`` of its gradients ``[K, s·B, ...]`` (:func:`~attrfx.paths.integrate_path`); at most
    ``internal_batch_size`` rows per call. The gradients may be shaped otherwise than ``xs`` (a layer's,
    for :func:`internal_influence`) when not multiplied.

    Example:
        >>> from attrfx.quadrature import gausslegendre
        >>> x = torch.tensor([[3.0]], dtype=torch.float64)
        >>> square = lambda pts, s, weigh: weigh((2 * pts[0][None],))     # ∂(x²)/∂x
        >>> integrated(square, (x,), (torch.zeros(()),), gausslegendre(4), None, True, "ig", False)[0].item()
        9.0
    """
    chunk = steps_per_chunk(internal_batch_size, xs[0].shape[0], len(rule))
    with progress(name, -(-len(rule) // chunk), enabled=show_progress) as bar:
        total = integrate_path(bar.counting(grads_at), xs, bs, rule, chunk, weighs=True)
    return times_inputs(total, xs, bs, multiply_by_inputs)


@public
def integrated_gradients(model, inputs, *, baselines=None, target=None, additional_forward_args=None, n_steps=50,
                         method="gausslegendre", internal_batch_size=None, return_convergence_delta=False,
                         multiply_by_inputs=True, tolerance=DEFAULT_TOLERANCE, max_steps=DEFAULT_MAX_STEPS,
                         show_progress=False):
    """Integrated gradients of a model output: ``(x − b)·∫₀¹ ∂F/∂x(b + α(x − b)) dα``.

    Sums to ``F(x) − F(b)`` per example (completeness), exactly for a model linear in its inputs.
    Captum: ``IntegratedGradients`` (its trapezoid weights sum to (n−1)/n; ours to 1).

    Args:
        model: an ``nn.Module`` or forward function.
        inputs: a tensor or tuple of floating-point tensors, dim 0 = examples (token ids: see
            :func:`layer_integrated_gradients` at the embedding layer).
        baselines: None (zeros), a number, a tensor broadcastable to each input, or a tuple.
        target: which output ``F`` to explain (None, int, tuple, tensor or list, or a callable from the model
            output to one value per row: see :mod:`attrfx.selectors`).
        additional_forward_args: extra arguments passed to ``model`` after the inputs.
        n_steps, method: the quadrature rule (see :mod:`attrfx.quadrature`); ``n_steps="auto"`` chooses nodes
            per example until ``|Σ attributions − (F(x) − F(b))| ≤ tolerance·|F(x) − F(b)|``
            (see :mod:`attrfx.adaptive`; ``method`` is then unused).
        internal_batch_size: at most this many path points (× examples) per forward pass.
        return_convergence_delta: also return ``Σ attributions − (F(x) − F(b))`` per example; with
            ``n_steps="auto"`` an :class:`~attrfx.adaptive.Convergence` (delta, evaluations, converged).
        multiply_by_inputs: multiply by ``x − b`` (global) or not (local).
        tolerance, max_steps: with ``n_steps="auto"``, as in :func:`neuron_integrated_gradients`.
        show_progress: draw a progress bar: one step per chunk of path points (per example with ``"auto"``).

    Returns:
        Attributions shaped like ``inputs``, and the delta if asked.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
        >>> x = torch.randn(5, 3, dtype=torch.float64)
        >>> attr, delta = integrated_gradients(net, x, target=1, return_convergence_delta=True)
        >>> attr.shape, bool(delta.abs().max() < 1e-6)
        (torch.Size([5, 3]), True)

    References:
        Sundararajan et al., "Axiomatic Attribution for Deep Networks", 2017.
    """
    _require_float(inputs)
    p = output_problem(model, inputs, target, additional_forward_args)
    bs = format_baselines(baselines, p.xs)
    if is_auto(n_steps):
        tolerance, max_steps = check_auto(tolerance, max_steps)
        total, conv = path_auto(p, bs, _output_at_rows(p), tuple(v[None] for v in _output_ends(p, bs)),
                                "integrated_gradients", tolerance, max_steps, internal_batch_size, show_progress)
        result = p.result(times_inputs(total, p.xs, bs, multiply_by_inputs))
        return (result, Convergence(conv.delta[0], conv.evaluations, conv.converged)) if return_convergence_delta \
            else result
    rule = get_rule(method, n_steps)
    total = integrated(p.input_grads, p.xs, bs, rule, internal_batch_size, multiply_by_inputs,
                       "integrated_gradients", show_progress)
    if not return_convergence_delta:
        return p.result(total)
    at_b, at_x = _output_ends(p, bs)
    return p.result(total), completeness_gap([t[0] for t in total], at_x - at_b)


def _require_float(inputs: Any) -> None:
    xs, _ = as_tuple(inputs)
    if not all(x.is_floating_point() for x in xs):
        raise bad_value("inputs", "floating-point tensors, which the path from the baselines interpolates (for "
                        "token ids use layer_integrated_gradients at the embedding layer: the path then runs "
                        "between the embeddings of the baseline ids and of the inputs)",
                        f"dtypes {[x.dtype for x in xs]}")


def _output_ends(p: Union[OutputProblem, LayerProblem], bs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """``F(b)`` and ``F(x)``, ``[N]`` each."""
    return p.output(tuple(torch.broadcast_to(b, x.shape) for x, b in zip(p.xs, bs))), p.output(p.xs)


def completeness_gap(attributions: Sequence[Tensor], change: Tensor) -> Tensor:
    """``Σ attributions − (F(x) − F(b))`` per example: attributions ``[N, ...]`` (any number, any shapes)."""
    n = change.shape[0]
    return sum(a.reshape(n, -1).sum(1) for a in attributions) - change


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
    return p.result(integrated(p.input_grads, p.xs, bs, rule, internal_batch_size, multiply_by_inputs,
                               "neuron_integrated_gradients", show_progress))


def auto_requested(n_steps: Any, return_convergence_delta: Any) -> bool:
    if is_auto(n_steps):
        return True
    if return_convergence_delta:
        raise bad_value("return_convergence_delta", "False unless n_steps='auto' (the method reports "
                        "convergence for adaptive integration only)", f"True with n_steps={n_steps!r}")
    return False


AtRows = Callable[[Tensor, tuple[Tensor, ...]], tuple[Sequence[Tensor], Tensor, Sequence[Tensor]]]


def path_auto(p: Any, bs: tuple[Tensor, ...], at_rows: AtRows, ends: tuple[Tensor, Tensor], name: str,
              tolerance: float, max_steps: int, internal_batch_size: Any, show_progress: bool,
              xs: Optional[tuple[Tensor, ...]] = None) -> tuple[tuple[Tensor, ...], Convergence]:
    """``n_steps="auto"`` for a problem ``p`` (a neuron or an output explained on the path from ``bs`` to ``xs``,
    by default ``p.xs``): the integrals ``[K, N, ...]`` on per-example adaptive nodes
    (:func:`attrfx.adaptive.adaptive_path`), with a warning for the examples that ran out of ``max_steps``, and
    the :class:`~attrfx.adaptive.Convergence`."""
    chunk = steps_per_chunk(internal_batch_size, 1, 1 << 62)
    with progress(name, p.n_examples, enabled=show_progress, unit="example") as bar:
        total, conv = adaptive_path(at_rows, p.xs if xs is None else xs, bs, ends, tolerance=tolerance,
                                    max_steps=max_steps, chunk=chunk, report=bar.advance)
    warn_unconverged(name, conv, ends[1] - ends[0], tolerance, max_steps)
    return total, conv


def neuron_path_auto(p: NeuronProblem, bs: tuple[Tensor, ...], target: Any, name: str, tolerance: Any, max_steps: Any,
                     internal_batch_size: Any, multiply_by_inputs: bool, return_convergence_delta: bool,
                     show_progress: bool):
    """``n_steps="auto"`` for a neuron (:func:`path_auto`), refined until the neurons' value change is matched;
    ``target`` (conductance: the integrand is the flow ``∂F/∂n·∂n/∂x``) or None (integrated gradients)."""
    tolerance, max_steps = check_auto(tolerance, max_steps)
    values = neuron_values(p.model, p.layer, p.neurons, p.args, p.at_input, p.site.only)
    ends = (values(*(torch.broadcast_to(b, x.shape) for x, b in zip(p.xs, bs))), values(*p.xs))

    def at_rows(examples: Tensor, points: tuple[Tensor, ...]):
        args, rows_target = rows_of(p.args, target, p.n_examples, examples)
        if target is None:
            grads, at = neuron_input_grads_and_values(p.model, p.layer, p.neurons, points, args, at_input=p.at_input,
                                                      only=p.site.only)
            return grads, at, grads
        grads, rates, at = conductance_grads_and_values(p.model, p.info, p.neurons, points, args, rows_target,
                                                        only=p.site.only)
        return grads, at, flows(grads, rates)

    total, conv = path_auto(p, bs, at_rows, ends, name, tolerance, max_steps, internal_batch_size, show_progress)
    result = p.result(times_inputs(total, p.xs, bs, multiply_by_inputs))
    if not return_convergence_delta:
        return result
    return result, conv if p.is_list else Convergence(conv.delta[0], conv.evaluations, conv.converged)


def flows(grads: tuple[Tensor, ...], rates: Tensor) -> tuple[Tensor, ...]:
    """``∂F/∂n_k · ∂n_k/∂x``: input gradients ``[k, rows, ...]`` times their neurons' rates ``[k, rows]``."""
    return tuple(g * rates.reshape(rates.shape + (1,) * (g.dim() - 2)) for g in grads)


def _output_at_rows(p: OutputProblem) -> AtRows:
    """``(∂F/∂x, F, ∂F/∂x)`` at path points of rows drawn from the examples (one "neuron": ``[1, R, ...]``)."""

    def at_rows(examples: Tensor, points: tuple[Tensor, ...]):
        args, target = rows_of(p.args, p.target, p.n_examples, examples)
        value, pull = vjp(lambda *pts: select_target(call_model(p.model, pts, args), target), *points)
        grads = tuple(g[None] for g in pull(torch.ones_like(value), retain_graph=False))
        return grads, value.detach()[None], grads

    return at_rows


@public
def layer_integrated_gradients(model, layer, inputs, *, baselines=None, target=None, additional_forward_args=None,
                               n_steps=50, method="gausslegendre", internal_batch_size=None,
                               return_convergence_delta=False, attribute_to_layer_input=False,
                               multiply_by_inputs=True, tolerance=DEFAULT_TOLERANCE, max_steps=DEFAULT_MAX_STEPS,
                               show_progress=False):
    """Integrated gradients at a layer: ``(h(x) − h(b))·∫₀¹ ∂F/∂h(h(b) + α(h(x) − h(b))) dα``.

    The path runs in the layer's activation space: the model runs on ``x`` with the layer's activation
    replaced by each path point. Inputs may be token ids (then ``layer`` is an embedding and the
    baselines are ids too). Sums to ``F(x) − F(b)`` when the output depends on the inputs only through
    the layer. Captum: ``LayerIntegratedGradients`` (trapezoid weights as in
    :func:`integrated_gradients`).

    Args:
        layer: a module, its dotted name, or a list of these (each layer's activation moves on its own
            path at once; then the result is a list).
        inputs: a tensor or tuple of tensors (floating-point or integer), dim 0 = examples.
        baselines: None (zeros), a number, a tensor broadcastable to each input, or a tuple (inputs of the
            model: their activations are the path's start).
        n_steps, method: the quadrature rule; ``n_steps="auto"`` chooses nodes per example until the
            attributions (over all layers) sum to the change along the path, ``F(x; h(x)) − F(x; h(b))`` (the
            model on ``x`` with the layers' activations set), within ``tolerance`` (as in
            :func:`integrated_gradients`). That is ``F(x) − F(b)`` when the output depends on the inputs only
            through the layers; otherwise no number of steps reaches ``F(x) − F(b)``, and the path's own change
            is what the integral is of.
        return_convergence_delta: also return ``Σ attributions − (F(x) − F(b))`` per example (over all layers);
            with ``n_steps="auto"`` an :class:`~attrfx.adaptive.Convergence`, its delta
            ``Σ attributions − (F(x; h(x)) − F(x; h(b)))``.
        attribute_to_layer_input: the path runs in the layer's input instead of its output.
        multiply_by_inputs: multiply by ``h(x) − h(b)`` (global) or not (local).
        show_progress: draw a progress bar: one step per chunk of path points (per example with ``"auto"``).
        Other arguments as in :func:`integrated_gradients`.

    Returns:
        Attributions shaped like the activation (a list for a list of layers), and the delta if asked.

    Example:
        >>> net = nn.Sequential(nn.Embedding(10, 4), nn.Flatten(), nn.Linear(12, 1)).double()
        >>> ids = torch.tensor([[1, 5, 2], [7, 0, 3]])
        >>> attr, delta = layer_integrated_gradients(net, "0", ids, return_convergence_delta=True)
        >>> attr.shape, bool(delta.abs().max() < 1e-10)
        (torch.Size([2, 3, 4]), True)

    References:
        Sundararajan et al., "Axiomatic Attribution for Deep Networks", 2017.
    """
    many = isinstance(layer, list)
    p = layer_problem(model, layer if many else [layer], inputs, target, additional_forward_args,
                      attribute_to_layer_input)
    bs = format_baselines(baselines, p.xs)
    rule = None if is_auto(n_steps) else get_rule(method, n_steps)
    tolerance, max_steps = check_auto(tolerance, max_steps) if rule is None else (tolerance, max_steps)
    ends = (tuple(torch.broadcast_to(b, x.shape) for x, b in zip(p.xs, bs)), p.xs)
    (h_b, at_b), (h_x, at_x) = (_layer_pass(p, xs, attribute_to_layer_input, rule is None or return_convergence_delta)
                                for xs in ends)
    flat_x, flat_b = tuple(h for hs in h_x for h in hs), tuple(h for hs in h_b for h in hs)
    if rule is None:  # the path's own ends: F on x with the layers at h(b), and at h(x)
        start, _ = _replaced_value_and_grads(p, p.xs, p.args, p.target, h_x, h_b, attribute_to_layer_input)
        grads, conv = path_auto(p, flat_b, _layer_at_rows(p, h_x, attribute_to_layer_input),
                                (start.detach()[None], at_x[None]), "layer_integrated_gradients", tolerance,
                                max_steps, internal_batch_size, show_progress, xs=flat_x)
        total = times_inputs(grads, flat_x, flat_b, multiply_by_inputs)
    else:
        total = integrated(_layer_path_grads(p, h_x, attribute_to_layer_input), flat_x, flat_b, rule,
                           internal_batch_size, multiply_by_inputs, "layer_integrated_gradients", show_progress)
    per_layer = _by_layer([t[0] for t in total], h_x)
    result = [as_layer_result(attrs) for attrs in per_layer] if many else as_layer_result(per_layer[0])
    if not return_convergence_delta:
        return result
    if rule is None:
        return result, Convergence(conv.delta[0], conv.evaluations, conv.converged)
    return result, completeness_gap([t[0] for t in total], at_x - at_b)


def _layer_pass(p: LayerProblem, xs: Sequence[Tensor], at_input: bool,
                with_output: bool) -> tuple[list[Activation], Optional[Tensor]]:
    """The layers' activations at the model inputs ``xs``, and ``F`` there ``with_output`` (one pass, no gradients;
    without ``F`` it stops once the last layer has run)."""
    with torch.no_grad():
        if not with_output:
            return forward_to_layers(p.model, p.layers, xs, p.args, at_input=at_input), None
        acts, output = forward_with_probe(p.model, p.infos, xs, p.args,
                                          [zero_deltas(site, xs[0].shape[0], xs[0].device) for site in p.infos])
    return acts, select_target(output, p.target)


def _by_layer(flat: Sequence[Tensor], like: Sequence[Activation]) -> list[tuple[Tensor, ...]]:
    """Tensors in one flat sequence, grouped as the layers' activations ``like`` are."""
    out, i = [], 0
    for hs in like:
        out.append(tuple(flat[i:i + len(hs)]))
        i += len(hs)
    return out


def _layer_path_grads(p: LayerProblem, h_x: Sequence[Activation], at_input: bool) -> GradsAt:
    """``∂F/∂h`` with each layer's activation replaced by path points (``times`` copies of the batch), the model's
    inputs ``x`` (:func:`_replaced_value_and_grads`)."""
    n = p.n_examples

    def grads_at(points: tuple[Tensor, ...], times: int, weigh: Callable) -> tuple[Tensor, ...]:
        rows = (repeat_args(p.xs, n, times), repeat_args(p.args, n, times), p.target.repeat(times),
                [repeat_args(hs, n, times) for hs in h_x])
        _, grads = _replaced_value_and_grads(p, *rows, _by_layer(points, h_x), at_input)
        return weigh(tuple(g[None] for g in grads))

    return grads_at


def _layer_at_rows(p: LayerProblem, h_x: Sequence[Activation], at_input: bool) -> AtRows:
    """``(∂F/∂h, F, ∂F/∂h)`` at layer path points of rows drawn from the examples (``n_steps="auto"``)."""

    def at_rows(examples: Tensor, points: tuple[Tensor, ...]):
        args, target = rows_of(p.args, p.target, p.n_examples, examples)
        seen = [tuple(h[examples] for h in hs) for hs in h_x]
        value, grads = _replaced_value_and_grads(p, tuple(x[examples] for x in p.xs), args, target, seen,
                                                 _by_layer(points, h_x), at_input)
        grads = tuple(g[None] for g in grads)
        return grads, value.detach()[None], grads

    return at_rows


def _replaced_value_and_grads(p: LayerProblem, xs: tuple[Tensor, ...], args: tuple, target: Any,
                              seen: list[Activation], wanted: list[Activation],
                              at_input: bool) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``F`` and ``∂F/∂h`` (flat over the layers' tensors) on the model inputs ``xs`` with each layer's activation
    ``seen`` replaced by ``wanted``.

    A layer's output is replaced where the layer returns it (:func:`~attrfx.probe.forward_with_replacement`). A
    layer's input is moved where it is made (:func:`~attrfx.probe.forward_with_probe`, as every layer method reads
    it): shifted by ``δ = wanted − seen``, the model continuing from ``h.detach() + δ`` (``cut``) — the point up
    to float rounding. Where one layer's input depends on another's (a list of layers), the shifted pass changes
    it; ``δ`` is then re-aimed at the activation that pass saw, one pass per layer at most, until every layer
    sees its points.
    """
    if not at_input:
        layers = [site.module for site in p.infos]
        value, pull = vjp(lambda values: select_target(forward_with_replacement(p.model, layers, xs, args, values),
                                                       target), wanted)
    else:
        def explained(deltas):
            acts, output = forward_with_probe(p.model, p.infos, xs, args, deltas, cut=True)
            return select_target(output, target), acts

        for _ in range(len(p.infos)):
            deltas = [tuple(w - h for w, h in zip(ws, hs)) for ws, hs in zip(wanted, seen)]
            value, pull, acts = vjp(explained, deltas, has_aux=True)
            if len(p.infos) == 1 or _same(acts, seen):
                break
            seen = [tuple(h.detach() for h in hs) for hs in acts]
    (grads,) = pull(torch.ones_like(value), retain_graph=False)
    return value, tuple(g for gs in grads for g in gs)


def _same(acts: Sequence[Activation], seen: Sequence[Activation]) -> bool:
    """Whether the activations a pass saw are those ``δ`` was aimed at (up to float rounding)."""
    return all(torch.allclose(a, s, rtol=64 * torch.finfo(s.dtype).eps, atol=64 * torch.finfo(s.dtype).eps)
               for aa, ss in zip(acts, seen) for a, s in zip(aa, ss))


@public
def internal_influence(model, layer, inputs, *, baselines=None, target=None, additional_forward_args=None,
                       n_steps=50, method="gausslegendre", internal_batch_size=None, attribute_to_layer_input=False,
                       tolerance=DEFAULT_TOLERANCE, max_steps=DEFAULT_MAX_STEPS, return_convergence_delta=False,
                       show_progress=False):
    """Internal influence: ``∫₀¹ ∂F/∂h(b + α(x − b)) dα``, the layer's gradient along the input path.

    Not multiplied by anything: the average gradient at the layer, on the same path points as
    :func:`layer_conductance`. Captum: ``InternalInfluence`` (trapezoid weights as in
    :func:`integrated_gradients`).

    Args:
        inputs: a tensor or tuple of floating-point tensors, dim 0 = examples.
        n_steps, method: the quadrature rule; ``n_steps="auto"`` chooses nodes per example until integrated
            gradients on the same nodes (the input path's own completeness integrand) sum to ``F(x) − F(b)``
            within ``tolerance``, as in :func:`integrated_gradients`.
        return_convergence_delta: with ``n_steps="auto"``, also return the
            :class:`~attrfx.adaptive.Convergence` of those nodes.
        show_progress: draw a progress bar: one step per chunk of path points (per example with ``"auto"``).
        Other arguments as in :func:`integrated_gradients` and :func:`layer_gradient_x_activation`.

    Returns:
        The integrated gradient, shaped like the layer's activation (and the convergence if asked).

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
        >>> internal_influence(net, "1", torch.randn(5, 3), target=1).shape
        torch.Size([5, 4])

    References:
        Leino et al., "Influence-Directed Explanations for Deep Convolutional Networks", 2018.
    """
    _require_float(inputs)
    p = layer_problem(model, [layer], inputs, target, additional_forward_args, attribute_to_layer_input,
                      deferrable=not is_auto(n_steps))
    bs = format_baselines(baselines, p.xs)
    if auto_requested(n_steps, return_convergence_delta):
        tolerance, max_steps = check_auto(tolerance, max_steps)
        ends = tuple(v[None] for v in _output_ends(p, bs))
        total, conv = path_auto(p, bs, _influence_at_rows(p), ends, "internal_influence", tolerance, max_steps,
                                internal_batch_size, show_progress)
        result = as_layer_result([t[0] for t in total])
        return (result, Convergence(conv.delta[0], conv.evaluations, conv.converged)) if return_convergence_delta \
            else result

    def grads_at(points: tuple[Tensor, ...], times: int, weigh: Callable) -> tuple[Tensor, ...]:
        (grads,) = p.grads(points, times)[1]
        return weigh(tuple(g[None] for g in grads))

    total = integrated(grads_at, p.xs, bs, get_rule(method, n_steps), internal_batch_size, False,
                       "internal_influence", show_progress)
    return as_layer_result([t[0] for t in total])


def _influence_at_rows(p: LayerProblem) -> AtRows:
    """``(∂F/∂x, F, ∂F/∂h)`` at input path points of rows drawn from the examples: one backward pass to both."""

    def at_rows(examples: Tensor, points: tuple[Tensor, ...]):
        args, target = rows_of(p.args, p.target, p.n_examples, examples)
        deltas = [zero_deltas(site, examples.shape[0], points[0].device) for site in p.infos]
        value, pull = vjp(lambda pts, ds: select_target(forward_with_probe(p.model, p.infos, pts, args, ds)[1], target),
                          points, deltas)
        input_grads, (layer_grads,) = pull(torch.ones_like(value), retain_graph=False)
        return tuple(g[None] for g in input_grads), value.detach()[None], tuple(g[None] for g in layer_grads)

    return at_rows
