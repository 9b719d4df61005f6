"""Error types: every bad argument is named, with what was expected and what was given.

Primitives raise :class:`AttrfxValueError` / :class:`AttrfxTypeError`; the
public method that called them prefixes its own name (see :mod:`attrfx._api`),
so a message reads ``neuron_conductance: `selector` must be ...; got ...``.
"""

from __future__ import annotations


class AttrfxValueError(ValueError):
    """A bad argument value (wrong shape, out of range, unknown name)."""


class AttrfxTypeError(TypeError):
    """A bad argument type."""


def bad_value(arg: str, expected: str, got: object) -> AttrfxValueError:
    """Build the error for argument ``arg``: what was expected, what was given."""
    return AttrfxValueError(f"`{arg}` must be {expected}; got {got}.")


def bad_type(arg: str, expected: str, got: object) -> AttrfxTypeError:
    return AttrfxTypeError(f"`{arg}` must be {expected}; got {type(got).__name__}.")


def check_count(arg: str, value: object, least: int = 1, expected: str = "a positive int") -> int:
    """``value`` if it is an int of at least ``least``; otherwise the error naming ``arg``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_type(arg, expected, value)
    if value < least:
        raise bad_value(arg, expected, value)
    return value
