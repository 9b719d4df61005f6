"""Quadrature rules on [0, 1]: nodes ``alphas`` and ``weights``.

A rule approximates ``∫₀¹ g(α) dα ≈ Σₛ weights[s] · g(alphas[s])``. Rules are
plain values (a :class:`Rule` of two float64 tensors), so a new rule is just
another pair of tensors.

Every rule is exact for constant integrands (so integrated gradients of a
linear model is exact with any rule). ``riemann_middle``,
``riemann_trapezoid`` and ``gausslegendre`` are also exact for integrands
linear in α; ``riemann_left`` and ``riemann_right`` are the one-sided first-order
sums (error ``∓ slope / (2n)`` on a linear integrand) by definition.

:func:`gauss_kronrod_patterson` is a *nested* sequence: each level keeps every
node of the one before and adds new ones, so an adaptive integrator that moves
up a level reuses all evaluations made so far.

``riemann_trapezoid`` is the composite trapezoid rule: nodes ``linspace(0, 1, n)``
and weights ``1/(n-1)`` with halved ends (they sum to 1). Captum 0.9.0 uses
weights ``1/n`` there, so its results are low by ``(n-1)/n``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, NamedTuple

import numpy as np
import torch

from ._errors import bad_type, bad_value


class Rule(NamedTuple):
    """Quadrature nodes and weights on [0, 1], both float64 tensors of length n."""

    alphas: torch.Tensor
    weights: torch.Tensor

    def __len__(self) -> int:  # number of nodes
        return self.alphas.numel()

    def slice(self, start: int, stop: int) -> "Rule":
        """The nodes ``start:stop`` with their weights (for chunked evaluation)."""
        return Rule(self.alphas[start:stop], self.weights[start:stop])


def _rule(alphas: np.ndarray, weights: np.ndarray) -> Rule:
    return Rule(torch.as_tensor(alphas, dtype=torch.float64), torch.as_tensor(weights, dtype=torch.float64))


def riemann_left(n: int) -> Rule:
    """Left Riemann sum: ``αₛ = s/n``, ``wₛ = 1/n``.

    Example:
        >>> riemann_left(4).alphas.tolist()
        [0.0, 0.25, 0.5, 0.75]
    """
    _check_n("n_steps", n, 1)
    return _rule(np.arange(n) / n, np.full(n, 1.0 / n))


def riemann_right(n: int) -> Rule:
    """Right Riemann sum: ``αₛ = (s+1)/n``, ``wₛ = 1/n``.

    Example:
        >>> riemann_right(4).alphas.tolist()
        [0.25, 0.5, 0.75, 1.0]
    """
    _check_n("n_steps", n, 1)
    return _rule(np.arange(1, n + 1) / n, np.full(n, 1.0 / n))


def riemann_middle(n: int) -> Rule:
    """Midpoint rule: ``αₛ = (s+½)/n``, ``wₛ = 1/n``; exact for linear integrands.

    Example:
        >>> riemann_middle(2).alphas.tolist()
        [0.25, 0.75]
    """
    _check_n("n_steps", n, 1)
    return _rule((np.arange(n) + 0.5) / n, np.full(n, 1.0 / n))


def riemann_trapezoid(n: int) -> Rule:
    """Composite trapezoid rule: ``αₛ = s/(n-1)``, ``wₛ = 1/(n-1)`` with halved ends.

    Example:
        >>> riemann_trapezoid(3).weights.tolist()
        [0.25, 0.5, 0.25]
    """
    _check_n("n_steps", n, 2)
    weights = np.full(n, 1.0 / (n - 1))
    weights[[0, -1]] /= 2
    return _rule(np.linspace(0.0, 1.0, n), weights)


def gausslegendre(n: int) -> Rule:
    """Gauss–Legendre rule mapped to [0, 1]; exact for polynomials of degree 2n-1.

    Example:
        >>> [round(a, 4) for a in gausslegendre(2).alphas.tolist()]
        [0.2113, 0.7887]
    """
    _check_n("n_steps", n, 1)
    nodes, weights = _legendre(n)
    return Rule(torch.tensor(nodes), torch.tensor(weights))  # copies: the cached arrays stay as they are


@lru_cache(maxsize=256)
def _legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre nodes and weights on [0, 1] (an eigenvalue problem: 0.5 ms for n = 50, found once)."""
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return 0.5 * (1.0 + nodes), 0.5 * weights


PATTERSON_LEVELS = 4    # levels of gauss_kronrod_patterson that float64 can construct from 8 nodes


