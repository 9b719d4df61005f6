"""Layer attribution: which neurons of a layer made the output what it was.

Each method explains ``F = target output`` and lands on a layer's activation
``h`` (its output, or its input with ``attribute_to_layer_input``), reached
with the probe ``h → h + δ``. Results are shaped like the activation: a tensor,
or a tuple when the layer gives several tensors.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as functional
from torch import Tensor, nn

from ._api import public
from ._progress import progress
from ._errors import AttrfxValueError, bad_value, check_count
from .adaptive import (DEFAULT_MAX_STEPS, DEFAULT_TOLERANCE, adaptive_differences, check_auto, is_auto, rows_of,
                       rows_on_path, warn_unconverged)
from .gradients import first_layer_grads_and_output, inference_tensors_refused, layer_grads, layer_grads_and_output
from .inputs import Inputs, as_tuple, fold, format_args, format_baselines, repeat_args
from .paths import integrate_differences, steps_per_chunk, straight_line
from .probe import Activation, LayerInfo, call_model, first_pass_checks, inspect, resolve_layer, site_info
from .quadrature import get_rule
from .selectors import Target, check_target, format_target, select_target


class LayerSites:
    """The layers' probe sites, learned once per call: from the inspection pass, or — *deferred* — from the
    first pass (:func:`~attrfx.gradients.first_layer_grads_and_output`), which runs the whole model and so
    sees every run of each layer."""

    def __init__(self, infos: Optional[list[LayerInfo]] = None):
        self.infos = infos

    def learn(self, p: "LayerProblem", runs: list[list[Activation]], output: Any, n: int) -> None:
        """Check the layers' runs and dtypes and the target on the first pass (over ``n`` rows)."""
        infos = [site_info(p.model, layer, r, n) for layer, r in zip(p.layers, runs)]
        _check_sites(infos, at_input=False)
        check_target(output, p.target)
        self.infos = infos


class LayerProblem(NamedTuple):
    """Everything a layer method needs, validated once at the API boundary."""

    model: Callable
    layers: list[nn.Module]
    sites: LayerSites
    xs: tuple[Tensor, ...]
    args: tuple
    target: Target

    @property
    def n_examples(self) -> int:
        return self.xs[0].shape[0]

    @property
    def infos(self) -> list[LayerInfo]:
        return self.sites.infos

    def grads(self, points: Sequence[Tensor], times: int = 1) -> tuple[list[Activation], list[Activation]]:
        """``(h, ∂F/∂h)`` per layer at ``points``, which stack ``times`` copies of the batch (the first call
        of a deferred problem learns the layers from its pass)."""
        args, target = repeat_args(self.args, self.n_examples, times), self.target.repeat(times)
        if self.infos is None:
            try:
                acts, grads, _ = first_layer_grads_and_output(self.model, self.layers, points, args, target,
                                                              functools.partial(self.sites.learn, self))
                return acts, grads
            except RuntimeError as err:  # an inference tensor: inspect, then differentiate through torch.func
                if not inference_tensors_refused(err):
                    raise
                self.sites.infos = inspected_sites(self.model, self.layers, self.xs, self.args, False, self.target)
        return layer_grads(self.model, self.infos, points, args, target)

    def output(self, xs: Sequence[Tensor]) -> Tensor:
        """``F`` per example at ``xs`` (no gradients)."""
        return select_target(call_model(self.model, xs, self.args), self.target)


def layer_problem(model: Callable, layers: Sequence[Any], inputs: Inputs, target: Any, additional_forward_args: Any,
                  at_input: bool, *, deferrable: bool = False) -> LayerProblem:
    """Validate and set up a layer attribution (one small inspection pass of the model, or none).

    The pass runs on an empty batch where it can (:func:`~attrfx.probe.inspect`): the layers'
    shapes, their run counts and the output's shape (all that :func:`check_target` reads) need no
    real rows (models in training mode and plain functions take ``min(2, N)`` real rows).
    ``deferrable`` (methods whose work is :meth:`LayerProblem.grads`) skips it where the first real
    pass can do its checks: plain autograd, an ``nn.Module`` in eval mode, the layers' outputs.
    """
    xs, _ = as_tuple(inputs)
    args = format_args(additional_forward_args)
    if not layers:
        raise bad_value("layer", "a layer or a non-empty list of layers", "an empty list")
    modules = [resolve_layer(model, layer) for layer in layers]
    target = format_target(target, xs[0].shape[0])
    if deferrable and not at_input and first_pass_checks(model):
        return LayerProblem(model, modules, LayerSites(), xs, args, target)
    return LayerProblem(model, modules, LayerSites(inspected_sites(model, modules, xs, args, at_input, target)), xs,
                        args, target)


