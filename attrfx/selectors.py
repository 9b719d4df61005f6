"""What is explained: a hidden neuron (selector) or a model output (target).

Both become functions returning one scalar per example, shape ``[N]``:

- a neuron selector turns the layer's activation into the neuron's value: an
  int (2-D activation), a tuple of ints and slices (one per non-batch dim; a
  slice sums those neurons; trailing dims of size 1 may be left out), or a callable;
- a target turns the model output into the explained value: ``None``
  (one output per example), an int or tuple, a tensor or a list (one per example),
  or a callable — the form for a model that returns a ``ModelOutput``, a dict, a
  dataclass or a tuple (``target=lambda out: out.logits[:, -1, token_id]``).

A callable is applied to the activation (or model output) of every pass a method
runs, and must return one value per row of what it is given, whatever the number
of rows. The rows are the batch itself (N) for one-pass methods; path and sampling
methods, ablation and DeepLift stack S blocks of N rows, row i of each block from
example i (S·N rows: path points, samples, ablations, or inputs then baselines), as
Captum does; with ``n_steps="auto"`` each row is any example at any path point. A
row-wise function (``h[:, 3] * h[:, 5]``) fits every method. One that gathers by
example (``h[torch.arange(N), labels]``) fits one-pass methods; for stacked copies
it must repeat its indices (``labels.repeat(len(h) // N)``), and with ``"auto"`` it
cannot work. For a per-example target, pass a tensor or list instead.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Mapping
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
    """The function ``activation → neuron value per example`` for one selector.

    Example:
        >>> from torch import nn
        >>> from attrfx.probe import inspect_layers
        >>> net = nn.Sequential(nn.Unflatten(1, (3, 4)))
        >>> (info,) = inspect_layers(net, [net[0]], (torch.zeros(2, 12),), ())
        >>> pick = neuron_selector((1, 3), info); pick
        IndexNeuron(index=(slice(None, None, None), 1, 3), sums=False)
        >>> pick((torch.arange(24.).reshape(2, 3, 4),)).tolist()   # the activation is a tuple; one value per row
        [7.0, 19.0]
    """
    if callable(selector):
        return _callable_neuron(selector, info, arg, batch_total_ok)
    index = as_index(selector, arg)
    if info.is_tuple:
        raise bad_value(arg, f"a callable, since layer {info.name} gives {len(info.shapes)} tensors",
                        repr(selector))
    shape = info.shapes[0]
    index = _padded(index, shape)
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


def _padded(index: tuple, shape: tuple) -> tuple:
    """``index`` completed with zeros for the trailing dimensions of ``shape`` (non-batch) that it leaves out
    when they all have size 1 (one element each, so the pick is unambiguous, as Captum reads it); otherwise
    ``index`` as given.

    Example:
        >>> _padded((2,), (3, 1, 1)), _padded((2,), (3, 4))
        ((2, 0, 0), (2,))
    """
    rest = tuple(shape)[len(index):]
    return index + (0,) * len(rest) if rest and all(size == 1 for size in rest) else index


def _callable_neuron(selector: Callable, info: LayerInfo, arg: str, batch_total_ok: bool) -> Neuron:
    def pick(hs: Activation) -> Tensor:
        value = selector(hs if info.is_tuple else hs[0])
        n = hs[0].shape[0]
        if batch_total_ok and isinstance(value, Tensor) and value.numel() == 1:
            return value.reshape(()).expand(n) / n  # rows sum to the total: a unit cotangent per row is exact
        return _one_per_row(value, n, arg, "an activation")

    return pick


def _one_per_row(value: Any, rows: Optional[int], arg: str, given: str) -> Tensor:
    """A callable's result as ``[rows]``: one value per row of what it was ``given``; else a clear error.

    ``rows=None`` (unknown) accepts a one-dimensional tensor.

    Example:
        >>> _one_per_row(torch.ones(3, 1), 3, "target", "a model output").shape
        torch.Size([3])
    """
    if isinstance(value, Tensor) and (value.numel() == rows or (rows is None and value.dim() == 1)):
        return value.reshape(value.numel())
    got = f"shape {_batch_shape(value.shape, rows)}" if isinstance(value, Tensor) else type(value).__name__
    if isinstance(value, Tensor) and value.dim() and rows is not None and value.shape[0] != rows:
        got += (f" for {given} of {rows} rows (methods that stack path points, samples or ablations give the "
                f"callable S·N rows, S blocks of the batch: see attrfx.selectors)")
    raise AttrfxValueError(f"`{arg}` (a callable) must return one value per example, a tensor of "
                           f"shape (N,); it returned {got}.")


_TARGET_FORMS = "an int, a tuple of ints, a tensor of ints, a list of ints or tuples, or a callable"


class Target(NamedTuple):
    """A normalised target: ``index`` shared by all examples, ``per_example`` rows of indices, or a ``function``
    of the model output giving one value per row (checked on every pass by :func:`select_target`)."""

    index: Optional[tuple]
    per_example: Optional[Tensor]
    function: Optional[Callable[[Any], Tensor]] = None

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
    if callable(target):
        return Target(None, None, target)
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

    Only the shape is read, so an output for no examples serves. A callable target is checked where
    :func:`select_target` calls it, on each pass's own rows; every other form needs a tensor output.

    Example:
        >>> check_target(torch.zeros(0, 3), format_target(2, 0))
        >>> check_target(torch.zeros(0, 3), format_target(None, 0))
        Traceback (most recent call last):
        ...
        attrfx._errors.AttrfxValueError: `target` must be given (an int, tuple, tensor or list) because the model output has shape (N, 3), more than one value per example; got None.
    """
    if target.function is not None:
        return
    if not isinstance(output, Tensor):
        raise bad_value(arg, f"a callable, since the model returns {_kind(output)}, not a tensor to index: pass "
                        f"target=lambda out: {_first_tensor(output)[0]}[:, ...] giving one value per example",
                        _shown(target))
    if output.dim() == 0:
        raise AttrfxValueError("the model must return a tensor with an example dimension; got a 0-d tensor.")
    rest = output.shape[1:]
    shape = lambda: _batch_shape(output.shape, output.shape[0])  # noqa: E731 (formatted for errors only)
    if target.index is None and target.per_example is None:
        if rest.numel() != 1:
            raise bad_value(arg, f"given (an int, tuple, tensor or list) because the model output has shape "
                            f"{shape()}, more than one value per example", "None")
        return
    given = target.index if target.index is not None else tuple(target.per_example.T)
    index = _padded(given, tuple(rest))
    if len(index) != len(rest):
        raise bad_value(arg, f"one index per non-batch dimension of the model output of shape "
                        f"{shape()} ({len(rest)})", f"{len(given)}")
    for dim, (ix, size) in enumerate(zip(index, rest)):
        bad = (not -size <= ix < size) if isinstance(ix, int) else bool(((ix < -size) | (ix >= size)).any())
        if bad:
            shown = ix if isinstance(ix, int) else ix.tolist()
            raise bad_value(arg, f"in range for the model output of shape {shape()}",
                            f"{shown} for dimension {dim + 1} of size {size}")


