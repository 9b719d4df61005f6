"""The layer probe: a layer's activation, and a handle to differentiate at it.

Everything here is a pure function of its arguments, usable inside
``torch.func`` transforms:

- :func:`forward_to_layer` runs the model only as far as the layer and returns
  its activation (the rest of the forward pass is skipped);
- :func:`forward_with_probe` runs the whole model with the layer's activation
  ``h`` replaced by ``h + δ``, so gradients with respect to ``δ`` are
  gradients with respect to ``h``. A layer *input* is shifted where it is
  made (by an earlier module, or as a model input), so every consumer of
  that tensor sees the shift, as a gradient with respect to it would.

Hooks live for one call, are removed on every exit, and act only on the
thread that registered them. A layer that runs more than once in a forward
pass is ambiguous and rejected by :func:`inspect_layers`.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ._errors import AttrfxValueError, bad_type, bad_value
from .inputs import take_examples

Layer = Union[nn.Module, str]
Activation = tuple[Tensor, ...]


class Source(NamedTuple):
    """Where an activation tensor gets its value, so a probe can shift it for every reader.

    ``kind``: ``"input"`` (model input ``index``); ``"output"`` (element ``index``
    of ``module``'s output on its ``call``-th run, which made it); ``"written"``
    (the same, for a run that changed an existing tensor in place, e.g.
    ``ReLU(inplace=True)``); or ``"layer-input"`` (positional argument ``index``
    of ``module``, when no module made it or an operation changed it after its
    last module). A layer input is shifted in place where torch allows it, so
    readers after the layer that hold the same tensor (a residual) see the
    shift too.
    """

    kind: str
    module: Optional[nn.Module]
    call: int
    index: int


class LayerInfo(NamedTuple):
    """What one inspection pass learned about a layer's activation (a probe site).

    ``module``: the layer; ``model``: the model it is in; ``shapes`` and
    ``dtypes``: per-example shape and dtype of each activation tensor;
    ``is_tuple``: whether the layer gives several tensors (a selector callable
    then receives a tuple); ``sources``: where each tensor is made.
    """

    module: nn.Module
    model: Callable
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]
    is_tuple: bool
    sources: tuple[Source, ...]

    @property
    def name(self) -> str:
        """How errors refer to the layer (found only then: a walk over the model's modules)."""
        return layer_name(self.model, self.module)


def transformed() -> bool:
    """Whether a ``torch.func`` transform (``vmap``, ``grad``, ``vjp``, ``jvp``) is active on this thread.

    Example:
        >>> transformed(), bool(torch.func.vmap(lambda x: torch.tensor(transformed()))(torch.zeros(1)))
        (False, True)
    """
    return torch._C._functorch.peek_interpreter_stack() is not None


def first_pass_checks(model: Callable) -> bool:
    """Whether a layer's checks (shape, run count) can wait for the first real pass, sparing an inspection pass.

    They can on plain autograd (no ``torch.func`` transform) for an ``nn.Module``
    in eval mode: its pass on an empty batch, which the checks may need, behaves.

    Example:
        >>> first_pass_checks(nn.Linear(2, 2).eval()), first_pass_checks(nn.Linear(2, 2).train())
        (True, False)
    """
    return isinstance(model, nn.Module) and not transformed() and not in_training(model)


def resolve_layer(model: Callable, layer: Layer, arg: str = "layer") -> nn.Module:
    """The ``nn.Module`` for ``layer`` (a module, or a dotted name within ``model``).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        >>> resolve_layer(net, "1")
        ReLU()
    """
    if isinstance(layer, str):
        if not isinstance(model, nn.Module):
            raise bad_type(arg, "an nn.Module when `model` is a plain function (names need an nn.Module)", layer)
        try:
            return model.get_submodule(layer)
        except AttributeError:
            names = [n for n, _ in model.named_modules() if n][:8]
            raise bad_value(arg, f"the name of a submodule of the model (e.g. {names})", repr(layer)) from None
    if not isinstance(layer, nn.Module):
        raise bad_type(arg, "an nn.Module or the dotted name of one", layer)
    if isinstance(model, nn.Module) and not any(m is layer for m in model.modules()):
        raise bad_value(arg, "a submodule of the model", f"a {type(layer).__name__} that is not in it")
    return layer


def layer_name(model: Callable, module: nn.Module) -> str:
    """How errors name ``module``: its quoted dotted name in ``model``, or its type for a plain-function model.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        >>> layer_name(net, net[1]), layer_name(net, net), layer_name(lambda x: x, net[1])
        ("'1'", 'the model itself', 'ReLU')
    """
    if isinstance(model, nn.Module):
        for name, m in model.named_modules():
            if m is module:
                return repr(name) if name else "the model itself"
    return type(module).__name__


def call_model(model: Callable, xs: Sequence[Tensor], args: tuple) -> Any:
    """``model(*inputs, *additional_forward_args)``, on copies the model may change in place.

    The model receives copy-on-write copies of the tensors (:func:`own_copies`),
    so a model that changes its inputs in place (``ReLU(inplace=True)`` first,
    ``x += ...`` in ``forward``) never changes the caller's, and gradients with
    respect to an input that requires grad still reach it.

    A module in training mode runs on copies of its buffers, so running
    statistics (BatchNorm) are never updated, and ``torch.func`` transforms see
    no in-place update of state captured from outside. ``functional_call`` swaps
    the copies onto the module for the forward pass, so those passes take a
    lock: threads sharing a model in training mode never see each other's copies.

    Example:
        >>> x = torch.tensor([[-1.0, 2.0]])
        >>> call_model(nn.ReLU(inplace=True), (x,), ()).tolist(), x.tolist()
        ([[0.0, 2.0]], [[-1.0, 2.0]])
    """
    return _call(model, own_copies(xs), own_copies(args))


def own_copies(values: Sequence[Any]) -> tuple:
    """``values`` with each tensor replaced by a copy-on-write copy: no memory is copied unless the copy is
    written to (then only that copy changes); gradients flow through it to the original. Under a ``torch.func``
    transform, and of tensors in shared memory (a ``DataLoader`` worker's batches), the copies are plain clones.

    Example:
        >>> x = torch.zeros(2)
        >>> (c,) = own_copies((x,))
        >>> _ = c.add_(1); x.tolist(), c.tolist()
        ([0.0, 0.0], [1.0, 1.0])
    """
    lazy = not transformed()  # (torch.func has no batching rule for the lazy clone)
    return tuple((_LAZY_CLONE(v) if lazy and not v.is_shared() else torch.clone(v)) if isinstance(v, Tensor) else v
                 for v in values)


_LAZY_CLONE = getattr(torch, "_lazy_clone", torch.clone)  # copy-on-write where torch has it


def _call(model: Callable, xs: Sequence[Tensor], args: tuple) -> Any:
    """:func:`call_model` on ``xs`` and ``args`` as they are (the caller made them the model's own)."""
    if isinstance(model, nn.Module) and in_training(model):
        copies = {name: b.clone() for name, b in model.named_buffers()}
        if copies:
            with _SWAP_LOCK:
                return torch.func.functional_call(model, copies, tuple(xs) + tuple(args))
    return model(*xs, *args)


_SWAP_LOCK = threading.RLock()


def in_training(model: nn.Module) -> bool:
    """Whether ``model`` or any submodule is in training mode (the walk of :func:`submodules` without
    remembering what it has seen: a module registered twice is looked at twice).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Dropout()).eval()
        >>> in_training(net), in_training(net[1].train())
        (False, True)
    """
    walk = [model]
    for module in walk:  # grows as it goes; stops at the first module in training mode
        if module is not None:
            if module.training:
                return True
            walk.extend(module._modules.values())
    return False


def submodules(model: nn.Module) -> list[nn.Module]:
    """``model`` and its submodules, each once, breadth first: the modules of ``model.modules()`` at half the
    cost (no generator per module; this runs on every call of a method).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
        >>> [type(m).__name__ for m in submodules(net)]
        ['Sequential', 'Linear', 'ReLU']
    """
    seen, found = set(), []
    walk = [model]
    for module in walk:  # grows as it goes
        if module is not None and id(module) not in seen:
            seen.add(id(module))
            found.append(module)
            walk.extend(module._modules.values())
    return found


class _LayerReached(BaseException):
    """Raised by a hook to stop the forward pass once the layer has run."""

    def __init__(self, activation: Activation):
        self.activation = activation


def _as_tensors(value: Any, what: str) -> tuple[Activation, type]:
    if isinstance(value, Tensor):
        return (value,), Tensor
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, Tensor) for v in value):
        return tuple(value), type(value)
    raise AttrfxValueError(f"the layer's {what} must be a tensor or a tuple/list of tensors "
                           f"to attribute at it; got {type(value).__name__}.")


