"""Benchmark rows of the perturbation methods: feature ablation, occlusion and feature permutation, at the inputs and
(ablation, permutation) at a layer.

Each builder returns :class:`~benchmarks.methods.Calls`: attrfx (its default ``perturbations_per_eval``: attrfx
chooses how many perturbations share a pass), Captum 0.9.0 (its default, one perturbation per pass, as users call
it), and the floor — the fewest forward passes, batched, no autograd, on the frozen copy of the model:

- at the inputs: one pass for ``F(x)``, one pass over every perturbed copy of the batch (the benchmark's feature
  mask: 196 groups of 2×2 pixels on the MLP, 64 patches of 4×4 on the CNN; occlusion windows of two image rows
  every row on the MLP, 8×8 every 4 on the CNN), then each drop spread back over its elements;
- at a layer: one pass for the layer's activation ``h`` and ``F(x)``, then one pass over every perturbed copy of
  ``h`` through the part after the layer only (the part before it run on no examples). The layer mask groups the
  activation by channel on the CNN and in 64 runs of 8 units on the MLP.

The feature groups and windows are constants made before the timing (as a quadrature rule's nodes are).
"""

from __future__ import annotations

import itertools
from typing import Callable

import torch
from torch import Tensor, nn

import attrfx

from .methods import RULE_MODELS, Calls, Spec, _captum, prefix

WINDOWS = {"mlp": ((56,), (28,)), "cnn": ((3, 8, 8), (3, 4, 4))}
"""Occlusion's window and strides per model: two image rows every row (27 windows); 8×8 every 4 (49 windows)."""


def members(mask: Tensor) -> Tensor:
    """``[G, 1, ...]`` bool: which elements feature group ``g`` holds (ids ``0 .. G−1``)."""
    groups = torch.arange(int(mask.max()) + 1, device=mask.device)
    return mask[None] == groups.reshape((-1,) + (1,) * mask.dim())


def window_members(shape: tuple[int, ...], window: tuple[int, ...], strides: tuple[int, ...]) -> Tensor:
    """``[W, 1, ...]`` bool: which elements each occlusion window covers (the last windows clipped at the edge)."""
    starts = [range(0, max(s - w, 0) + t, t) if s > w else range(1) for s, w, t in zip(shape, window, strides)]
    out = torch.zeros((len(list(itertools.product(*starts))),) + shape, dtype=torch.bool)
    for i, first in enumerate(itertools.product(*starts)):
        out[(i,) + tuple(slice(a, a + w) for a, w in zip(first, window))] = True
    return out[:, None]


def _drops(model: Callable, x: Tensor, rows: Tensor, target: int) -> Tensor:
    """``F(x) − F(row)`` for every perturbed copy of the batch in ``rows`` (``[P·N, ...]``): ``[N, P]``."""
    reference = model(x)[:, target]
    return (reference[None] - model(rows)[:, target].reshape(-1, x.shape[0])).T


def floor_ablation(model, x: Tensor, target: int, mask: Tensor) -> Callable[[], Tensor]:
    member = members(mask)

    def run():
        with torch.no_grad():
            rows = torch.where(member, 0, x[None]).reshape((-1,) + tuple(x.shape[1:]))
            drops = _drops(model, x, rows, target)
            return drops[:, mask.expand((1,) + tuple(x.shape[1:])).flatten()].reshape(x.shape)
    return run


def floor_occlusion(model, x: Tensor, target: int, window: tuple, strides: tuple) -> Callable[[], Tensor]:
    member = window_members(tuple(x.shape[1:]), window, strides).to(x.device)
    weights = member.flatten(1).to(x.dtype)                      # [W, E]
    covered = weights.sum(0)

    def run():
        with torch.no_grad():
            rows = torch.where(member, 0, x[None]).reshape((-1,) + tuple(x.shape[1:]))
            return ((_drops(model, x, rows, target) @ weights) / covered).reshape(x.shape)
    return run


def floor_permutation(model, x: Tensor, target: int, mask: Tensor, generator: torch.Generator):
    member = members(mask)

    def run():
        with torch.no_grad():
            perms = torch.rand(member.shape[0], x.shape[0], generator=generator).argsort(1)
            rows = torch.where(member, x[perms], x[None]).reshape((-1,) + tuple(x.shape[1:]))
            drops = _drops(model, x, rows, target)
            return drops[:, mask.expand((1,) + tuple(x.shape[1:])).flatten()].reshape(x.shape)
    return run


def _replaced(model: nn.Module, layer: nn.Module, x: Tensor, h: Tensor) -> Tensor:
    """The model output with the layer's output replaced by ``h``, the part before the layer on no examples."""
    handle = layer.register_forward_hook(lambda module, args, out: h)
    try:
        return model(x[:0])
    finally:
        handle.remove()


