"""Occlusion's sliding windows: a grid of windows over each input, and the perturbations that occlude them.

- :func:`occlusion_windows` — the grid from ``sliding_window_shapes`` and ``strides`` (validated, named in errors):
  per dim, the intervals the windows cover (:class:`Windows`); a window covers the product of its dims' intervals;
- :func:`window_members` — which elements a run of windows covers, without a loop over windows;
- :func:`window_means` — each element's mean over the windows covering it (one contraction per dim);
- :func:`occlusions` — the :class:`~attrfx.ablation.Perturbations` of occlusion: each window takes the baseline.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from ._errors import bad_type, bad_value
from .ablation import Perturbations, kept_points


class Windows(NamedTuple):
    """A grid of windows over one input's per-example shape ``[s₀, ..., s_D]``: along dim ``d``, ``counts[d]``
    windows start every stride and span the window's size (the last ones clipped at the edge); ``cover[d]`` is
    ``[counts[d], s_d]``, True where a window covers an element of that dim. A window of the grid covers the
    product of its dims' intervals."""

    counts: tuple[int, ...]
    cover: tuple[Tensor, ...]

    @property
    def count(self) -> int:
        return math.prod(self.counts)


def occlusion_windows(sliding_window_shapes: Any, strides: Any, xs: Sequence[Tensor]) -> tuple[Windows, ...]:
    """The windows over each input: ``sliding_window_shapes`` (a tuple of ints per input, one per dim after the
    first; one tuple for one input) every ``strides`` (None: 1; an int for every dim; a tuple per input of ints
    or of one int per dim). Along a dim there are ``⌈(s − w) / stride⌉ + 1`` windows, so every element is
    covered: a stride may exceed the window only where the window spans the whole dim.

    Example:
        >>> (w,) = occlusion_windows((2,), 2, (torch.zeros(1, 5),))
        >>> w.counts, w.cover[0].int().tolist()
        ((3,), [[1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]])
    """
    shapes = _per_input(sliding_window_shapes, xs, "sliding_window_shapes", strides=False)
    steps = _per_input(1 if strides is None else strides, xs, "strides", strides=True)
    out = []
    for i, (x, window, step) in enumerate(zip(xs, shapes, steps)):
        size = tuple(x.shape[1:])
        named = (lambda arg: f"{arg}[{i}]") if len(xs) > 1 else (lambda arg: arg)
        window = _dims(window, size, named("sliding_window_shapes"), "a window size", False)
        step = _dims(step, size, named("strides"), "a stride", True)
        if any(w > s for w, s in zip(window, size)):
            raise bad_value(named("sliding_window_shapes"), f"a window no larger than the input's shape {size} (dims "
                            "after the first)", f"window {window}")
        if any(t > w < s for t, w, s in zip(step, window, size)):
            raise bad_value(named("strides"), f"strides no larger than the window {window} along each dim the window "
                            "does not span (elements would be skipped)", f"strides {step}")
        counts = tuple(-(-(s - w) // t) + 1 for s, w, t in zip(size, window, step))
        cover = []
        for s, w, t, c in zip(size, window, step, counts):
            first = torch.arange(c, device=x.device)[:, None] * t
            at = torch.arange(s, device=x.device)[None, :]
            cover.append((at >= first) & (at < first + w))
        out.append(Windows(counts, tuple(cover)))
    return tuple(out)


def _per_input(value: Any, xs: Sequence[Tensor], arg: str, strides: bool) -> tuple:
    """One entry per input of ``value``: windows, or ``strides`` (then an int serves every input). For one input,
    a window tuple of ints is that input's (``(2, 3)``, ``(2,)``), and strides are that input's unless given as a
    1-tuple (``(2,)`` or ``((1, 2),)``, as Captum reads them); for several, a tuple with an entry per input."""
    if len(xs) == 1:
        alone = not (isinstance(value, tuple) and len(value) == 1) if strides else \
            not (isinstance(value, tuple) and len(value) == 1 and not _is_int(value[0]))
        return (value,) if alone else value
    if strides and _is_int(value):
        return (value,) * len(xs)
    if not isinstance(value, tuple):
        raise bad_type(arg, f"a tuple with one entry per input ({len(xs)})", value)
    if len(value) != len(xs):
        raise bad_value(arg, f"a tuple with one entry per input ({len(xs)})", f"{len(value)} entries")
    return value


def _is_int(value: Any) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _dims(value: Any, size: tuple[int, ...], arg: str, what: str, int_ok: bool) -> tuple[int, ...]:
    """``value`` as one positive int per dim of ``size`` (where ``int_ok``, an int: the same for every dim)."""
    if int_ok and _is_int(value):
        value = (value,) * len(size)
    if not isinstance(value, tuple) or not all(_is_int(v) for v in value):
        expected = f"{'an int or ' if int_ok else ''}a tuple of {len(size)} ints ({what} per dim after the first)"
        raise bad_type(arg, expected, value)
    if len(value) != len(size):
        raise bad_value(arg, f"{len(size)} ints, one per dim of the input's shape {size} after the first",
                        f"{value}")
    if any(v < 1 for v in value):
        raise bad_value(arg, f"positive ints ({what} of at least 1)", f"{value}")
    return tuple(int(v) for v in value)


def window_members(windows: Windows, start: int, stop: int) -> Tensor:
    """Which elements windows ``start .. stop−1`` (row-major over the grid) cover: ``[P, s₀, ..., s_D]`` bool.

    Example:
        >>> (w,) = occlusion_windows((1, 2), 1, (torch.zeros(1, 2, 3),))
        >>> window_members(w, 1, 2).int().tolist()
        [[[0, 1, 1], [0, 0, 0]]]
    """
    dims = len(windows.counts)
    index = torch.arange(start, stop, device=windows.cover[0].device if dims else None)
    member = torch.ones((stop - start,) + (1,) * dims, dtype=torch.bool, device=index.device)
    for d in reversed(range(dims)):  # row-major: the last dim's window index varies fastest
        along = windows.cover[d][index % windows.counts[d]]          # [P, s_d]
        member = member & along.reshape((-1,) + (1,) * d + (along.shape[1],) + (1,) * (dims - 1 - d))
        index = index // windows.counts[d]
    return member


def window_means(drops: Tensor, windows: Windows) -> Tensor:
    """Each element's mean drop over the windows covering it: ``[K, N, W]`` → ``[K, N, s₀, ..., s_D]``.

    The sum over windows is separable: one contraction with ``cover[d]`` per dim.

    Example:
        >>> (w,) = occlusion_windows((2,), 1, (torch.zeros(1, 3),))
        >>> window_means(torch.tensor([[[2.0, 4.0]]]), w).tolist()
        [[[2.0, 3.0, 4.0]]]
    """
    total = drops.reshape(drops.shape[:2] + windows.counts)
    covered = torch.ones(windows.counts, dtype=drops.dtype, device=drops.device)
    for cover in windows.cover:
        cover = cover.to(drops.dtype)
        total = torch.tensordot(total, cover, dims=([2], [0]))
        covered = torch.tensordot(covered, cover, dims=([0], [0]))
    return total / covered


def occlusions(xs: Sequence[Tensor], bs: Sequence[Tensor], windows: Sequence[Windows]) -> Perturbations:
    """Occlusion: each window of each input (:func:`occlusion_windows`, input by input) takes the baseline in turn;
    an element gets the mean drop of the windows covering it.

    Example:
        >>> x = torch.tensor([[1.0, 2.0, 3.0]])
        >>> occluded = occlusions((x,), (torch.zeros(()),), occlusion_windows((2,), 1, (x,)))
        >>> occluded.count, occluded.points(0, 2)[0].tolist()
        (2, [[0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])
    """
    offsets = [0]
    for w in windows:
        offsets.append(offsets[-1] + w.count)

    def points(start: int, stop: int) -> tuple[Tensor, ...]:
        keeps = []
        for x, w, first in zip(xs, windows, offsets):
            lo, hi = min(max(start - first, 0), w.count), min(max(stop - first, 0), w.count)
            member = torch.zeros((stop - start,) + tuple(x.shape[1:]), dtype=torch.bool, device=x.device)
            member[lo + first - start:hi + first - start] = window_members(w, lo, hi)
            keeps.append(~member[:, None])
        return kept_points(xs, bs, keeps)

    def means(drops: Tensor) -> tuple[Tensor, ...]:
        return tuple(window_means(drops[:, :, first:first + w.count], w) for w, first in zip(windows, offsets))

    return Perturbations(offsets[-1], points, means)