def inspected_sites(model: Callable, modules: Sequence[nn.Module], xs: Sequence[Tensor], args: tuple,
                    at_input: bool, target: Target) -> list[LayerInfo]:
    """The layers' probe sites from the inspection pass, with the layers and the target checked."""
    seen = inspect(model, modules, xs, args, at_input=at_input, empty=True)
    _check_sites(seen.sites, at_input)
    check_target(seen.output, target)
    return seen.sites


def _check_sites(sites: Sequence[LayerInfo], at_input: bool) -> None:
    for site in sites:
        if not all(d.is_floating_point for d in site.dtypes):
            raise bad_value("layer", "a layer whose activation is floating-point, to take gradients at it",
                            f"layer {site.name} whose {'input' if at_input else 'output'} has dtype "
                            f"{', '.join(map(str, site.dtypes))}")


def as_layer_result(values: Sequence[Tensor]) -> Union[Tensor, tuple[Tensor, ...]]:
    """A tensor for a one-tensor activation, a tuple otherwise."""
    return values[0] if len(values) == 1 else tuple(values)


@public
def layer_gradient_x_activation(model, layer, inputs, *, target=None, additional_forward_args=None,
                                attribute_to_layer_input=False, multiply_by_inputs=True):
    """Gradient times activation at a layer: ``h · ∂F/∂h`` (or ``∂F/∂h`` alone).

    ``layer`` may be a list of layers; then the result is a list. Captum:
    ``LayerGradientXActivation``.

    Args:
        model: an ``nn.Module`` or forward function.
        layer: a module, its dotted name, or a list of these.
        inputs: a tensor or tuple of tensors, dim 0 = examples.
        target: which output to explain: None, int, tuple, tensor or list, or a callable from the model
            output (e.g. a ``ModelOutput``) to one value per row (see :mod:`attrfx.selectors`).
        additional_forward_args: extra arguments passed to ``model`` after the inputs.
        attribute_to_layer_input: attribute to the layer's input instead of its output.
        multiply_by_inputs: multiply by the activation (global) or not (local).

    Returns:
        Attributions shaped like the layer's activation (a list for a list of layers).

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> layer_gradient_x_activation(net, "1", torch.randn(5, 3), target=1).shape
        torch.Size([5, 4])

    References:
        Shrikumar et al., "Not Just a Black Box", 2016.
    """
    many = isinstance(layer, list)
    p = layer_problem(model, layer if many else [layer], inputs, target, additional_forward_args,
                      attribute_to_layer_input, deferrable=True)
    acts, grads = p.grads(p.xs)
    results = [as_layer_result([g * h if multiply_by_inputs else g for g, h in zip(gs, hs)])
               for gs, hs in zip(grads, acts)]
    return results if many else results[0]


@public
def layer_gradcam(model, layer, inputs, *, target=None, additional_forward_args=None, attribute_to_layer_input=False,
                  relu_attributions=False, attr_dim_summation=True):
    """Grad-CAM: channel weights ``mean_{spatial} ∂F/∂h`` times ``h``, summed over channels.

    ``Σ_c (mean_{ij} ∂F/∂h_cij) · h_cij`` per position; dim 1 is the channel.
    Use :func:`interpolate` to bring the map to the input's size. Captum:
    ``LayerGradCam``.

    Args:
        relu_attributions: apply a ReLU to the result.
        attr_dim_summation: sum over channels (keeping the dim), or keep per-channel maps.
        Other arguments as in :func:`layer_gradient_x_activation`.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
        >>> layer_gradcam(net, "1", torch.randn(2, 1, 6, 6), target=0).shape
        torch.Size([2, 1, 4, 4])

    References:
        Selvaraju et al., "Grad-CAM", 2017.
    """
    p = layer_problem(model, [layer], inputs, target, additional_forward_args, attribute_to_layer_input,
                      deferrable=True)
    (acts,), (grads,) = p.grads(p.xs)
    if attr_dim_summation and not all(p.infos[0].shapes):
        raise bad_value("layer", "a layer whose activation has a channel dimension, (N, C, ...), to sum over",
                        f"layer {p.infos[0].name} with activation shapes {[(('N',) + s) for s in p.infos[0].shapes]}")
    maps = []
    for g, h in zip(grads, acts):
        weights = g.mean(dim=tuple(range(2, g.dim())), keepdim=True) if g.dim() > 2 else g
        cam = (weights * h).sum(1, keepdim=True) if attr_dim_summation else weights * h
        maps.append(functional.relu(cam) if relu_attributions else cam)
    return as_layer_result(maps)


