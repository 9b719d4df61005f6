"""Benchmark rows of the coalition methods at the inputs: Shapley value sampling, exact Shapley values, KernelSHAP
and LIME.

Each builder returns :class:`~benchmarks.methods.Calls`: attrfx (its default ``perturbations_per_eval``: attrfx
chooses how many coalitions share a pass), Captum 0.9.0 (its default, one perturbation per pass, as users call it),
and the floor — the fewest forward passes, batched, no autograd, on the frozen copy of the model:

- ``shapley_value_sampling``: one pass over ``[b; x]`` and the ``n·(G−1)`` coalitions met on ``n`` walks (the
  benchmark's feature mask: 196 groups on the MLP, 64 on the CNN; ``n`` = :func:`walks`, fewer than
  ``n_samples`` on the CNN, whose 64 groups cost 63 evaluations of 8 images per walk), then each walk's
  differences given to its groups and averaged;
- ``shapley_values``: one pass over all ``2^G`` coalitions of 4 groups (the image's quadrants: Captum walks all
  ``G!`` orderings, so G stays small), weighted by constants made before the timing;
- ``kernel_shap`` / ``lime``: the ``n_samples`` coalitions of each example (drawn with attrfx's samplers), one pass
  over them, the weights, and the fit: weighted least squares (``torch.linalg.lstsq``) for
  KernelSHAP; for LIME, :func:`attrfx.surrogate.lasso` (the fit is not what this floor measures: there is no
  cheaper exact lasso in torch).
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import Tensor

import attrfx
from attrfx.coalitions import bernoulli_coalitions, kernel_shap_coalitions, shapley_coefficients
from attrfx.surrogate import KERNEL_SHAP_ENDS, lasso

from .methods import RULE_MODELS, Calls, Spec, _captum
from .perturbation import members


def walks(case, s) -> int:
    """Orderings per call of Shapley value sampling: ``n_samples / 5`` on the MLP, ``/ 25`` on the CNN, at least 2."""
    return max(2, s.n_samples // (25 if case.name == "cnn" else 5))


def quadrants(case) -> Tensor:
    """Feature ids of the image's four quadrants (all channels): ``(1, ...)``, for the exact Shapley values."""
    side = 28 if case.name == "mlp" else 32
    rows, cols = torch.arange(side)[:, None] // (side // 2), torch.arange(side)[None, :] // (side // 2)
    ids = rows * 2 + cols
    mask = ids.reshape(1, side * side) if case.name == "mlp" else ids.expand(3, side, side)[None]
    return mask.contiguous().to(case.inputs.device)


def _kept(x: Tensor, member: Tensor, present: Tensor) -> Tensor:
    """Rows ``[P·N, ...]``: ``x`` on the groups ``present`` (``[P, G]`` or ``[P, N, G]``), 0 elsewhere."""
    flat = member.flatten(1).to(x.dtype)                                       # [G, E]
    keep = (present.to(x.dtype) @ flat) > 0                                    # [P, (N,) E]
    keep = keep.reshape((present.shape[0], -1) + tuple(x.shape[1:]))
    return torch.where(keep, x[None], 0).reshape((-1,) + tuple(x.shape[1:]))


def _spread(per_group: Tensor, mask: Tensor, x: Tensor) -> Tensor:
    """``[N, G]`` → ``x``'s shape, each element its group's value."""
    return per_group[:, mask.expand((1,) + tuple(x.shape[1:])).flatten()].reshape(x.shape)


def floor_shapley_sampling(model, x: Tensor, target: int, mask: Tensor, n: int, generator) -> Callable[[], Tensor]:
    member = members(mask)
    g, b = member.shape[0], x.shape[0]

    def run():
        with torch.no_grad():
            orders = torch.rand(n, g, generator=generator).argsort(1)
            ranks = orders.argsort(1)
            present = (ranks[:, None, :] < torch.arange(1, g)[None, :, None]).reshape(-1, g)
            v = model(torch.cat([torch.zeros_like(x), x, _kept(x, member, present)]))[:, target].reshape(-1, b)
            walk = torch.cat([v[:1].expand(n, 1, b), v[2:].reshape(n, g - 1, b), v[1:2].expand(n, 1, b)], 1)
            steps = walk[:, 1:] - walk[:, :-1]
            per_group = steps.gather(1, ranks[:, :, None].expand(-1, -1, b)).mean(0)  # [G, N]
            return _spread(per_group.T, mask, x)
    return run


def floor_shapley_values(model, x: Tensor, target: int, mask: Tensor) -> Callable[[], Tensor]:
    member = members(mask)
    g, b = member.shape[0], x.shape[0]
    present = (torch.arange(2 ** g)[:, None] >> torch.arange(g)) & 1 == 1
    weights = shapley_coefficients(present).to(x.dtype)                       # constants, as a rule's weights

    def run():
        with torch.no_grad():
            v = model(_kept(x, member, present))[:, target].reshape(-1, b)    # [2^G, N]
            return _spread(v.T @ weights, mask, x)
    return run


