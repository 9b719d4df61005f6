"""The noise tunnel: any attribution method averaged over noisy copies of its inputs (SmoothGrad and friends).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn  # noqa: F401 (the examples use nn)
from torch.utils._pytree import tree_flatten, tree_unflatten

from .._errors import AttrfxTypeError, AttrfxValueError, as_flag, bad_type, bad_value, check_count
from ..inputs import as_tuple, fold, repeat_args, require_float, restore
from ..noise import gaussian_noise, make_generator, per_input, sample_baselines

NT_TYPES = ("smoothgrad", "smoothgrad_sq", "vargrad")
"""``E[a]``, ``E[a²]`` and ``E[a²] − E[a]²`` of the attributions ``a`` over the noise."""


class Moments:
    """Running mean of the attributions, of their squares, or their summed squared deviations (Welford), one
    sample at a time: the same numbers however the samples are batched, and exactly ``a`` (variance exactly 0)
    when every sample gives ``a``."""

    def __init__(self, nt_type: str):
        self.nt_type, self.count, self.mean, self.spread = nt_type, 0, None, None

    def add(self, a: Tensor) -> None:
        self.count += 1
        value = a * a if self.nt_type == "smoothgrad_sq" else a
        if self.mean is None:
            self.mean, self.spread = value, torch.zeros_like(value)
            return
        step = value - self.mean
        self.mean = self.mean + step / self.count
        if self.nt_type == "vargrad":
            self.spread = self.spread + step * (value - self.mean)

    def result(self) -> Tensor:
        return self.spread / self.count if self.nt_type == "vargrad" else self.mean


def _per_example(value: Any, n: int) -> bool:
    return isinstance(value, Tensor) and value.dim() > 0 and value.shape[0] == n and n > 1


def _repeated(value: Any, n: int, times: int) -> Any:
    """``value`` for ``times`` stacked copies of the batch: tensors with a row per example repeated, the rest kept."""
    if isinstance(value, tuple):
        return tuple(_repeated(v, n, times) for v in value)
    return value.repeat((times,) + (1,) * (value.dim() - 1)) if _per_example(value, n) else value


def _repeated_target(target: Any, n: int, times: int) -> Any:
    if isinstance(target, list) and len(target) == n:
        return target * times
    return _repeated(target, n, times)


def _repeated_args(args: Any, n: int, times: int) -> Any:
    if isinstance(args, tuple):
        return repeat_args(args, n, times)
    return repeat_args((args,), n, times)[0]


def _drawn_baselines(baselines: Any, xs: tuple[Tensor, ...], n_samples: int,
                     generator: torch.Generator) -> Optional[tuple]:
    """One baseline row per sample and example from each baseline distribution (numbers stay): ``[S, N, ...]``."""
    given = baselines if isinstance(baselines, tuple) else (baselines,)
    tensors = [b for b in given if isinstance(b, Tensor) and b.dim() > 0]
    if not tensors:
        return None
    if len(given) != len(xs):
        raise bad_value("baselines", f"one baseline per input ({len(xs)})", f"{len(given)} baselines")
    for b, x in zip(given, xs):
        if isinstance(b, Tensor) and b.dim() > 0 and b.shape[1:] != x.shape[1:]:
            raise bad_value("baselines", f"distributions whose rows are shaped like the inputs' {tuple(x.shape[1:])} "
                            "to draw from (draw_baseline_from_distrib=True)", f"shape {tuple(b.shape)}")
    drawn = iter(sample_baselines(tensors, n_samples, xs[0].shape[0], generator))
    return tuple(next(drawn) if isinstance(b, Tensor) and b.dim() > 0 else b for b in given)


def _rows_axis(arguments: dict) -> int:
    """Where the result's rows are: after the leading K of a list of selectors, else first."""
    return 1 if isinstance(arguments.get("selector"), list) else 0


def _by_sample(leaves: list[Tensor], axis: int, times: int) -> list[Tensor]:
    """Each leaf's ``times·N`` rows (sample-major) split as ``[times, ..., N, ...]`` with the sample axis first."""
    return [t.unflatten(axis, (times, -1)).movedim(axis, 0) for t in leaves]


def _example_major(deltas: list[Tensor], n: int) -> Tensor:
    """Per-row values of all samples, ``[S·N]`` sample-major, reordered example-major (Captum's order)."""
    rows = torch.cat(deltas)
    return rows.unflatten(0, (-1, n)).transpose(0, 1).flatten(0, 1)


