"""Inputs, baselines and extra forward arguments, in the forms users pass them.

Internally every method works on a tuple of tensors; :func:`as_tuple` and
:func:`restore` convert at the boundary, so a tensor in gives a tensor out and
a tuple in gives a tuple out.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence, Union

import torch
from torch import Tensor

from ._errors import bad_type, bad_value

Inputs = Union[Tensor, tuple[Tensor, ...]]
Baseline = Union[None, int, float, Tensor]


def as_tuple(inputs: Inputs, arg: str = "inputs") -> tuple[tuple[Tensor, ...], bool]:
    """``(tuple of tensors, was_tuple)``; every tensor must share dim 0 (examples).

    Example:
        >>> xs, was_tuple = as_tuple(torch.zeros(2, 3))
        >>> len(xs), was_tuple
        (1, False)
    """
    was_tuple = isinstance(inputs, tuple)
    xs = inputs if was_tuple else (inputs,)
    if len(xs) == 0:
        raise bad_value(arg, "a tensor or a non-empty tuple of tensors", "an empty tuple")
    for i, x in enumerate(xs):
        if not isinstance(x, Tensor):
            raise bad_type(arg if not was_tuple else f"{arg}[{i}]", "a torch.Tensor", x)
        if x.dim() == 0:
            raise bad_value(arg, "tensors with an example dimension (dim 0)", "a 0-d tensor")
    sizes = {x.shape[0] for x in xs}
    if len(sizes) > 1:
        raise bad_value(arg, "tensors with the same number of examples (dim 0)",
                        f"sizes {[x.shape[0] for x in xs]}")
    return tuple(xs), was_tuple


def restore(values: Sequence[Tensor], was_tuple: bool) -> Inputs:
    """Give results the structure of the inputs: a tensor for a tensor, a tuple for a tuple.

    Example:
        >>> restore([torch.ones(2)], False).shape, len(restore([torch.ones(2), torch.ones(3)], True))
        (torch.Size([2]), 2)
    """
    return tuple(values) if was_tuple else values[0]


def require_float(xs: tuple[Tensor, ...], arg: str = "inputs") -> None:
    """Gradients with respect to ``xs`` need floating-point tensors.

    Example:
        >>> require_float((torch.zeros(2, 3),))          # fine; integer ids raise, naming `inputs`
        >>> require_float((torch.zeros(2, 3, dtype=torch.long),))
        Traceback (most recent call last):
        attrfx._errors.AttrfxValueError: `inputs` must be floating-point tensors ...
    """
    for x in xs:
        if not x.is_floating_point():
            raise bad_value(arg, "floating-point tensors to take gradients with respect to them (for token ids, "
                            "pass embeddings instead: the embedding layer's output, with a model that takes "
                            "them, e.g. called with inputs_embeds=)", f"dtype {x.dtype}")


def format_baselines(baselines: Any, xs: tuple[Tensor, ...], arg: str = "baselines") -> tuple[Tensor, ...]:
    """One baseline per input, as a tensor that broadcasts to that input's shape (``arg`` names them in errors).

    ``None`` means zeros; a number is used everywhere; a tensor may be shaped
    like the input or broadcast to it (e.g. dim 0 of size 1). Baselines take the
    input's dtype and device.

    Example:
        >>> [b.shape for b in format_baselines(0.5, (torch.zeros(4, 3),))]
        [torch.Size([])]
    """
    if baselines is None:
        return tuple(torch.zeros((), dtype=x.dtype, device=x.device) for x in xs)
    bs = baselines if isinstance(baselines, tuple) else (baselines,)
    if len(bs) != len(xs):
        raise bad_value(arg, f"one baseline per input ({len(xs)})", f"{len(bs)} baselines")
    return tuple(_one_baseline(b, x, f"{arg}[{i}]") for i, (b, x) in enumerate(zip(bs, xs)))


def _one_baseline(b: Any, x: Tensor, arg: str) -> Tensor:
    if isinstance(b, bool) or not isinstance(b, (int, float, Tensor)):
        raise bad_type(arg, "None, a number or a torch.Tensor", b)
    b = _cast(b, x, arg)
    try:
        fits = torch.broadcast_shapes(b.shape, x.shape) == x.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise bad_value(arg, f"a number or a tensor that broadcasts to the input shape "
                        f"{tuple(x.shape)}", f"shape {tuple(b.shape)}")
    return b


def _cast(b: Any, x: Tensor, arg: str) -> Tensor:
    """``b`` as a tensor of ``x``'s dtype on ``x``'s device (a real tensor that can be copied there); a Python
    number is read in that dtype directly (``0.3`` for float64 inputs is float64's 0.3, not float32's).

    Example:
        >>> _cast(0.3, torch.zeros(1, dtype=torch.float64), "baselines").item() == 0.3
        True
    """
    if isinstance(b, (int, float)) and (x.is_floating_point() or isinstance(b, int)):
        return torch.tensor(b, dtype=x.dtype, device=x.device)
    b = torch.as_tensor(b)
    if b.is_complex():
        raise bad_value(arg, f"a real tensor (it is cast to the inputs' dtype {x.dtype})", f"dtype {b.dtype}")
    try:
        return b.to(dtype=x.dtype, device=x.device)
    except (RuntimeError, NotImplementedError):
        raise bad_value(arg, f"a tensor that can be copied to the inputs' device {x.device}",
                        f"a tensor on device {b.device}") from None


def format_distribution(baselines: Any, inputs: Inputs, xs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Baseline distributions for sampling methods: dim 0 indexes baseline samples.

    ``baselines`` is a tensor (or tuple) whose dims after the first match the
    input's, or a callable that returns one (called with ``inputs``, or with
    nothing if it takes no arguments, as in Captum).

    Example:
        >>> [b.shape for b in format_distribution(torch.zeros(7, 3), torch.ones(2, 3), (torch.ones(2, 3),))]
        [torch.Size([7, 3])]
    """
    if callable(baselines) and not isinstance(baselines, Tensor):
        baselines = baselines() if _takes_nothing(baselines) else baselines(inputs)
    bs = baselines if isinstance(baselines, tuple) else (baselines,)
    if len(bs) != len(xs):
        raise bad_value("baselines", f"one baseline distribution per input ({len(xs)})", f"{len(bs)}")
    out = []
    for i, (b, x) in enumerate(zip(bs, xs)):
        if not isinstance(b, Tensor):
            raise bad_type(f"baselines[{i}]", "a torch.Tensor (dim 0 indexes baseline samples)", b)
        if b.dim() != x.dim() or b.shape[1:] != x.shape[1:] or b.shape[0] == 0:
            raise bad_value(f"baselines[{i}]", f"a tensor shaped (n_baselines, {', '.join(map(str, x.shape[1:]))})",
                            f"shape {tuple(b.shape)}")
        out.append(_cast(b, x, f"baselines[{i}]"))
    return tuple(out)


