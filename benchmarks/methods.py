"""What each benchmarked method runs: attrfx, Captum, and the bare-autograd floor.

For a method, a model case and a layer ("early" / "late"), :func:`calls`
returns three zero-argument callables that compute the same attribution:

- ``attrfx``: the public attrfx function;
- ``captum``: the Captum 0.9.0 class, built and called as a user would;
- ``floor``: plain ``torch.autograd`` doing only the passes the method strictly
  needs — forward to the layer (a hook stops the model there) and backward from
  the neuron; or, when the model output is needed, a forward pass whose
  activation at the layer is a detached leaf, a backward from the output to
  that leaf, and (for neuron conductance) a backward from the neuron to the
  inputs. It runs on a copy of the model whose parameters do not require
  gradients, so no graph is recorded for them. For the rule-based methods
  (DeepLift, DeepLiftSHAP, guided backpropagation, deconvolution) the floor's
  ReLUs apply the method's rule in its least form (:data:`FLOOR_RULES`), so the
  floor computes the method's result. A quadrature rule's nodes and weights
  are constants made before the timing.

Methods are looked up by name in ``attrfx.__all__``: a method added to attrfx
is benchmarked as soon as it has an entry in :data:`SPECS`.
"""

from __future__ import annotations

import copy
from typing import Callable, NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor, nn

import attrfx

from .models import Case


class Settings(NamedTuple):
    n_steps: int = 50
    n_samples: int = 50
    n_baselines: int = 5          # size of the baseline distribution of the SHAP methods
    perturbations_per_eval: int = 1


class Spec(NamedTuple):
    kind: str                     # "neuron", "layer" or "output" (attributed at the inputs)
    models: tuple                 # model names it is run on
    compare: str                  # "exact", "trapezoid" (Captum × n/(n-1)) or "sampling" (not comparable)
    build: Callable               # (case, layer_name, module, selector, settings, frozen) -> (attrfx, captum, floor)


class Calls(NamedTuple):
    attrfx: Callable[[], Tensor]
    captum: Callable[[], Tensor]
    floor: Callable[[], Tensor]


# ---------------------------------------------------------------- the floor's tools (plain autograd)

class _Stop(Exception):
    def __init__(self, h: Tensor):
        self.h = h


def prefix(model: nn.Module, layer: nn.Module, x: Tensor) -> Tensor:
    """The layer's output; the model stops there."""
    def stop(module, inp, out):
        raise _Stop(out)

    handle = layer.register_forward_hook(stop)
    try:
        model(x)
    except _Stop as reached:
        return reached.h
    finally:
        handle.remove()
    raise RuntimeError("layer did not run")


