"""The layer probe: a layer's activation, and a handle to differentiate at it.

Everything here is a pure function of its arguments, usable inside
``torch.func`` transforms:

- :func:`forward_to_layer` runs the model only as far as the layer and returns
  its activation (the rest of the forward pass is skipped);
- :func:`forward_with_probe` runs the whole model with the layer's activation
  ``h`` replaced by ``h + δ``, so gradients with respect to ``δ`` are
  gradients with respect to ``h``.

Hooks live for one call, are removed on every exit, and act only on the
thread that registered them. A layer that runs more than once in a forward
pass is ambiguous and rejected by :func:`inspect_layers`.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator, NamedTuple, Sequence, Union

import torch
from torch import Tensor, nn

from ._errors import AttrfxValueError, bad_type, bad_value
from .inputs import take_examples

Layer = Union[nn.Module, str]
Activation = tuple[Tensor, ...]


class LayerInfo(NamedTuple):
    """What one inspection pass learned about a layer's activation.

    ``name``: how errors refer to the layer; ``shapes``: per-example shape of
    each activation tensor; ``dtypes``: their dtypes; ``is_tuple``: whether the layer gives several tensors (a
    selector callable then receives a tuple).
    """

    name: str
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]
    is_tuple: bool


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
    if isinstance(model, nn.Module):
        for name, m in model.named_modules():
            if m is module:
                return repr(name) if name else "the model itself"
    return type(module).__name__


def call_model(model: Callable, xs: Sequence[Tensor], args: tuple) -> Any:
    """``model(*inputs, *additional_forward_args)``."""
    return model(*xs, *args)


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


def _like(kind: type, values: Activation) -> Any:
    return values[0] if kind is Tensor else kind(values)


@contextlib.contextmanager
def _hooked(module: nn.Module, at_input: bool, fn: Callable[[Any], Any]) -> Iterator[None]:
    """Call ``fn(activation)`` on ``module``'s output (or input) in this thread; replace it by the result."""
    owner = threading.get_ident()

    def post(mod, inp, out):
        return fn(out) if threading.get_ident() == owner else None

    def pre(mod, inp):
        return fn(inp) if threading.get_ident() == owner else None

    handle = module.register_forward_pre_hook(pre) if at_input else module.register_forward_hook(post)
    try:
        yield
    finally:
        handle.remove()


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


def forward_with_probe(model: Callable, layers: Sequence[nn.Module], xs: Sequence[Tensor], args: tuple,
                       deltas: Sequence[Activation], *, at_input: bool = False,
                       cut: bool = False) -> tuple[list[Activation], Any]:
    """Run the model with each layer's activation ``h`` replaced by ``h + δ``.

    Returns ``(activations, output)`` where ``activations[i]`` is layer i's ``h``
    (before δ). With ``cut``, the model continues from ``h.detach() + δ``, so
    gradients reach the inputs only through ``h`` itself (one backward per side).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> delta = (torch.zeros(4, 3),)
        >>> acts, out = forward_with_probe(net, [net[1]], (torch.ones(4, 2),), (), [delta])
        >>> out.shape
        torch.Size([4, 1])
    """
    seen: list[Activation] = [()] * len(layers)

    def probe(i: int) -> Callable[[Any], Any]:
        def add_delta(value):
            hs, kind = _as_tensors(value, "input" if at_input else "output")
            seen[i] = hs
            moved = tuple((h.detach() if cut else h) + d for h, d in zip(hs, deltas[i]))
            return _like(tuple if at_input else kind, moved)
        return add_delta

    with contextlib.ExitStack() as stack:
        for i, layer in enumerate(layers):
            stack.enter_context(_hooked(layer, at_input, probe(i)))
        output = call_model(model, xs, args)
    return seen, output


def inspect_layers(model: Callable, layers: Sequence[nn.Module], xs: Sequence[Tensor], args: tuple,
                   *, at_input: bool = False) -> list[LayerInfo]:
    """Run the model on its first examples to learn each layer's activation shape.

    Raises a clear error if a layer does not run, or runs more than once (then
    "the layer's activation" is ambiguous).
    """
    n = min(2, xs[0].shape[0])
    small = tuple(x[:n] for x in xs)
    calls: list[list[tuple[Activation, type]]] = [[] for _ in layers]

    def record(i: int) -> Callable[[Any], None]:
        def note(value):
            calls[i].append(_as_tensors(value, "input" if at_input else "output"))
        return note

    with contextlib.ExitStack() as stack:
        for i, layer in enumerate(layers):
            stack.enter_context(_hooked(layer, at_input, record(i)))
        call_model(model, small, take_examples(args, xs[0].shape[0], slice(0, n)))

    infos = []
    for layer, seen in zip(layers, calls):
        name = layer_name(model, layer)
        if len(seen) != 1:
            what = "did not run" if not seen else f"ran {len(seen)} times"
            raise bad_value("layer", "a module that runs exactly once per forward pass",
                            f"layer {name}, which {what} in one forward pass")
        hs, _ = seen[0]
        for h in hs:
            if h.dim() == 0 or h.shape[0] != n:
                raise bad_value("layer", "a layer whose activation has the example dimension first",
                                f"layer {name} with activation shape {tuple(h.shape)} for {n} example(s)")
        infos.append(LayerInfo(name, tuple(tuple(h.shape[1:]) for h in hs), tuple(h.dtype for h in hs), len(hs) > 1))
    return infos


def zero_deltas(info: LayerInfo, n: int, device: torch.device) -> Activation:
    """Zero perturbations ``δ`` for ``n`` rows of a layer's activation."""
    return tuple(torch.zeros((n,) + s, dtype=d, device=device) for s, d in zip(info.shapes, info.dtypes))
