"""Only the selected neurons: a layer fed by an ``nn.Linear`` needs just that Linear's rows of them.

When a layer's output is ``φ(W a + b)`` — an ``nn.Linear`` followed by
elementwise modules (ReLU, GELU, Tanh, ...), or the Linear itself — neuron
``j`` (last index) depends on row ``j`` of ``W`` alone. For K selected
neurons the Linear can compute ``a W[rows]ᵀ + b[rows]`` (K columns instead
of all of them), forward and backward; the other columns are zeros, which no
selected neuron reads. On an MLP or a transformer's feed-forward block this
removes most of the last matmul before the layer.

- :func:`likely_chain` names, from registration order, the Linear and
  elementwise modules that likely lead to the layer;
- :class:`LinearTrace` records, on one pass, whether that Linear does feed
  the layer through elementwise modules only;
- :func:`selected_rows` gives the rows index selectors read;
- :func:`only_rows` makes the Linear compute only those rows during a pass;
- :class:`Guess` does both at once on a method's first real pass, before the
  layer has been checked: the rows are guessed from the selectors, and the
  trace confirms them afterwards (or the pass runs again with the whole Linear).

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

from .probe import submodules, tensor_version, transformed
from .selectors import IndexNeuron, Neuron, as_index

ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
               nn.Tanh, nn.Hardtanh, nn.Hardsigmoid, nn.Hardswish, nn.Softplus, nn.Softsign, nn.Identity, nn.Dropout)
"""Module types whose output element ``j`` depends on input element ``j`` only (Dropout: in eval mode)."""


def plain_linear(module: nn.Module) -> bool:
    """Whether ``module`` is an ``nn.Linear`` running ``nn.Linear``'s own forward.

    Example:
        >>> class Scaled(nn.Linear):
        ...     def forward(self, x): return 2 * super().forward(x)
        >>> plain_linear(nn.Linear(2, 2)), plain_linear(Scaled(2, 2)), plain_linear(nn.ReLU())
        (True, False, False)
    """
    return isinstance(module, nn.Linear) and type(module).forward is nn.Linear.forward


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


def likely_chain(model: nn.Module, layer: nn.Module) -> Optional[tuple[nn.Module, ...]]:
    """``(linear, *elementwise, layer)``: the Linear that likely feeds ``layer`` and the modules between, from
    registration order alone — ``layer`` if it is a Linear, else its nearest earlier sibling that is not
    elementwise, if that is a Linear. A hint: a :class:`LinearTrace` of these modules decides. None where
    there is none, or where one of them has hooks (a user's hook may read or change any feature).

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.Dropout(), nn.ReLU(), nn.LayerNorm(4), nn.ReLU())
        >>> likely_chain(net, net[2]) == (net[0], net[1], net[2]), likely_chain(net, net[4])
        (True, None)
    """
    chain = (layer,) if plain_linear(layer) else _elementwise_run(model, layer)
    return chain if chain and plain_linear(chain[0]) and not any(map(hooked, chain)) else None


def _elementwise_run(model: nn.Module, layer: nn.Module) -> tuple[nn.Module, ...]:
    """An elementwise ``layer`` with its earlier siblings back to the nearest one that is not elementwise."""
    if type(layer) in ELEMENTWISE:
        for parent in submodules(model):
            siblings = list(parent._modules.values())
            at = next((i for i, child in enumerate(siblings) if child is layer), None)
            if at is not None:
                start = max((i for i in range(at) if type(siblings[i]) not in ELEMENTWISE), default=at)
                return tuple(siblings[start:at + 1])
    return ()


class LinearRows(NamedTuple):
    """Compute only output features ``index`` (sorted) of ``linear``'s first run in a pass."""

    linear: nn.Linear
    index: Tensor


class Run(NamedTuple):
    """One run of a traced module: the tensor it read and the one it made, each with its version at that time."""

    module: nn.Module
    given: Tensor
    given_version: Optional[int]
    made: Tensor
    made_version: Optional[int]