def select_target(output: Any, target: Target) -> Tensor:
    """The explained output value per example, shape ``[N]`` (``target`` checked by :func:`check_target`).

    Example:
        >>> select_target(torch.arange(6.).reshape(2, 3), format_target([2, 0], 2)).tolist()
        [2.0, 3.0]
        >>> out = {"logits": torch.arange(6.).reshape(2, 3)}
        >>> select_target(out, format_target(lambda out: out["logits"][:, 1], 2)).tolist()
        [1.0, 4.0]
    """
    if target.function is not None:
        return _one_per_row(target.function(output), _first_tensor(output)[1], "target", "a model output")
    if target.index is None and target.per_example is None:
        return output.reshape(output.shape[0])
    if target.index is not None:
        value = output[(slice(None),) + target.index]
    else:
        rows = torch.arange(output.shape[0], device=output.device)
        value = output[(rows,) + tuple(i.to(output.device) for i in target.per_example.T)]
    return value if value.dim() == 1 else value.reshape(value.shape[0])  # trailing dims of size 1 left out


def _first_tensor(output: Any, at: str = "out") -> tuple[str, Optional[int]]:
    """``(expression, rows)`` of the first tensor with an example dimension in a model output (a tensor, or a
    ``ModelOutput``, mapping, dataclass, tuple or list of them; ``logits`` first): how a callable target reaches
    it from ``out``, and its dim 0. ``("out", None)`` where there is none.

    Example:
        >>> _first_tensor((torch.zeros(()), {"logits": torch.zeros(4, 2)}))
        ("out[1]['logits']", 4)
    """
    if isinstance(output, Tensor):
        return at, (output.shape[0] if output.dim() else None)
    if isinstance(output, Mapping):
        attribute = _is_model_output(output)
        keys = sorted(output, key=lambda k: k != "logits")
        parts = [(f"{at}.{k}" if attribute and isinstance(k, str) else f"{at}[{k!r}]", output[k]) for k in keys]
    elif dataclasses.is_dataclass(output) and not isinstance(output, type):
        fields = sorted((f.name for f in dataclasses.fields(output)), key=lambda k: k != "logits")
        parts = [(f"{at}.{k}", getattr(output, k)) for k in fields]
    elif isinstance(output, (tuple, list)):
        parts = [(f"{at}[{i}]", v) for i, v in enumerate(output)]
    else:
        parts = []
    for expression, value in parts:
        found = _first_tensor(value, expression)
        if found[1] is not None:
            return found
    return at, None


def _is_model_output(output: Any) -> bool:
    """Whether ``output`` is a ``transformers`` ``ModelOutput`` (recognised by its class, not imported)."""
    return any(c.__name__ == "ModelOutput" for c in type(output).__mro__)


def _kind(output: Any) -> str:
    """A model output's type, as an error names it."""
    name = type(output).__name__
    if _is_model_output(output):
        return f"{name} (a ModelOutput)"
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        return f"{name} (a dataclass)"
    return f"a {name}"


def _shown(target: Target) -> str:
    """A non-callable target as the user gave it, for errors."""
    if target.index is not None:
        return repr(target.index[0] if len(target.index) == 1 else target.index)
    return "None" if target.per_example is None else "a target per example"


def _batch_shape(shape: tuple, n: int) -> str:
    """``(N, ...)``: a shape with the example dimension written as N."""
    if len(shape) == 0:
        return "()"
    dims = ["N" if shape[0] == n else str(shape[0])] + [str(d) for d in tuple(shape)[1:]]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
