"""DeepLift and DeepLiftSHAP: gradients with the rescale rule of :mod:`attrfx.rules` on the nonlinearities.

The model runs once on ``[inputs; baselines]`` so every rule sees its reference, and the explained value (a
neuron, or the target output) is summed over both halves (as in Captum). The multipliers land on the inputs
(:func:`rescale_multipliers`, for the neuron and output forms) or on a layer (:func:`layer_rescale`, the probe at
the layer); the SHAP forms run every input-baseline pair in one batch (:func:`baseline_pairs`). The model must be
an ``nn.Module``: the rules hook its nonlinearity modules.
"""

from __future__ import annotations

import inspect
import numbers
from typing import Any, Callable, Optional, Sequence, Union

import torch  # noqa: F401 (the examples use torch and nn)
from torch import Tensor, nn  # noqa: F401

from .. import rules
from .._api import public
from .._errors import bad_type, bad_value
from ..inputs import format_baselines, format_distribution, repeat_args
from ..probe import Activation, call_model
from ..problem import (LayerProblem, NeuronProblem, OutputProblem, as_layer_result, layer_problem, output_problem,
                       require_module, rule_problem)

CustomFn = Callable[..., Sequence[Tensor]]
Problem = Union[NeuronProblem, OutputProblem, LayerProblem]


def _check_eps(eps: Any) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps >= 0:
        raise bad_value("eps", "a non-negative number (|Δx| below which a rule keeps the ordinary gradient)",
                        repr(eps))
    return float(eps)


def _custom_arity(fn: Optional[CustomFn]) -> int:
    """How many arguments ``custom_attribution_func`` takes (1, 2 or 3), as Captum decides it."""
    if fn is None:
        return 0
    if not callable(fn):
        raise bad_type("custom_attribution_func", "None or a callable", fn)
    count = len(inspect.signature(fn).parameters)
    if not 1 <= count <= 3:
        raise bad_value("custom_attribution_func", "a callable of 1 to 3 arguments "
                        "(multipliers[, inputs[, baselines]])", f"one of {count}")
    return count


def rescale_multipliers(p: Union[NeuronProblem, OutputProblem], bs: Sequence[Tensor], method: str,
                        eps: float = rules.EPS) -> tuple[Tensor, ...]:
    """DeepLift multipliers ``∂ʳn/∂x`` of each neuron (or ``∂ʳF/∂x`` of the output) against baselines ``bs``:
    ``[K, N, ...]`` (``K = 1`` for an output).

    The model runs once on ``[x; b]``; the rescale rules compare the halves. Nonlinear modules
    that ran without a rule are named in a :class:`~attrfx.rules.RuleCoverageWarning` from ``method``.
    """
    n, m = p.n_examples, len(p.xs)
    refs = tuple(torch.broadcast_to(b, x.shape) for x, b in zip(p.xs, bs))
    model = p.model

    def paired(*xs_and_args):
        xs, args = xs_and_args[:m], xs_and_args[m:]
        both = tuple(torch.cat([x, r]) for x, r in zip(xs, refs))
        return call_model(model, both, repeat_args(args, n, 2))

    with rules.applied(model, rules.deeplift_rescale(eps)) as ruling:
        multipliers = p.input_grads(p.xs, through=paired, rows=2 * n)
    rules.warn_uncovered(method, ruling, "output" if isinstance(p, OutputProblem) else "neuron")
    return multipliers


def layer_rescale(p: LayerProblem, bs: Sequence[Tensor], method: str,
                  eps: float = rules.EPS) -> tuple[Activation, Activation, Activation]:
    """``(h(x), h(b), ∂ʳF/∂h)`` at the layer: one pass on ``[x; b]`` under the rescale rules, probed at the layer.

    ``∂ʳF/∂h`` is the input half's gradient (the target picks the output of both halves, as in Captum);
    modules without a rule are named in a :class:`~attrfx.rules.RuleCoverageWarning` from ``method``.
    """
    n = p.n_examples
    both = tuple(torch.cat([x, torch.broadcast_to(b, x.shape)]) for x, b in zip(p.xs, bs))
    with rules.applied(p.model, rules.deeplift_rescale(eps)) as ruling:
        (acts,), (grads,) = p.grads(both, 2)
    rules.warn_uncovered(method, ruling, "output")
    return tuple(h[:n] for h in acts), tuple(h[n:] for h in acts), tuple(g[:n] for g in grads)


