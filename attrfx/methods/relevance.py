"""Layer-wise relevance propagation: the output's value redistributed backwards by per-module rules.

Both forms are one kernel: the gradient of the explained output ``F`` while the
:mod:`attrfx.propagation` rules override the backward pass, times ``F``'s value — at the
inputs (:func:`lrp`) or at a layer's output or input through the probe (:func:`layer_lrp`).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import torch  # noqa: F401 (the examples use torch and nn)
from torch import Tensor, nn  # noqa: F401

from .. import propagation
from .._api import public
from ..gradients import layer_grads_and_output, output_input_grads_and_value
from ..inputs import restore
from ..problem import as_layer_result, layer_problem, output_problem, require_module
from ..selectors import check_target


def _ruled(model: Any, rules: Any, verbose: bool) -> dict:
    """The rule of every leaf module (printed with ``verbose``), for an ``nn.Module`` model."""
    require_module(model)
    plan = propagation.rule_plan(model, rules)
    if verbose:
        print("\n".join(propagation.describe(model, plan)))
    return plan


def _times_output(values: Sequence[Tensor], output: Tensor) -> tuple[Tensor, ...]:
    """Each ``[N, ...]`` value times the explained output of its row (the relevance the output starts with)."""
    return tuple(v * output.reshape((-1,) + (1,) * (v.dim() - 1)).to(v.dtype) for v in values)


def _delta(output: Tensor, relevance: Sequence[Tensor]) -> Tensor:
    """``F − Σ relevance`` per example (Captum's convergence delta)."""
    return output.flatten() - sum(r.reshape(r.shape[0], -1).sum(1) for r in relevance)


@public
def lrp(model, inputs, *, target=None, additional_forward_args=None, return_convergence_delta=False, verbose=False,
        rules=None):
    """Layer-wise relevance propagation to the inputs: ``F(x)`` redistributed module by module, back to ``x``.

    Each leaf module passes relevance back by its rule (:mod:`attrfx.propagation`), e.g. epsilon:
    ``R_in = x ⊙ Jᵀ(R_out / (z + ε·sign z))``; the relevance at the output is ``F(x)``.
    Captum: ``LRP``.

    Args:
        model: an ``nn.Module`` whose leaf modules all have a rule.
        inputs: a tensor or tuple of tensors, dim 0 = examples.
        target: which output to explain: None, int, tuple, tensor, list, or a callable of the output.
        additional_forward_args: extra arguments passed to ``model`` after the inputs.
        return_convergence_delta: also return ``F(x) − Σ relevance`` per example.
        verbose: print each leaf module's rule.
        rules: a dict from modules, dotted names or module types to rules ``(kind, params)``:
            ``("epsilon", {"epsilon": e})``, ``("gamma", {"gamma": g, "set_bias_to_zero": b})``,
            ``("alpha1_beta0", {"set_bias_to_zero": b})``, ``("identity", {})``; a leaf left out gets
            Captum's default for its type (:data:`attrfx.propagation.DEFAULTS`). Nothing is stored on the model.

    Returns:
        Relevance shaped like ``inputs``; with ``return_convergence_delta``, ``(relevance, delta)``.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 2, bias=False))
        >>> x = torch.randn(5, 3)
        >>> relevance, delta = lrp(net, x, target=1, return_convergence_delta=True)
        >>> relevance.shape, bool(delta.abs().max() < 1e-5)   # no bias: the relevance sums to the output
        (torch.Size([5, 3]), True)
        >>> gamma = lrp(net, x, target=1, rules={nn.Linear: ("gamma", {"gamma": 0.25})})

    References:
        Bach et al., "On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise Relevance
        Propagation", 2015.
    """
    plan = _ruled(model, rules, verbose)
    p = output_problem(model, inputs, target, additional_forward_args)
    with propagation.applied(model, plan):
        grads, output = output_input_grads_and_value(p.model, p.xs, p.args, p.target,
                                                     functools.partial(check_target, target=p.target))
    relevance = _times_output(grads, output)
    result = restore(relevance, p.was_tuple)
    return (result, _delta(output, relevance)) if return_convergence_delta else result


@public
def layer_lrp(model, layer, inputs, *, target=None, additional_forward_args=None, return_convergence_delta=False,
              attribute_to_layer_input=False, verbose=False, rules=None):
    """Layer-wise relevance propagation to a layer: the relevance arriving at its output (or input).

    The same propagation as :func:`lrp`, read at the layer by the probe: ``F(x) · ∂̃F/∂h``,
    ``∂̃`` the gradient the rules make. Captum: ``LayerLRP``.

    Args:
        layer: a module, its dotted name, or a list of these (then the result is a list).
        attribute_to_layer_input: the relevance at the layer's input instead of its output.
        return_convergence_delta: also return ``F(x) − Σ relevance`` per example (a list for a list of layers).
        Other arguments as in :func:`lrp`.

    Returns:
        Relevance shaped like the layer's activation; with ``return_convergence_delta``, ``(relevance, delta)``.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> layer_lrp(net, "2", torch.randn(5, 3), target=0, attribute_to_layer_input=True).shape
        torch.Size([5, 4])

    References:
        Bach et al., "On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise Relevance
        Propagation", 2015.
    """
    plan = _ruled(model, rules, verbose)
    many = isinstance(layer, list)
    p = layer_problem(model, layer if many else [layer], inputs, target, additional_forward_args,
                      attribute_to_layer_input)
    with propagation.applied(model, plan):
        _, grads, output = layer_grads_and_output(p.model, p.infos, p.xs, p.args, p.target)
    relevance = [_times_output(g, output.detach()) for g in grads]
    results = [as_layer_result(r) for r in relevance]
    deltas = [_delta(output.detach(), r) for r in relevance]
    if return_convergence_delta:
        return (results, deltas) if many else (results[0], deltas[0])
    return results if many else results[0]
