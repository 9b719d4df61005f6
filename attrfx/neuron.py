"""Neuron attribution: which inputs made a hidden neuron fire.

Each method explains ``n(x) = selector(layer activation)`` and lands on the
model inputs; results are shaped like ``inputs`` (with a leading dimension K
when ``selector`` is a list of K selectors, all computed in one call).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, NamedTuple, Optional

import torch
from torch import Tensor, nn

from ._api import public
from ._progress import progress
from ._errors import bad_value, check_count
from .adaptive import (DEFAULT_MAX_STEPS, DEFAULT_TOLERANCE, Convergence, adaptive_integrate, check_auto, is_auto,
                       rows_of, rows_on_path, warn_unconverged)
from .gradients import (conductance_grads, conductance_grads_and_values, first_neuron_input_grads,
                        neuron_input_grads, neuron_input_grads_and_values, neuron_values)
from .inputs import (Inputs, as_tuple, fold, format_args, format_baselines, format_distribution, repeat_args,
                     require_float, restore)
from .noise import gaussian_noise, make_generator, sample_baselines, uniform
from .paths import integrate_path, steps_per_chunk
from .probe import Activation, LayerInfo, first_pass_checks, inspect, resolve_layer, site_info
from .quadrature import get_rule
from .selectors import Neuron, check_target, format_target, neuron_selectors
from .slicing import Guess, LinearRows, LinearTrace, likely_chain


class NeuronSite:
    """The layer's probe site and the selected neurons, learned once per call.

    From the inspection pass before any work, or — *deferred* — from the first
    forward pass that reaches the layer (:meth:`learn`), which also counts the
    layer's runs (:func:`~attrfx.probe.forward_counting_runs`) and so spares the
    inspection pass. ``only``: the rows of the Linear feeding the layer that the
    neurons read, when the passes to the layer need compute no others
    (:mod:`attrfx.slicing`), and ``path``: that Linear and the elementwise modules after it, as
    the inspection pass ran them; a deferred site may ``guess`` the rows for its first pass.
    """

    def __init__(self, info: Optional[LayerInfo] = None, neurons: Optional[list[Neuron]] = None,
                 selector: Any = None, batch_total_ok: bool = False, only: Optional[LinearRows] = None,
                 guess: Optional[Guess] = None, path: Optional[list] = None):
        self.info, self.neurons, self.only, self.guess, self.path = info, neurons, only, guess, path
        self.selector, self.batch_total_ok = selector, batch_total_ok

    def learn(self, p: "NeuronProblem", runs: list[Activation], counted: bool, n: int) -> tuple[list[Neuron], bool]:
        """The neurons, from the layer's outputs ``runs`` in one pass over ``n`` rows (``counted``: all its
        runs are there), and whether the site's guess held on that pass (then later passes narrow too)."""
        if counted:
            info = site_info(p.model, p.layer, runs, n)
        else:  # the model could not finish the pass on an empty batch: count with the inspection pass
            (info,) = inspect(p.model, [p.layer], p.xs, p.args, empty=True).sites
        self.info = info
        self.neurons = neuron_selectors(self.selector, info, batch_total_ok=self.batch_total_ok)[0]
        held = self.guess is not None and self.guess.held(runs[0][0], self.neurons)
        self.only = self.guess.rows if held else None
        return self.neurons, held


