"""Benchmark rows of the plain-gradient and GradientSHAP methods at the inputs and at a layer.

Each builder returns :class:`~benchmarks.methods.Calls`: attrfx, Captum 0.9.0, and the bare-autograd floor doing only
the passes the method needs (on the frozen copy of the model, so no graph is recorded for parameters):

- ``saliency`` / ``input_x_gradient``: one forward pass, one backward pass from the target to the inputs;
- ``layer_activation``: one forward pass without autograd that stops at the layer;
- ``gradient_shap``: one forward and one backward pass over the S·B sampled points;
- ``layer_gradient_shap``: one forward pass over the S·B points cut at the layer, a backward pass from the target to
  the layer, and one forward pass (without autograd, stopping at the layer) over the S·B noisy inputs and baselines.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

import attrfx

from .methods import ALL, Calls, Spec, _captum, _distribution, cut_forward, prefix


def _pick(out: Tensor, target) -> Tensor:
    return out[:, target].sum()


def floor_output_grad(model, x: Tensor, target, finish: Callable[[Tensor, Tensor], Tensor]) -> Callable[[], Tensor]:
    """``finish(x, ∂F/∂x)``: a forward pass and a backward pass to the inputs."""
    def run():
        xg = x.detach().requires_grad_()
        (g,) = torch.autograd.grad(_pick(model(xg), target), xg)
        return finish(x, g)
    return run


def _draws(x: Tensor, dist: Tensor, n_samples: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """``(x tiled S times, baselines, points)`` as ``[S·B, ...]`` (no input noise)."""
    n = x.shape[0]
    base = dist[torch.randint(0, dist.shape[0], (n_samples * n,), generator=generator, device=x.device)]
    u = torch.rand((n_samples * n,) + (1,) * (x.dim() - 1), generator=generator, dtype=x.dtype, device=x.device)
    xs = x.repeat((n_samples,) + (1,) * (x.dim() - 1))
    return xs, base, base + u * (xs - base)


def _sample_mean(t: Tensor, n_samples: int) -> Tensor:
    return t.reshape((n_samples, -1) + tuple(t.shape[1:])).mean(0)


def floor_output_shap(model, x, target, dist, n_samples, generator):
    def run():
        xs, base, pts = _draws(x, dist, n_samples, generator)
        pts.requires_grad_()
        (g,) = torch.autograd.grad(_pick(model(pts), target), pts)
        return _sample_mean(g * (xs - base), n_samples)
    return run


def floor_layer_activation(model, layer, x):
    def run():
        with torch.no_grad():
            return prefix(model, layer, x)
    return run


def floor_layer_shap(model, layer, x, target, dist, n_samples, generator):
    def run():
        xs, base, pts = _draws(x, dist, n_samples, generator)
        _, leaf, out = cut_forward(model, layer, pts)
        (g,) = torch.autograd.grad(_pick(out, target), leaf)
        with torch.no_grad():
            h_x, h_b = prefix(model, layer, torch.cat([xs, base])).chunk(2)
        return _sample_mean(g * (h_x - h_b), n_samples)
    return run


def _saliency(case, name, module, sel, s, fz):
    m, x, t = case.model, case.inputs, case.target
    return Calls(lambda: attrfx.saliency(m, x, target=t),
                 lambda: _captum().Saliency(m).attribute(x, target=t),
                 floor_output_grad(fz, x, t, lambda x, g: g.abs()))


def _input_x_gradient(case, name, module, sel, s, fz):
    m, x, t = case.model, case.inputs, case.target
    return Calls(lambda: attrfx.input_x_gradient(m, x, target=t),
                 lambda: _captum().InputXGradient(m).attribute(x, target=t),
                 floor_output_grad(fz, x, t, lambda x, g: x * g))


def _layer_activation(case, name, module, sel, s, fz):
    m, x = case.model, case.inputs
    return Calls(lambda: attrfx.layer_activation(m, name, x),
                 lambda: _captum().LayerActivation(m, module).attribute(x),
                 floor_layer_activation(fz, fz.get_submodule(name), x))


def _gradient_shap(case, name, module, sel, s, fz):
    m, x, t, dist = case.model, case.inputs, case.target, _distribution(case, s)
    g = torch.Generator(device=x.device).manual_seed(0)
    return Calls(lambda: attrfx.gradient_shap(m, x, dist, n_samples=s.n_samples, target=t, generator=g),
                 lambda: _captum().GradientShap(m).attribute(x, dist, n_samples=s.n_samples, target=t),
                 floor_output_shap(fz, x, t, dist, s.n_samples, g))


def _layer_gradient_shap(case, name, module, sel, s, fz):
    m, x, t, dist = case.model, case.inputs, case.target, _distribution(case, s)
    g = torch.Generator(device=x.device).manual_seed(0)
    return Calls(lambda: attrfx.layer_gradient_shap(m, name, x, dist, n_samples=s.n_samples, target=t, generator=g),
                 lambda: _captum().LayerGradientShap(m, module).attribute(x, dist, n_samples=s.n_samples, target=t),
                 floor_layer_shap(fz, fz.get_submodule(name), x, t, dist, s.n_samples, g))


SPECS: dict[str, Spec] = {
    "saliency": Spec("output", ALL, "exact", _saliency),
    "input_x_gradient": Spec("output", ALL, "exact", _input_x_gradient),
    "layer_activation": Spec("layer", ALL, "exact", _layer_activation),
    "gradient_shap": Spec("output", ALL, "sampling", _gradient_shap),
    "layer_gradient_shap": Spec("layer", ALL, "sampling", _layer_gradient_shap),
}
