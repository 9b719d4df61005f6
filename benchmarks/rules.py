"""Benchmark rows of the rule-based methods at the inputs and at a layer: DeepLift, DeepLiftSHAP, guided
backpropagation, deconvolution and guided Grad-CAM.

Each builder returns :class:`~benchmarks.methods.Calls`: attrfx, Captum 0.9.0, and the bare-autograd floor doing only
the passes the method needs, with every ReLU under the method's rule in its least form
(:data:`~benchmarks.methods.FLOOR_RULES`), on the frozen copy of the model (no graph is recorded for parameters):

- ``deeplift`` / ``deeplift_shap``: one forward pass over the rows ``[inputs; baselines]`` (``2·B``; ``2·M·B`` for
  the M baselines of the SHAP form), one backward pass from the target of both halves to those rows;
- ``layer_deeplift`` / ``layer_deeplift_shap``: the same forward pass cut at the layer (the prefix records no graph),
  a backward pass from the target to the layer;
- ``guided_backprop`` / ``deconvolution``: one forward and one backward pass to the inputs;
- ``guided_gradcam``: Grad-CAM's pass (forward cut at the layer, backward to it) and guided backpropagation's.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

import attrfx

from .gradients import _pick, floor_output_grad
from .methods import RULE_MODELS, Calls, Spec, _captum, _distribution, _gradcam_finish, cut_forward, under_rule


def _pairs(x: Tensor, baselines: Tensor) -> tuple[Tensor, Tensor]:
    """``(x tiled M times, each of the M baselines repeated per example)``, baseline-major; M = 1: ``(x, b)``."""
    m = baselines.shape[0]
    if m == 1:
        return x, baselines.expand_as(x)
    return x.repeat((m,) + (1,) * (x.dim() - 1)), baselines.repeat_interleave(x.shape[0], 0)


def _mean(t: Tensor, m: int) -> Tensor:
    return t if m == 1 else t.unflatten(0, (m, -1)).mean(0)


def floor_deeplift(model, x: Tensor, target, baselines: Tensor) -> Callable[[], Tensor]:
    """``mean_j (x − b_j)·∂ʳF/∂x``: the paired rows run once under the rescale rule."""
    def run():
        xs, bs = _pairs(x, baselines)
        rows = torch.cat([xs, bs]).requires_grad_()
        (g,) = torch.autograd.grad(_pick(model(rows), target), rows)
        return _mean(g[:xs.shape[0]] * (xs - bs), baselines.shape[0])
    return under_rule(model, run, "rescale")


def floor_layer_deeplift(model, layer, x: Tensor, target, baselines: Tensor) -> Callable[[], Tensor]:
    """``mean_j (h(x) − h(b_j))·∂ʳF/∂h``: the paired rows run once, cut at the layer, under the rescale rule."""
    def run():
        xs, bs = _pairs(x, baselines)
        h, leaf, out = cut_forward(model, layer, torch.cat([xs, bs]))
        (g,) = torch.autograd.grad(_pick(out, target), leaf)
        h_x, h_b = h.detach().chunk(2)
        return _mean(g[:xs.shape[0]] * (h_x - h_b), baselines.shape[0])
    return under_rule(model, run, "rescale")


def floor_guided_gradcam(model, layer, x: Tensor, target) -> Callable[[], Tensor]:
    """Grad-CAM at the layer (ReLU'd, resized to the input) times guided backpropagation."""
    guided = under_rule(model, floor_output_grad(model, x, target, lambda x, g: g), "guided")

    def run():
        h, leaf, out = cut_forward(model, layer, x)
        (g,) = torch.autograd.grad(_pick(out, target), leaf)
        cam = F.interpolate(F.relu(_gradcam_finish(h, g)), tuple(x.shape[2:]), mode="nearest")
        return guided() * cam
    return run


def _deeplift(case, name, module, sel, s, fz):
    m, x, t = case.model, case.inputs, case.target
    return Calls(lambda: attrfx.deeplift(m, x, target=t),
                 lambda: _captum().DeepLift(m).attribute(x, target=t),
                 floor_deeplift(fz, x, t, torch.zeros_like(x[:1])))


def _deeplift_shap(case, name, module, sel, s, fz):
    m, x, t, dist = case.model, case.inputs, case.target, _distribution(case, s)
    return Calls(lambda: attrfx.deeplift_shap(m, x, dist, target=t),
                 lambda: _captum().DeepLiftShap(m).attribute(x, dist, target=t),
                 floor_deeplift(fz, x, t, dist))


def _layer_deeplift(case, name, module, sel, s, fz):
    m, x, t = case.model, case.inputs, case.target
    return Calls(lambda: attrfx.layer_deeplift(m, name, x, target=t),
                 lambda: _captum().LayerDeepLift(m, module).attribute(x, target=t),
                 floor_layer_deeplift(fz, fz.get_submodule(name), x, t, torch.zeros_like(x[:1])))


def _layer_deeplift_shap(case, name, module, sel, s, fz):
    m, x, t, dist = case.model, case.inputs, case.target, _distribution(case, s)
    return Calls(lambda: attrfx.layer_deeplift_shap(m, name, x, dist, target=t),
                 lambda: _captum().LayerDeepLiftShap(m, module).attribute(x, dist, target=t),
                 floor_layer_deeplift(fz, fz.get_submodule(name), x, t, dist))


def _one_ruled_gradient(method: str, captum_class: str, rule: str) -> Callable:
    """``attrfx.<method>`` vs ``captum.attr.<class>``: one gradient of the output under the ReLU ``rule``."""
    def build(case, name, module, sel, s, fz):
        m, x, t = case.model, case.inputs, case.target
        return Calls(lambda: getattr(attrfx, method)(m, x, target=t),
                     lambda: getattr(_captum(), captum_class)(m).attribute(x, target=t),
                     under_rule(fz, floor_output_grad(fz, x, t, lambda x, g: g), rule))
    return build


def _guided_gradcam(case, name, module, sel, s, fz):
    m, x, t = case.model, case.inputs, case.target
    return Calls(lambda: attrfx.guided_gradcam(m, name, x, target=t),
                 lambda: _captum().GuidedGradCam(m, module).attribute(x, target=t),
                 floor_guided_gradcam(fz, fz.get_submodule(name), x, t))


SPECS: dict[str, Spec] = {
    "deeplift": Spec("output", RULE_MODELS, "exact", _deeplift),
    "deeplift_shap": Spec("output", RULE_MODELS, "exact", _deeplift_shap),
    "layer_deeplift": Spec("layer", RULE_MODELS, "exact", _layer_deeplift),
    "layer_deeplift_shap": Spec("layer", RULE_MODELS, "exact", _layer_deeplift_shap),
    "guided_backprop": Spec("output", RULE_MODELS, "exact",
                            _one_ruled_gradient("guided_backprop", "GuidedBackprop", "guided")),
    "deconvolution": Spec("output", RULE_MODELS, "exact",
                          _one_ruled_gradient("deconvolution", "Deconvolution", "deconv")),
    "guided_gradcam": Spec("layer", ("cnn",), "exact", _guided_gradcam),
}