def _with_activation(model: nn.Module, layer: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    box = {}
    handle = layer.register_forward_hook(lambda module, args, out: box.setdefault("h", out))
    try:
        return box.setdefault("out", model(x)), box["h"]
    finally:
        handle.remove()


def floor_layer(model, layer, x: Tensor, target: int, mask: Tensor, perturb: Callable[[Tensor, Tensor], Tensor]):
    """One pass for ``h`` and ``F(x)``; one pass of the part after the layer over every perturbed copy of ``h``."""
    def run():
        with torch.no_grad():
            out, h = _with_activation(model, layer, x)
            member = members(mask)
            rows = perturb(h, member).reshape((-1,) + tuple(h.shape[1:]))
            drops = (out[:, target][None] - _replaced(model, layer, x, rows)[:, target].reshape(-1, x.shape[0])).T
            return drops[:, mask.expand((1,) + tuple(h.shape[1:])).flatten()].reshape(h.shape)
    return run


def layer_mask(case, name: str) -> Tensor:
    """Channels of a convolutional activation; runs of 8 units of a flat one (ids from 0)."""
    with torch.no_grad():
        shape = tuple(prefix(case.model, case.model.get_submodule(name), case.inputs[:1]).shape[1:])
    if len(shape) == 3:
        return torch.arange(shape[0], device=case.inputs.device).reshape(1, shape[0], 1, 1)
    return (torch.arange(shape[0], device=case.inputs.device) // 8).reshape(1, shape[0])


def _feature_ablation(case, name, module, sel, s, fz):
    m, x, t, mask = case.model, case.inputs, case.target, case.feature_mask
    return Calls(lambda: attrfx.feature_ablation(m, x, target=t, feature_mask=mask),
                 lambda: _captum().FeatureAblation(m).attribute(x, target=t, feature_mask=mask),
                 floor_ablation(fz, x, t, mask))


def _occlusion(case, name, module, sel, s, fz):
    m, x, t = case.model, case.inputs, case.target
    window, strides = WINDOWS[case.name]
    return Calls(lambda: attrfx.occlusion(m, x, window, strides=strides, target=t),
                 lambda: _captum().Occlusion(m).attribute(x, window, strides=strides, target=t),
                 floor_occlusion(fz, x, t, window, strides))


def _feature_permutation(case, name, module, sel, s, fz):
    m, x, t, mask = case.model, case.inputs, case.target, case.feature_mask
    g = torch.Generator().manual_seed(0)
    return Calls(lambda: attrfx.feature_permutation(m, x, target=t, feature_mask=mask, generator=g),
                 lambda: _captum().FeaturePermutation(m).attribute(x, target=t, feature_mask=mask),
                 floor_permutation(fz, x, t, mask, g))


def _layer_feature_ablation(case, name, module, sel, s, fz):
    m, x, t, mask = case.model, case.inputs, case.target, layer_mask(case, name)
    return Calls(lambda: attrfx.layer_feature_ablation(m, name, x, target=t, layer_mask=mask),
                 lambda: _captum().LayerFeatureAblation(m, module).attribute(x, target=t, layer_mask=mask),
                 floor_layer(fz, fz.get_submodule(name), x, t, mask, lambda h, member: torch.where(member, 0, h[None])))


def _layer_feature_permutation(case, name, module, sel, s, fz):
    m, x, t, mask = case.model, case.inputs, case.target, layer_mask(case, name)
    g = torch.Generator().manual_seed(0)

    def shuffled(h: Tensor, member: Tensor) -> Tensor:
        perms = torch.rand(member.shape[0], h.shape[0], generator=g).argsort(1)
        return torch.where(member, h[perms], h[None])

    one = lambda v: m(v)[:, t]  # noqa: E731 (Captum's LayerFeaturePermutation applies a target twice)
    return Calls(lambda: attrfx.layer_feature_permutation(m, name, x, target=t, layer_mask=mask, generator=g),
                 lambda: _captum().LayerFeaturePermutation(one, module).attribute(x, layer_mask=mask),
                 floor_layer(fz, fz.get_submodule(name), x, t, mask, shuffled))


SPECS: dict[str, Spec] = {
    "feature_ablation": Spec("output", RULE_MODELS, "exact", _feature_ablation),
    "occlusion": Spec("output", RULE_MODELS, "exact", _occlusion),
    "feature_permutation": Spec("output", RULE_MODELS, "sampling", _feature_permutation),
    "layer_feature_ablation": Spec("layer", RULE_MODELS, "exact", _layer_feature_ablation),
    "layer_feature_permutation": Spec("layer", RULE_MODELS, "sampling", _layer_feature_permutation),
}
