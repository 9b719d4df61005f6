"""Only the selected neurons: a layer fed by an ``nn.Linear`` needs just that Linear's rows of them.

When a layer's output is ``φ(W a + b)`` — an ``nn.Linear`` followed by
elementwise modules (ReLU, GELU, Tanh, ...), or the Linear itself — neuron
``j`` (last index) depends on row ``j`` of ``W`` alone. For K selected
neurons the Linear can compute ``a W[rows]ᵀ + b[rows]`` (K columns instead
of all of them), forward and backward; the other columns are zeros, which no
selected neuron reads. On an MLP or a transformer's feed-forward block this
removes most of the last matmul before the layer.

- :class:`LinearTrace` records, on one (empty-batch) pass, which Linear
  feeds the layer through elementwise modules only;
- :func:`selected_rows` gives the rows index selectors read;
- :func:`only_rows` makes the Linear compute only those rows during a pass.

Hooks act only on the thread that registered them and are removed on every
exit; under a ``torch.func`` transform :func:`only_rows` does nothing (the
whole Linear runs). A chain with hooks of its own (a user's, which may read
any feature) keeps its whole Linear. Other code that reads the Linear's output
before the layer sees zeros in the rows not computed; that changes nothing
the layer receives, unless it decides the path of the forward pass.
"""

from __future__ import annotations

import threading
from typing import Any, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .probe import submodules, transformed
from .selectors import IndexNeuron, Neuron

ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
               nn.Tanh, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.Softplus, nn.Softsign, nn.Identity, nn.Dropout)
"""Module types whose output element ``j`` depends on input element ``j`` only (Dropout: in eval mode)."""


def plain_linear(module: nn.Module) -> bool:
    """Whether ``module`` is an ``nn.Linear`` running ``nn.Linear``'s own forward."""
    return isinstance(module, nn.Linear) and type(module).forward is nn.Linear.forward


def may_feed(layer: nn.Module) -> bool:
    """Whether ``layer`` can be the end of a Linear → elementwise chain (a cheap test before any trace).

    Example:
        >>> may_feed(nn.ReLU()), may_feed(nn.Linear(2, 2)), may_feed(nn.LayerNorm(2))
        (True, True, False)
    """
    return plain_linear(layer) or type(layer) in ELEMENTWISE


SLICE_WORK = 1 << 23
"""Passes smaller than this (input elements × the Linear's width, :func:`worth_tracing`) gain less from
computing only some rows than an inspection pass with a trace costs, where the method could do without one."""


def hooked(module: nn.Module) -> bool:
    """Whether any forward or backward hook would run on ``module`` (its own, or global ones).

    Example:
        >>> lin = nn.Linear(2, 2)
        >>> before = hooked(lin); handle = lin.register_forward_hook(lambda *a: None)
        >>> before, hooked(lin)
        (False, True)
    """
    own = (module._forward_hooks, module._forward_pre_hooks, module._backward_hooks, module._backward_pre_hooks)
    everyone = (nn.modules.module._global_forward_hooks, nn.modules.module._global_forward_pre_hooks,
                nn.modules.module._global_backward_hooks, nn.modules.module._global_backward_pre_hooks)
    return any(map(bool, own + everyone))


def likely_feeder(model: nn.Module, layer: nn.Module) -> Optional[nn.Linear]:
    """``layer`` if it is a Linear, or its nearest earlier sibling that is not elementwise if that is one: a
    hint, from registration order alone, of the Linear a :class:`LinearTrace` would find (the trace decides).

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.Dropout(), nn.ReLU(), nn.LayerNorm(4), nn.ReLU())
        >>> likely_feeder(net, net[2]) is net[0], likely_feeder(net, net[4])
        (True, None)
    """
    if plain_linear(layer):
        return layer
    if type(layer) not in ELEMENTWISE:
        return None
    for parent in submodules(model):
        siblings = list(parent._modules.values())
        if any(child is layer for child in siblings):
            earlier = siblings[:next(i for i, child in enumerate(siblings) if child is layer)]
            before = [m for m in earlier if type(m) not in ELEMENTWISE]
            return before[-1] if before and plain_linear(before[-1]) else None
    return None


def worth_tracing(linear: nn.Linear, xs: Sequence[Tensor], copies: int) -> bool:
    """Whether passes over ``copies`` stacked copies of inputs ``xs`` are big enough for computing only some
    rows of ``linear`` to repay a traced inspection pass: ``copies · Σ numel(x) · out_features ≥ SLICE_WORK``.

    Example:
        >>> lin = nn.Linear(784, 512)
        >>> worth_tracing(lin, (torch.zeros(8, 784),), 1), worth_tracing(lin, (torch.zeros(8, 784),), 50)
        (False, True)
    """
    return copies * sum(x.numel() for x in xs) * linear.out_features >= SLICE_WORK


class LinearRows(NamedTuple):
    """Compute only output features ``index`` (sorted) of ``linear``'s first run in a pass."""

    linear: nn.Linear
    index: Tensor