class NeuronProblem(NamedTuple):
    """Everything a neuron method needs, validated once at the API boundary."""

    model: Callable
    layer: nn.Module
    xs: tuple[Tensor, ...]
    was_tuple: bool
    args: tuple
    site: NeuronSite
    is_list: bool
    at_input: bool
    probe_output: Any = None  # the model output of the inspection pass (maybe empty), to check targets' shape

    @property
    def n_examples(self) -> int:
        return self.xs[0].shape[0]

    @property
    def info(self) -> LayerInfo:
        return self.site.info

    @property
    def neurons(self) -> list[Neuron]:
        return self.site.neurons

    def input_grads(self, points: tuple[Tensor, ...], times: int = 1, each: Optional[Callable] = None, *,
                    through: Optional[Callable] = None, rows: Optional[int] = None) -> tuple[Tensor, ...]:
        """``∂n_k/∂x`` at ``points``, which stack ``times`` copies of the batch (the first call of a deferred
        site learns the neurons from its pass). ``each`` maps each block of neurons' gradients as it is
        pulled back (:func:`~attrfx.gradients.pull_neurons`). ``through``: a function of the points (and
        arguments) that runs the model on ``rows`` rows, in place of the model."""
        args, model = repeat_args(self.args, self.n_examples, times), through or self.model
        per_block = None if each is None else (lambda block, ks: each(block))
        if self.neurons is None:
            return first_neuron_input_grads(model, self.layer, functools.partial(self.site.learn, self), points,
                                            args, rows=rows, each=per_block, guess=self.site.guess)
        return neuron_input_grads(model, self.layer, self.neurons, points, args, at_input=self.at_input,
                                  each=per_block, only=self.site.only)

    def result(self, values: tuple[Tensor, ...]) -> Inputs:
        """``[K, B, ...]`` values in the user's structure (K dropped for a single selector)."""
        return restore(values if self.is_list else tuple(v[0] for v in values), self.was_tuple)


def neuron_problem(model: Callable, layer: Any, inputs: Inputs, selector: Any, additional_forward_args: Any,
                   at_input: bool, *, need_float: bool = True, batch_total_ok: bool = False,
                   deferrable: bool = False, narrows: bool = False) -> NeuronProblem:
    """Validate and set up a neuron attribution (one small inspection pass of the model, or none).

    ``need_float=False`` accepts integer inputs (methods that take no gradients, e.g. ablation);
    ``batch_total_ok`` lets a callable selector return one value for the whole batch
    (methods that need only the neuron's gradient, as in Captum). The inspection pass runs on an
    empty batch where it can (layer shape, run count, and the output's shape for a target check cost next
    to nothing). A callable selector is never called on it: it is called, and its result checked, on the
    rows of each real pass (see :mod:`attrfx.selectors`), so one that reads the examples' labels works.
    ``deferrable`` (methods whose work is :meth:`NeuronProblem.input_grads` and nothing else stateful
    before it) skips the inspection pass where the first real pass can do its checks: plain autograd,
    an ``nn.Module`` in eval mode, the layer's output. Methods whose passes need
    only the selected neurons' rows of a Linear feeding the layer (all rows but no other's gradients, for
    conductance) say so with ``narrows``: under the same conditions, where such a Linear is likely, those
    rows are found (:mod:`attrfx.slicing`) — by tracing the inspection pass, or, for a deferrable method,
    guessed for its first pass and confirmed by a trace of it.
    """
    xs, was_tuple = as_tuple(inputs)
    if need_float:
        require_float(xs)
    args = format_args(additional_forward_args)
    module = resolve_layer(model, layer)
    selectors = selector if isinstance(selector, list) else [selector]
    early = not at_input and selectors and first_pass_checks(model)
    if early and deferrable:
        guess = Guess.of(model, module, selectors) if narrows else None
        site = NeuronSite(selector=selector, batch_total_ok=batch_total_ok, guess=guess)
        return NeuronProblem(model, module, xs, was_tuple, args, site, isinstance(selector, list), False)
    chain = likely_chain(model, module) if early and narrows else None
    traced = chain is not None
    with LinearTrace(chain) if traced else contextlib.nullcontext() as trace:
        seen = inspect(model, [module], xs, args, at_input=at_input, empty=True)
    (info,) = seen.sites
    neurons, is_list = neuron_selectors(selector, info, batch_total_ok=batch_total_ok)
    only = trace.rows_for(seen.activations[0][0], neurons) if traced else None
    path = trace.path_to(seen.activations[0][0]) if only is not None else None
    return NeuronProblem(model, module, xs, was_tuple, args, NeuronSite(info, neurons, only=only, path=path),
                         is_list, bool(at_input), seen.output)