def baseline_pairs(p: Problem, baselines: Any, inputs: Any) -> tuple[Problem, tuple[Tensor, ...], int]:
    """Each example with each of the M baselines of a distribution, as one batch laid out baseline-major (row
    ``j·N + i`` pairs example ``i`` with baseline ``j``): ``(the problem over the M·N pairs, their baselines, M)``.

    Per-example extra arguments and targets are tiled with the examples.
    """
    dists = format_distribution(baselines, inputs, p.xs)
    n, m = p.n_examples, dists[0].shape[0]
    tiled = dict(xs=tuple(x.repeat((m,) + (1,) * (x.dim() - 1)) for x in p.xs), args=repeat_args(p.args, n, m))
    if "target" in p._fields:
        tiled["target"] = p.target.repeat(m)
    return p._replace(**tiled), tuple(d.repeat_interleave(n, dim=0) for d in dists), m


def mean_over_baselines(values: Sequence[Tensor], m: int, dim: int) -> tuple[Tensor, ...]:
    """The mean over the M baselines of values whose dim ``dim`` holds the M·N pairs, baseline-major."""
    return tuple(v.unflatten(dim, (m, -1)).mean(dim) for v in values)


def convergence_delta(p: Union[OutputProblem, LayerProblem], attributions: Sequence[Tensor],
                      bs: Sequence[Tensor]) -> Tensor:
    """``Σ attributions − (F(x) − F(b))`` per example, as Captum computes it (the model run without rules)."""
    full = tuple(torch.broadcast_to(b, x.shape) for x, b in zip(p.xs, bs))
    total = sum(a.reshape(a.shape[0], -1).sum(1) for a in attributions)
    return total - (p.output(p.xs) - p.output(full))


def _combine(multipliers: tuple[Tensor, ...], xs: Sequence[Tensor], bs: Sequence[Tensor],
             multiply_by_inputs: bool, custom: Optional[CustomFn]) -> tuple[Tensor, ...]:
    """Multipliers ``[K, N, ...]`` → attributions: ``m·(x − b)``, ``m``, or ``custom_attribution_func``."""
    arity = _custom_arity(custom)
    if arity == 0:
        return tuple(mu * (x - b) for mu, x, b in zip(multipliers, xs, bs)) if multiply_by_inputs else multipliers
    full = tuple(torch.broadcast_to(b, x.shape).contiguous() for x, b in zip(xs, bs))
    per_neuron = []
    for k in range(multipliers[0].shape[0]):
        args = (tuple(mu[k] for mu in multipliers), tuple(xs), full)[:arity]
        out = custom(*args)
        out = (out,) if isinstance(out, Tensor) else tuple(out)
        if len(out) != len(xs) or any(not isinstance(o, Tensor) or o.shape != x.shape for o, x in zip(out, xs)):
            raise bad_value("custom_attribution_func", f"to return {len(xs)} tensor(s) shaped like the attributed "
                            f"tensors {[tuple(x.shape) for x in xs]}",
                            [tuple(o.shape) if isinstance(o, Tensor) else type(o).__name__ for o in out])
        per_neuron.append(out)
    return tuple(torch.stack(parts) for parts in zip(*per_neuron))