def _packed(items: list[Tensor], kind: type) -> Any:
    """``items`` back in the form a module gave them: one tensor, or a tuple / list of ``kind``."""
    return items[0] if kind is Tensor or issubclass(kind, Tensor) else kind(items)


class _hooked:
    """While in this context, call ``fn(activation)`` on ``module``'s output (or input) in this thread, and
    replace the activation by the result (a class, not a generator: it runs on every call of a method)."""

    __slots__ = ("handle",)

    def __init__(self, module: nn.Module, at_input: bool, fn: Callable[[Any], Any]):
        owner = threading.get_ident()

        def post(mod, inp, out):
            return fn(out) if threading.get_ident() == owner else None

        def pre(mod, inp):
            return fn(inp) if threading.get_ident() == owner else None

        self.handle = module.register_forward_pre_hook(pre) if at_input else module.register_forward_hook(post)

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()


def forward_to_layer(model: Callable, layer: nn.Module, xs: Sequence[Tensor], args: tuple = (),
                     *, at_input: bool = False) -> Activation:
    """The layer's activation (output, or input with ``at_input``); the model stops there.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> forward_to_layer(net, net[0], (torch.ones(4, 2),))[0].shape
        torch.Size([4, 3])
    """

    def stop(value):
        raise _LayerReached(_as_tensors(value, "input" if at_input else "output")[0])

    try:
        with _hooked(layer, at_input, stop):
            call_model(model, xs, args)
    except _LayerReached as reached:
        return reached.activation
    raise AttrfxValueError("the layer did not run during the forward pass.")


