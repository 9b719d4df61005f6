"""The boundary every public method passes through.

- errors raised by primitives get the method's name as a prefix;
- no graph is recorded for parameters (gradients come from ``torch.func``
  transforms, which see through the outer ``torch.no_grad``);
- the model's buffers are restored on every exit, so a model in training
  mode (e.g. BatchNorm running statistics) is left exactly as it was.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator, TypeVar

import torch
from torch import nn

from ._errors import AttrfxTypeError, AttrfxValueError

F = TypeVar("F", bound=Callable)


@contextlib.contextmanager
def preserved_buffers(model: Any) -> Iterator[None]:
    """Restore the values of ``model``'s buffers on exit, if any module is training."""
    if not isinstance(model, nn.Module) or not any(m.training for m in model.modules()):
        yield
        return
    saved = [(b, b.clone()) for b in model.buffers()]
    try:
        yield
    finally:
        for buffer, value in saved:
            buffer.copy_(value)


def public(fn: F) -> F:
    """Mark ``fn`` (whose first argument is the model) as a public attribution method."""

    @functools.wraps(fn)
    def method(*args, **kwargs):
        model = args[0] if args else kwargs.get("model")
        try:
            with torch.no_grad(), preserved_buffers(model):
                return fn(*args, **kwargs)
        except (AttrfxValueError, AttrfxTypeError) as err:
            raise type(err)(f"{fn.__name__}: {err}") from None

    return method  # type: ignore[return-value]