def noise_tunnel(method: Callable, /, *args, nt_type="smoothgrad", nt_samples=5, nt_samples_batch_size=None,
                 stdevs=1.0, draw_baseline_from_distrib=False, generator=None, **kwargs):
    """``method``'s attributions averaged over noisy inputs ``x + σ·ε``, ``ε ~ N(0, 1)``.

    ``smoothgrad``: ``E[a(x + σε)]``; ``smoothgrad_sq``: ``E[a²]``; ``vargrad``: ``E[a²] − E[a]²``,
    over ``nt_samples`` draws. ``method`` is any attrfx method, called with ``*args, **kwargs``
    (its ``inputs`` found by name); each call runs ``nt_samples_batch_size`` samples stacked
    sample-major (``S`` blocks of the batch), with per-example ``target``, ``baselines``,
    ``feature_mask`` and ``additional_forward_args`` repeated to follow them. Captum: ``NoiseTunnel``.

    Args:
        method: an attrfx attribution method (positional only, so the method's own ``method=`` passes through).
        *args, **kwargs: ``method``'s arguments, as for a direct call.
        nt_type: ``"smoothgrad"``, ``"smoothgrad_sq"`` or ``"vargrad"``.
        nt_samples: the number of noisy samples.
        nt_samples_batch_size: samples per call of ``method`` (all of them for None); never changes the result.
        stdevs: the noise's standard deviation, one float or one per input.
        draw_baseline_from_distrib: draw each sample's baselines from ``baselines`` (a distribution, dim 0 =
            its rows), one row per sample and example.
        generator: a ``torch.Generator`` for the noise (and the drawn baselines); the global RNG is untouched.

    Returns:
        The smoothed attributions in ``method``'s structure; with ``return_convergence_delta=True`` passed to
        ``method``, ``(attributions, delta)``, the deltas of every sample, ``[N·S]`` example-major as in Captum.

    Example:
        >>> import attrfx
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> g = torch.Generator().manual_seed(0)
        >>> noise_tunnel(attrfx.neuron_gradient, net, "0", torch.randn(5, 3), 1, nt_samples=8,
        ...              stdevs=0.1, generator=g).shape
        torch.Size([5, 3])

    References:
        Smilkov et al., "SmoothGrad: removing noise by adding noise", 2017; Adebayo et al., "Sanity Checks for
        Saliency Maps", 2018 (VarGrad).
    """
    try:
        with torch.no_grad():
            return _noise_tunnel(method, args, kwargs, nt_type, nt_samples, nt_samples_batch_size, stdevs,
                                 draw_baseline_from_distrib, generator)
    except (AttrfxValueError, AttrfxTypeError) as err:
        raise type(err)(f"noise_tunnel: {err}") from None


def _noise_tunnel(method, args, kwargs, nt_type, nt_samples, batch_size, stdevs, draw, generator):
    signature = inspect.signature(method) if callable(method) else None
    if signature is None or "inputs" not in signature.parameters:
        raise bad_type("method", "an attrfx attribution method (a function taking `inputs`)", method)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as err:
        raise AttrfxTypeError(f"`method`'s arguments must fit {getattr(method, '__name__', method)}"
                              f"{signature}; {err}.") from None
    if nt_type not in NT_TYPES:
        raise bad_value("nt_type", f"one of {list(NT_TYPES)}", repr(nt_type))
    n_samples = check_count("nt_samples", nt_samples)
    per_call = n_samples if batch_size is None else min(n_samples, check_count("nt_samples_batch_size", batch_size))
    draw = as_flag("draw_baseline_from_distrib", draw)
    xs, was_tuple = as_tuple(bound.arguments["inputs"])
    require_float(xs)
    sigmas = per_input(stdevs, len(xs), "stdevs")
    generator = make_generator(generator)
    n = xs[0].shape[0]
    noisy = gaussian_noise(xs, sigmas, n_samples, generator)
    drawn = _drawn_baselines(bound.arguments.get("baselines"), xs, n_samples, generator) if draw else None
    with_delta = bool(bound.arguments.get("return_convergence_delta", False))
    axis = _rows_axis(bound.arguments)
    moments, spec, deltas = None, None, []
    for start in range(0, n_samples, per_call):
        block = slice(start, min(start + per_call, n_samples))
        times = block.stop - block.start
        call = inspect.BoundArguments(signature, dict(bound.arguments))
        call.arguments["inputs"] = restore(tuple(fold(s[block]) for s in noisy), was_tuple)
        for name, value in bound.arguments.items():
            if name == "target":
                call.arguments[name] = _repeated_target(value, n, times)
            elif name == "additional_forward_args":
                call.arguments[name] = _repeated_args(value, n, times)
            elif name in ("baselines", "feature_mask"):
                call.arguments[name] = _repeated(value, n, times)
        if drawn is not None:
            call.arguments["baselines"] = tuple(fold(b[block]) if isinstance(b, Tensor) else b for b in drawn) \
                if isinstance(bound.arguments["baselines"], tuple) else fold(drawn[0][block])
        result = method(*call.args, **call.kwargs)
        if with_delta:
            result, delta = result
            deltas.append(delta)
        leaves, spec = tree_flatten(result)
        if moments is None:
            moments = [Moments(nt_type) for _ in leaves]
        for m, samples in zip(moments, _by_sample(leaves, axis, times)):
            for sample in samples:
                m.add(sample)
    smoothed = tree_unflatten([m.result() for m in moments], spec)
    if not with_delta:
        return smoothed
    per_leaf = zip(*(tree_flatten(d)[0] for d in deltas))
    return smoothed, tree_unflatten([_example_major(list(d), n) for d in per_leaf], tree_flatten(deltas[0])[1])