def forward_to_layers(model: Any, layers: Sequence[nn.Module], xs: Sequence[Tensor], args: tuple, *,
                      at_input: bool = False) -> list[Activation]:
    """Each layer's activation (output, or input with ``at_input``) from one pass that stops once every layer has
    run (:func:`forward_to_layer` for one layer). An activation taken before the stop is a copy, so
    a later in-place change by the model does not reach it.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(inplace=True), nn.Linear(3, 1))
        >>> h0, h1 = forward_to_layers(net, [net[0], net[1]], (torch.ones(4, 2),), ())
        >>> torch.equal(h1[0], torch.relu(h0[0]))
        True
    """
    if len(layers) == 1:
        return [forward_to_layer(model, layers[0], xs, args, at_input=at_input)]
    found: dict[int, Activation] = {}

    def take(i: int):
        def note(value: Any) -> None:
            if i not in found:
                hs = _as_tensors(value, "input" if at_input else "output")[0]
                if len(found) == len(layers) - 1:
                    found[i] = hs
                    raise _LayerReached(hs)
                found[i] = tuple(h.clone() for h in hs)
        return note

    with contextlib.ExitStack() as stack:
        for i, module in enumerate(layers):
            stack.enter_context(_hooked(module, at_input, take(i)))
        try:
            call_model(model, xs, args)
        except _LayerReached:
            pass
    if len(found) < len(layers):
        raise AttrfxValueError("the layer did not run during the forward pass.")
    return [found[i] for i in range(len(layers))]


def forward_counting_runs(model: Callable, layer: nn.Module, xs: Sequence[Tensor],
                          args: tuple = ()) -> tuple[list[Activation], bool]:
    """``(runs, counted)``: the layer's output on each of its runs in one forward pass.

    ``runs[0]`` is the output on ``xs`` (with its graph). After that first run
    the model goes on with an *empty batch* in place of the output, recording
    no graph, so the remaining runs are counted at the cost of the rest of the
    pass on no examples instead of a separate inspection pass. ``counted`` is
    False when the rest of the model cannot run that way (e.g. it adds the
    output to a tensor made before the layer): count with :func:`inspect` then.
    Errors of the model before the layer are raised.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> runs, counted = forward_counting_runs(net, net[0], (torch.ones(4, 2),))
        >>> [tuple(hs[0].shape) for hs in runs], counted
        ([(4, 3)], True)
    """
    runs: list[Activation] = []
    grad_mode = torch.is_grad_enabled()

    def take(value: Any) -> Any:
        hs, kind = _as_tensors(value, "output")
        runs.append(hs)
        if len(runs) > 1:
            return None
        torch.set_grad_enabled(False)  # the rest of the pass; restored below
        empty = [h.detach()[:0] for h in hs]
        return _packed(empty, kind)

    try:
        with _hooked(layer, False, take):
            call_model(model, xs, args)
    except Exception:
        if not runs:
            raise
        return runs, False
    finally:
        torch.set_grad_enabled(grad_mode)
    return runs, True


