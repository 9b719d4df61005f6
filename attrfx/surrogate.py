"""The surrogate of KernelSHAP and LIME: a weighted linear model of the explained value over coalitions.

Each example's ``S`` perturbations give a design ``X`` (``[S, M]``, the coalitions as numbers), the model's
values ``y`` (``[S]``) and weights ``w`` (``[S]``, the similarity of each perturbation to the input); the
coefficients of the fitted linear model are the attributions. A fit is any function ``(X, y, w) → β`` over a
leading example dimension (``[N, S, M], [N, S], [N, S] → [N, M]``); both shipped here fit an intercept too and
run in float64 in torch, so scikit-learn stays optional:

- :func:`weighted_least_squares` — ``min Σ w (y − b − Xβ)²``, the least-norm ``β`` where several fit
  (scikit-learn's ``LinearRegression``; KernelSHAP's fit);
- :func:`lasso` — ``min Σ w (y − b − Xβ)² / (2 Σ w) + α‖β‖₁`` (scikit-learn's ``Lasso``, ``alpha=0.01``:
  LIME's fit), solved exactly on the signs that accelerated proximal gradient steps find;
- :func:`captum_fit` — a Captum interpretable model (an object with ``fit`` and ``representation``), fitted
  per example.

The weights: :func:`cosine_kernel` (LIME's, ``exp(−d²/2σ²)`` of the cosine distance between each perturbed
input and the input, from per-group sums without building the points) and :func:`kernel_shap_weights`.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from ._errors import bad_type

Fit = Callable[[Tensor, Tensor, Tensor], Tensor]


def _centred(x: Tensor, y: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``X`` and ``y`` minus their ``w``-weighted means, in float64, and the weights normalised to sum to 1."""
    x, y, w = x.double(), y.double(), w.double()
    w = w / w.sum(-1, keepdim=True)
    return x - (w[..., None] * x).sum(-2, keepdim=True), y - (w * y).sum(-1, keepdim=True), w


def weighted_least_squares(x: Tensor, y: Tensor, w: Tensor) -> Tensor:
    """The coefficients ``β`` of ``min_{β, b} Σₛ wₛ (yₛ − b − xₛ·β)²``; the least-norm ``β`` where several fit.

    ``X`` and ``y`` are centred on their weighted means (that solves for the intercept ``b``), each row scaled by
    ``√w``, and the rest is least squares through the pseudo-inverse: ``[..., S, M], [..., S], [..., S] → [...,
    M]`` in the dtype of ``y``.

    Example:
        >>> x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
        >>> weighted_least_squares(x, 3 + x @ torch.tensor([2.0, -1.0]), torch.ones(4)).tolist()
        [2.0, -1.0]
    """
    xc, yc, w = _centred(x, y, w)
    root = w.sqrt()
    beta = torch.linalg.pinv(xc * root[..., None]) @ (yc * root)[..., None]
    return beta[..., 0].to(y.dtype)