@public
def neuron_deeplift(model, layer, inputs, selector, *, baselines=None, additional_forward_args=None,
                    attribute_to_neuron_input=False, custom_attribution_func=None, multiply_by_inputs=True):
    """DeepLift (rescale rule) of a hidden neuron: ``(x − b)·∂ʳn/∂x``.

    ``∂ʳ`` is the chain rule with each supported nonlinearity's derivative
    replaced by ``Δy/Δx`` between the input run and the baseline run
    (:data:`attrfx.rules.DEEPLIFT_RESCALE`); on ReLU networks the
    attributions sum to ``n(x) − n(b)``. Other nonlinearities (GELU, SiLU,
    functional calls) keep their ordinary gradient, as in Captum; the modules
    among them that run are named in a :class:`~attrfx.rules.RuleCoverageWarning`.
    Captum: ``NeuronDeepLift``.

    Args:
        model: an ``nn.Module`` (its nonlinearities must be submodules, each run once).
        layer: the layer (module or dotted name) holding the neuron.
        inputs: a tensor or tuple of tensors, dim 0 = examples.
        selector: int, tuple of ints/slices, callable, or a list of these.
        baselines: None (zeros), a number, a tensor broadcastable to each input, or a tuple.
        additional_forward_args: extra arguments passed to ``model`` after the inputs.
        attribute_to_neuron_input: select the neuron from the layer's input.
        custom_attribution_func: ``f(multipliers[, inputs[, baselines]])`` returning a
            tuple of tensors shaped like the inputs, used instead of ``m·(x − b)``.
        multiply_by_inputs: multiply the multipliers by ``x − b`` (global) or not (local).

    Returns:
        Attributions shaped like ``inputs`` (leading K for a list of selectors).

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
        >>> x = torch.randn(5, 3, dtype=torch.float64)
        >>> attr = neuron_deeplift(net, "2", x, 1)
        >>> torch.allclose(attr.sum(1), net(x)[:, 1] - net(torch.zeros(1, 3, dtype=torch.float64))[:, 1])
        True

    References:
        Shrikumar et al., "Learning Important Features Through Propagating Activation
        Differences", 2017; Ancona et al., "Towards better understanding of gradient-based
        attribution methods for deep neural networks", 2018.
    """
    p = rule_problem(model, layer, inputs, selector, additional_forward_args, attribute_to_neuron_input)
    _custom_arity(custom_attribution_func)
    bs = format_baselines(baselines, p.xs)
    multipliers = rescale_multipliers(p, bs, "neuron_deeplift")
    return p.result(_combine(multipliers, p.xs, bs, multiply_by_inputs, custom_attribution_func))


@public
def neuron_deeplift_shap(model, layer, inputs, selector, baselines, *, additional_forward_args=None,
                         attribute_to_neuron_input=False, custom_attribution_func=None, multiply_by_inputs=True):
    """DeepLiftSHAP of a hidden neuron: DeepLift against each baseline of a distribution, averaged.

    ``(1/M)·Σⱼ (x − bⱼ)·∂ʳn/∂x|_{bⱼ}``; all ``N·M`` input-baseline pairs run as
    one batch. Captum: ``NeuronDeepLiftShap``.

    Args:
        baselines: a tensor (or tuple) whose dim 0 indexes M baseline samples, or a
            callable returning one (called with ``inputs``, or with nothing if it
            takes no arguments).
        Other arguments as in :func:`neuron_deeplift`.

    Returns:
        Attributions shaped like ``inputs`` (leading K for a list of selectors).

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> neuron_deeplift_shap(net, "2", torch.randn(5, 3), 0, torch.randn(6, 3)).shape
        torch.Size([5, 3])

    References:
        Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", 2017.
    """
    p = rule_problem(model, layer, inputs, selector, additional_forward_args, attribute_to_neuron_input)
    _custom_arity(custom_attribution_func)
    pairs, bs, m = baseline_pairs(p, baselines, inputs)
    multipliers = rescale_multipliers(pairs, bs, "neuron_deeplift_shap")
    attrs = _combine(multipliers, pairs.xs, bs, multiply_by_inputs, custom_attribution_func)
    return p.result(mean_over_baselines(attrs, m, 1))


def _with_delta(result: Any, delta: Optional[Callable[[], Tensor]]) -> Any:
    """``result``, or ``(result, delta())`` when a delta is asked for."""
    return result if delta is None else (result, delta())


def _input_major(delta: Tensor, m: int) -> Tensor:
    """Deltas of M·N pairs, baseline-major → ordered by example, then baseline (Captum's order)."""
    return delta.reshape(m, -1).T.reshape(-1)