def forward_with_probe(model: Callable, sites: Sequence[LayerInfo], xs: Sequence[Tensor], args: tuple,
                       deltas: Sequence[Activation], *, cut: bool = False) -> tuple[list[Activation], Any]:
    """Run the model with each site's activation ``h`` replaced by ``h + δ``.

    Returns ``(activations, output)`` where ``activations[i]`` is site i's ``h``
    (before δ). ``h`` is shifted where it is made, so every consumer sees the
    shift (a layer input that also feeds a skip connection included). With
    ``cut``, the model continues from ``h.detach() + δ``, so gradients reach the
    inputs only through ``h`` itself (one backward per side).

    On plain autograd (no ``torch.func`` transform, grad mode on) with no input
    that requires grad, nothing before the first shift can be differentiated:
    the pass records no graph until then (parameters that require grad would
    make it record the whole prefix), and grad mode is restored afterwards. A
    model that turns grad mode on by itself around a layer gets the ordinary
    pass instead.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> x = torch.ones(4, 2)
        >>> sites = inspect_layers(net, [net[1]], (x,), ())
        >>> delta = torch.zeros(4, 3, requires_grad=True)
        >>> acts, out = forward_with_probe(net, sites, (x,), (), [(delta,)])
        >>> out.shape, out.requires_grad, acts[0][0].requires_grad
        (torch.Size([4, 1]), True, False)
    """
    return _graph_from_first_probe(
        xs, lambda record: _probed_pass(model, sites, xs, args, deltas, cut, record))


def forward_with_output_probe(model: Callable, layers: Sequence[nn.Module], xs: Sequence[Tensor],
                              args: tuple) -> tuple[list[list[Activation]], list[Activation], Any]:
    """Plain autograd: the model with each layer's output ``h`` replaced by ``h + δ`` on the layer's first run.

    Each ``δ`` is a zero tensor that requires grad, made at that run, so no
    inspection pass is needed to learn its shape. Returns ``(runs, deltas,
    output)``: per layer the activation (before ``δ``) of every run — to check
    the layers after the pass (:func:`site_info`) — and its ``δ`` (empty for a
    non-floating-point output, which gets none). As in :func:`forward_with_probe`,
    the graph is recorded only from the first ``δ`` on where nothing before it
    can be differentiated.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> runs, deltas, out = forward_with_output_probe(net, [net[1]], (torch.ones(4, 2),), ())
        >>> len(runs[0]), deltas[0][0].shape, out.requires_grad
        (1, torch.Size([4, 3]), True)
    """
    return _graph_from_first_probe(xs, lambda record: _output_probed_pass(model, layers, xs, args, record))


def _output_probed_pass(model: Callable, layers: Sequence[nn.Module], xs: Sequence[Tensor], args: tuple,
                        graph_from_probe: bool) -> tuple[list[list[Activation]], list[Activation], Any]:
    runs: list[list[Activation]] = [[] for _ in layers]
    deltas: list[Activation] = [() for _ in layers]
    record = _Recorder(graph_from_probe)

    def edit(i: int) -> Callable[[Any], Any]:
        def shift(value: Any) -> Any:
            hs, kind = _as_tensors(value, "output")
            runs[i].append(hs)
            if len(runs[i]) > 1 or not all(h.is_floating_point() for h in hs):
                return None
            record.start()
            deltas[i] = tuple(torch.zeros_like(h, requires_grad=True) for h in hs)
            shifted = [h + d for h, d in zip(hs, deltas[i])]
            return _packed(shifted, kind)
        return shift

    with contextlib.ExitStack() as stack:
        if graph_from_probe:
            stack.enter_context(torch.no_grad())
        for i, layer in enumerate(layers):
            stack.enter_context(_hooked(layer, False, edit(i)))
        output = call_model(model, xs, args)
    return runs, deltas, output


