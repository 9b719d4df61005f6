"""Layer-wise relevance propagation (LRP) rules as data, applied as gradient overrides for one call.

A rule is a value ``(kind, params)`` (:class:`Rule`):

- ``("epsilon", {"epsilon": ε})`` — ``R_in = x ⊙ Jᵀ(R_out / (z + ε·sign z))``, ``z`` the module's output;
- ``("gamma", {"gamma": γ, "set_bias_to_zero": b})`` — the same with the weights ``W + γ·W⁺`` in ``z`` and
  ``J`` (and the bias zeroed with ``b``);
- ``("alpha1_beta0", {"set_bias_to_zero": b})`` — the same with the weights ``W⁺``;
- ``("identity", {})`` — ``R_in = R_out`` (reshaped: input and output of one size per example, e.g. Flatten).

``sign 0`` counts as ``+1``; gamma and alpha1_beta0 stabilise with ``ε = 1e-9``, as
Captum 0.9.0 does. Each rule acts on a leaf module (one without submodules) and
its first positional input. :func:`rule_plan` gives every leaf of a model its
rule: the user's map (a module, its dotted name, or a module type — matched
along the type's MRO), else :data:`DEFAULTS` (Captum's defaults, by exact type),
else an error naming the module.

Relevance is a gradient: the forward pass keeps every value, and each ruled
module's output carries a backward pass that divides by the stabilised ``z``,
goes back through the (modified) module and multiplies by its input
(``autograd.Function`` s with ``setup_context``, so ``torch.func`` sees them).
Between ruled modules the backward message is the relevance itself; so the
gradient of the explained output, times the output's value, is LRP's relevance
at the inputs (or at any layer). :func:`applied` puts a plan on the model for
the duration of a ``with`` block (:func:`attrfx.rules.applied`: forward hooks,
removed on every exit, nothing stored on the model).

References:
    Bach et al., "On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise Relevance
    Propagation", 2015; Montavon et al., "Layer-Wise Relevance Propagation: An Overview", 2019.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import rules as _rules
from ._errors import AttrfxTypeError, AttrfxValueError, as_flag, bad_type, bad_value
from .probe import layer_name, resolve_layer, submodules


class Rule(NamedTuple):
    """An LRP rule as data: ``kind`` and its ``params`` (a tuple ``(kind, params)``)."""

    kind: str
    params: Mapping[str, Any]


STABILITY = 1e-9
"""The stabiliser of gamma and alpha1_beta0, and epsilon's default (Captum's ``STABILITY_FACTOR``)."""

PARAMS: dict[str, dict[str, Any]] = {
    "epsilon": {"epsilon": STABILITY},
    "gamma": {"gamma": 0.25, "set_bias_to_zero": False},
    "alpha1_beta0": {"set_bias_to_zero": False},
    "identity": {},
}
"""Each kind's parameters and their defaults (Captum's ``EpsilonRule``, ``GammaRule``, ``Alpha1_Beta0_Rule``,
``IdentityRule``)."""

EPSILON, IDENTITY = Rule("epsilon", PARAMS["epsilon"]), Rule("identity", {})

DEFAULTS: dict[type, Rule] = {
    **{kind: EPSILON for kind in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.Conv2d, nn.AvgPool2d,
                                  nn.AdaptiveAvgPool2d, nn.Linear, nn.BatchNorm2d)},
    **{kind: IDENTITY for kind in (nn.ReLU, nn.Dropout, nn.Tanh)},
}
"""Captum's default rule per exact module type: epsilon (``ε = 1e-9``) for its layers with rules; its nonlinear
layers (ReLU, Dropout, Tanh) pass the relevance through, which is the identity rule."""


def as_rule(value: Any, arg: str = "rules") -> Rule:
    """``value`` (``(kind, params)``, params may leave out defaults) as a :class:`Rule` with every parameter.

    Example:
        >>> as_rule(("gamma", {"gamma": 0.5}))
        Rule(kind='gamma', params={'gamma': 0.5, 'set_bias_to_zero': False})
    """
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], Mapping)):
        raise bad_value(arg, f"rules given as (kind, params), kind one of {sorted(PARAMS)} and params a dict",
                        repr(value))
    kind, given = value
    if kind not in PARAMS:
        raise bad_value(arg, f"rules whose kind is one of {sorted(PARAMS)}", repr(kind))
    unknown = sorted(set(given) - set(PARAMS[kind]))
    if unknown:
        raise bad_value(arg, f"a {kind!r} rule with parameters among {sorted(PARAMS[kind])}", f"{unknown}")
    params = {**PARAMS[kind], **given}
    for name, number in params.items():
        if name == "set_bias_to_zero":
            params[name] = as_flag(f"{arg}: {kind} {name}", number)
        elif isinstance(number, bool) or not isinstance(number, (int, float)):
            raise bad_type(f"{arg}: {kind} {name}", "a real number", number)
        elif name == "epsilon" and number < 0:
            raise bad_value(f"{arg}: {kind} {name}", "non-negative", number)
        else:
            params[name] = float(number)
    return Rule(kind, params)


def leaves(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` without submodules, where rules act (``model`` itself if it has none).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.ReLU(), nn.Linear(3, 1)))
        >>> [type(m).__name__ for m in leaves(net)], leaves(nn.ReLU())
        (['Linear', 'ReLU', 'Linear'], [ReLU()])
    """
    return [m for m in submodules(model) if not any(c is not None for c in m._modules.values())]