def _times_inputs(values: tuple[Tensor, ...], xs, bs, multiply_by_inputs: bool) -> tuple[Tensor, ...]:
    if not multiply_by_inputs:
        return values
    return tuple(v * (x - b) for v, x, b in zip(values, xs, bs))


@public
def neuron_gradient(model, layer, inputs, selector, *, additional_forward_args=None,
                    attribute_to_neuron_input=False):
    """Gradient of a hidden neuron with respect to the inputs: ``∂n/∂x``.

    The forward pass stops at the layer. Captum: ``NeuronGradient``.

    Args:
        model: an ``nn.Module`` or forward function.
        layer: the layer (module or dotted name) holding the neuron.
        inputs: a tensor or tuple of tensors, dim 0 = examples.
        selector: int, tuple of ints/slices, callable, or a list of these.
        additional_forward_args: extra arguments passed to ``model`` after the inputs.
        attribute_to_neuron_input: select the neuron from the layer's input.

    Returns:
        Gradients shaped like ``inputs`` (leading K for a list of selectors).

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> neuron_gradient(net, "0", torch.randn(5, 3), 2).shape
        torch.Size([5, 3])

    References:
        Simonyan et al., "Deep Inside Convolutional Networks", 2013.
    """
    p = neuron_problem(model, layer, inputs, selector, additional_forward_args, attribute_to_neuron_input,
                       batch_total_ok=True, deferrable=True, narrows=True)
    return p.result(p.input_grads(p.xs))


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
    if _auto_requested(n_steps, return_convergence_delta):
        return _integrate_auto(p, bs, None, "neuron_integrated_gradients", tolerance, max_steps, internal_batch_size,
                               multiply_by_inputs, return_convergence_delta, show_progress)
    rule = get_rule(method, n_steps)
    chunk = steps_per_chunk(internal_batch_size, p.n_examples, len(rule))
    with progress("neuron_integrated_gradients", -(-len(rule) // chunk), enabled=show_progress) as bar:
        total = integrate_path(bar.counting(p.input_grads), p.xs, bs, rule, chunk, weighs=True)
    return p.result(_times_inputs(total, p.xs, bs, multiply_by_inputs))


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
    if _auto_requested(n_steps, return_convergence_delta):
        return _integrate_auto(p, bs, target, "neuron_conductance", tolerance, max_steps, internal_batch_size,
                               multiply_by_inputs, return_convergence_delta, show_progress)
    rule = get_rule(method, n_steps)

    def flow_at(points, times, weigh):
        return conductance_grads(p.model, p.info, p.neurons, points, repeat_args(p.args, p.n_examples, times),
                                 target.repeat(times), each=lambda block, rates: weigh(_flows(block, rates)),
                                 only=p.site.only)[0]

    chunk = steps_per_chunk(internal_batch_size, p.n_examples, len(rule))
    with progress("neuron_conductance", -(-len(rule) // chunk), enabled=show_progress) as bar:
        total = integrate_path(bar.counting(flow_at), p.xs, bs, rule, chunk, weighs=True)
    return p.result(_times_inputs(total, p.xs, bs, multiply_by_inputs))


def _flows(grads: tuple[Tensor, ...], rates: Tensor) -> tuple[Tensor, ...]:
    """``∂F/∂n_k · ∂n_k/∂x``: input gradients ``[k, rows, ...]`` times their neurons' rates ``[k, rows]``."""
    return tuple(g * rates.reshape(rates.shape + (1,) * (g.dim() - 2)) for g in grads)


def _auto_requested(n_steps: Any, return_convergence_delta: Any) -> bool:
    if is_auto(n_steps):
        return True
    if return_convergence_delta:
        raise bad_value("return_convergence_delta", "False unless n_steps='auto' (neuron methods report "
                        "convergence for adaptive integration only)", f"True with n_steps={n_steps!r}")
    return False


def _integrate_auto(p: NeuronProblem, bs: tuple[Tensor, ...], target: Any, name: str, tolerance: Any, max_steps: Any,
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
            flows = grads
        else:
            grads, rates, at = conductance_grads_and_values(p.model, p.info, p.neurons, points, args, rows_target,
                                                            only=p.site.only)
            flows = _flows(grads, rates)
        speed = sum((g * d[examples]).reshape(g.shape[0], g.shape[1], -1).sum(2) for g, d in zip(grads, diffs))
        return speed, at, flows

    with progress(name, n, enabled=show_progress, unit="example") as bar:
        total, conv = adaptive_integrate(evaluate, ends, tolerance=tolerance, max_steps=max_steps, chunk=chunk,
                                         report=bar.advance)
    warn_unconverged(name, conv, ends[1] - ends[0], tolerance, max_steps)
    result = p.result(_times_inputs(total, p.xs, bs, multiply_by_inputs))
    if not return_convergence_delta:
        return result
    return result, conv if p.is_list else Convergence(conv.delta[0], conv.evaluations, conv.converged)


@public
def neuron_gradient_shap(model, layer, inputs, selector, baselines, *, n_samples=5, stdevs=0.0,
                         additional_forward_args=None, attribute_to_neuron_input=False, multiply_by_inputs=True,
                         generator=None, show_progress=False):
    """GradientSHAP of a hidden neuron: ``E[(x̃ − b)·∂n/∂x(b + u(x̃ − b))]``.

    The expectation is over ``n_samples`` draws of input noise ``x̃ = x + σε``,
    a baseline ``b`` from the distribution and ``u ~ U(0, 1)``, all from
    ``generator``. Captum: ``NeuronGradientShap``.

    Args:
        baselines: a distribution, tensor(s) with dim 0 = baseline samples, or a
            callable taking ``inputs`` and returning one.
        n_samples: samples per example.
        stdevs: standard deviation of the input noise (one float, or one per input).
        generator: a ``torch.Generator``; the same state gives the same result.
        show_progress: draw a progress bar (on stderr, or a notebook widget), one step per forward pass (all
            samples run in one).
        Other arguments as in :func:`neuron_gradient`.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
        >>> g = torch.Generator().manual_seed(0)
        >>> neuron_gradient_shap(net, "0", torch.randn(5, 3), 1, torch.zeros(8, 3), generator=g).shape
        torch.Size([5, 3])

    References:
        Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", 2017.
    """
    p = neuron_problem(model, layer, inputs, selector, additional_forward_args, attribute_to_neuron_input,
                       batch_total_ok=True, narrows=True)
    dists = format_distribution(baselines, inputs, p.xs)
    check_count("n_samples", n_samples)
    gen = make_generator(generator)
    noisy = gaussian_noise(p.xs, stdevs, n_samples, gen)
    base = sample_baselines(dists, n_samples, p.n_examples, gen)
    u = uniform(n_samples, p.n_examples, p.xs[0], gen)
    points = tuple(_lerp(b, x, u) for x, b in zip(noisy, base))
    with progress("neuron_gradient_shap", 1, enabled=show_progress) as bar:
        grads = bar.counting(p.input_grads)(tuple(fold(pt) for pt in points), n_samples)
    per_sample = tuple(g.reshape((g.shape[0],) + tuple(x.shape)) for g, x in zip(grads, noisy))
    if multiply_by_inputs:
        per_sample = tuple(g * (x - b) for g, x, b in zip(per_sample, noisy, base))
    return p.result(tuple(g.mean(1) for g in per_sample))


def _lerp(b: Tensor, x: Tensor, u: Tensor) -> Tensor:
    """``b + u·(x − b)`` with ``u`` of shape ``[S, B]`` broadcast over the feature dims."""
    u = u.reshape(tuple(u.shape) + (1,) * (x.dim() - 2))
    return u * x + (1 - u) * b
