"""Gradient-override rules: a nonlinearity keeps its forward value, its backward is replaced.

A rule is a function ``(module, x, y) → y'``: given a module's input ``x`` and
output ``y``, it returns a tensor equal to ``y`` whose gradient follows the
rule: a tensor hook on a view of ``y`` (guided backprop), or a
``torch.autograd.Function`` with ``setup_context`` and ``generate_vmap_rule``
(deconvolution, DeepLift), so ``torch.func.vjp``/``grad``/``vmap`` see it.

Rules are declared as data, a :class:`RuleMap` from module types to rules (as
in zennit), and :func:`applied` puts one on a model for the duration of a
``with`` block: forward hooks, removed on every exit, acting only on the
thread that registered them.

- :data:`GUIDED_BACKPROP`: ReLU passes ``relu(g)`` where its input was positive.
- :data:`DECONVOLUTION`: ReLU passes ``relu(g)`` whatever its input's sign.
- :data:`DEEPLIFT_RESCALE`: the gradient becomes ``Δy/Δx`` against a baseline
  run. The model runs on ``[inputs; baselines]`` (``2N`` rows): the first half
  is the input, the second its reference. Where ``|Δx| < 1e-10`` the ordinary
  gradient is kept (Captum's ``eps``; :func:`deeplift_rescale` makes the map
  for another). Supported, as in Captum: ReLU, ELU,
  LeakyReLU, Sigmoid, Tanh, Softplus, Softmax, MaxPool1d/2d/3d (exact types).
  Every other module — GELU, SiLU, ``F.relu`` called in ``forward`` — keeps its
  ordinary gradient, as in Captum; summation-to-delta then holds only where
  those modules are linear. The modules of a known nonlinear type
  (:data:`NONLINEAR`) that run without a rule are noted (:attr:`applied.uncovered`),
  and DeepLift warns with :class:`RuleCoverageWarning`; functional calls in
  ``forward`` (``F.gelu``, ``torch.softmax``) are no modules and cannot be seen.

In-place modules (``nn.ReLU(inplace=True)``) get a copy of their input, so the
rule still sees the value before the operation.
"""

from __future__ import annotations

import functools
import threading
import warnings
from typing import Any, Callable, Mapping, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._errors import AttrfxValueError, bad_type
from .probe import layer_name, submodules, transformed

RuleFn = Callable[[nn.Module, Tensor, Tensor], Tensor]

EPS = 1e-10
"""``|Δx|`` below which the DeepLift rules keep the ordinary gradient (Captum's default ``eps``)."""


class RuleCoverageWarning(UserWarning):
    """A rule-based attribution ran modules whose nonlinearity no rule covers; they kept their ordinary gradient,
    so the method's law (DeepLift's summation-to-delta) may fail."""


NONLINEAR: tuple[type, ...] = (
    nn.Threshold, nn.ReLU, nn.RReLU, nn.Hardtanh, nn.ReLU6, nn.Sigmoid, nn.Hardsigmoid, nn.Tanh, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.ELU, nn.CELU, nn.SELU, nn.GLU, nn.GELU, nn.Hardshrink, nn.LeakyReLU, nn.LogSigmoid, nn.Softplus,
    nn.Softshrink, nn.PReLU, nn.Softsign, nn.Tanhshrink, nn.Softmin, nn.Softmax, nn.Softmax2d, nn.LogSoftmax,
    nn.MultiheadAttention,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.FractionalMaxPool2d, nn.FractionalMaxPool3d, nn.LPPool1d, nn.LPPool2d,
    nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LocalResponseNorm,
)
"""Module types (and their subclasses) whose effect on each example is nonlinear: torch's activations, max- and
power-pooling, per-example normalisation."""


class RuleMap(NamedTuple):
    """Which rule each module type gets.

    ``rules``: module type → rule; ``subclasses``: match with ``isinstance``
    (else the exact type); ``single_use``: refuse a module that runs more than
    once in one forward pass (a rule that pairs rows of one call cannot tell
    two calls apart in the reference run); ``reported``: module types that, run
    without a rule, are noted in :attr:`applied.uncovered`.
    """

    name: str
    rules: Mapping[type, RuleFn]
    subclasses: bool = False
    single_use: bool = False
    reported: tuple[type, ...] = ()

    def rule_for(self, module: nn.Module):
        """The rule for ``module``, or ``None``."""
        if not self.subclasses:
            return self.rules.get(type(module))
        for kind, rule in self.rules.items():
            if isinstance(module, kind):
                return rule
        return None