def _weighted_least_squares(z: Tensor, y: Tensor, w: Tensor) -> Tensor:
    """Per example: ``[N, S, M], [N, S], [N, S] → [N, M]`` (intercept by centring), with ``torch.linalg.lstsq``."""
    z, y, w = z.double(), y.double(), w.double()
    w = w / w.sum(1, keepdim=True)
    zc, yc = z - (w[..., None] * z).sum(1, keepdim=True), y - (w * y).sum(1, keepdim=True)
    root = w.sqrt()
    return torch.linalg.lstsq(zc * root[..., None], (yc * root)[..., None], driver="gelsd").solution[..., 0]


def floor_surrogate(model, x: Tensor, target: int, mask: Tensor, draw: Callable[[], Tensor],
                    weigh: Callable[[Tensor], Tensor], fit: Callable) -> Callable[[], Tensor]:
    """One pass over every example's coalitions (``draw() → [S, N, G]``), the weights, and the fit."""
    member = members(mask)

    def run():
        with torch.no_grad():
            present = draw()
            v = model(_kept(x, member, present))[:, target].reshape(present.shape[0], -1)   # [S, N]
            coefs = fit(present.transpose(0, 1).to(x.dtype), v.T, weigh(present).T)
            return _spread(coefs.to(x.dtype), mask, x)
    return run


def _cosine_weights(x: Tensor, member: Tensor) -> Callable[[Tensor], Tensor]:
    """LIME's kernel ``exp(−(1 − cos(x, x̃))²/2)`` for coalitions ``[S, N, G]`` (baseline 0), from the rows."""
    def weigh(present: Tensor) -> Tensor:
        rows = _kept(x, member, present).reshape(present.shape[0], x.shape[0], -1)
        cos = torch.nn.functional.cosine_similarity(rows, x.reshape(1, x.shape[0], -1), dim=-1)
        return torch.exp(-(1 - cos) ** 2 / 2)
    return weigh


def _kernel_shap_weights(present: Tensor) -> Tensor:
    size = present.sum(-1)
    return torch.where((size == 0) | (size == present.shape[-1]), KERNEL_SHAP_ENDS, 1.0)


def _quiet(fn: Callable) -> Callable:
    """``fn`` without Captum's advice to attribute one example at a time."""
    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()
    return run


def _shapley_value_sampling(case, name, module, sel, s, fz):
    m, x, t, mask, n = case.model, case.inputs, case.target, case.feature_mask, walks(case, s)
    g = torch.Generator().manual_seed(0)
    return Calls(lambda: attrfx.shapley_value_sampling(m, x, target=t, feature_mask=mask, n_samples=n, generator=g),
                 lambda: _captum().ShapleyValueSampling(m).attribute(x, target=t, feature_mask=mask, n_samples=n),
                 floor_shapley_sampling(fz, x, t, mask, n, g))


def _shapley_values(case, name, module, sel, s, fz):
    m, x, t, mask = case.model, case.inputs, case.target, quadrants(case)
    return Calls(lambda: attrfx.shapley_values(m, x, target=t, feature_mask=mask),
                 lambda: _captum().ShapleyValues(m).attribute(x, target=t, feature_mask=mask),
                 floor_shapley_values(fz, x, t, mask))


def _kernel_shap(case, name, module, sel, s, fz):
    m, x, t, mask = case.model, case.inputs, case.target, case.feature_mask
    g = torch.Generator().manual_seed(0)
    fg, groups = torch.Generator().manual_seed(1), int(mask.max()) + 1
    present = lambda: kernel_shap_coalitions(s.n_samples, x.shape[0], groups, fg)  # noqa: E731
    return Calls(lambda: attrfx.kernel_shap(m, x, target=t, feature_mask=mask, n_samples=s.n_samples, generator=g),
                 _quiet(lambda: _captum().KernelShap(m).attribute(x, target=t, feature_mask=mask,
                                                                  n_samples=s.n_samples)),
                 floor_surrogate(fz, x, t, mask, present, _kernel_shap_weights, _weighted_least_squares))


def _lime(case, name, module, sel, s, fz):
    m, x, t, mask = case.model, case.inputs, case.target, case.feature_mask
    g = torch.Generator().manual_seed(0)
    fg, groups = torch.Generator().manual_seed(1), int(mask.max()) + 1
    present = lambda: bernoulli_coalitions(s.n_samples, x.shape[0], groups, fg)  # noqa: E731
    return Calls(lambda: attrfx.lime(m, x, target=t, feature_mask=mask, n_samples=s.n_samples, generator=g),
                 _quiet(lambda: _captum().Lime(m).attribute(x, target=t, feature_mask=mask, n_samples=s.n_samples)),
                 floor_surrogate(fz, x, t, mask, present, _cosine_weights(x, members(mask)), lasso))


SPECS: dict[str, Spec] = {
    "shapley_value_sampling": Spec("output", RULE_MODELS, "sampling", _shapley_value_sampling),
    "shapley_values": Spec("output", RULE_MODELS, "exact", _shapley_values),
    "kernel_shap": Spec("output", RULE_MODELS, "sampling", _kernel_shap),
    "lime": Spec("output", RULE_MODELS, "sampling", _lime),
}

