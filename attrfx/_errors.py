"""Error types: every bad argument is named, with what was expected and what was given.

Primitives raise :class:`AttrfxValueError` / :class:`AttrfxTypeError`; the
public method that called them prefixes its own name (see :mod:`attrfx._api`),
so a message reads ``neuron_conductance: `selector` must be ...; got ...``.

Two rules hold for every argument of their kind: a count (``n_steps``,
``n_samples``, ...) is an integer — a Python int or a numpy/torch integer
scalar, never a bool (:func:`as_int`); a flag (``multiply_by_inputs``, ...) is
``True`` or ``False`` — a bool or a numpy bool, never a string or a number
(:func:`as_flag`).
"""

from __future__ import annotations

import operator

import numpy as np
import torch


class AttrfxValueError(ValueError):
    """A bad argument value (wrong shape, out of range, unknown name)."""


class AttrfxTypeError(TypeError):
    """A bad argument type."""


def bad_value(arg: str, expected: str, got: object) -> AttrfxValueError:
    """Build the error for argument ``arg``: what was expected, what was given."""
    return AttrfxValueError(f"`{arg}` must be {expected}; got {got}.")


def bad_type(arg: str, expected: str, got: object) -> AttrfxTypeError:
    """Build the error for argument ``arg`` of the wrong type: what was expected, the type given."""
    return AttrfxTypeError(f"`{arg}` must be {expected}; got {type(got).__name__}.")


def as_int(arg: str, value: object, expected: str = "an int") -> int:
    """``value`` as a Python int: an int, or a numpy/torch integer scalar (``operator.index``); never a bool.

    Example:
        >>> as_int("n_steps", np.int64(20)), as_int("n_steps", torch.tensor(3))
        (20, 3)
        >>> as_int("n_steps", True)
        Traceback (most recent call last):
        ...
        attrfx._errors.AttrfxTypeError: `n_steps` must be an int; got bool.
    """
    scalar = not isinstance(value, torch.Tensor) or (value.dim() == 0 and value.dtype != torch.bool)
    if isinstance(value, (bool, np.bool_)) or not scalar:
        raise bad_type(arg, expected, value)
    try:
        return operator.index(value)
    except TypeError:
        raise bad_type(arg, expected, value) from None


def as_flag(arg: str, value: object) -> bool:
    """``value`` if it is ``True`` or ``False`` (a bool or a numpy bool); the error naming ``arg`` otherwise.

    Example:
        >>> as_flag("multiply_by_inputs", np.bool_(True))
        True
        >>> as_flag("multiply_by_inputs", "yes")
        Traceback (most recent call last):
        ...
        attrfx._errors.AttrfxTypeError: `multiply_by_inputs` must be True or False; got str.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise bad_type(arg, "True or False", value)
    return bool(value)


def check_count(arg: str, value: object, least: int = 1, expected: str = "a positive int") -> int:
    """``value`` as an int (:func:`as_int`) if it is at least ``least``; otherwise the error naming ``arg``."""
    count = as_int(arg, value, expected)
    if count < least:
        raise bad_value(arg, expected, count)
    return count