class LinearTrace:
    """While in this context, record every run of the model's Linear and elementwise modules on this thread.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> with LinearTrace(net) as trace:
        ...     h = net[1](net[0](torch.zeros(0, 3)))
        >>> trace.feeder(h) is net[0]
        True
    """

    def __init__(self, model: nn.Module):
        self.modules = [m for m in submodules(model) if may_feed(m)]
        self.runs: list[tuple[nn.Module, Any, Any]] = []

    def __enter__(self) -> "LinearTrace":
        owner = threading.get_ident()

        def note(module: nn.Module, inputs: tuple, output: Any) -> None:
            if threading.get_ident() == owner and inputs:
                self.runs.append((module, inputs[0], output))

        self.handles = [m.register_forward_hook(note) for m in self.modules]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()

    def feeder(self, h: Tensor) -> Optional[nn.Linear]:
        """The Linear whose output became ``h`` through recorded elementwise modules only, on that Linear's
        first run, with no hooks on any module of that chain (a hook may read or change any feature, so it
        needs them all); None if there is none."""
        wanted, chain = h, []
        for i in range(len(self.runs) - 1, -1, -1):
            module, given, made = self.runs[i]
            if made is not wanted:
                continue
            chain.append(module)
            if plain_linear(module):
                first = all(m is not module for m, _, _ in self.runs[:i])
                return module if first and not any(map(hooked, chain)) else None
            wanted = given  # an elementwise module: follow its input
        return None

    def rows_for(self, h: Tensor, neurons: Sequence[Neuron]) -> Optional[LinearRows]:
        """The rows of :meth:`feeder` that ``neurons`` of activation ``h`` read (:func:`selected_rows`), if any."""
        linear = self.feeder(h)
        index = None if linear is None else selected_rows(neurons, linear.out_features)
        return None if index is None else LinearRows(linear, index)


def selected_rows(neurons: Sequence[Neuron], size: int) -> Optional[Tensor]:
    """The sorted last-dimension indices that index selectors read, or None when that is not under half of
    ``size`` (or a neuron is not an index selector, or reads a one-dimensional activation).

    Example:
        >>> from attrfx.selectors import IndexNeuron
        >>> selected_rows([IndexNeuron((slice(None), 0, 5), False), IndexNeuron((slice(None), 1, -1), False)], 16)
        tensor([ 5, 15])
    """
    picked: set[int] = set()
    for neuron in neurons:
        if not isinstance(neuron, IndexNeuron) or len(neuron.index) < 2:
            return None
        last = neuron.index[-1]
        picked.update(range(size)[last] if isinstance(last, slice) else (last % size,))
    return torch.tensor(sorted(picked)) if 2 * len(picked) <= size else None


class only_rows:
    """While in this context, ``rows.linear``'s first run on this thread computes only ``rows.index`` (the other
    output features are zeros); nothing happens for ``rows=None`` or under a ``torch.func`` transform.

    Example:
        >>> lin = nn.Linear(3, 4)
        >>> with only_rows(LinearRows(lin, torch.tensor([2]))):
        ...     y = lin(torch.ones(1, 3))
        >>> torch.equal(y[:, 2], lin(torch.ones(1, 3))[:, 2]), y[:, :2].abs().sum().item()
        (True, 0.0)
    """

    __slots__ = ("rows", "handles")

    def __init__(self, rows: Optional[LinearRows]):
        self.rows, self.handles = rows, ()

    def __enter__(self) -> None:
        if self.rows is None or transformed():
            return
        linear, index = self.rows
        owner, state = threading.get_ident(), {"x": None, "done": False}

        def pre(module: nn.Module, inputs: tuple) -> Any:
            if threading.get_ident() != owner or state["done"]:
                return None
            state["x"], state["done"] = inputs[0], True
            return (inputs[0].narrow(0, 0, 0),)  # the Linear's own matmul then runs on no rows

        def post(module: nn.Module, inputs: tuple, output: Tensor) -> Any:
            if threading.get_ident() != owner or state["x"] is None:
                return None
            x, state["x"] = state["x"], None  # later runs of the Linear are left alone
            return narrow_linear(linear, x, index.to(linear.weight.device))

        self.handles = (linear.register_forward_pre_hook(pre), linear.register_forward_hook(post))

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()


def narrow_linear(linear: nn.Linear, x: Tensor, rows: Tensor) -> Tensor:
    """``linear(x)`` with only output features ``rows`` computed, ``x W[rows]ᵀ + b[rows]``; zeros elsewhere.

    Example:
        >>> lin = nn.Linear(3, 4)
        >>> x = torch.randn(2, 3)
        >>> torch.allclose(narrow_linear(lin, x, torch.tensor([1, 3]))[:, [1, 3]], lin(x)[:, [1, 3]])
        True
    """
    bias = None if linear.bias is None else linear.bias[rows]
    part = F.linear(x, linear.weight[rows], bias)
    return part.new_zeros(part.shape[:-1] + (linear.out_features,)).index_copy(-1, rows, part)