def forward_with_replacement(model: Callable, layers: Sequence[nn.Module], xs: Sequence[Tensor], args: tuple,
                             values: Sequence[Activation]) -> Any:
    """The model output with each layer's output replaced by ``values[i]`` (a tensor per output tensor).

    On plain autograd the pass records its graph from the first replacement on, as
    :func:`forward_with_probe` does: nothing before it depends on ``values``.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> out = forward_with_replacement(net, [net[1]], (torch.ones(4, 2),), (), [(torch.zeros(4, 3),)])
        >>> torch.equal(out, net[2](torch.zeros(4, 3)))
        True
    """

    def run(graph_from_probe: bool) -> Any:
        record = _Recorder(graph_from_probe)

        def replace(i: int) -> Callable[[Any], Any]:
            def hook(value: Any) -> Any:
                record.start()
                return _packed(list(values[i]), _as_tensors(value, "output")[1])
            return hook

        with contextlib.ExitStack() as stack:
            if graph_from_probe:
                stack.enter_context(torch.no_grad())
            for i, layer in enumerate(layers):
                stack.enter_context(_hooked(layer, False, replace(i)))
            return call_model(model, xs, args)

    return _graph_from_first_probe(xs, run)


class _GradModeSet(BaseException):
    """Raised when a model turned grad mode on before the first probe, so the pass must record from the start."""


def _graph_from_first_probe(xs: Sequence[Tensor], run: Callable[[bool], Any]) -> Any:
    """``run(True)`` (no graph before the first probe) where nothing before it can be differentiated:
    plain autograd, grad mode on, no input that requires grad; ``run(False)`` otherwise, or when the
    model turned grad mode on by itself."""
    if not transformed() and torch.is_grad_enabled() and not any(x.requires_grad for x in xs):
        try:
            return run(True)
        except _GradModeSet:
            pass
    return run(False)


class _Recorder:
    """Turns grad mode on at the first probe of a pass that began without a graph (until its no_grad block exits)."""

    def __init__(self, graph_from_probe: bool):
        self.on = not graph_from_probe

    def start(self) -> None:
        if not self.on:
            if torch.is_grad_enabled():
                raise _GradModeSet()
            torch.set_grad_enabled(True)
            self.on = True


def _probed_pass(model: Callable, sites: Sequence[LayerInfo], xs: Sequence[Tensor], args: tuple,
                 deltas: Sequence[Activation], cut: bool, graph_from_probe: bool) -> tuple[list[Activation], Any]:
    """:func:`forward_with_probe`; with ``graph_from_probe``, grad mode is off until the first shift."""
    seen: list[list[Tensor]] = [[torch.empty(0)] * len(site.shapes) for site in sites]
    record = _Recorder(graph_from_probe)

    def shift(h: Tensor, targets: list[tuple[int, int]], in_place: bool = False) -> Tensor:
        record.start()
        delta = sum(deltas[i][j] for i, j in targets)
        if in_place and _writable(h):  # every holder of h sees the shift (cut or not, ∂/∂δ is the same)
            kept = h.clone()  # h as received, with its graph, safe from later in-place changes
            for i, j in targets:
                seen[i][j] = kept
            return h.add_(delta)
        for i, j in targets:
            seen[i][j] = h
        return (h.detach() if cut else h) + delta

    plan: dict[Source, list[tuple[int, int]]] = {}
    for i, site in enumerate(sites):
        for j, source in enumerate(site.sources):
            plan.setdefault(source, []).append((i, j))
    xs = list(xs)
    with contextlib.ExitStack() as stack:
        if graph_from_probe:
            stack.enter_context(torch.no_grad())
        edits: dict[tuple[nn.Module, bool], list[tuple[Source, list[tuple[int, int]]]]] = {}
        for source, targets in plan.items():
            if source.kind == "input":
                xs[source.index] = shift(xs[source.index], targets)
            else:
                edits.setdefault((source.module, source.kind == "layer-input"), []).append((source, targets))
        for (module, pre), module_edits in edits.items():
            stack.enter_context(_hooked(module, pre, _editor(module_edits, shift)))
        output = call_model(model, xs, args)
    return [tuple(s) for s in seen], output


def _editor(edits: list[tuple[Source, list[tuple[int, int]]]], shift: Callable) -> Callable[[Any], Any]:
    """A hook body that shifts the planned elements of a module's output (or input) on the planned run."""
    runs = itertools.count()

    def edit(value: Any) -> Any:
        run = next(runs)
        items = [value] if isinstance(value, Tensor) else list(value)
        for source, targets in edits:
            if source.call == run:
                items[source.index] = shift(items[source.index], targets, source.kind == "layer-input")
        return _packed(items, type(value))

    return edit