def lasso(x: Tensor, y: Tensor, w: Tensor, alpha: float = 0.01, max_iter: int = 20000) -> Tensor:
    """The coefficients ``β`` of ``min_{β, b} Σₛ wₛ (yₛ − b − xₛ·β)² / (2 Σₛ wₛ) + α‖β‖₁`` (scikit-learn's ``Lasso``).

    On the centred design the problem is ``min ½βᵀQβ − cᵀβ + α‖β‖₁`` (``Q``, ``c``: the weighted Gram matrix and
    correlations). Accelerated proximal gradient steps (FISTA), every example at once, find the signs of the
    solution; given them, the solution solves ``Q_AA β_A = c_A − α·sign(β_A)`` on the nonzero coefficients ``A``,
    which is solved exactly and accepted once it satisfies the optimality conditions (signs kept, ``|cⱼ − (Qβ)ⱼ| ≤
    α`` elsewhere). So the result is the minimiser to rounding, not to a stopping tolerance; ``max_iter`` bounds
    the steps (the last iterate is returned where no signs were confirmed by then). ``[..., S, M], [..., S],
    [..., S] → [..., M]`` in the dtype of ``y``; ``functools.partial(lasso, alpha=0.1)`` is another fit.

    Example:
        >>> x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
        >>> [round(b, 4) for b in lasso(x, x @ torch.tensor([2.0, -1.0]), torch.ones(4)).tolist()]
        [1.96, -0.96]
    """
    xc, yc, w = _centred(x, y, w)
    batch = xc.shape[:-2]
    xc, yc, w = xc.reshape((-1,) + xc.shape[-2:]), yc.reshape(-1, yc.shape[-1]), w.reshape(-1, w.shape[-1])
    gram = (xc * w[..., None]).transpose(-1, -2) @ xc                                   # [B, M, M]
    corr = ((xc * w[..., None]).transpose(-1, -2) @ yc[..., None])[..., 0]             # [B, M]
    step = 1 / torch.linalg.eigvalsh(gram)[:, -1:].clamp(min=1e-300)
    beta, ahead, t = torch.zeros_like(corr), torch.zeros_like(corr), 1.0
    exact = torch.zeros_like(corr)
    done = torch.zeros(corr.shape[0], dtype=torch.bool, device=corr.device)
    for chunk in range(-(-max_iter // 50)):
        for _ in range(50):
            moved = ahead - step * ((gram @ ahead[..., None])[..., 0] - corr)
            new = moved.sign() * (moved.abs() - step * alpha).clamp(min=0)
            t, t_before = (1 + math.sqrt(1 + 4 * t * t)) / 2, t
            ahead, beta = new + (t_before - 1) / t * (new - beta), new
        for b in (~done).nonzero()[:, 0].tolist():
            solved = _on_signs(gram[b], corr[b], beta[b], alpha)
            if solved is not None:
                exact[b], done[b] = solved, True
        if done.all():
            break
    return torch.where(done[:, None], exact, beta).reshape(batch + corr.shape[-1:]).to(y.dtype)


def _on_signs(gram: Tensor, corr: Tensor, guess: Tensor, alpha: float) -> Optional[Tensor]:
    """The lasso solution with the nonzero coefficients and signs of ``guess``, if it is optimal; None if not."""
    active = guess != 0
    signs = guess[active].sign()
    beta = torch.zeros_like(guess)
    if active.any():
        try:
            beta[active] = torch.linalg.solve(gram[active][:, active], corr[active] - alpha * signs)
        except RuntimeError:                                       # singular: the solution is not unique there
            return None
    slack = 1e-9 * (alpha + corr.abs().max())
    kept = bool((beta[active].sign() == signs).all())
    bounded = bool(((corr - gram @ beta)[~active].abs() <= alpha + slack).all())
    return beta if kept and bounded else None


def captum_fit(model: Any) -> Fit:
    """A fit from a Captum interpretable model (``captum._utils.models``: an object with ``fit(DataLoader)`` and
    ``representation()``), run per example on one batch of ``(X, y, w)``, as Captum's Lime does.

    Example:
        >>> class Mean:   # a stand-in with Captum's interface
        ...     def fit(self, data):
        ...         x, y, w = next(iter(data))
        ...         self.coef = torch.full((1, x.shape[1]), float(y.mean()))
        ...     def representation(self):
        ...         return self.coef
        >>> captum_fit(Mean())(torch.ones(2, 3, 4), torch.ones(2, 3), torch.ones(2, 3)).shape
        torch.Size([2, 4])
    """
    from torch.utils.data import DataLoader, TensorDataset  # only for this adapter

    def fit(x: Tensor, y: Tensor, w: Tensor) -> Tensor:
        rows = []
        for xn, yn, wn in zip(x, y, w):
            model.fit(DataLoader(TensorDataset(xn, yn, wn), batch_size=xn.shape[0]))
            rows.append(torch.as_tensor(model.representation()).reshape(-1).to(device=y.device, dtype=y.dtype))
        return torch.stack(rows)

    return fit


def as_fit(interpretable_model: Any, default: Fit) -> Fit:
    """``interpretable_model`` as a fit: ``default`` for None, a Captum model through :func:`captum_fit`, a function
    as it is; the error naming the argument otherwise.

    Example:
        >>> as_fit(None, lasso) is lasso, as_fit(weighted_least_squares, lasso) is weighted_least_squares
        (True, True)
    """
    if interpretable_model is None:
        return default
    if hasattr(interpretable_model, "fit") and hasattr(interpretable_model, "representation"):
        return captum_fit(interpretable_model)
    if callable(interpretable_model):
        return interpretable_model
    raise bad_type("interpretable_model", "None, a function (X, y, w) -> coefficients, or a Captum interpretable "
                   "model (with fit and representation)", interpretable_model)


def group_sums(values: Sequence[Tensor], groups: Sequence[Tensor], n_groups: int) -> Tensor:
    """The sum of each example's elements over each group, across inputs: ``[N, G]`` (``values`` shaped like the
    inputs, ``groups`` broadcastable to them and numbered ``0 .. G−1``).

    Example:
        >>> group_sums((torch.tensor([[1.0, 2.0, 4.0]]),), (torch.tensor([[0, 1, 0]]),), 2).tolist()
        [[5.0, 2.0]]
    """
    n = values[0].shape[0]
    out = values[0].new_zeros(n, n_groups)
    for v, g in zip(values, groups):
        out.scatter_add_(1, torch.broadcast_to(g, v.shape).reshape(n, -1), v.reshape(n, -1))
    return out


def cosine_kernel(xs: Sequence[Tensor], bs: Sequence[Tensor], groups: Sequence[Tensor], present: Tensor,
                  kernel_width: float = 1.0, eps: float = 1e-8) -> Tensor:
    """LIME's default weights, ``exp(−d² / (2·kernel_width²))`` with ``d = 1 − cos(x, x̃)`` the cosine distance
    between each example's inputs (flattened and joined) and each perturbation of them: ``[S, N]`` for coalitions
    ``present`` ``[S, N, G]``.

    The perturbation ``x̃`` is ``x`` on present groups and the baseline elsewhere, so ``x·x̃`` and ``‖x̃‖²`` are sums
    over groups of ``Σx²`` or ``Σxb``, and of ``Σx²`` or ``Σb²``: no point is built. Norms below ``eps`` count as
    ``eps``, as in ``torch.nn.functional.cosine_similarity``.

    Example:
        >>> x, b, groups = (torch.tensor([[3.0, 4.0]]),), (torch.zeros(()),), (torch.tensor([[0, 1]]),)
        >>> present = torch.tensor([[[True, True]], [[True, False]]])
        >>> [round(v, 4) for v in cosine_kernel(x, b, groups, present)[:, 0].tolist()]
        [1.0, 0.9231]
    """
    g = present.shape[-1]
    xf = [x.double() for x in xs]
    bf = [torch.broadcast_to(b, x.shape).double() for b, x in zip(bs, xs)]
    xx = group_sums([x * x for x in xf], groups, g)
    xb = group_sums([x * b for x, b in zip(xf, bf)], groups, g)
    bb = group_sums([b * b for b in bf], groups, g)
    on = present.double()
    dot = (on * xx + (1 - on) * xb).sum(-1)
    norm = (on * xx + (1 - on) * bb).sum(-1).sqrt()
    cos = dot / (xx.sum(-1).sqrt().clamp(min=eps) * norm.clamp(min=eps))
    return torch.exp(-((1 - cos) ** 2) / (2 * kernel_width ** 2))


KERNEL_SHAP_ENDS = 1e6
"""KernelSHAP's weight of the empty and the full coalition (Captum's): large, so the fit nearly passes through
``v(∅)`` and ``v(all)`` and the coefficients sum to ``v(all) − v(∅)``."""


def kernel_shap_weights(present: Tensor) -> Tensor:
    """KernelSHAP's weights for coalitions ``present`` ``[..., G]``: :data:`KERNEL_SHAP_ENDS` for the empty and the
    full coalition, 1 for every other (their sizes are drawn from the Shapley kernel already), float64.

    Example:
        >>> kernel_shap_weights(torch.tensor([[True, True], [True, False], [False, False]])).tolist()
        [1000000.0, 1.0, 1000000.0]
    """
    size = present.sum(-1)
    ends = (size == 0) | (size == present.shape[-1])
    return torch.where(ends, KERNEL_SHAP_ENDS, 1.0).double()
