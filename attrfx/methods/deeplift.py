"""DeepLift and DeepLiftSHAP: gradients with the rescale rule of :mod:`attrfx.rules` on the nonlinearities.

The model runs once on ``[inputs; baselines]`` so every rule sees its reference, and the neuron's value is
summed over both halves (as in Captum). The model must be an ``nn.Module``: the rules hook its nonlinearity
modules.
"""

from __future__ import annotations

import inspect
from typing import Callable, Optional, Sequence

import torch  # noqa: F401 (the examples use torch and nn)
from torch import Tensor, nn  # noqa: F401

from .. import rules
from .._api import public
from .._errors import bad_type, bad_value
from ..inputs import format_baselines, format_distribution, repeat_args
from ..probe import call_model
from ..problem import NeuronProblem, rule_problem

CustomFn = Callable[..., Sequence[Tensor]]


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


def rescale_multipliers(p: NeuronProblem, bs: Sequence[Tensor], method: str) -> tuple[Tensor, ...]:
    """DeepLift multipliers ``∂ʳn/∂x`` of each neuron against baselines ``bs``: ``[K, N, ...]``.

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

    with rules.applied(model, rules.DEEPLIFT_RESCALE) as ruling:
        multipliers = p.input_grads(p.xs, through=paired, rows=2 * n)
    rules.warn_uncovered(method, ruling)
    return multipliers


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
            raise bad_value("custom_attribution_func", f"to return {len(xs)} tensor(s) shaped like the inputs "
                            f"{[tuple(x.shape) for x in xs]}",
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
    dists = format_distribution(baselines, inputs, p.xs)
    n, m = p.n_examples, dists[0].shape[0]
    # Pairs laid out baseline-major, [M, N, ...]: inputs tiled, each baseline repeated per example.
    xs = tuple(x.repeat((m,) + (1,) * (x.dim() - 1)) for x in p.xs)
    bs = tuple(d.repeat_interleave(n, dim=0) for d in dists)
    pairs = p._replace(xs=xs, args=repeat_args(p.args, n, m))
    multipliers = rescale_multipliers(pairs, bs, "neuron_deeplift_shap")
    attrs = _combine(multipliers, xs, bs, multiply_by_inputs, custom_attribution_func)
    return p.result(tuple(a.reshape((a.shape[0], m, n) + tuple(a.shape[2:])).mean(1) for a in attrs))