def rule_plan(model: nn.Module, rules: Optional[Mapping[Any, Any]]) -> dict[nn.Module, Rule]:
    """Every leaf module's rule: from ``rules`` (module > dotted name > type along the MRO), else :data:`DEFAULTS`.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> [r.kind for r in rule_plan(net, {"2": ("gamma", {})}).values()]
        ['epsilon', 'identity', 'gamma']
    """
    if rules is not None and not isinstance(rules, Mapping):
        raise bad_type("rules", "None or a dict from modules, dotted names or module types to (kind, params) rules",
                       rules)
    found = leaves(model)
    by_module: dict[nn.Module, Rule] = {}
    by_type: dict[type, Rule] = {}
    for key, value in (rules or {}).items():
        rule = as_rule(value)
        if isinstance(key, type) and issubclass(key, nn.Module):
            by_type[key] = rule
        elif isinstance(key, (str, nn.Module)):
            module = resolve_layer(model, key, "rules")
            if not any(module is leaf for leaf in found):
                raise bad_value("rules", "keyed by leaf modules (rules act on modules without submodules)",
                                f"a rule for {layer_name(model, module)} ({type(module).__name__}), which has "
                                "submodules")
            by_module[module] = rule
        else:
            raise bad_type("rules", "a dict whose keys are modules, dotted names or nn.Module types", key)
    plan = {}
    for leaf in found:
        rule = by_module.get(leaf) or next((by_type[t] for t in type(leaf).__mro__ if t in by_type), None) \
            or DEFAULTS.get(type(leaf))
        if rule is None:
            raise AttrfxTypeError(
                f"`rules` must give a rule for module {layer_name(model, leaf)}, whose type has no default LRP rule "
                f"(defaults: {', '.join(sorted(t.__name__ for t in DEFAULTS))}), e.g. rules={{{type(leaf).__name__}: "
                f"('identity', {{}})}} if it passes relevance through unchanged; got {type(leaf).__name__}.")
        plan[leaf] = rule
    return plan


# --- the rules as gradients -----------------------------------------------------------------------------------


class _TimesInput(_rules._Rule):
    """``x`` itself (a view); the incoming gradient is multiplied by ``x`` on its way back."""

    @staticmethod
    def forward(x):
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * x


class _Divided(_rules._Rule):
    """``y`` itself (a view); the incoming gradient, divided by ``s``, goes to ``z`` and none to ``y``'s graph."""

    @staticmethod
    def forward(z, y, s):
        return y.view_as(y)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[2])

    @staticmethod
    def backward(ctx, g):
        (s,) = ctx.saved_tensors
        return g / s, None, None


class _PassedTo(_rules._Rule):
    """``y`` itself (a view); the incoming gradient goes unchanged (reshaped like ``x``) to ``x``, none to ``y``'s
    graph."""

    @staticmethod
    def forward(x, y):
        return y.view_as(y)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.shape = inputs[0].shape

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape), None


def stabilised(z: Tensor, epsilon: float) -> Tensor:
    """``z + ε·sign(z)`` with ``sign(0) = 1``: never closer to 0 than ``ε``.

    Example:
        >>> stabilised(torch.tensor([-2.0, 0.0, 3.0]), 0.5).tolist()
        [-2.5, 0.5, 3.5]
    """
    return z + torch.where(z >= 0, epsilon, -epsilon)


