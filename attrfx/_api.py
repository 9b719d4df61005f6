"""The boundary every public method passes through.

- ``model`` is checked first (an ``nn.Module`` or a callable), then every
  flag passed by keyword (``True``/``False`` only, :func:`~attrfx._errors.as_flag`)
  and every count (a Python int from any integer scalar, :func:`~attrfx._errors.as_int`),
  known by name: :data:`FLAGS`, :data:`COUNTS`;
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
import inspect
import sys
from typing import Any, Callable, TypeVar

import torch
from torch import nn

from ._errors import AttrfxTypeError, AttrfxValueError, as_flag, as_int, bad_type, bad_value

F = TypeVar("F", bound=Callable)

FLAGS = frozenset({"abs", "multiply_by_inputs", "attribute_to_layer_input", "attribute_to_neuron_input",
                   "return_convergence_delta", "relu_attributions", "attr_dim_summation", "show_progress", "verbose",
                   "return_input_shape"})
"""Keyword arguments of the public methods that take ``True`` or ``False`` only."""

COUNTS = {"n_steps": "an int or 'auto'", "internal_batch_size": "None or a positive int",
          "n_samples": "a positive int", "perturbations_per_eval": "a positive int", "max_steps": "an int"}
"""Keyword arguments of the public methods that are integers (``None`` and strings such as ``"auto"`` are left to
the method), with what each expects."""


def public(fn: F) -> F:
    """Mark ``fn`` (whose first argument is the model) as a public attribution method."""

    options = {name for name in inspect.signature(fn).parameters if name in FLAGS or name in COUNTS}

    @functools.wraps(fn)
    def method(*args, **kwargs):
        try:
            if args:
                args = (uncompiled(check_model(args[0])),) + args[1:]
            elif "model" in kwargs:
                kwargs = {**kwargs, "model": uncompiled(check_model(kwargs["model"]))}
            kwargs = {name: checked_option(name, value) if name in options else value for name, value in kwargs.items()}
            with torch.no_grad():
                return fn(*args, **kwargs)
        except (AttrfxValueError, AttrfxTypeError) as err:
            raise type(err)(f"{fn.__name__}: {err}") from None

    return method  # type: ignore[return-value]


def check_model(model: Any) -> Any:
    """``model`` if it is an ``nn.Module`` or another callable (a forward function); the error naming it otherwise."""
    if not callable(model):
        raise bad_type("model", "an nn.Module or a callable forward function", model)
    return model


def checked_option(name: str, value: Any) -> Any:
    """A keyword argument as the method uses it: a flag checked (:data:`FLAGS`), a count as a Python int
    (:data:`COUNTS`), anything else as given.

    Example:
        >>> import numpy as np
        >>> checked_option("n_steps", np.int64(20)), checked_option("show_progress", np.bool_(False))
        (20, False)
    """
    if name in FLAGS:
        return as_flag(name, value)
    if name in COUNTS and value is not None and not isinstance(value, str):
        return as_int(name, value, COUNTS[name])
    return value


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