class LinearTrace:
    """While in this context, record every run of ``modules`` (a Linear and elementwise modules) on this thread,
    with the version of the tensor each run read (when it read it) and made (when it returned it), so an
    in-place change between two runs (``h -= h.mean(-1, keepdim=True)``) is seen.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> with LinearTrace(net[:2]) as trace:
        ...     h = net[1](net[0](torch.zeros(0, 3)))
        >>> trace.feeder(h) is net[0]
        True
    """

    def __init__(self, modules: Sequence[nn.Module]):
        self.modules = list(modules)
        self.runs: list[Run] = []

    def __enter__(self) -> "LinearTrace":
        owner, reading = threading.get_ident(), []

        def read(module: nn.Module, inputs: tuple) -> None:
            if threading.get_ident() == owner and inputs:
                reading.append(tensor_version(inputs[0]))

        def note(module: nn.Module, inputs: tuple, output: Any) -> None:
            if threading.get_ident() == owner and inputs:
                self.runs.append(Run(module, inputs[0], reading.pop(), output, tensor_version(output)))

        self.handles = [h for m in self.modules for h in (m.register_forward_pre_hook(read),
                                                             m.register_forward_hook(note))]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()

    def feeder(self, h: Tensor) -> Optional[nn.Linear]:
        """The Linear whose output became ``h`` through recorded elementwise modules only, on that Linear's
        first run; None if there is none."""
        path = self.path_to(h)
        return None if path is None else path[0]

    def path_to(self, h: Tensor) -> Optional[list[nn.Module]]:
        """The modules whose runs made ``h``: :meth:`feeder`'s Linear first, then the elementwise modules in the
        order they ran; None if there is no such Linear, or if anything changed a tensor in place between two
        of those runs (a change the narrowed rows would not see)."""
        wanted, read_at, path = h, None, []
        for i in range(len(self.runs) - 1, -1, -1):
            run = self.runs[i]
            if run.made is not wanted:
                continue
            if read_at is not None and run.made_version != read_at:
                return None
            path.insert(0, run.module)
            if plain_linear(run.module):
                return path if all(r.module is not run.module for r in self.runs[:i]) else None
            wanted, read_at = run.given, run.given_version  # an elementwise module: follow its input
        return None

    def rows_for(self, h: Tensor, neurons: Sequence[Neuron]) -> Optional[LinearRows]:
        """The rows of :meth:`feeder` that ``neurons`` of activation ``h`` read (:func:`selected_rows`), if any."""
        linear = self.feeder(h)
        index = None if linear is None else selected_rows(neurons, linear.out_features)
        return None if index is None else LinearRows(linear, index)


class Guess:
    """Rows of the Linear that likely feeds a layer (:func:`likely_chain`), to compute alone on a pass made
    before the layer is known; a trace of that pass tells afterwards whether the guess :meth:`held`.

    While in this context the Linear computes only ``rows`` (:func:`only_rows`) and the chain is traced.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> guess = Guess.of(net, net[1], [(1,)])
        >>> with guess:
        ...     h = net[1](net[0](torch.ones(2, 3)))
        >>> guess.rows.index.tolist(), guess.held(h, [IndexNeuron((slice(None), 1), False)])
        ([1], True)
    """

    __slots__ = ("rows", "picked", "trace", "narrowing")

    def __init__(self, picked: list[int], chain: Sequence[nn.Module]):
        self.rows, self.picked = LinearRows(chain[0], torch.tensor(picked)), picked
        self.trace, self.narrowing = LinearTrace(chain), only_rows(self.rows)

    @classmethod
    def of(cls, model: nn.Module, layer: nn.Module, selectors: Sequence[Any]) -> Optional["Guess"]:
        """The guess for index ``selectors`` (ints or tuples, not yet checked against the layer) of ``layer``'s
        output, if a Linear likely feeds it and they read under half its rows."""
        chain = likely_chain(model, layer)
        if chain is None:
            return None
        try:
            neurons = [IndexNeuron((slice(None),) + as_index(s, "selector"), False) for s in selectors]
        except (ValueError, TypeError):  # the pass's checks of the selectors report it
            return None
        picked = picked_rows(neurons, chain[0].out_features)
        return None if picked is None else cls(picked, chain)

    def __enter__(self) -> None:
        self.narrowing.__enter__()
        self.trace.__enter__()  # after the narrowing, so the trace sees the narrowed output

    def __exit__(self, *exc: Any) -> None:
        self.trace.__exit__(*exc)
        self.narrowing.__exit__(*exc)

    @property
    def narrowed(self) -> bool:
        """Whether the pass has made the Linear's narrowed output (an error after that may be the guess's)."""
        return self.narrowing.made

    def held(self, h: Tensor, neurons: Sequence[Neuron]) -> bool:
        """Whether the pass just traced computed every row that ``neurons`` of the layer's activation ``h`` read:
        the guessed Linear fed ``h`` through elementwise modules and the neurons read exactly the guessed rows."""
        linear = self.rows.linear
        return self.trace.feeder(h) is linear and picked_rows(neurons, linear.out_features) == self.picked


def selected_rows(neurons: Sequence[Neuron], size: int) -> Optional[Tensor]:
    """The sorted last-dimension indices that index selectors read, or None when that is not under half of
    ``size`` (or a neuron is not an index selector, or reads a one-dimensional activation).

    Example:
        >>> from attrfx.selectors import IndexNeuron
        >>> selected_rows([IndexNeuron((slice(None), 0, 5), False), IndexNeuron((slice(None), 1, -1), False)], 16)
        tensor([ 5, 15])
    """
    picked = picked_rows(neurons, size)
    return None if picked is None else torch.tensor(picked)


def picked_rows(neurons: Sequence[Neuron], size: int) -> Optional[list[int]]:
    """:func:`selected_rows` as a list of ints.

    Example:
        >>> picked_rows([IndexNeuron((slice(None), 0, 5), False), IndexNeuron((slice(None), 1, slice(2, 4)), True)], 16)
        [2, 3, 5]
        >>> picked_rows([IndexNeuron((slice(None), 0, slice(None)), True)], 16) is None   # all 16: no narrowing
        True
    """
    picked: set[int] = set()
    for neuron in neurons:
        if not isinstance(neuron, IndexNeuron) or len(neuron.index) < 2:
            return None
        last = neuron.index[-1]
        picked.update(range(size)[last] if isinstance(last, slice) else (last % size,))
    return sorted(picked) if 2 * len(picked) <= size else None


