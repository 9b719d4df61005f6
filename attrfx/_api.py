"""The boundary every public method passes through.

- errors raised by primitives get the method's name as a prefix;
- no graph is recorded for parameters (gradients come from ``torch.func``
  transforms, which see through the outer ``torch.no_grad``);
- a ``torch.compile``'d model runs as its original module or function: the
  hooks an attribution adds for one call cannot reach a compiled graph (Dynamo
  does not guard on module hooks), so attributions always run eagerly.

The model's buffers are never written: see :func:`attrfx.probe.call_model`.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, TypeVar

import torch
from torch import nn

from ._errors import AttrfxTypeError, AttrfxValueError, bad_value

F = TypeVar("F", bound=Callable)


def public(fn: F) -> F:
    """Mark ``fn`` (whose first argument is the model) as a public attribution method."""

    @functools.wraps(fn)
    def method(*args, **kwargs):
        try:
            if args:
                args = (uncompiled(args[0]),) + args[1:]
            elif "model" in kwargs:
                kwargs = {**kwargs, "model": uncompiled(kwargs["model"])}
            with torch.no_grad():
                return fn(*args, **kwargs)
        except (AttrfxValueError, AttrfxTypeError) as err:
            raise type(err)(f"{fn.__name__}: {err}") from None

    return method  # type: ignore[return-value]


def uncompiled(model: Any) -> Any:
    """The module or function that ``torch.compile`` wrapped (``model`` itself if it is not compiled)."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # not imported: nothing was compiled
    if eval_frame is None:
        return model
    if isinstance(model, eval_frame.OptimizedModule):
        model = model._orig_mod
    if isinstance(model, nn.Module):
        inner = [name for name, m in model.named_modules() if isinstance(m, eval_frame.OptimizedModule)]
        if inner:
            raise bad_value("model", "a module without torch.compile'd submodules (per-call hooks cannot reach a "
                            "compiled graph; compile the whole model instead, which attrfx runs eagerly)",
                            f"compiled submodules {inner}")
        return model
    original = getattr(model, "_torchdynamo_orig_callable", None)
    return original if callable(original) else model