# --- guided backpropagation and deconvolution -------------------------------------------------


def _clamped(y: Tensor) -> Tensor:
    """A view of ``y`` whose incoming gradient is clamped at 0: ``relu(g)`` goes on to ``y``'s graph.

    A tensor hook, not an ``autograd.Function``: under ``torch.func`` transforms
    a tenth of the per-call cost, and as fast on plain autograd.
    """
    out = y.view_as(y)
    if out.requires_grad:
        out.register_hook(lambda g: g.clamp(min=0))
    return out


def guided_relu(module: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """ReLU under guided backpropagation: ``∂x = relu(g)·[x > 0]``.

    ``relu(g)`` then ReLU's own backward pass (``·[x > 0]``).

    Example:
        >>> x = torch.tensor([-1.0, 2.0, 3.0], requires_grad=True)
        >>> guided_relu(nn.ReLU(), x, x.relu()).backward(torch.tensor([5.0, -1.0, 4.0]))
        >>> x.grad.tolist()
        [0.0, 0.0, 4.0]
    """
    return _clamped(y)


class _Rule(torch.autograd.Function):
    """An ``autograd.Function`` with ``setup_context`` (so ``torch.func`` sees it) and a cheap ``apply``.

    Rules pass every argument positionally, so on plain autograd ``apply`` goes
    straight to autograd's own ``apply``, skipping the per-call
    ``inspect.signature`` binding torch does for ``setup_context`` functions
    (16 µs of a 20 µs call, once per nonlinearity per pass). Under ``torch.func``
    transforms it is the usual ``apply``.
    """

    generate_vmap_rule = True

    @classmethod
    def apply(cls, *args):
        if transformed():
            return super().apply(*args)
        return super(torch.autograd.Function, cls).apply(*args)


class _ClampedToInput(_Rule):
    """``y`` itself (a view); the incoming gradient, clamped at 0, goes to ``x`` and none to ``y``'s graph."""

    @staticmethod
    def forward(x, y):
        return y.view_as(y)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, g):
        return g.clamp(min=0), None


