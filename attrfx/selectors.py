"""What is explained: a hidden neuron (selector) or a model output (target).

Both become functions returning one scalar per example, shape ``[N]``:

- a neuron selector turns the layer's activation into the neuron's value: an
  int (2-D activation), a tuple of ints and slices (one per non-batch dim; a
  slice sums those neurons), or a callable;
- a target turns the model output into the explained value: ``None``
  (one output per example), an int or tuple, a tensor or a list (one per example).
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any, Callable, NamedTuple, Optional, Union

import torch
from torch import Tensor

from ._errors import AttrfxValueError, bad_type, bad_value
from .probe import Activation, LayerInfo

Neuron = Callable[[Activation], Tensor]
Selector = Union[int, tuple, Callable]


def neuron_selectors(selector: Any, info: LayerInfo, arg: str = "selector",
                     *, batch_total_ok: bool = False) -> tuple[list[Neuron], bool]:
    """``(neurons, is_list)``: one function per selector; a list gives several.

    With ``batch_total_ok`` (methods that need only the neuron's gradient), a
    callable may also return one value for the whole batch, e.g. ``h.sum()``;
    its gradient is still taken per example, since examples are independent.

    Example:
        >>> from torch import nn
        >>> from attrfx.probe import inspect_layers
        >>> net = nn.Sequential(nn.Unflatten(1, (3, 4)))
        >>> (info,) = inspect_layers(net, [net[0]], (torch.zeros(2, 12),), ())
        >>> (pick,), _ = neuron_selectors((1, slice(0, 2)), info)
        >>> pick((torch.arange(24.).reshape(2, 3, 4),)).tolist()
        [9.0, 33.0]
    """
    if isinstance(selector, list):
        if not selector:
            raise bad_value(arg, "a selector or a non-empty list of selectors", "an empty list")
        return [neuron_selector(s, info, f"{arg}[{i}]", batch_total_ok=batch_total_ok)
                for i, s in enumerate(selector)], True
    return [neuron_selector(selector, info, arg, batch_total_ok=batch_total_ok)], False


def neuron_selector(selector: Any, info: LayerInfo, arg: str = "selector", *, batch_total_ok: bool = False) -> Neuron:
    """The function ``activation → neuron value per example`` for one selector."""
    if callable(selector):
        return _callable_neuron(selector, info, arg, batch_total_ok)
    index = as_index(selector, arg)
    if info.is_tuple:
        raise bad_value(arg, f"a callable, since layer {info.name} gives {len(info.shapes)} tensors",
                        repr(selector))
    shape = info.shapes[0]
    if len(index) != len(shape):
        raise bad_value(arg, f"one index per non-batch dimension of layer {info.name}, whose output has "
                        f"shape (N, {', '.join(map(str, shape))}): {len(shape)} indices",
                        f"{len(index)} ({selector!r})")
    for i, (ix, size) in enumerate(zip(index, shape)):
        if isinstance(ix, int) and not -size <= ix < size:
            raise bad_value(arg, f"indices within layer {info.name}'s output shape (N, "
                            f"{', '.join(map(str, shape))})", f"index {ix} for dimension {i + 1} of size {size}")
    return IndexNeuron((slice(None),) + index, any(isinstance(ix, slice) for ix in index))


@dataclasses.dataclass(frozen=True)
class IndexNeuron:
    """The neuron ``h[(:,) + index]`` of a one-tensor activation, summed over the slices in ``index``."""

    index: tuple
    sums: bool

    def __call__(self, hs: Activation) -> Tensor:
        value = hs[0][self.index]
        return value.reshape(value.shape[0], -1).sum(1) if self.sums else value


def as_index(selector: Any, arg: str,
             expected: str = "an int, a tuple of ints and slices, a callable, or a list of these") -> tuple:
    """An index selector (or target) as a tuple of ints and slices; a clear error naming ``arg`` otherwise.

    Example:
        >>> as_index(3, "selector"), as_index((1, slice(0, 2)), "selector")
        ((3,), (1, slice(0, 2, None)))
    """
    parts = selector if isinstance(selector, tuple) else (selector,)
    out = []
    for p in parts:
        if isinstance(p, slice):
            ints = all(b is None or (isinstance(b, int) and not isinstance(b, bool)) for b in (p.start, p.stop, p.step))
            if not ints or (p.step is not None and p.step < 1):
                raise bad_value(arg, "slices of ints (or None) with a positive step", repr(p))
            out.append(p)
            continue
        try:
            if isinstance(p, bool):
                raise TypeError
            out.append(operator.index(p))
        except TypeError:
            raise bad_type(arg, expected, p) from None
    return tuple(out)


def _callable_neuron(selector: Callable, info: LayerInfo, arg: str, batch_total_ok: bool) -> Neuron:
    def pick(hs: Activation) -> Tensor:
        value = selector(hs if info.is_tuple else hs[0])
        n = hs[0].shape[0]
        if batch_total_ok and isinstance(value, Tensor) and value.numel() == 1:
            return value.reshape(()).expand(n) / n  # rows sum to the total: a unit cotangent per row is exact
        if not isinstance(value, Tensor) or value.numel() != n:
            got = f"shape {_batch_shape(value.shape, n)}" if isinstance(value, Tensor) else type(value).__name__
            raise AttrfxValueError(f"`{arg}` (a callable) must return one value per example, a tensor of "
                                   f"shape (N,); it returned {got}.")
        return value.reshape(n)

    return pick


_TARGET_FORMS = "an int, a tuple of ints, a tensor of ints, or a list of ints or tuples"


class Target(NamedTuple):
    """A normalised target: ``index`` shared by all examples, or ``per_example`` rows of indices."""

    index: Optional[tuple]
    per_example: Optional[Tensor]

    def repeat(self, times: int) -> "Target":
        """The target for ``times`` stacked copies of the batch (path or sample axis first)."""
        if self.per_example is None or times == 1:
            return self
        return Target(None, self.per_example.repeat(times, 1))


def format_target(target: Any, n_examples: int, arg: str = "target") -> Target:
    """Normalise any accepted target form; per-example forms must have one entry per example.

    Example:
        >>> format_target([1, 0], 2).per_example.tolist()
        [[1], [0]]
    """
    if target is None:
        return Target(None, None)
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise bad_value(arg, "an int tensor with one entry or one per example", f"a {target.dtype} tensor")
        if target.numel() == 1:
            return Target((int(target.item()),), None)
        if target.dim() != 1:
            raise bad_value(arg, f"an int tensor with one entry or one per example ({n_examples},)",
                            f"a {target.dtype} tensor of shape {tuple(target.shape)}")
        target = target.tolist()
    if isinstance(target, list):
        if len(target) != n_examples:
            raise bad_value(arg, f"a list with one entry per example ({n_examples})", f"{len(target)} entries")
        rows = [as_index(t, arg, _TARGET_FORMS) for t in target]
        if len({len(r) for r in rows}) != 1 or any(isinstance(i, slice) for r in rows for i in r):
            raise bad_value(arg, "a list of ints, or of tuples of ints of one length", repr(target))
        return Target(None, torch.tensor(rows, dtype=torch.long))
    index = as_index(target, arg, _TARGET_FORMS)
    if any(isinstance(i, slice) for i in index):
        raise bad_value(arg, "ints (a slice does not pick one output)", repr(target))
    return Target(index, None)


def check_target(output: Any, target: Target, arg: str = "target") -> None:
    """Check that ``target`` picks one value per example of ``output`` (a model output for any batch size).

    Only the shape is read, so an output for no examples serves.

    Example:
        >>> check_target(torch.zeros(0, 3), format_target(2, 0))
        >>> check_target(torch.zeros(0, 3), format_target(None, 0))
        Traceback (most recent call last):
        ...
        attrfx._errors.AttrfxValueError: `target` must be given (an int, tuple, tensor or list) because the model output has shape (N, 3), more than one value per example; got None.
    """
    if not isinstance(output, Tensor) or output.dim() == 0:
        got = "a 0-d tensor" if isinstance(output, Tensor) else type(output).__name__
        raise AttrfxValueError(f"the model must return a tensor with an example dimension; got {got}.")
    rest = output.shape[1:]
    shape = lambda: _batch_shape(output.shape, output.shape[0])  # noqa: E731 (formatted for errors only)
    if target.index is None and target.per_example is None:
        if rest.numel() != 1:
            raise bad_value(arg, f"given (an int, tuple, tensor or list) because the model output has shape "
                            f"{shape()}, more than one value per example", "None")
        return
    index = target.index if target.index is not None else tuple(target.per_example.T)
    if len(index) != len(rest):
        raise bad_value(arg, f"one index per non-batch dimension of the model output of shape "
                        f"{shape()} ({len(rest)})", f"{len(index)}")
    for dim, (ix, size) in enumerate(zip(index, rest)):
        bad = (not -size <= ix < size) if isinstance(ix, int) else bool(((ix < -size) | (ix >= size)).any())
        if bad:
            shown = ix if isinstance(ix, int) else ix.tolist()
            raise bad_value(arg, f"in range for the model output of shape {shape()}",
                            f"{shown} for dimension {dim + 1} of size {size}")


def select_target(output: Tensor, target: Target) -> Tensor:
    """The explained output value per example, shape ``[N]`` (``target`` checked by :func:`check_target`).

    Example:
        >>> select_target(torch.arange(6.).reshape(2, 3), format_target([2, 0], 2)).tolist()
        [2.0, 3.0]
    """
    if target.index is None and target.per_example is None:
        return output.reshape(output.shape[0])
    if target.index is not None:
        return output[(slice(None),) + target.index]
    rows = torch.arange(output.shape[0], device=output.device)
    return output[(rows,) + tuple(i.to(output.device) for i in target.per_example.T)]


def _batch_shape(shape: tuple, n: int) -> str:
    """``(N, ...)``: a shape with the example dimension written as N."""
    if len(shape) == 0:
        return "()"
    dims = ["N" if shape[0] == n else str(shape[0])] + [str(d) for d in tuple(shape)[1:]]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
