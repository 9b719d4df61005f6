"""Randomness for sampling methods, only from an explicit ``torch.Generator``.

Samples are laid out sample axis first, ``[S, B, ...]``. No function here
reads or advances the global RNG; ``generator=None`` means a fresh,
nondeterministically seeded generator.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ._errors import bad_type, bad_value


def make_generator(generator: Optional[torch.Generator]) -> torch.Generator:
    """``generator`` itself, or a fresh one seeded from the OS (the global RNG is untouched).

    Example:
        >>> g, state = torch.Generator().manual_seed(0), torch.get_rng_state()
        >>> make_generator(g) is g, type(make_generator(None)).__name__, torch.equal(state, torch.get_rng_state())
        (True, 'Generator', True)
    """
    if generator is None:
        fresh = torch.Generator()
        fresh.seed()
        return fresh
    if not isinstance(generator, torch.Generator):
        raise bad_type("generator", "None or a torch.Generator", generator)
    return generator


def _randn(shape: tuple, like: Tensor, generator: torch.Generator) -> Tensor:
    sample = torch.randn(shape, generator=generator, dtype=like.dtype, device=generator.device)
    return sample.to(like.device)


def gaussian_noise(xs: Sequence[Tensor], stdevs: Union[float, Sequence[float]], n_samples: int,
                   generator: torch.Generator) -> tuple[Tensor, ...]:
    """``n_samples`` noisy copies of each input, ``x + σ·ε`` with ``ε ~ N(0, 1)``: ``[S, B, ...]``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> gaussian_noise((torch.zeros(2, 3),), 0.0, 4, g)[0].shape
        torch.Size([4, 2, 3])
    """
    sigmas = per_input(stdevs, len(xs), "stdevs")
    return tuple(x + s * _randn((n_samples,) + tuple(x.shape), x, generator) if s else x.expand((n_samples,) + x.shape)
                 for x, s in zip(xs, sigmas))


def sample_baselines(distributions: Sequence[Tensor], n_samples: int, n_examples: int,
                     generator: torch.Generator) -> tuple[Tensor, ...]:
    """Draw baselines uniformly with replacement from each distribution: ``[S, B, ...]``.

    All inputs use the same draw (a baseline is one row across the input tuple).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> sample_baselines((torch.zeros(5, 3),), 4, 2, g)[0].shape
        torch.Size([4, 2, 3])
    """
    count = distributions[0].shape[0]
    rows = torch.randint(count, (n_samples, n_examples), generator=generator, device=generator.device)
    return tuple(d[rows.to(d.device)] for d in distributions)


def uniform(n_samples: int, n_examples: int, like: Tensor, generator: torch.Generator) -> Tensor:
    """Coefficients ``u ~ U(0, 1)``, shape ``[S, B]``, in ``like``'s dtype and on its device.

    Example:
        >>> u = uniform(4, 2, torch.zeros((), dtype=torch.float64), torch.Generator().manual_seed(0))
        >>> u.shape, u.dtype, bool(((u >= 0) & (u < 1)).all())
        (torch.Size([4, 2]), torch.float64, True)
    """
    u = torch.rand((n_samples, n_examples), generator=generator, dtype=like.dtype, device=generator.device)
    return u.to(like.device)


def per_input(value: Union[float, Sequence[float]], n_inputs: int, arg: str) -> tuple[float, ...]:
    """A non-negative float per input (one float is used for all).

    Example:
        >>> per_input(0.5, 2, "stdevs"), per_input((1, 0.25), 2, "stdevs")
        ((0.5, 0.5), (1.0, 0.25))
        >>> per_input((1.0,), 2, "stdevs")
        Traceback (most recent call last):
        ...
        attrfx._errors.AttrfxValueError: `stdevs` must be a float or one float per input (2); got 1 values.
    """
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * n_inputs
    if len(values) != n_inputs:
        raise bad_value(arg, f"a float or one float per input ({n_inputs})", f"{len(values)} values")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise bad_type(arg, "a float or a tuple of floats", v)
        if v < 0:
            raise bad_value(arg, "non-negative", v)
    return tuple(float(v) for v in values)
