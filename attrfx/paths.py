"""Path points between baselines and inputs, and integration along a path.

A path is a function ``(inputs, baselines, alphas) → points`` returning, for
each input, a tensor ``[S, B, ...]`` (path axis first). :func:`straight_line`
is the default; any other path works with :func:`path_velocity`, which gets
``dγ/dα`` from ``torch.func.jvp``.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from ._errors import check_count
from .inputs import fold
from .quadrature import Rule

Path = Callable[[Sequence[Tensor], Sequence[Tensor], Tensor], tuple[Tensor, ...]]


def straight_line(xs: Sequence[Tensor], bs: Sequence[Tensor], alphas: Tensor) -> tuple[Tensor, ...]:
    """``γ(α) = b + α·(x − b)`` for each node α, shape ``[S, B, ...]``.

    Example:
        >>> straight_line((torch.ones(1, 2),), (torch.zeros(()),), torch.tensor([0.0, 0.5]))[0].tolist()
        [[[0.0, 0.0]], [[0.5, 0.5]]]
    """
    out = []
    for x, b in zip(xs, bs):
        a = alphas.to(dtype=x.dtype, device=x.device).reshape((-1,) + (1,) * x.dim())
        out.append(b + a * (x - b))
    return tuple(out)


def path_velocity(path: Path, xs: Sequence[Tensor], bs: Sequence[Tensor], alphas: Tensor) -> tuple[Tensor, ...]:
    """``dγ/dα`` at each node, ``[S, B, ...]``, by forward-mode differentiation of ``path``.

    Example:
        >>> v = path_velocity(straight_line, (torch.ones(1, 2),), (torch.zeros(()),), torch.tensor([0.3]))
        >>> v[0].tolist()
        [[[1.0, 1.0]]]
    """
    a = alphas.to(xs[0].dtype)
    return torch.func.jvp(lambda al: path(xs, bs, al), (a,), (torch.ones_like(a),))[1]


def steps_per_chunk(internal_batch_size: Optional[int], n_examples: int, n_points: int) -> int:
    """How many path points to evaluate at once: all, or ``internal_batch_size // B`` (at least 1).

    Example:
        >>> steps_per_chunk(None, 4, 50), steps_per_chunk(100, 4, 50), steps_per_chunk(2, 4, 50)
        (50, 25, 1)
    """
    if internal_batch_size is None:
        return n_points
    return max(1, check_count("internal_batch_size", internal_batch_size, expected="None or a positive int") // n_examples)


def integrate(integrand: Callable[[Rule], Sequence[Tensor]], rule: Rule, chunk: int) -> tuple[Tensor, ...]:
    """``Σₛ wₛ·g(αₛ)``, evaluating ``g`` on at most ``chunk`` nodes at a time.

    ``integrand(nodes)`` returns tensors with the path axis first, ``[s, ...]``.

    Example:
        >>> from attrfx.quadrature import gausslegendre
        >>> g = lambda r: (r.alphas[:, None] ** 2,)
        >>> round(integrate(g, gausslegendre(3), chunk=2)[0].item(), 6)
        0.333333
    """
    return _sum_over_chunks(lambda nodes: [weighted_sum(nodes.weights, v, 0) for v in integrand(nodes)],
                            rule, chunk)


def _sum_over_chunks(weighed: Callable[[Rule], Sequence[Tensor]], rule: Rule, chunk: int) -> tuple[Tensor, ...]:
    """``Σ`` over chunks of ``rule`` of ``weighed(nodes)``, each chunk's own weighted sum."""
    total: Optional[list[Tensor]] = None
    for start in range(0, len(rule), chunk):
        parts = weighed(rule.slice(start, start + chunk))
        total = list(parts) if total is None else [t.add_(p) for t, p in zip(total, parts)]
    assert total is not None
    return tuple(total)