def interpolate(layer_attribution: Tensor, interpolate_dims: Union[int, tuple[int, ...]],
                interpolate_mode: str = "nearest") -> Tensor:
    """Resize a ``[N, C, ...]`` layer map to ``interpolate_dims`` (e.g. the input's H × W).

    Example:
        >>> interpolate(torch.ones(2, 1, 4, 4), (8, 8)).shape
        torch.Size([2, 1, 8, 8])
    """
    try:
        _check_interpolation(layer_attribution, interpolate_dims, interpolate_mode)
    except AttrfxValueError as err:
        raise AttrfxValueError(f"interpolate: {err}") from None
    return functional.interpolate(layer_attribution, interpolate_dims, mode=interpolate_mode)


_MODES = {"nearest": (3, 4, 5), "nearest-exact": (3, 4, 5), "area": (3, 4, 5), "linear": (3,), "bilinear": (4,),
          "bicubic": (4,), "trilinear": (5,)}


def _check_interpolation(attribution: Any, dims: Any, mode: Any) -> None:
    if not isinstance(attribution, Tensor) or attribution.dim() not in (3, 4, 5):
        got = f"shape {tuple(attribution.shape)}" if isinstance(attribution, Tensor) else attribution
        raise bad_value("layer_attribution", "a 3-, 4- or 5-d tensor [N, C, ...]", got)
    if not isinstance(mode, str) or mode not in _MODES:
        raise bad_value("interpolate_mode", f"one of {sorted(_MODES)}", repr(mode))
    if attribution.dim() not in _MODES[mode]:
        raise bad_value("interpolate_mode", f"a mode for a {attribution.dim()}-d map (mode {mode!r} needs "
                        f"{' or '.join(map(str, _MODES[mode]))} dims)", repr(mode))
    sizes = dims if isinstance(dims, (tuple, list)) else (dims,)
    spatial = attribution.dim() - 2
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in sizes) or \
            len(sizes) not in ((1, spatial) if not isinstance(dims, (tuple, list)) else (spatial,)):
        raise bad_value("interpolate_dims", f"a positive int or {spatial} positive ints (one per spatial dim)",
                        repr(dims))