@public
def deeplift(model, inputs, *, baselines=None, target=None, additional_forward_args=None,
             return_convergence_delta=False, custom_attribution_func=None, multiply_by_inputs=True, eps=1e-10):
    """DeepLift (rescale rule) of a model output: ``(x − b)·∂ʳF/∂x``.

    ``∂ʳ`` is the chain rule with each supported nonlinearity's derivative replaced by
    ``Δy/Δx`` between the input run and the baseline run (where ``|Δx| ≥ eps``); on ReLU
    networks ``Σ attributions = F(x) − F(b)``. Other nonlinearities keep their ordinary
    gradient, and those among them that are modules are named in a
    :class:`~attrfx.rules.RuleCoverageWarning`. Captum: ``DeepLift``.

    Args:
        model: an ``nn.Module`` (its nonlinearities must be submodules, each run once).
        inputs: a tensor or tuple of tensors, dim 0 = examples.
        baselines: None (zeros), a number, a tensor broadcastable to each input, or a tuple.
        target: which output to explain: None, int, tuple, tensor, list, or a callable of the output (called on
            the ``2N`` rows ``[inputs; baselines]``).
        additional_forward_args: extra arguments passed to ``model`` after the inputs.
        return_convergence_delta: also return ``Σ attributions − (F(x) − F(b))`` per example.
        custom_attribution_func: ``f(multipliers[, inputs[, baselines]])`` returning a tuple of
            tensors shaped like the inputs, used instead of ``m·(x − b)``.
        multiply_by_inputs: multiply the multipliers by ``x − b`` (global) or not (local).
        eps: ``|Δx|`` below which a rule keeps the ordinary gradient.

    Returns:
        Attributions shaped like ``inputs``; with ``return_convergence_delta``, ``(attributions, delta)``.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
        >>> x = torch.randn(5, 3, dtype=torch.float64)
        >>> attr, delta = deeplift(net, x, target=1, return_convergence_delta=True)
        >>> bool(delta.abs().max() < 1e-12)
        True

    References:
        Shrikumar et al., "Learning Important Features Through Propagating Activation
        Differences", 2017; Ancona et al., "Towards better understanding of gradient-based
        attribution methods for deep neural networks", 2018.
    """
    require_module(model)
    p = output_problem(model, inputs, target, additional_forward_args)
    _custom_arity(custom_attribution_func)
    bs = format_baselines(baselines, p.xs)
    multipliers = rescale_multipliers(p, bs, "deeplift", _check_eps(eps))
    attrs = _combine(multipliers, p.xs, bs, multiply_by_inputs, custom_attribution_func)
    return _with_delta(p.result(attrs), (lambda: convergence_delta(p, [a[0] for a in attrs], bs))
                       if return_convergence_delta else None)


@public
def deeplift_shap(model, inputs, baselines, *, target=None, additional_forward_args=None,
                  return_convergence_delta=False, custom_attribution_func=None, multiply_by_inputs=True):
    """DeepLiftSHAP of a model output: DeepLift against each baseline of a distribution, averaged.

    ``(1/M)·Σⱼ (x − bⱼ)·∂ʳF/∂x|_{bⱼ}``; all ``N·M`` input-baseline pairs run as one batch.
    Captum: ``DeepLiftShap``.

    Args:
        baselines: a tensor (or tuple) whose dim 0 indexes M baseline samples, or a callable
            returning one (called with ``inputs``, or with nothing if it takes no arguments).
        return_convergence_delta: also return the delta of each input-baseline pair, ``N·M`` values
            ordered by example, then baseline (as in Captum).
        Other arguments as in :func:`deeplift`.

    Returns:
        Attributions shaped like ``inputs``; with ``return_convergence_delta``, ``(attributions, delta)``.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> attr, delta = deeplift_shap(net, torch.randn(5, 3), torch.randn(6, 3), target=0,
        ...                             return_convergence_delta=True)
        >>> attr.shape, delta.shape
        (torch.Size([5, 3]), torch.Size([30]))

    References:
        Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", 2017.
    """
    require_module(model)
    p = output_problem(model, inputs, target, additional_forward_args)
    _custom_arity(custom_attribution_func)
    pairs, bs, m = baseline_pairs(p, baselines, inputs)
    multipliers = rescale_multipliers(pairs, bs, "deeplift_shap")
    attrs = _combine(multipliers, pairs.xs, bs, multiply_by_inputs, custom_attribution_func)
    return _with_delta(p.result(mean_over_baselines(attrs, m, 1)),
                       (lambda: _input_major(convergence_delta(pairs, [a[0] for a in attrs], bs), m))
                       if return_convergence_delta else None)


def _at_layer(rescaled: tuple[Activation, Activation, Activation], multiply_by_inputs: bool,
              custom: Optional[CustomFn]) -> tuple[Tensor, ...]:
    """:func:`layer_rescale`'s ``(h(x), h(b), ∂ʳF/∂h)`` → ``∂ʳF/∂h·(h(x) − h(b))``, ``∂ʳF/∂h``, or
    ``custom(∂ʳF/∂h, h(x), h(b))``."""
    hx, hb, grads = rescaled
    return tuple(a[0] for a in _combine(tuple(g[None] for g in grads), hx, hb, multiply_by_inputs, custom))