def weighted_sum(weights: Tensor, values: Tensor, axis: int) -> Tensor:
    """``Σₛ wₛ·values[..., s, ...]`` over dimension ``axis``, as one batched matrix-vector product.

    The axis stays where it is, so a contiguous ``values`` is never copied
    (moving the axis first and contracting it copied all of ``values``).

    Example:
        >>> weighted_sum(torch.tensor([1.0, 2.0]), torch.ones(3, 2, 4), axis=1).tolist()[0]
        [3.0, 3.0, 3.0, 3.0]
    """
    lead, rest = values.shape[:axis], values.shape[axis + 1:]
    flat = values.reshape(lead.numel(), values.shape[axis], rest.numel())
    return (weights.to(values.dtype).to(values.device) @ flat).reshape(lead + rest)


def integrate_path(grads_at: Callable[..., Sequence[Tensor]], xs: Sequence[Tensor], bs: Sequence[Tensor], rule: Rule,
                   chunk: int, path: Path = straight_line, *, weighs: bool = False) -> tuple[Tensor, ...]:
    """``Σₛ wₛ·g(γ(αₛ))`` for a gradient-like ``g`` evaluated on path points.

    The ``s`` points of a chunk are folded into one batch ``[s·B, ...]``;
    ``grads_at(points, s)`` returns tensors ``[K, s·B, ...]``; the result is
    ``[K, B, ...]``. With ``weighs``, ``grads_at(points, s, weigh)`` returns
    ``weigh(values)`` itself — the chunk's weighted sum, ``[k, B, ...]`` from
    ``[k, s·B, ...]`` — and may apply it to each block of K as it is computed,
    so the K full-size gradients are never held together.

    Example:
        >>> from attrfx.quadrature import riemann_middle
        >>> x = torch.tensor([[2.0]])
        >>> g = lambda pts, s: (2 * pts[0][None],)   # d/dx x², K = 1
        >>> integrate_path(g, (x,), (torch.zeros(()),), riemann_middle(4), chunk=4)[0]
        tensor([[[2.]]])
        >>> integrate_path(lambda pts, s, weigh: weigh(g(pts, s)), (x,), (torch.zeros(()),), riemann_middle(4),
        ...                chunk=4, weighs=True)[0]
        tensor([[[2.]]])
    """
    n = xs[0].shape[0]

    def weighed(nodes: Rule) -> tuple[Tensor, ...]:
        s = len(nodes)
        points = tuple(fold(p) for p in path(xs, bs, nodes.alphas))

        def weigh(values: Sequence[Tensor]) -> tuple[Tensor, ...]:
            return tuple(weighted_sum(nodes.weights, v.reshape((v.shape[0], s, n) + tuple(v.shape[2:])), 1)
                         for v in values)

        return grads_at(points, s, weigh) if weighs else weigh(grads_at(points, s))

    return _sum_over_chunks(weighed, rule, chunk)


def integrate_differences(evaluate: Callable[[Tensor], tuple[Sequence[Tensor], Sequence[Tensor]]],
                          alphas: Tensor, chunk: int) -> tuple[Tensor, ...]:
    """``Σₛ gₛ·(hₛ₊₁ − hₛ)``: the Riemann–Stieltjes sum of ``∫ g dh`` along the nodes.

    ``evaluate(alphas)`` returns ``(h, g)``, tensors with the path axis first.
    Chunks of ``chunk`` nodes (at least 2 are used) carry their last node over.

    Example:
        >>> ev = lambda a: ((a[:, None] ** 2,), (torch.ones(len(a), 1),))   # ∫ 1 d(α²)
        >>> integrate_differences(ev, torch.linspace(0, 1, 5), chunk=2)[0]
        tensor([1.])
    """
    chunk = max(chunk, 2)
    total, carry = None, None
    for start in range(0, alphas.numel(), chunk):
        hs, gs = evaluate(alphas[start:start + chunk])
        if carry is not None:
            hs = [torch.cat([c_h, h]) for c_h, h in zip(carry[0], hs)]
            gs = [torch.cat([c_g, g]) for c_g, g in zip(carry[1], gs)]
        parts = [((h[1:] - h[:-1]) * g[:-1]).sum(0) for h, g in zip(hs, gs)]
        total = parts if total is None else [t.add_(p) for t, p in zip(total, parts)]
        carry = ([h[-1:] for h in hs], [g[-1:] for g in gs])
    assert total is not None
    return tuple(total)