def modified_forward(module: nn.Module, x: Tensor, rule: Rule) -> Tensor:
    """``module``'s output on ``x`` with the rule's weights (``W + γW⁺`` or ``W⁺``, bias zeroed on request).

    The module's own parameters are never changed (threads may share it): the modified
    weights go to the functional form of Linear, Conv1d/2d/3d and BatchNorm1d/2d/3d. A
    module without a weight runs its own ``forward`` (no hooks).

    Example:
        >>> lin = nn.Linear(2, 1).requires_grad_(False)
        >>> lin.weight[:], lin.bias[:] = torch.tensor([[1.0, -2.0]]), 0.5
        >>> given = [("epsilon", {}), ("gamma", {"gamma": 1.0}), ("alpha1_beta0", {"set_bias_to_zero": True})]
        >>> [modified_forward(lin, torch.ones(1, 2), as_rule(r)).item() for r in given]   # W, W + W⁺, W⁺ without b
        [-0.5, 0.5, 1.0]
    """
    weight = getattr(module, "weight", None)
    if rule.kind in ("epsilon", "identity") or not isinstance(weight, Tensor):
        return module.forward(x)
    w = weight.detach()
    w = w + rule.params["gamma"] * w.clamp(min=0) if rule.kind == "gamma" else w.clamp(min=0)
    bias = getattr(module, "bias", None)
    b = None if bias is None else torch.zeros_like(bias) if rule.params["set_bias_to_zero"] else bias.detach()
    if isinstance(module, nn.Linear):
        return F.linear(x, w, b)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return module._conv_forward(x, w, b)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        batch_stats = module.training or module.running_mean is None
        stats = (None, None) if batch_stats else (module.running_mean, module.running_var)
        return F.batch_norm(x, *stats, w, b, batch_stats, 0.0, module.eps)
    raise AttrfxValueError(f"the {rule.kind} rule changes the weights of Linear, Conv1d/2d/3d and BatchNorm modules "
                           f"only; module {type(module).__name__} has a weight it cannot change (give it an epsilon "
                           "or identity rule).")


def propagate(rule: Rule, module: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """``y`` (the module's output on ``x``), whose backward pass carries relevance by ``rule``.

    Example:
        >>> lin = nn.Linear(2, 1, bias=False)
        >>> x = torch.tensor([[1.0, 2.0]], requires_grad=True)
        >>> propagate(EPSILON, lin, x, lin(x)).backward(lin(x).detach())   # relevance: the output
        >>> torch.allclose(x.grad, x.detach() * lin.weight.detach())        # x_i·w_i, summing to the output
        True
    """
    if rule.kind == "identity":
        if x.shape[0] != y.shape[0] or x.numel() != y.numel():
            raise AttrfxValueError(f"the identity rule needs a module whose output has as many values per example as "
                                   f"its input; {type(module).__name__} maps {tuple(x.shape)} to {tuple(y.shape)}.")
        return _PassedTo.apply(x, y)
    scaled = _TimesInput.apply(x)
    if getattr(module, "inplace", False):
        scaled = scaled.clone()
    z = modified_forward(module, scaled, rule)
    return _Divided.apply(z, y, stabilised(z.detach(), rule.params.get("epsilon", STABILITY)))


class _ByModule(_rules.RuleMap):
    """A :class:`~attrfx.rules.RuleMap` keyed by module instances (each leaf its own rule)."""

    __slots__ = ()

    def rule_for(self, module: nn.Module):
        return self.rules.get(module)


def applied(model: nn.Module, plan: Mapping[nn.Module, Rule]) -> _rules.applied:
    """The context in which ``model``'s backward pass propagates relevance by ``plan`` (:func:`rule_plan`).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False))
        >>> x = torch.ones(1, 2, requires_grad=True)
        >>> with applied(net, rule_plan(net, None)):
        ...     out = net(x)
        >>> (relevance,) = torch.autograd.grad(out, x, out.detach())   # conserved: no bias absorbs any
        >>> torch.allclose(relevance.sum(), out.sum(), atol=1e-6)
        True
    """
    rule_map = _ByModule("LRP", {module: functools.partial(propagate, rule) for module, rule in plan.items()})
    return _rules.applied(model, rule_map)


def describe(model: nn.Module, plan: Mapping[nn.Module, Rule]) -> list[str]:
    """One line per leaf module: its rule (what ``verbose=True`` prints).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        >>> for line in describe(net, rule_plan(net, None)):
        ...     print(line)
        Applied epsilon rule {'epsilon': 1e-09} on layer '0' (Linear)
        Applied identity rule {} on layer '1' (ReLU)
    """
    return [f"Applied {rule.kind} rule {dict(rule.params)} on layer {layer_name(model, module)} "
            f"({type(module).__name__})" for module, rule in plan.items()]