class only_rows:
    """While in this context, ``rows.linear``'s first run on this thread computes only ``rows.index`` (the other
    output features are zeros); nothing happens for ``rows=None`` or under a ``torch.func`` transform.
    With ``gradients_only`` that run computes every feature, but gradients reach its input through
    ``rows.index`` alone (:func:`rows_with_gradients`). ``made``: whether that run's output has been made;
    ``given``: the input of that run.

    Example:
        >>> lin = nn.Linear(3, 4)
        >>> with only_rows(LinearRows(lin, torch.tensor([2]))):
        ...     y = lin(torch.ones(1, 3))
        >>> torch.equal(y[:, 2], lin(torch.ones(1, 3))[:, 2]), y[:, :2].abs().sum().item()
        (True, 0.0)
    """

    __slots__ = ("rows", "gradients_only", "handles", "made", "given")

    def __init__(self, rows: Optional[LinearRows], gradients_only: bool = False):
        self.rows, self.gradients_only, self.handles, self.made, self.given = rows, gradients_only, (), False, None

    def __enter__(self) -> "only_rows":
        if self.rows is None or transformed():
            return self
        linear, index = self.rows
        owner, state = threading.get_ident(), {"x": None, "done": False}

        def pre(module: nn.Module, inputs: tuple) -> Any:
            if threading.get_ident() != owner or state["done"]:
                return None
            state["x"], state["done"] = inputs[0], True
            if self.gradients_only:
                return None
            return (inputs[0].narrow(0, 0, 0),)  # the Linear's own matmul then runs on no rows

        def post(module: nn.Module, inputs: tuple, output: Tensor) -> Any:
            if threading.get_ident() != owner or state["x"] is None:
                return None
            x, state["x"] = state["x"], None  # later runs of the Linear are left alone
            self.made, self.given = True, x
            rows = index.to(linear.weight.device)
            if self.gradients_only:
                return rows_with_gradients(linear, x, output, rows)
            return narrow_linear(linear, x, rows)

        self.handles = (linear.register_forward_pre_hook(pre), linear.register_forward_hook(post))
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()


def rows_linear(linear: nn.Linear, x: Tensor, rows: Tensor) -> Tensor:
    """``x W[rows]ᵀ + b[rows]``, the output features ``rows`` of ``linear(x)`` (a run of consecutive rows takes
    views of the weights).

    Example:
        >>> lin, x = nn.Linear(3, 4), torch.randn(2, 3)
        >>> all(torch.allclose(rows_linear(lin, x, torch.tensor(r)), lin(x)[:, r]) for r in ([1, 3], [1, 2]))
        True
    """
    run = _run(rows)
    if run is not None:
        first, count = run
        bias = None if linear.bias is None else linear.bias.narrow(0, first, count)
        return F.linear(x, linear.weight.narrow(0, first, count), bias)
    return F.linear(x, linear.weight[rows], None if linear.bias is None else linear.bias[rows])


def _run(rows: Tensor) -> Optional[tuple[int, int]]:
    """``(first, count)`` when sorted ``rows`` are consecutive, else None."""
    first, last = int(rows[0]), int(rows[-1])
    return (first, last - first + 1) if last - first + 1 == rows.shape[0] else None


def narrow_linear(linear: nn.Linear, x: Tensor, rows: Tensor) -> Tensor:
    """``linear(x)`` with only output features ``rows`` computed (:func:`rows_linear`); zeros elsewhere.

    Example:
        >>> lin, x = nn.Linear(3, 4), torch.randn(2, 3)
        >>> narrow_linear(lin, x, torch.tensor([1, 3]))[:, [0, 2]].abs().sum().item()
        0.0
    """
    part, run = rows_linear(linear, x, rows), _run(rows)
    if run is not None:  # one op: pad the run with zeros
        return F.pad(part, (run[0], linear.out_features - run[0] - run[1]))
    return part.new_zeros(part.shape[:-1] + (linear.out_features,)).index_copy(-1, rows, part)


def rows_with_gradients(linear: nn.Linear, x: Tensor, output: Tensor, rows: Tensor) -> Tensor:
    """``output = linear(x)``, whose gradient reaches ``x`` through ``rows`` alone: the other features are
    ``output``'s, detached; ``rows`` are recomputed (:func:`rows_linear`). Backward passes from cotangents
    that are zero outside ``rows`` then cost ``rows``' share of the Linear's.

    Example:
        >>> lin, x = nn.Linear(3, 4), torch.randn(2, 3, requires_grad=True)
        >>> y = rows_with_gradients(lin, x, lin(x), torch.tensor([1]))
        >>> (g,) = torch.autograd.grad(y[:, 1].sum(), x)
        >>> torch.allclose(y, lin(x)), torch.allclose(g, lin.weight[1].expand(2, 3))
        (True, True)
    """
    return output.detach().index_copy(-1, rows, rows_linear(linear, x, rows))