@public
def layer_deeplift(model, layer, inputs, *, baselines=None, target=None, additional_forward_args=None,
                   return_convergence_delta=False, attribute_to_layer_input=False, custom_attribution_func=None,
                   multiply_by_inputs=True, eps=1e-10):
    """DeepLift of a model output at a layer: ``(h(x) − h(b))·∂ʳF/∂h``.

    The multipliers ``∂ʳF/∂h`` are the gradient at the layer (a probe) with the rescale
    rules on the nonlinearities after it (and on the layer itself with
    ``attribute_to_layer_input``), from one pass on ``[inputs; baselines]``. Where the layer
    cuts every path from input to output and the network is ReLU,
    ``Σ attributions = F(x) − F(b)``. Captum: ``LayerDeepLift``.

    Args:
        layer: the layer (module or dotted name).
        attribute_to_layer_input: attribute to the layer's input instead of its output.
        custom_attribution_func: ``f(multipliers[, h(x)[, h(b)]])`` returning a tuple of
            tensors shaped like the layer's activation.
        multiply_by_inputs: multiply the multipliers by ``h(x) − h(b)`` (global) or not (local).
        eps: ``|Δx|`` below which a rule keeps the ordinary gradient (Captum's ``LayerDeepLift`` uses ``1e-10``).
        Other arguments as in :func:`deeplift`.

    Returns:
        Attributions shaped like the layer's activation (a tuple for a layer of several tensors);
        with ``return_convergence_delta``, ``(attributions, delta)``.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
        >>> x = torch.randn(5, 3, dtype=torch.float64)
        >>> attr, delta = layer_deeplift(net, "1", x, target=0, return_convergence_delta=True)
        >>> attr.shape, bool(delta.abs().max() < 1e-12)
        (torch.Size([5, 4]), True)

    References:
        Shrikumar et al., "Learning Important Features Through Propagating Activation
        Differences", 2017.
    """
    require_module(model)
    p = layer_problem(model, [layer], inputs, target, additional_forward_args, attribute_to_layer_input,
                      deferrable=True)
    _custom_arity(custom_attribution_func)
    bs = format_baselines(baselines, p.xs)
    attrs = _at_layer(layer_rescale(p, bs, "layer_deeplift", _check_eps(eps)), multiply_by_inputs,
                      custom_attribution_func)
    return _with_delta(as_layer_result(attrs),
                       (lambda: convergence_delta(p, attrs, bs)) if return_convergence_delta else None)


@public
def layer_deeplift_shap(model, layer, inputs, baselines, *, target=None, additional_forward_args=None,
                        return_convergence_delta=False, attribute_to_layer_input=False, custom_attribution_func=None,
                        multiply_by_inputs=True):
    """DeepLiftSHAP at a layer: :func:`layer_deeplift` against each baseline of a distribution, averaged.

    ``(1/M)·Σⱼ (h(x) − h(bⱼ))·∂ʳF/∂h|_{bⱼ}``; all ``N·M`` input-baseline pairs run as one batch.
    Captum: ``LayerDeepLiftShap``.

    Args:
        baselines: a tensor (or tuple) whose dim 0 indexes M baseline samples, or a callable returning one.
        return_convergence_delta: also return the delta of each input-baseline pair, ``N·M`` values
            ordered by example, then baseline (as in Captum).
        Other arguments as in :func:`layer_deeplift`.

    Returns:
        Attributions shaped like the layer's activation; with ``return_convergence_delta``,
        ``(attributions, delta)``.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> layer_deeplift_shap(net, "1", torch.randn(5, 3), torch.randn(6, 3), target=1).shape
        torch.Size([5, 4])

    References:
        Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", 2017.
    """
    require_module(model)
    p = layer_problem(model, [layer], inputs, target, additional_forward_args, attribute_to_layer_input,
                      deferrable=True)
    _custom_arity(custom_attribution_func)
    pairs, bs, m = baseline_pairs(p, baselines, inputs)
    attrs = _at_layer(layer_rescale(pairs, bs, "layer_deeplift_shap"), multiply_by_inputs, custom_attribution_func)
    return _with_delta(as_layer_result(mean_over_baselines(attrs, m, 0)),
                       (lambda: _input_major(convergence_delta(pairs, attrs, bs), m))
                       if return_convergence_delta else None)