def _takes_nothing(fn: Any) -> bool:
    try:
        return not inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no signature to read (some builtins): pass the inputs
        return False


def format_args(additional_forward_args: Any) -> tuple:
    """Extra forward arguments as a tuple (``None`` → empty).

    Example:
        >>> format_args(None), format_args(3), format_args((1, "a"))
        ((), (3,), (1, 'a'))
    """
    if additional_forward_args is None:
        return ()
    return additional_forward_args if isinstance(additional_forward_args, tuple) else (additional_forward_args,)


def repeat_args(args: tuple, n_examples: int, times: int) -> tuple:
    """Repeat tensors whose dim 0 is the example dimension ``times`` times (path/sample axis first).

    Example:
        >>> scale, flag = repeat_args((torch.tensor([[1.0], [2.0]]), True), 2, 3)
        >>> scale.flatten().tolist(), flag          # 3 blocks of the 2 examples
        ([1.0, 2.0, 1.0, 2.0, 1.0, 2.0], True)
    """
    if times == 1:
        return args
    return tuple(_repeat(a, times) if _per_example(a, n_examples) else a for a in args)


def take_examples(args: tuple, n_examples: int, index: slice) -> tuple:
    """Slice the per-example tensors among ``args``.

    Example:
        >>> take_examples((torch.tensor([10, 20, 30]), torch.zeros(1)), 3, torch.tensor([2, 0]))[0].tolist()
        [30, 10]
    """
    return tuple(a[index] if _per_example(a, n_examples) else a for a in args)


def _per_example(a: Any, n_examples: int) -> bool:
    return isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == n_examples


def _repeat(a: Tensor, times: int) -> Tensor:
    return a.repeat((times,) + (1,) * (a.dim() - 1))


def fold(points: Tensor) -> Tensor:
    """``[S, B, ...] → [S·B, ...]``: path points become one batch.

    Example:
        >>> fold(torch.zeros(5, 2, 3)).shape
        torch.Size([10, 3])
    """
    return points.reshape((-1,) + tuple(points.shape[2:]))