class _Writers:
    """Records which module run last wrote each tensor during one forward pass.

    A tensor's writer is the module run that made it, or a later run whose
    output is the same tensor changed in place since (an in-place activation,
    or a block whose ``forward`` ended with ``out += identity``). Shifting a
    tensor right after its last writer changes it as every later reader sees it.
    """

    def __init__(self, xs: Sequence[Tensor]):
        self.last: dict[int, tuple[Tensor, Source, Optional[int]]] = {
            id(x): (x, Source("input", None, 0, j), tensor_version(x)) for j, x in enumerate(xs)}
        self.runs: dict[nn.Module, int] = {}

    def watch(self, module: nn.Module) -> Callable[[Any], None]:
        def note(value: Any) -> None:
            run = self.runs[module] = self.runs.get(module, -1) + 1
            items = [value] if isinstance(value, Tensor) else list(value) if isinstance(value, (tuple, list)) else []
            for index, t in enumerate(items):
                if isinstance(t, Tensor):
                    known = self.last.get(id(t))
                    if known is None or known[0] is not t:
                        self.last[id(t)] = (t, Source("output", module, run, index), tensor_version(t))
                    elif known[2] != tensor_version(t):  # changed in place since its last writer
                        self.last[id(t)] = (t, Source("written", module, run, index), tensor_version(t))
        return note

    def source(self, h: Tensor, layer: nn.Module, index: int) -> Source:
        """Where to shift ``h``, which ``layer`` receives as input ``index``: after its last writer if no
        operation changed it since; otherwise (or if no module made it) at the layer itself."""
        known = self.last.get(id(h))
        if known is not None and known[0] is h and known[2] == tensor_version(h):
            return known[1]
        return Source("layer-input", layer, 0, index)


def _writable(h: Tensor) -> bool:
    """Whether ``h`` can be shifted in place inside a forward pass: not a view, leaf or inference tensor, and not
    the result its own backward needs (``relu_``, ``sigmoid_``, ...: a change would break that backward)."""
    return not (h._is_view() or h.is_leaf and h.requires_grad or h.is_inference()
                or hasattr(h.grad_fn, "_saved_result"))


def tensor_version(t: Tensor) -> Optional[int]:
    """``t``'s version counter (bumped by every in-place change); None for tensors that keep none.

    Example:
        >>> x = torch.zeros(2)
        >>> before = tensor_version(x); _ = x.add_(1)
        >>> tensor_version(x) - before
        1
        >>> with torch.inference_mode():
        ...     tensor_version(torch.zeros(2)) is None
        True
    """
    try:
        return t._version
    except RuntimeError:  # an inference tensor
        return None


class Inspection(NamedTuple):
    """One small forward pass: the probe sites, their activations, and the model output."""

    sites: list[LayerInfo]
    activations: list[Activation]
    output: Any


def inspect_layers(model: Callable, layers: Sequence[nn.Module], xs: Sequence[Tensor], args: tuple,
                   *, at_input: bool = False) -> list[LayerInfo]:
    """The probe sites for ``layers`` (see :func:`inspect`).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> (site,) = inspect_layers(net, [net[1]], (torch.ones(4, 2),), ())
        >>> site.shapes, site.dtypes, site.is_tuple   # per tensor of the activation, without the example dim
        (((3,),), (torch.float32,), False)
        >>> inspect_layers(net, [net[2]], (torch.ones(4, 2),), (), at_input=True)[0].sources[0].kind  # made by net[1]
        'output'
    """
    return inspect(model, layers, xs, args, at_input=at_input).sites


def inspect(model: Callable, layers: Sequence[nn.Module], xs: Sequence[Tensor], args: tuple,
            *, at_input: bool = False, empty: bool = False) -> Inspection:
    """Run the model on its first examples to learn each layer's activation (shape, dtype, maker).

    Raises a clear error if a layer does not run, or runs more than once (then
    "the layer's activation" is ambiguous). The activations and output let
    callers check selectors and targets before any heavy work.

    With ``empty``, an ``nn.Module`` in eval mode is first run on an empty batch
    (zero examples): shapes, dtypes, run counts and the output's shape at almost
    no cost (no graph is recorded), for callers that use no activation or output *values*. Any failure
    of that pass falls back to the usual pass on ``min(2, N)`` examples, which
    then reports the error.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> seen = inspect(net, [net[1]], (torch.ones(4, 2),), ())   # training mode: min(2, N) real rows
        >>> seen.sites[0].shapes, seen.activations[0][0].shape, seen.output.shape
        (((3,),), torch.Size([2, 3]), torch.Size([2, 1]))
        >>> inspect(net.eval(), [net[1]], (torch.ones(4, 2),), (), empty=True).output.shape
        torch.Size([0, 1])
    """
    if empty and isinstance(model, nn.Module) and not in_training(model):
        try:
            with torch.no_grad():
                return _inspect(model, layers, xs, args, at_input, 0)
        except Exception:  # e.g. a model that cannot run on no examples: take real ones
            pass
    return _inspect(model, layers, xs, args, at_input, min(2, xs[0].shape[0]))


