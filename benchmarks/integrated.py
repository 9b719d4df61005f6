"""Benchmark rows of the path integrals at the inputs and at a layer (Gauss–Legendre, ``n_steps`` nodes).

Each builder returns :class:`~benchmarks.methods.Calls`: attrfx, Captum 0.9.0, and the bare-autograd floor doing only
the passes the method needs (on the frozen copy of the model, so no graph is recorded for parameters):

- ``integrated_gradients``: one forward and one backward pass over the S·B path points, to the inputs;
- ``layer_integrated_gradients``: the layer's activation at the inputs and at the baselines (two forward passes
  without autograd that stop at the layer), then one forward pass over the inputs tiled S times with the layer's
  output replaced by the S·B path points (the prefix records no graph) and one backward pass to those points;
- ``internal_influence``: one forward pass over the S·B input path points cut at the layer and one backward pass
  from the target to the layer.
"""

from __future__ import annotations

import torch
from torch import Tensor

import attrfx

from .methods import ALL, Calls, Spec, _captum, _gauss, _points, _weighted, cut_forward, prefix


def _tiled(x: Tensor, times: int) -> Tensor:
    return x.repeat((times,) + (1,) * (x.dim() - 1))


def floor_integrated_gradients(model, x, target, n_steps):
    alphas, weights = _gauss(n_steps, x)

    def run():
        pts = _points(x, alphas).requires_grad_()
        (g,) = torch.autograd.grad(model(pts)[:, target].sum(), pts)
        return _weighted(g, weights, x.shape[0]) * x
    return run


def floor_layer_integrated_gradients(model, layer, x, target, n_steps):
    alphas, weights = _gauss(n_steps, x)

    def run():
        with torch.no_grad():
            h_x, h_b = prefix(model, layer, x), prefix(model, layer, torch.zeros_like(x))
            a = alphas.reshape((-1,) + (1,) * h_x.dim())
            pts = (h_b + a * (h_x - h_b)).reshape((-1,) + tuple(h_x.shape[1:]))
            tiled = _tiled(x, n_steps)
        pts.requires_grad_()

        def replace(module, inp, out):
            torch.set_grad_enabled(True)  # the graph starts at the path points (no_grad's exit restores the mode)
            return pts

        with torch.no_grad():  # the prefix records no graph
            handle = layer.register_forward_hook(replace)
            try:
                out = model(tiled)
            finally:
                handle.remove()
        (g,) = torch.autograd.grad(out[:, target].sum(), pts)
        return _weighted(g, weights, x.shape[0]) * (h_x - h_b)
    return run


def floor_internal_influence(model, layer, x, target, n_steps):
    alphas, weights = _gauss(n_steps, x)

    def run():
        _, leaf, out = cut_forward(model, layer, _points(x, alphas))
        (g,) = torch.autograd.grad(out[:, target].sum(), leaf)
        return _weighted(g, weights, x.shape[0])
    return run


def _integrated_gradients(case, name, module, sel, s, fz):
    m, x, t = case.model, case.inputs, case.target
    return Calls(lambda: attrfx.integrated_gradients(m, x, target=t, n_steps=s.n_steps),
                 lambda: _captum().IntegratedGradients(m).attribute(x, target=t, n_steps=s.n_steps),
                 floor_integrated_gradients(fz, x, t, s.n_steps))


def _layer_integrated_gradients(case, name, module, sel, s, fz):
    m, x, t = case.model, case.inputs, case.target
    return Calls(lambda: attrfx.layer_integrated_gradients(m, name, x, target=t, n_steps=s.n_steps),
                 lambda: _captum().LayerIntegratedGradients(m, module).attribute(x, target=t, n_steps=s.n_steps),
                 floor_layer_integrated_gradients(fz, fz.get_submodule(name), x, t, s.n_steps))


def _internal_influence(case, name, module, sel, s, fz):
    m, x, t = case.model, case.inputs, case.target
    return Calls(lambda: attrfx.internal_influence(m, name, x, target=t, n_steps=s.n_steps),
                 lambda: _captum().InternalInfluence(m, module).attribute(x, target=t, n_steps=s.n_steps),
                 floor_internal_influence(fz, fz.get_submodule(name), x, t, s.n_steps))


SPECS = {
    "integrated_gradients": Spec("output", ALL, "exact", _integrated_gradients),
    "layer_integrated_gradients": Spec("layer", ALL, "exact", _layer_integrated_gradients),
    "internal_influence": Spec("layer", ALL, "exact", _internal_influence),
}