def gauss_kronrod_patterson(level: int, first: int = 8) -> Rule:
    """Level ``level`` of the nested Gauss–Kronrod–Patterson sequence grown from ``gausslegendre(first)``.

    Level 0 is Gauss–Legendre; level ``k+1`` adds ``nₖ + 1`` nodes to the ``nₖ`` of level
    ``k`` (8 → 17 → 35 → 71) so that ``∫ q(α)·αʲ·p(α) dα = 0`` for ``j ≤ nₖ``, where ``q``
    vanishes on the old nodes and ``p`` on the new ones (Kronrod, then Patterson). A level
    of ``n`` nodes is exact for polynomials of degree about ``1.5·n`` (25, 53, 107 from 8).

    Example:
        >>> [len(gauss_kronrod_patterson(k)) for k in range(4)]
        [8, 17, 35, 71]
        >>> old, new = gauss_kronrod_patterson(0).alphas, gauss_kronrod_patterson(1).alphas
        >>> bool(torch.isin(old, new).all())     # nested: level 1 keeps the nodes of level 0
        True
    """
    _check_n("level", level, 0)
    _check_n("first", first, 1)
    if level >= PATTERSON_LEVELS:
        raise bad_value("level", f"at most {PATTERSON_LEVELS - 1} (float64 cannot place more nested nodes)", level)
    return interpolatory_rule(torch.from_numpy(0.5 * (1.0 + _patterson_nodes(first, level))))


@lru_cache(maxsize=None)
def _patterson_nodes(first: int, level: int) -> np.ndarray:
    """The sorted nodes on [-1, 1] of a level; each level extends the one below."""
    if level == 0:
        return np.polynomial.legendre.leggauss(first)[0]
    old = _patterson_nodes(first, level - 1)
    return np.sort(np.concatenate([old, _extension(old)]))


def _extension(old: np.ndarray) -> np.ndarray:
    """The ``m + 1`` roots of ``p = Σ cⱼPⱼ`` (``c_{m+1} = 1``) with ``∫ q·p·Pₖ = 0`` for ``k ≤ m``, ``q = Π(t − old)``."""
    leg = np.polynomial.legendre
    m = len(old)
    t, w = leg.leggauss(2 * m + 4)                      # exact for the degree-(3m+2) products below
    q = np.prod(t[:, None] - old[None, :], axis=1)
    basis = leg.legvander(t, m + 1)
    gram = (basis[:, :m + 1] * (w * q / np.abs(q).max())[:, None]).T @ basis
    coefficients = np.append(np.linalg.solve(gram[:, :m + 1], -gram[:, m + 1]), 1.0)
    return np.sort(leg.legroots(coefficients).real)


def interpolatory_rule(nodes: torch.Tensor, lo: float = 0.0, hi: float = 1.0) -> Rule:
    """The rule on ``[lo, hi]`` that integrates the polynomial interpolating ``nodes`` exactly.

    ``Σᵢ wᵢ·p(tᵢ) = ∫ₗₒʰⁱ p`` for every polynomial of degree < len(nodes); on
    Gauss–Legendre nodes it is :func:`gausslegendre`.

    Example:
        >>> r = interpolatory_rule(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
        >>> [round(w, 4) for w in r.weights.tolist()]   # Simpson
        [0.1667, 0.6667, 0.1667]
    """
    points = nodes.double().numpy()
    return _rule(points, interpolant_integrals(points, np.array([lo, hi]), lo, hi)[0])


def interpolant_integrals(nodes: np.ndarray, cuts: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """Weights ``W`` ``[len(cuts) − 1, len(nodes)]`` with ``W[j] @ p(nodes) = ∫ p`` over ``[cuts[j], cuts[j+1]]``.

    ``p`` is the polynomial through the nodes; ``[lo, hi]`` is the interval they sit in
    (it sets the Legendre basis the interpolant is written in).

    Example:
        >>> interpolant_integrals(np.array([0.0, 1.0]), np.array([0.0, 0.5, 1.0])).tolist()   # ∫ of the line
        [[0.375, 0.125], [0.125, 0.375]]
    """
    leg = np.polynomial.legendre
    n = len(nodes)
    to_unit = lambda a: 2.0 * (np.asarray(a, dtype=np.float64) - lo) / (hi - lo) - 1.0   # noqa: E731
    antiderivatives = leg.legval(to_unit(cuts), leg.legint(np.eye(n), lbnd=-1.0, axis=0)).T   # [C, n]
    coefficients = np.linalg.inv(leg.legvander(to_unit(nodes), n - 1))                       # values → basis
    return np.diff(antiderivatives, axis=0) @ coefficients * (hi - lo) / 2


RULES: dict[str, Callable[[int], Rule]] = {
    "riemann_left": riemann_left,
    "riemann_right": riemann_right,
    "riemann_middle": riemann_middle,
    "riemann_trapezoid": riemann_trapezoid,
    "gausslegendre": gausslegendre,
}


def get_rule(method: str, n_steps: int) -> Rule:
    """The rule called ``method`` with ``n_steps`` nodes.

    Example:
        >>> len(get_rule("gausslegendre", 50))
        50
    """
    if not isinstance(method, str) or method not in RULES:
        raise bad_value("method", f"one of {sorted(RULES)}", repr(method))
    return RULES[method](n_steps)


def _check_n(arg: str, n: object, least: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int):
        raise bad_type(arg, "an int", n)
    if n < least:
        raise bad_value(arg, f"at least {least} for this rule", n)