def deconv_relu(module: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """ReLU under deconvolution: ``∂x = relu(g)``, whatever the sign of ``x``.

    An ``autograd.Function`` that passes ``y`` and sends ``relu(g)`` straight
    to ``x``: on plain autograd no elementwise work in the forward pass (a
    straight-through sum ``y + (x − x)`` cost three passes per ReLU, 1.25× the
    time on the benchmark CNN's late layer); under ``torch.func`` transforms
    about 0.3 ms per application.

    Example:
        >>> x = torch.tensor([-1.0, 2.0, 3.0], requires_grad=True)
        >>> deconv_relu(nn.ReLU(), x, x.relu()).backward(torch.tensor([5.0, -1.0, 4.0]))
        >>> x.grad.tolist()
        [5.0, 0.0, 4.0]
    """
    return _ClampedToInput.apply(x, y)


# --- DeepLift rescale ---------------------------------------------------------------------------


def _deltas(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """``Δx, Δy`` between the input half and the reference half, repeated for both halves."""
    x_in, x_ref = x.chunk(2)
    y_in, y_ref = y.chunk(2)
    return torch.cat([x_in - x_ref] * 2), torch.cat([y_in - y_ref] * 2)


class _Rescale(_Rule):
    """Elementwise rescale: ``g·Δy/Δx`` to ``x``; where ``|Δx| < eps``, ``g`` goes back through ``y``'s own graph.

    ``Δy`` (zero where ``|Δx| < eps``) and ``Δx`` (one there) are taken once in the
    forward pass, for one half of the rows: the backward pass is a multiply and a
    divide, the same operations in the same order as Captum's. ``y``'s graph is
    skipped when no element needs it (plain autograd on CPU: known from the forward
    pass; on an accelerator that check would wait for the device).
    """

    @staticmethod
    def forward(x, y, eps):
        return y.view_as(y)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, y, eps = inputs
        (x_in, x_ref), (y_in, y_ref) = x.detach().chunk(2), y.detach().chunk(2)
        dx, dy = x_in - x_ref, y_in - y_ref
        small = dx.abs() < eps
        ctx.ordinary = transformed() or small.device.type != "cpu" or bool(small.any())  # (no device sync)
        if ctx.ordinary:
            dx, dy = dx.masked_fill(small, 1), dy.masked_fill(small, 0)
        ctx.save_for_backward(dy, dx, small)

    @staticmethod
    def backward(ctx, g):
        dy, dx, small = ctx.saved_tensors
        pairs = g.unflatten(0, (2, -1))
        to_x = (pairs * dy / dx).flatten(0, 1)
        to_y = torch.where(small, pairs, 0).flatten(0, 1) if ctx.ordinary else None
        return to_x, to_y, None


class _RescaleSoftmax(_Rule):
    """Softmax rescale, then the mean over each example (both halves) is subtracted."""

    @staticmethod
    def forward(x, y, dim, eps):
        return y.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, y, dim, eps = inputs
        ctx.dim, ctx.eps = dim, eps
        ctx.save_for_backward(x, y)

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        dx, dy = _deltas(x, y)
        ordinary = y * (g - (g * y).sum(ctx.dim, keepdim=True))
        u = torch.where(dx.abs() < ctx.eps, ordinary, g * dy / dx)
        pairs = u.reshape((2, u.shape[0] // 2, -1))
        mean = pairs.mean(dim=(0, 2), keepdim=True).expand_as(pairs)
        return u - mean.reshape(u.shape), None, None, None


class _RescaleMaxPool(_Rule):
    """Max-pool rescale: each window's ``Δ`` goes to the argmax of each half, divided by ``Δx``."""

    @staticmethod
    def forward(x, y, indices, dims, eps):
        return y.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, y, indices, dims, eps = inputs
        ctx.dims, ctx.eps = dims, eps
        ctx.save_for_backward(x, y, indices)

    @staticmethod
    def backward(ctx, g):
        x, y, indices = ctx.saved_tensors
        y_in, y_ref = y.chunk(2)
        top = torch.maximum(y_in, y_ref)
        g_in, g_ref = g.chunk(2)
        at_in, at_ref = indices.chunk(2)
        x_in, x_ref = x.chunk(2)
        routed = (_scatter(g_in * (top - y_ref), at_in, x_in, ctx.dims)
                  + _scatter(g_ref * (y_in - top), at_ref, x_in, ctx.dims))
        dx = torch.cat([x_in - x_ref] * 2)
        ordinary = _scatter(g, indices, x, ctx.dims)
        return torch.where(dx.abs() < ctx.eps, ordinary, torch.cat([routed] * 2) / dx), None, None, None, None


def _scatter(g: Tensor, indices: Tensor, x: Tensor, dims: int) -> Tensor:
    """``g`` summed into each pooling window's argmax: a tensor shaped like ``x`` (the max-pool backward)."""
    lead = tuple(g.shape[:-dims])
    flat = torch.zeros(lead + (x.shape[-dims:].numel(),), dtype=g.dtype, device=g.device)
    flat = flat.scatter_add(-1, indices.flatten(-dims), g.flatten(-dims))
    return flat.reshape(lead + tuple(x.shape[-dims:]))


def rescale(module: nn.Module, x: Tensor, y: Tensor, eps: float = EPS) -> Tensor:
    """DeepLift rescale for an elementwise nonlinearity: ``∂x = g·Δy/Δx`` (ordinary gradient where ``|Δx| < eps``).

    ``x`` and ``y`` hold ``[input; reference]`` rows (``2N``).

    Example:
        >>> x = torch.tensor([2.0, 0.0], requires_grad=True)   # input 2, reference 0
        >>> rescale(nn.Sigmoid(), x, torch.sigmoid(x)).sum().backward()
        >>> round(x.grad[0].item(), 6) == round((torch.sigmoid(torch.tensor(2.0)).item() - 0.5) / 2, 6)
        True
    """
    return _Rescale.apply(x, y, eps)


def rescale_softmax(module: nn.Module, x: Tensor, y: Tensor, eps: float = EPS) -> Tensor:
    """DeepLift rescale for ``nn.Softmax``, minus each example's mean multiplier.

    Captum subtracts the mean over the whole batch, which couples examples;
    here the mean is taken per example (over its input and reference rows),
    which equals Captum's for one example.

    Example:
        >>> x = torch.tensor([[1.0, 2.0], [0.0, 0.0]], requires_grad=True)   # [input; reference] rows (2N)
        >>> y = rescale_softmax(nn.Softmax(dim=1), x, x.softmax(1))
        >>> y[:, 0].sum().backward()    # Δy₀/Δx₀ = −0.2311 at feature 0, less the example's mean multiplier
        >>> torch.equal(y, x.softmax(1)), [[round(v, 4) for v in row] for row in x.grad.tolist()]
        (True, [[-0.1155, 0.1155], [-0.1155, 0.1155]])
    """
    dim = module.dim if module.dim is not None else (0 if x.dim() in (0, 1, 3) else 1)
    return _RescaleSoftmax.apply(x, y, dim, eps)


def rescale_maxpool(module: nn.Module, x: Tensor, y: Tensor, eps: float = EPS) -> Tensor:
    """DeepLift rescale for ``nn.MaxPool1d/2d/3d``.

    ``Δ`` of each window's maximum, ``max(y, y_ref) − y_ref`` at the input's
    argmax plus ``y − max(y, y_ref)`` at the reference's argmax, divided by
    ``Δx``; the ordinary gradient where ``|Δx| < eps``. Windows that share an
    argmax (stride < kernel) add their shares, as the ordinary gradient does
    (Captum's ``max_unpool`` keeps one of them).

    Example:
        >>> pool = nn.MaxPool1d(2)
        >>> x = torch.tensor([[[1.0, 3.0]], [[0.0, 0.0]]], requires_grad=True)   # [input; reference], [2N, C, L]
        >>> rescale_maxpool(pool, x, pool(x)).sum().backward()
        >>> x.grad.tolist()   # Δy = 3 − 0 to the input's argmax, over its Δx = 3
        [[[0.0, 1.0]], [[0.0, 1.0]]]
    """
    if module.return_indices:
        raise AttrfxValueError(f"the DeepLift rule for {type(module).__name__} needs return_indices=False.")
    dims = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}[type(module)]
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[dims]
    with torch.no_grad():
        _, indices = pool(x.detach(), module.kernel_size, module.stride, module.padding, module.dilation,
                          module.ceil_mode, True)
    return _RescaleMaxPool.apply(x, y, indices, dims, eps)


GUIDED_BACKPROP = RuleMap("guided backpropagation", {nn.ReLU: guided_relu}, subclasses=True)
DECONVOLUTION = RuleMap("deconvolution", {nn.ReLU: deconv_relu}, subclasses=True)


def deeplift_rescale(eps: float = EPS) -> RuleMap:
    """The DeepLift rescale rules, keeping the ordinary gradient where ``|Δx| < eps`` (Captum's ``eps``).

    Example:
        >>> deeplift_rescale(1e-6).rule_for(nn.Tanh()).keywords
        {'eps': 1e-06}
    """
    elementwise, softmax, pool = (functools.partial(rule, eps=eps) for rule in (rescale, rescale_softmax,
                                                                                  rescale_maxpool))
    return RuleMap("DeepLift rescale", {
        nn.ReLU: elementwise, nn.ELU: elementwise, nn.LeakyReLU: elementwise, nn.Sigmoid: elementwise,
        nn.Tanh: elementwise, nn.Softplus: elementwise, nn.Softmax: softmax,
        nn.MaxPool1d: pool, nn.MaxPool2d: pool, nn.MaxPool3d: pool,
    }, single_use=True, reported=NONLINEAR)


DEEPLIFT_RESCALE = deeplift_rescale()


# --- applying a rule map ------------------------------------------------------------------------


class applied:
    """Put ``rules`` on every matching submodule of ``model`` inside the ``with`` block.

    Each forward pass of ``model`` is counted afresh; with ``rules.single_use``
    a module that runs twice raises an error naming it. A module run while grad
    mode is off keeps its own forward (there is no gradient to override). Hooks
    act only on this thread and are removed on every exit. A module gets one
    forward hook; an in-place one also a pre-hook that hands it a copy of its input.
    A module of a ``rules.reported`` type without a rule that runs with grad mode
    on is noted (:attr:`uncovered`).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
        >>> with applied(net, GUIDED_BACKPROP):
        ...     len(net[1]._forward_hooks)
        1
        >>> len(net[1]._forward_hooks)
        0
    """

    def __init__(self, model: nn.Module, rules: RuleMap):
        if not isinstance(model, nn.Module):
            raise bad_type("model", f"an nn.Module ({rules.name} hooks its nonlinearity modules)", model)
        self.model, self.rules, self.handles = model, rules, []
        self.calls: dict[int, int] = {}             # runs of each ruled module in this forward pass
        self.inputs: dict[int, list[Tensor]] = {}   # in-place modules' inputs, kept before they are overwritten
        self.unruled_ran: dict[int, nn.Module] = {}  # reported modules that ran without a rule, in order

    def __enter__(self) -> "applied":
        self.owner = threading.get_ident()  # the hooks act on the thread that entered the block only
        modules = submodules(self.model)
        matched = [(module, rule) for module in modules if (rule := self.rules.rule_for(module)) is not None]
        ruled = {id(module) for module, _ in matched}
        unruled = [m for m in modules if isinstance(m, self.rules.reported) and id(m) not in ruled]
        in_place = [module for module, _ in matched if getattr(module, "inplace", False)]
        try:
            if self.rules.single_use or in_place:
                self.handles.append(self.model.register_forward_pre_hook(self._new_pass))
            self.handles.extend(module.register_forward_pre_hook(self._keep_input) for module in in_place)
            self.handles.extend(module.register_forward_hook(functools.partial(self._apply, rule))
                                for module, rule in matched)
            self.handles.extend(module.register_forward_hook(self._note_uncovered) for module in unruled)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _new_pass(self, model: nn.Module, inp: tuple) -> None:
        if threading.get_ident() == self.owner:
            self.calls.clear()
            self.inputs.clear()

    def _keep_input(self, mod: nn.Module, inp: tuple) -> Optional[tuple]:
        if threading.get_ident() != self.owner or not torch.is_grad_enabled():
            return None
        self.inputs.setdefault(id(mod), []).append(inp[0])
        return (inp[0].clone(),) + tuple(inp[1:])

    @property
    def uncovered(self) -> list[str]:
        """``"'name' (Type)"`` of each module of a ``rules.reported`` type that ran without a rule, in order."""
        return [f"{layer_name(self.model, mod)} ({type(mod).__name__})" for mod in self.unruled_ran.values()]

    def _note_uncovered(self, mod: nn.Module, inp: tuple, out: Any) -> None:
        if threading.get_ident() == self.owner and torch.is_grad_enabled():
            self.unruled_ran.setdefault(id(mod), mod)

    def _apply(self, rule: RuleFn, mod: nn.Module, inp: tuple, out: Any) -> Optional[Tensor]:
        """The forward hook of a ruled module: its output, with the rule's gradient."""
        if threading.get_ident() != self.owner:
            return None
        if self.rules.single_use:
            self.calls[id(mod)] = self.calls.get(id(mod), 0) + 1
            if self.calls[id(mod)] > 1:
                raise AttrfxValueError(
                    f"module {layer_name(self.model, mod)} ({type(mod).__name__}) runs more than once in one "
                    f"forward pass; the {self.rules.name} rule needs each nonlinearity to run once. Give each use "
                    f"its own module instance.")
        if not torch.is_grad_enabled():  # no graph is recorded, so there is no gradient to override
            return None
        if not isinstance(out, Tensor):
            raise AttrfxValueError(f"the {self.rules.name} rule needs module {layer_name(self.model, mod)} to "
                                   f"return one tensor; it returned {type(out).__name__}.")
        if not getattr(mod, "inplace", False):
            return rule(mod, inp[0], out)
        kept = self.inputs.get(id(mod))  # (none if grad mode came on inside the module)
        return rule(mod, kept.pop(), out) if kept else None


def warn_uncovered(method: str, ruling: applied, explained: str = "neuron") -> None:
    """Issue :class:`RuleCoverageWarning` from ``method`` if modules ran under ``ruling`` that its rules do not cover
    (``explained``: what the attributions should sum the change of, "neuron" or "output").

    (``stacklevel`` points at the line that called the public method.)

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.GELU())
        >>> with applied(net, DEEPLIFT_RESCALE) as ruling:
        ...     _ = net(torch.ones(2, 2))
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always"); warn_uncovered("deeplift", ruling)
        >>> ruling.uncovered, caught[0].category.__name__
        (["'1' (GELU)"], 'RuleCoverageWarning')
    """
    names = ruling.uncovered
    if names:
        covered = ", ".join(kind.__name__ for kind in ruling.rules.rules)
        warnings.warn(f"{method}: {'modules' if len(names) > 1 else 'module'} {', '.join(names)} ran with no "
                      f"{ruling.rules.name} rule and kept the ordinary gradient, so the attributions need not sum to "
                      f"the {explained}'s change (the rules cover {covered}); functional nonlinearities called in "
                      f"forward (F.gelu, torch.softmax, ...) are neither seen nor rescaled.", RuleCoverageWarning,
                      stacklevel=5)