def _inspect(model: Callable, layers: Sequence[nn.Module], xs: Sequence[Tensor], args: tuple, at_input: bool,
             n: int) -> Inspection:
    small = own_copies(x[:n] for x in xs)
    calls: list[list[Activation]] = [[] for _ in layers]
    sources: list[Optional[tuple[Source, ...]]] = [None for _ in layers]
    writers = _Writers(small)

    def record(i: int, layer: nn.Module) -> Callable[[Any], None]:
        def note(value):
            hs = _as_tensors(value, "input" if at_input else "output")[0]
            calls[i].append(hs)
            if at_input and sources[i] is None:  # where the input is as the layer receives it (later runs: errors)
                sources[i] = tuple(writers.source(h, layer, j) for j, h in enumerate(hs))
        return note

    watched = list(model.modules()) if at_input and isinstance(model, nn.Module) else []
    with contextlib.ExitStack() as stack:
        for module in watched:
            stack.enter_context(_hooked(module, False, writers.watch(module)))
        for i, layer in enumerate(layers):
            stack.enter_context(_hooked(layer, at_input, record(i, layer)))
        output = _call(model, small, own_copies(take_examples(args, xs[0].shape[0], slice(0, n))))

    infos = [site_info(model, layer, seen, n, found) for layer, seen, found in zip(layers, calls, sources)]
    return Inspection(infos, [seen[0] for seen in calls], output)


def site_info(model: Callable, layer: nn.Module, runs: Sequence[Activation], n: int,
              sources: Optional[tuple[Source, ...]] = None) -> LayerInfo:
    """The probe site of ``layer`` from its activations on each run of one pass over ``n`` examples.

    Raises a clear error unless the layer ran exactly once with the example
    dimension first; ``sources`` default to the layer's own output.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        >>> site = site_info(net, net[1], [(torch.zeros(4, 3),)], 4)   # one run, one tensor [N, 3]
        >>> site.shapes, site.sources[0].kind
        (((3,),), 'output')
        >>> site_info(net, net[1], [(torch.zeros(4, 3),)] * 2, 4)
        Traceback (most recent call last):
        ...
        attrfx._errors.AttrfxValueError: `layer` must be a module that runs exactly once per forward pass; got layer '1', which ran 2 times in one forward pass.
    """
    if len(runs) != 1:
        what = "did not run" if not runs else f"ran {len(runs)} times"
        raise bad_value("layer", "a module that runs exactly once per forward pass",
                        f"layer {layer_name(model, layer)}, which {what} in one forward pass")
    hs = runs[0]
    for h in hs:
        if h.dim() == 0 or h.shape[0] != n:
            raise bad_value("layer", "a layer whose activation has the example dimension first",
                            f"layer {layer_name(model, layer)} with activation shape {tuple(h.shape)} for {n} "
                            "example(s)")
    if sources is None:
        sources = tuple(Source("output", layer, 0, j) for j in range(len(hs)))
    return LayerInfo(layer, model, tuple(tuple(h.shape[1:]) for h in hs), tuple(h.dtype for h in hs),
                     len(hs) > 1, sources)


def zero_deltas(info: LayerInfo, n: int, device: torch.device) -> Activation:
    """Zero perturbations ``δ`` for ``n`` rows of a layer's activation: one tensor ``[n, ...]`` per activation tensor.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        >>> (site,) = inspect_layers(net, [net[1]], (torch.ones(4, 2),), ())
        >>> [(d.shape, d.dtype) for d in zero_deltas(site, 6, torch.device("cpu"))]   # e.g. 3 path points × B = 2
        [(torch.Size([6, 3]), torch.float32)]
    """
    return tuple(torch.zeros((n,) + s, dtype=d, device=device) for s, d in zip(info.shapes, info.dtypes))