def cut_forward(model: nn.Module, layer: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(h, leaf, output)``: the model continues from ``leaf = h.detach()`` (requires grad)."""
    box = {}

    def cut(module, inp, out):
        box["h"], box["leaf"] = out, out.detach().requires_grad_()
        return box["leaf"]

    handle = layer.register_forward_hook(cut)
    try:
        output = model(x)
    finally:
        handle.remove()
    return box["h"], box["leaf"], output


def frozen(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters do not require gradients."""
    return copy.deepcopy(model).requires_grad_(False)


def _pick(sel: tuple) -> Callable[[Tensor], Tensor]:
    index = (slice(None),) + tuple(sel)
    return lambda h: h[index]


def _gauss(n: int, like: Tensor) -> tuple[Tensor, Tensor]:
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return (torch.tensor(0.5 * (nodes + 1), dtype=like.dtype, device=like.device),
            torch.tensor(0.5 * weights, dtype=like.dtype, device=like.device))


def _trapezoid(n: int, like: Tensor) -> tuple[Tensor, Tensor]:
    w = torch.full((n,), 1.0 / (n - 1), dtype=like.dtype, device=like.device)
    w[0] = w[-1] = 0.5 / (n - 1)
    return torch.linspace(0, 1, n, dtype=like.dtype, device=like.device), w


def _points(x: Tensor, alphas: Tensor) -> Tensor:
    """Straight-line points from 0 to x, folded into the batch: ``[S·B, ...]``."""
    a = alphas.reshape((-1,) + (1,) * x.dim())
    return (a * x).reshape((-1,) + tuple(x.shape[1:]))


def _weighted(g: Tensor, weights: Tensor, n: int) -> Tensor:
    g = g.reshape((weights.numel(), n) + tuple(g.shape[1:]))
    return torch.tensordot(weights, g, dims=1)


def _picks(sel) -> tuple[list[Callable[[Tensor], Tensor]], bool]:
    """One pick per selector (``sel`` may be a list of K selectors), and whether it was a list."""
    many = isinstance(sel, list)
    return [_pick(s) for s in (sel if many else [sel])], many


def _each(picks, pull: Callable) -> list[Tensor]:
    """``pull(pick, retain_graph)`` for each neuron, on one graph (freed by the last backward pass)."""
    return [pull(p, i < len(picks) - 1) for i, p in enumerate(picks)]


def _stacked(values: list[Tensor], many: bool) -> Tensor:
    return torch.stack(values) if many else values[0]


def neuron_grads(model, layer, sel) -> Callable[[Tensor], Tensor]:
    """``x ↦ ∂n/∂x``: one forward to the layer, one backward per neuron (``sel`` a list: K neurons, K passes)."""
    picks, many = _picks(sel)

    def grads(x):
        xg = x.detach().requires_grad_()
        h = prefix(model, layer, xg)
        return _stacked(_each(picks, lambda p, keep: torch.autograd.grad(p(h).sum(), xg, retain_graph=keep)[0]),
                        many)
    return grads


def floor_neuron_grad(model, layer, sel, x):
    """:func:`neuron_grads` at ``x``."""
    grads = neuron_grads(model, layer, sel)
    return lambda: grads(x)


class _FloorRescale(torch.autograd.Function):
    """DeepLift's rescale at a ReLU on ``[inputs; references]`` rows, in its least form.

    Forward: ``y`` itself, and the ratio ``Δy/Δx`` of the two halves (0 where
    ``|Δx| < 1e-10``; attrfx routes the ordinary gradient there, which costs a
    select more). Backward: ``g·ratio`` for both halves.
    """

    @staticmethod
    def forward(ctx, x, y):
        (x_in, x_ref), (y_in, y_ref) = x.chunk(2), y.chunk(2)
        dx = x_in - x_ref
        ctx.ratio = torch.where(dx.abs() < 1e-10, 0, (y_in - y_ref) / dx)
        return y.view_as(y)

    @staticmethod
    def backward(ctx, g):
        return (g.unflatten(0, (2, -1)) * ctx.ratio).flatten(0, 1), None


class _FloorDeconv(torch.autograd.Function):
    """Deconvolution's ReLU: ``y`` itself forward, ``relu(g)`` straight to the input backward."""

    @staticmethod
    def forward(ctx, x, y):
        return y.view_as(y)

    @staticmethod
    def backward(ctx, g):
        return g.clamp(min=0), None


def _floor_guided(x: Tensor, y: Tensor) -> Tensor:
    """Guided backpropagation's ReLU: a view of ``y`` whose incoming gradient is clamped at 0."""
    out = y.view_as(y)
    out.register_hook(lambda g: g.clamp(min=0))
    return out


FLOOR_RULES = {"guided": _floor_guided, "deconv": _FloorDeconv.apply, "rescale": _FloorRescale.apply}
"""The rule-based methods' ReLU rules for the floor, ``(x, y) -> y'``: the rule's own work, nothing else."""


def under_rule(model, run: Callable[[], Tensor], rule: str) -> Callable[[], Tensor]:
    """``run`` with every ReLU of ``model`` under ``FLOOR_RULES[rule]``."""
    fn, relus = FLOOR_RULES[rule], [m for m in model.modules() if isinstance(m, nn.ReLU)]

    def ruled():
        handles = [m.register_forward_hook(lambda mod, inp, out: fn(inp[0], out)) for m in relus]
        try:
            return run()
        finally:
            for handle in handles:
                handle.remove()
    return ruled


def floor_neuron_ruled(model, layer, sel, x, rule: str):
    """:func:`floor_neuron_grad` with every ReLU under ``FLOOR_RULES[rule]``."""
    return under_rule(model, floor_neuron_grad(model, layer, sel, x), rule)


def floor_neuron_deeplift(model, layer, sel, x, baselines):
    """DeepLift against each of the M ``baselines`` (``[M, ...]``), averaged: ``mean_j (x − b_j)·∂ʳn/∂x``.

    The rows ``[x tiled M times; each baseline repeated per example]`` are made,
    run once under the rescale rule, and combined inside the timed call.
    """
    grads, n, m = neuron_grads(model, layer, sel), x.shape[0], baselines.shape[0]

    def run():
        xs = x if m == 1 else x.repeat((m,) + (1,) * (x.dim() - 1))
        bs = baselines.expand_as(x) if m == 1 else baselines.repeat_interleave(n, 0)
        g = grads(torch.cat([xs, bs]))
        d = g.dim() - x.dim()  # 1 for a list of neurons
        attr = g.narrow(d, 0, m * n) * (xs - bs)
        return attr if m == 1 else attr.unflatten(d, (m, n)).mean(d)
    return under_rule(model, run, "rescale")


def floor_neuron_path(model, layer, sel, x, n_steps):
    """Integrated gradients of the neuron: one forward over S·B folded points, one backward per neuron."""
    picks, many = _picks(sel)
    alphas, weights = _gauss(n_steps, x)     # the rule's constants: no pass of the model, so not the floor's work

    def run():
        pts = _points(x, alphas).requires_grad_()
        h = prefix(model, layer, pts)
        grads = _each(picks, lambda p, keep: torch.autograd.grad(p(h).sum(), pts, retain_graph=keep)[0])
        return _stacked([_weighted(g, weights, x.shape[0]) * x for g in grads], many)
    return run


def floor_neuron_shap(model, layer, sel, x, dist, n_samples, generator):
    pick = _pick(sel)

    def run():
        n = x.shape[0]
        base = dist[torch.randint(0, dist.shape[0], (n_samples * n,), generator=generator, device=x.device)]
        u = torch.rand((n_samples * n,) + (1,) * (x.dim() - 1), generator=generator, dtype=x.dtype, device=x.device)
        xs = x.repeat((n_samples,) + (1,) * (x.dim() - 1))
        pts = (base + u * (xs - base)).requires_grad_()
        g = torch.autograd.grad(pick(prefix(model, layer, pts)).sum(), pts)[0]
        return (g * (xs - base)).reshape((n_samples, n) + tuple(x.shape[1:])).mean(0)
    return run


def floor_neuron_conductance(model, layer, sel, x, target, n_steps):
    """Forward once with the graph cut at the layer; backward output → layer, then neuron → input (per neuron)."""
    picks, many = _picks(sel)
    alphas, weights = _trapezoid(n_steps, x)

    def run():
        pts = _points(x, alphas).requires_grad_()
        h, leaf, out = cut_forward(model, layer, pts)
        (g_h,) = torch.autograd.grad(out[:, target].sum(), leaf)
        grads = _each(picks, lambda p, keep: torch.autograd.grad(p(h), pts, grad_outputs=p(g_h), retain_graph=keep)[0])
        return _stacked([_weighted(g, weights, x.shape[0]) * x for g in grads], many)
    return run


def floor_layer_grad(model, layer, x, target, finish):
    """Backward from the output to the layer only (the prefix records no graph)."""
    def run():
        h, leaf, out = cut_forward(model, layer, x)
        (g_h,) = torch.autograd.grad(out[:, target].sum(), leaf)
        return finish(h, g_h)
    return run


def floor_layer_conductance(model, layer, x, target, n_steps):
    alphas, _ = _gauss(n_steps + 1, x)

    def run():
        h, leaf, out = cut_forward(model, layer, _points(x, alphas))
        (g_h,) = torch.autograd.grad(out[:, target].sum(), leaf)
        h = h.reshape((alphas.numel(), x.shape[0]) + tuple(h.shape[1:]))
        g_h = g_h.reshape(h.shape)
        return ((h[1:] - h[:-1]) * g_h[:-1]).sum(0)
    return run


def floor_ablation(model, layer, sel, x, mask, ppe):
    """Forward to the layer for the batch and for each group of ``ppe`` ablated features, no autograd."""
    pick = _pick(sel)
    features = int(mask.max()) + 1

    def run():
        with torch.no_grad():
            ref = pick(prefix(model, layer, x))
            out = torch.zeros_like(x)
            for start in range(0, features, ppe):
                ids = torch.arange(start, min(start + ppe, features), device=x.device)
                keep = (mask[None] != ids.reshape((-1,) + (1,) * mask.dim()))          # [p, 1, ...]
                batch = (x[None] * keep).reshape((-1,) + tuple(x.shape[1:]))
                diff = ref.repeat(len(ids)) - pick(prefix(model, layer, batch))
                diff = diff.reshape((len(ids), x.shape[0]) + (1,) * (x.dim() - 1))
                out = out + (diff * ~keep).sum(0)
            return out
    return run


# ---------------------------------------------------------------- the methods

def _captum():
    import captum.attr as ca
    return ca


def _one_gradient(method: str, captum_class: str, rule: Optional[str] = None) -> Callable:
    """A method that costs one gradient of the neuron (its floor; with ``rule``, under that ReLU rule):
    ``attrfx.<method>`` vs ``captum.attr.<class>``."""
    def build(case, name, module, sel, s, fz):
        m, x, at = case.model, case.inputs, fz.get_submodule(name)
        return Calls(lambda: getattr(attrfx, method)(m, name, x, sel),
                     lambda: getattr(_captum(), captum_class)(m, module).attribute(x, sel),
                     floor_neuron_ruled(fz, at, sel, x, rule) if rule else floor_neuron_grad(fz, at, sel, x))
    return build


def _neuron_ig(case, name, module, sel, s, fz):
    m, x = case.model, case.inputs
    return Calls(lambda: attrfx.neuron_integrated_gradients(m, name, x, sel, n_steps=s.n_steps),
                 lambda: _captum().NeuronIntegratedGradients(m, module).attribute(x, sel, n_steps=s.n_steps),
                 floor_neuron_path(fz, fz.get_submodule(name), sel, x, s.n_steps))


def _neuron_conductance(case, name, module, sel, s, fz):
    m, x, t = case.model, case.inputs, case.target
    return Calls(lambda: attrfx.neuron_conductance(m, name, x, sel, target=t, n_steps=s.n_steps),
                 lambda: _captum().NeuronConductance(m, module).attribute(x, sel, target=t, n_steps=s.n_steps),
                 floor_neuron_conductance(fz, fz.get_submodule(name), sel, x, t, s.n_steps))


def _distribution(case, s):
    g = torch.Generator(device=case.inputs.device).manual_seed(1)
    return 0.1 * torch.randn((s.n_baselines,) + tuple(case.inputs.shape[1:]), generator=g,
                             device=case.inputs.device, dtype=case.inputs.dtype)


def _neuron_gradient_shap(case, name, module, sel, s, fz):
    m, x, dist = case.model, case.inputs, _distribution(case, s)
    g = torch.Generator(device=x.device).manual_seed(0)
    return Calls(lambda: attrfx.neuron_gradient_shap(m, name, x, sel, dist, n_samples=s.n_samples, generator=g),
                 lambda: _captum().NeuronGradientShap(m, module).attribute(x, sel, dist, n_samples=s.n_samples),
                 floor_neuron_shap(fz, fz.get_submodule(name), sel, x, dist, s.n_samples, g))


def _neuron_deeplift(case, name, module, sel, s, fz):
    m, x = case.model, case.inputs
    return Calls(lambda: attrfx.neuron_deeplift(m, name, x, sel),
                 lambda: _captum().NeuronDeepLift(m, module).attribute(x, sel),
                 floor_neuron_deeplift(fz, fz.get_submodule(name), sel, x, torch.zeros_like(x[:1])))


def _neuron_deeplift_shap(case, name, module, sel, s, fz):
    m, x, dist = case.model, case.inputs, _distribution(case, s)
    return Calls(lambda: attrfx.neuron_deeplift_shap(m, name, x, sel, dist),
                 lambda: _captum().NeuronDeepLiftShap(m, module).attribute(x, sel, dist),
                 floor_neuron_deeplift(fz, fz.get_submodule(name), sel, x, dist))


def _neuron_feature_ablation(case, name, module, sel, s, fz):
    m, x, mask, ppe = case.model, case.inputs, case.feature_mask, s.perturbations_per_eval
    return Calls(lambda: attrfx.neuron_feature_ablation(m, name, x, sel, feature_mask=mask,
                                                        perturbations_per_eval=ppe),
                 lambda: _captum().NeuronFeatureAblation(m, module).attribute(x, sel, feature_mask=mask,
                                                                              perturbations_per_eval=ppe),
                 floor_ablation(fz, fz.get_submodule(name), sel, x, mask, ppe))


def _layer_conductance(case, name, module, sel, s, fz):
    m, x, t = case.model, case.inputs, case.target
    return Calls(lambda: attrfx.layer_conductance(m, name, x, target=t, n_steps=s.n_steps),
                 lambda: _captum().LayerConductance(m, module).attribute(x, target=t, n_steps=s.n_steps),
                 floor_layer_conductance(fz, fz.get_submodule(name), x, t, s.n_steps))


def _layer_gradient_x_activation(case, name, module, sel, s, fz):
    m, x, t = case.model, case.inputs, case.target
    return Calls(lambda: attrfx.layer_gradient_x_activation(m, name, x, target=t),
                 lambda: _captum().LayerGradientXActivation(m, module).attribute(x, target=t),
                 floor_layer_grad(fz, fz.get_submodule(name), x, t, lambda h, g: h * g))


def _gradcam_finish(h: Tensor, g: Tensor) -> Tensor:
    return (g.mean(dim=(2, 3), keepdim=True) * h).sum(1, keepdim=True)


def _layer_gradcam(case, name, module, sel, s, fz):
    m, x, t = case.model, case.inputs, case.target
    return Calls(lambda: attrfx.layer_gradcam(m, name, x, target=t),
                 lambda: _captum().LayerGradCam(m, module).attribute(x, target=t),
                 floor_layer_grad(fz, fz.get_submodule(name), x, t, _gradcam_finish))


ALL = ("mlp", "cnn", "tfm")
RULE_MODELS = ("mlp", "cnn")        # rule-based and ablation methods: as in PERF-NOTES

SPECS: dict[str, Spec] = {
    "neuron_gradient": Spec("neuron", ALL, "exact", _one_gradient("neuron_gradient", "NeuronGradient")),
    "neuron_integrated_gradients": Spec("neuron", ALL, "exact", _neuron_ig),
    "neuron_conductance": Spec("neuron", ALL, "trapezoid", _neuron_conductance),
    "neuron_gradient_shap": Spec("neuron", ALL, "sampling", _neuron_gradient_shap),
    "neuron_deeplift": Spec("neuron", RULE_MODELS, "exact", _neuron_deeplift),
    "neuron_deeplift_shap": Spec("neuron", RULE_MODELS, "exact", _neuron_deeplift_shap),
    "neuron_guided_backprop": Spec("neuron", RULE_MODELS, "exact",
                                   _one_gradient("neuron_guided_backprop", "NeuronGuidedBackprop", "guided")),
    "neuron_deconvolution": Spec("neuron", RULE_MODELS, "exact",
                                 _one_gradient("neuron_deconvolution", "NeuronDeconvolution", "deconv")),
    "neuron_feature_ablation": Spec("neuron", RULE_MODELS, "exact", _neuron_feature_ablation),
    "layer_conductance": Spec("layer", ALL, "exact", _layer_conductance),
    "layer_gradient_x_activation": Spec("layer", ALL, "exact", _layer_gradient_x_activation),
    "layer_gradcam": Spec("layer", ("cnn",), "exact", _layer_gradcam),
}


PLACES = {"neuron": ("early", "late"), "layer": ("early", "late"), "output": ("output",)}
"""Where each kind of method is timed: at the model's early and late layer, or once per model (at the inputs)."""

NOT_TIMED = ("interpolate", "noise_tunnel")
"""Public functions that are no attribution of their own (a resize; a wrapper of the other methods)."""


def _family_specs() -> None:
    """Add the rows of the method families kept in their own files (``benchmarks/<family>.py``, each a ``SPECS``)."""
    import importlib
    for family in ("gradients", "integrated", "rules", "lrp", "perturbation", "sampling"):
        try:
            SPECS.update(importlib.import_module(f"{__package__}.{family}").SPECS)
        except ModuleNotFoundError as err:
            if err.name != f"{__package__}.{family}":
                raise


_family_specs()


def available() -> tuple[list[str], list[str]]:
    """``(benchmarked, skipped)``: attrfx methods with a spec, and public methods without one."""
    public = [n for n in attrfx.methods.__all__ if n not in NOT_TIMED]
    return [n for n in SPECS if n in public], [n for n in public if n not in SPECS]


def calls(method: str, case: Case, where: str, settings: Settings = Settings(),
          frozen_model: Optional[nn.Module] = None) -> Calls:
    """The three callables for ``method`` on ``case`` at layer ``where`` ("early" / "late"; "output": no layer)."""
    name = case.layers.get(where)
    fz = frozen_model if frozen_model is not None else frozen(case.model)
    module = None if name is None else case.model.get_submodule(name)
    return SPECS[method].build(case, name, module, case.neurons.get(where), settings, fz)


def k_calls(method: str, case: Case, where: str, selectors: list, settings: Settings = Settings(),
            frozen_model: Optional[nn.Module] = None) -> Calls:
    """One attrfx call for the list of ``selectors`` vs one Captum call per selector (stacked), and the K floor.

    The K floor is plain autograd with one forward pass (to the layer, or cut at it for conductance) and
    one backward pass per neuron, on detached parameters: the least work any implementation that runs
    dense backward passes can do for K neurons.
    """
    name = case.layers[where]
    m, x, t, n = case.model, case.inputs, case.target, settings.n_steps
    module = m.get_submodule(name)
    fz = frozen_model if frozen_model is not None else frozen(m)
    fz_layer = fz.get_submodule(name)
    ca = _captum()
    if method == "neuron_gradient":
        one = lambda s: ca.NeuronGradient(m, module).attribute(x, s)
        many = lambda: attrfx.neuron_gradient(m, name, x, selectors)
        floor = floor_neuron_grad(fz, fz_layer, selectors, x)
    elif method == "neuron_integrated_gradients":
        one = lambda s: ca.NeuronIntegratedGradients(m, module).attribute(x, s, n_steps=n)
        many = lambda: attrfx.neuron_integrated_gradients(m, name, x, selectors, n_steps=n)
        floor = floor_neuron_path(fz, fz_layer, selectors, x, n)
    elif method == "neuron_conductance":
        one = lambda s: ca.NeuronConductance(m, module).attribute(x, s, target=t, n_steps=n)
        many = lambda: attrfx.neuron_conductance(m, name, x, selectors, target=t, n_steps=n)
        floor = floor_neuron_conductance(fz, fz_layer, selectors, x, t, n)
    else:
        raise ValueError(method)
    return Calls(many, lambda: torch.stack([one(s) for s in selectors]), floor)


def k_selectors(case: Case, where: str, k: int) -> list:
    """``k`` distinct neurons of the layer, spread over its shape."""
    with torch.no_grad():
        shape = tuple(prefix(case.model, case.model.get_submodule(case.layers[where]), case.inputs[:1]).shape[1:])
    total = int(np.prod(shape))
    flat = np.linspace(0, total - 1, k).astype(int)
    return [tuple(int(i) for i in np.unravel_index(f, shape)) for f in flat]