@public
def layer_conductance(model, layer, inputs, *, baselines=None, target=None, additional_forward_args=None, n_steps=50,
                      method="gausslegendre", internal_batch_size=None, return_convergence_delta=False,
                      attribute_to_layer_input=False, tolerance=DEFAULT_TOLERANCE, max_steps=DEFAULT_MAX_STEPS,
                      show_progress=False):
    """Conductance of each neuron of a layer: ``∫ ∂F/∂h · dh`` along the input path.

    Discretised on the ``n_steps + 1`` nodes of ``method`` as
    ``Σₛ ∂F/∂h(αₛ)·(h(αₛ₊₁) − h(αₛ))``. With ``riemann_trapezoid`` the nodes
    include 0 and 1, so the differences telescope to ``h(x) − h(b)`` and the
    sum converges to ``F(x) − F(b)`` (exactly so when ``F`` is linear in ``h``);
    ``gausslegendre`` omits the end points. Captum: ``LayerConductance``.

    Args:
        baselines: None (zeros), a number, a tensor broadcastable to each input, or a tuple.
        n_steps, method: the path discretisation (see :mod:`attrfx.quadrature`). ``n_steps="auto"``
            refines nodes per example (0 and 1 included) with the second-order sum
            ``Σₛ ½(∂F/∂h(αₛ) + ∂F/∂h(αₛ₊₁))·(h(αₛ₊₁) − h(αₛ))`` until
            ``|Σ attributions − (F(x) − F(b))| ≤ tolerance·|F(x) − F(b)|`` (see :mod:`attrfx.adaptive`).
        internal_batch_size: at most this many path points (× examples) per forward pass.
        show_progress: draw a progress bar (on stderr, or a notebook widget): one step per chunk of path points;
            with ``n_steps="auto"``, one per example settled, beside the integrand evaluations so far.
        return_convergence_delta: also return ``Σ attributions − (F(x) − F(b))`` per example; with
            ``n_steps="auto"`` an :class:`~attrfx.adaptive.Convergence` (delta, evaluations, converged).
        tolerance, max_steps: with ``n_steps="auto"``, the relative completeness gap to reach and the most
            integrand evaluations per example (an :class:`~attrfx.adaptive.IntegrationBudgetWarning` if
            they run out first).
        Other arguments as in :func:`layer_gradient_x_activation`.

    Returns:
        Attributions shaped like the activation, and the delta if asked.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1)).double()
        >>> x = torch.randn(5, 3, dtype=torch.float64)
        >>> attr, delta = layer_conductance(net, "1", x, method="riemann_trapezoid", return_convergence_delta=True)
        >>> bool(delta.abs().max() < 1e-10)
        True

    References:
        Dhamdhere et al., "How Important Is a Neuron?", 2018.
    """
    p = layer_problem(model, [layer], inputs, target, additional_forward_args, attribute_to_layer_input,
                      deferrable=not is_auto(n_steps))
    if not all(x.is_floating_point() for x in p.xs):  # no path points between integer inputs (token ids)
        raise bad_value("inputs", "floating-point tensors, which the path from the baselines interpolates (for token "
                        "ids use layer_gradient_x_activation at the embedding layer, which gives one row per token; "
                        "sum it over the embedding dimension)",
                        f"dtypes {[x.dtype for x in p.xs]}")
    bs = format_baselines(baselines, p.xs)
    if is_auto(n_steps):
        return _conductance_auto(p, bs, tolerance, max_steps, internal_batch_size, return_convergence_delta,
                                 show_progress)
    check_count("n_steps", n_steps, expected="a positive int or 'auto'")
    alphas = get_rule(method, n_steps + 1).alphas
    n = p.n_examples

    def evaluate(nodes: Tensor):
        s = nodes.numel()
        points = tuple(fold(pt) for pt in straight_line(p.xs, bs, nodes))
        (acts,), (grads,) = p.grads(points, s)
        steps_first = lambda t: t.reshape((s, n) + tuple(t.shape[1:]))
        return [steps_first(h) for h in acts], [steps_first(g) for g in grads]

    chunk = max(2, steps_per_chunk(internal_batch_size, n, alphas.numel()))
    with progress("layer_conductance", -(-alphas.numel() // chunk), enabled=show_progress) as bar:
        attrs = integrate_differences(bar.counting(evaluate), alphas, chunk)
    result = as_layer_result(attrs)
    if not return_convergence_delta:
        return result
    endpoints = tuple(torch.broadcast_to(b, x.shape) for x, b in zip(p.xs, bs))
    gap = sum(a.reshape(n, -1).sum(1) for a in attrs) - (p.output(p.xs) - p.output(endpoints))
    return result, gap


def _conductance_auto(p: LayerProblem, bs: tuple[Tensor, ...], tolerance: Any, max_steps: Any,
                      internal_batch_size: Any, return_convergence_delta: bool, show_progress: bool):
    """``n_steps="auto"``: per-example adaptive nodes (:func:`attrfx.adaptive.adaptive_differences`)."""
    tolerance, max_steps = check_auto(tolerance, max_steps)
    n = p.n_examples

    def evaluate(examples: Tensor, alphas: Tensor):
        args, target = rows_of(p.args, p.target, n, examples)
        (acts,), (grads,), output = layer_grads_and_output(p.model, p.infos, rows_on_path(p.xs, bs, examples, alphas),
                                                           args, target)
        return output, acts, grads

    with progress("layer_conductance", n, enabled=show_progress, unit="example") as bar:
        attrs, conv = adaptive_differences(evaluate, n, tolerance=tolerance, max_steps=max_steps,
                                           chunk=steps_per_chunk(internal_batch_size, 1, 1 << 62),
                                           device=p.xs[0].device, report=bar.advance)
    if not bool(conv.converged.all()):
        endpoints = tuple(torch.broadcast_to(b, x.shape) for x, b in zip(p.xs, bs))
        warn_unconverged("layer_conductance", conv, p.output(p.xs) - p.output(endpoints), tolerance, max_steps)
    return (as_layer_result(attrs), conv) if return_convergence_delta else as_layer_result(attrs)
