"""Quadrature rules on [0, 1]: nodes ``alphas`` and ``weights``.

A rule approximates ``∫₀¹ g(α) dα ≈ Σₛ weights[s] · g(alphas[s])``. Rules are
plain values (a :class:`Rule` of two float64 tensors), so a new rule is just
another pair of tensors.

Every rule is exact for constant integrands (so integrated gradients of a
linear model is exact with any rule). ``riemann_middle``,
``riemann_trapezoid`` and ``gausslegendre`` are also exact for integrands
linear in α; ``riemann_left`` and ``riemann_right`` are the one-sided first-order
sums (error ``∓ slope / (2n)`` on a linear integrand) by definition.

``riemann_trapezoid`` is the composite trapezoid rule: nodes ``linspace(0, 1, n)``
and weights ``1/(n-1)`` with halved ends (they sum to 1). Captum 0.9.0 uses
weights ``1/n`` there, so its results are low by ``(n-1)/n``.
"""

from __future__ import annotations

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
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return _rule(0.5 * (1.0 + nodes), 0.5 * weights)


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
