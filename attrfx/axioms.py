"""The attribution axioms as public checks that return numbers.

Each check measures how far a result is from what an axiom demands (0 when
it holds exactly), so it can drive an assertion with a tolerance, a plot of
convergence, or a property-based test of a user's own pipeline
(see :mod:`attrfx.testing`).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from .gradients import neuron_values
from .inputs import as_tuple, format_args, format_baselines
from .probe import call_model, inspect_layers, resolve_layer
from .selectors import check_target, format_target, neuron_selectors, select_target

Attributions = Any  # a tensor, a tuple of tensors, or a list of those


def total(attributions: Attributions) -> Tensor:
    """``Σ`` of all attributions per example (over every tensor of a tuple): shape ``[N]``.

    Example:
        >>> total((torch.ones(2, 3), torch.ones(2, 1))).tolist()
        [4.0, 4.0]
    """
    parts = attributions if isinstance(attributions, (tuple, list)) else (attributions,)
    return sum(p.reshape(p.shape[0], -1).sum(1) for p in parts)


@torch.no_grad()
def output_difference(model: Callable, inputs: Any, *, baselines: Any = None, target: Any = None,
                      additional_forward_args: Any = None) -> Tensor:
    """``F(x) − F(b)`` per example, ``F`` the target-selected model output (any target form, a callable included).

    Example:
        >>> net = nn.Linear(3, 1)
        >>> x = torch.ones(2, 3)
        >>> torch.allclose(output_difference(net, x), (net.weight.sum()).expand(2))
        True
    """
    xs, _ = as_tuple(inputs)
    bs = tuple(torch.broadcast_to(b, x.shape) for x, b in zip(xs, format_baselines(baselines, xs)))
    args, target = format_args(additional_forward_args), format_target(target, xs[0].shape[0])
    at_inputs, at_baselines = call_model(model, xs, args), call_model(model, bs, args)
    check_target(at_inputs, target)
    return select_target(at_inputs, target) - select_target(at_baselines, target)


@torch.no_grad()
def neuron_difference(model: Callable, layer: Any, inputs: Any, selector: Any, *, baselines: Any = None,
                      additional_forward_args: Any = None, attribute_to_neuron_input: bool = False) -> Tensor:
    """``n(x) − n(b)`` per example for a hidden neuron (``[K, N]`` for a list of selectors).

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
        >>> neuron_difference(net, "0", torch.zeros(4, 3), 1).tolist()
        [0.0, 0.0, 0.0, 0.0]
    """
    xs, _ = as_tuple(inputs)
    bs = tuple(torch.broadcast_to(b, x.shape) for x, b in zip(xs, format_baselines(baselines, xs)))
    args = format_args(additional_forward_args)
    module = resolve_layer(model, layer)
    (info,) = inspect_layers(model, [module], xs, args, at_input=attribute_to_neuron_input)
    neurons, is_list = neuron_selectors(selector, info)
    values = neuron_values(model, module, neurons, args, attribute_to_neuron_input)
    change = values(*xs) - values(*bs)
    return change if is_list else change[0]


def completeness_gap(attributions: Attributions, difference: Tensor, *, relative: bool = False) -> Tensor:
    """``Σ attributions − difference`` per example (completeness: 0).

    With ``relative``, divided by ``|difference|`` (where it is non-zero).

    Example:
        >>> completeness_gap(torch.tensor([[1.0, 2.0]]), torch.tensor([3.5])).tolist()
        [-0.5]
    """
    gap = total(attributions) - difference
    if relative:
        scale = difference.abs()
        gap = gap / torch.where(scale > 0, scale, torch.ones_like(scale))
    return gap


def linear_model_gap(attributions: Attributions, inputs: Any, weights: Any, *, baselines: Any = None) -> float:
    """Largest ``|attribution − (x − b)·w|`` for a model linear in its inputs with weights ``w``.

    ``weights`` has the structure of the inputs without the example dim (one
    weight per feature). Integrated-gradients-type methods and DeepLift are exact here.

    Example:
        >>> linear_model_gap(torch.tensor([[2.0, 4.0]]), torch.tensor([[1.0, 2.0]]), torch.tensor([2.0, 2.0]))
        0.0
    """
    xs, _ = as_tuple(inputs)
    ws = weights if isinstance(weights, tuple) else (weights,)
    attrs = attributions if isinstance(attributions, tuple) else (attributions,)
    bs = format_baselines(baselines, xs)
    return max(_largest(a - (x - b) * w) for a, x, b, w in zip(attrs, xs, bs, ws))


def batch_independence_gap(attribute: Callable[[Any], Attributions], inputs: Any, *, example_dim: int = 0) -> float:
    """Largest difference between attributing a batch and attributing each example alone.

    ``attribute(inputs)`` is the method with every other argument fixed;
    ``example_dim`` is 1 for results with a leading selector dimension.

    Example:
        >>> batch_independence_gap(lambda x: 2 * x, torch.randn(3, 2))
        0.0
    """
    xs, was_tuple = as_tuple(inputs)
    whole = _flat(attribute(inputs))
    alone = [_flat(attribute(tuple(x[i:i + 1] for x in xs) if was_tuple else xs[0][i:i + 1]))
             for i in range(xs[0].shape[0])]
    return max(_largest(w - torch.cat([a[j] for a in alone], dim=example_dim)) for j, w in enumerate(whole))


def _largest(t: Tensor) -> float:
    return float(t.detach().abs().max()) if t.numel() else 0.0


def _flat(result: Attributions) -> list[Tensor]:
    if isinstance(result, Tensor):
        return [result]
    return [t for part in result for t in _flat(part)]


def linearity_gap(attribute: Callable[[Callable], Attributions], model: Callable, a: float = 2.0,
                  b: float = -0.5) -> float:
    """Largest ``|A(a·F₀ + b·F₁) − (a·A(F₀) + b·A(F₁))|``: attribution is linear in what it explains.

    ``F₀`` and ``F₁`` are outputs 0 and 1 of ``model`` (one forward pass each);
    ``attribute(forward)`` is the method with every other argument fixed and
    ``target=None`` (give layers as modules: the forward is a plain function).

    Example:
        >>> net = nn.Linear(3, 2)
        >>> saliency = lambda f: torch.func.grad(lambda x: f(x).sum())(torch.ones(1, 3))
        >>> linearity_gap(saliency, net) < 1e-6
        True
    """
    first = lambda *xs: model(*xs)[:, 0]
    second = lambda *xs: model(*xs)[:, 1]
    mixed = lambda *xs: (lambda out: a * out[:, 0] + b * out[:, 1])(model(*xs))
    ms, fs, gs = (_flat(attribute(f)) for f in (mixed, first, second))
    return max(_largest(m - (a * f + b * g)) for m, f, g in zip(ms, fs, gs))


def state_of(model: nn.Module, inputs: Any = ()) -> dict:
    """A snapshot of everything an attribution call must leave unchanged (compare two with :func:`state_changes`).

    Example:
        >>> snap = state_of(nn.Linear(2, 1), torch.ones(1, 2))
        >>> sorted(snap), sorted(snap["parameters"]), snap["training"], len(snap["inputs"])
        (['buffers', 'hooks', 'inputs', 'modules', 'parameters', 'training'], ['bias', 'weight'], {'': True}, 1)
    """
    xs = inputs if isinstance(inputs, tuple) else (inputs,)
    return {
        "parameters": {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()},
        "buffers": {n: b.detach().clone() for n, b in model.named_buffers()},
        "training": {n: m.training for n, m in model.named_modules()},
        "hooks": {n: tuple(len(getattr(m, h)) for h in _HOOK_DICTS) for n, m in model.named_modules()},
        "modules": [n for n, _ in model.named_modules()],
        "inputs": [(x.detach().clone(), x.requires_grad) for x in xs if isinstance(x, Tensor)],
    }


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def state_changes(before: dict, after: dict) -> list[str]:
    """What differs between two :func:`state_of` snapshots (empty list: stateless).

    Example:
        >>> net = nn.Linear(2, 1)
        >>> before = state_of(net)
        >>> _ = net.register_forward_hook(lambda *a: None)
        >>> state_changes(before, state_of(net))
        ['hooks of the model itself']
    """
    changes = []
    for kind in ("parameters", "buffers", "training", "hooks"):
        for name in sorted(set(before[kind]) | set(after[kind])):
            if name not in before[kind] or name not in after[kind] or not _same(before[kind][name], after[kind][name]):
                changes.append(f"{kind} of {name or 'the model itself'}")
    if before["modules"] != after["modules"]:
        changes.append("the module tree")
    for i, (b, a) in enumerate(zip(before["inputs"], after["inputs"])):
        if not _same(b, a):
            changes.append(f"input {i}")
    return changes


def statelessness_violations(call: Callable[[], Any], model: nn.Module, inputs: Any = ()) -> list[str]:
    """Run ``call()`` and list what it changed in ``model`` or ``inputs``, also if it raised.

    Example:
        >>> net = nn.Linear(2, 1)
        >>> statelessness_violations(lambda: net(torch.ones(1, 2)), net)
        []
    """
    before = state_of(model, inputs)
    try:
        call()
    except Exception:  # the call may fail; the state must be intact all the same
        pass
    return state_changes(before, state_of(model, inputs))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and torch.allclose(a, b, rtol=0, atol=0, equal_nan=True)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b
