"""The boundary every public method passes through.

- errors raised by primitives get the method's name as a prefix;
- no graph is recorded for parameters (gradients come from ``torch.func``
  transforms, which see through the outer ``torch.no_grad``).

The model's buffers are never written: see :func:`attrfx.probe.call_model`.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch

from ._errors import AttrfxTypeError, AttrfxValueError

F = TypeVar("F", bound=Callable)


def public(fn: F) -> F:
    """Mark ``fn`` (whose first argument is the model) as a public attribution method."""

    @functools.wraps(fn)
    def method(*args, **kwargs):
        try:
            with torch.no_grad():
                return fn(*args, **kwargs)
        except (AttrfxValueError, AttrfxTypeError) as err:
            raise type(err)(f"{fn.__name__}: {err}") from None

    return method  # type: ignore[return-value]
