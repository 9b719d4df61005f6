"""Plain gradients: ``∂F/∂x`` of an output, ``∂n/∂x`` of a neuron, ``∂F/∂h`` at a layer (times the activation, or
Grad-CAM's channel weights); and the layer's activation itself, which needs no gradient.
"""

from __future__ import annotations

from typing import Any, Union

import torch  # noqa: F401 (the examples use torch and nn)
import torch.nn.functional as functional
from torch import Tensor, nn  # noqa: F401

from .._api import public
from .._errors import AttrfxValueError, bad_value
from ..inputs import as_tuple, format_args
from ..probe import forward_to_layers, inspect, resolve_layer
from ..problem import as_layer_result, layer_problem, neuron_problem, output_problem


@public
def saliency(model, inputs, *, target=None, abs=True, additional_forward_args=None):
    """Saliency: the gradient of a model output with respect to the inputs, ``|∂F/∂x|`` (or ``∂F/∂x``).

    Captum: ``Saliency``.

    Args:
        model: an ``nn.Module`` or forward function.
        inputs: a tensor or tuple of tensors, dim 0 = examples.
        target: which output to explain: None, int, tuple, tensor or list, or a callable from the model
            output to one value per row (see :mod:`attrfx.selectors`).
        abs: the gradient's absolute value (True) or the signed gradient (False).
        additional_forward_args: extra arguments passed to ``model`` after the inputs.

    Returns:
        Gradients shaped like ``inputs``.

    Example:
        >>> net = nn.Linear(3, 2)
        >>> torch.equal(saliency(net, torch.randn(4, 3), target=1), net.weight[1].abs().expand(4, 3))
        True

    References:
        Simonyan et al., "Deep Inside Convolutional Networks", 2013.
    """
    p = output_problem(model, inputs, target, additional_forward_args)
    grads = p.input_grads(p.xs)
    return p.result(tuple(g.abs() for g in grads) if abs else grads)


@public
def input_x_gradient(model, inputs, *, target=None, additional_forward_args=None):
    """Input times gradient: ``x · ∂F/∂x``.

    Captum: ``InputXGradient``.

    Args:
        Arguments as in :func:`saliency`.

    Returns:
        Attributions shaped like ``inputs``.

    Example:
        >>> net = nn.Linear(3, 2)
        >>> x = torch.randn(4, 3)
        >>> torch.equal(input_x_gradient(net, x, target=0), x * net.weight[0])
        True

    References:
        Shrikumar et al., "Not Just a Black Box", 2016.
    """
    p = output_problem(model, inputs, target, additional_forward_args)
    return p.result(tuple(g * x for g, x in zip(p.input_grads(p.xs), p.xs)))


@public
def neuron_gradient(model, layer, inputs, selector, *, additional_forward_args=None,
                    attribute_to_neuron_input=False):
    """Gradient of a hidden neuron with respect to the inputs: ``∂n/∂x``.

    The forward pass stops at the layer. Captum: ``NeuronGradient``.

    Args:
        model: an ``nn.Module`` or forward function.
        layer: the layer (module or dotted name) holding the neuron.
        inputs: a tensor or tuple of tensors, dim 0 = examples.
        selector: int, tuple of ints/slices, callable, or a list of these.
        additional_forward_args: extra arguments passed to ``model`` after the inputs.
        attribute_to_neuron_input: select the neuron from the layer's input.

    Returns:
        Gradients shaped like ``inputs`` (leading K for a list of selectors).

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> neuron_gradient(net, "0", torch.randn(5, 3), 2).shape
        torch.Size([5, 3])

    References:
        Simonyan et al., "Deep Inside Convolutional Networks", 2013.
    """
    p = neuron_problem(model, layer, inputs, selector, additional_forward_args, attribute_to_neuron_input,
                       batch_total_ok=True, deferrable=True, narrows=True)
    return p.result(p.input_grads(p.xs))


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
def layer_activation(model, layer, inputs, *, additional_forward_args=None, attribute_to_layer_input=False):
    """The layer's activation ``h(x)`` (its output, or its input), for one layer or a list of layers.

    No gradient is taken; the forward pass stops once the (last) layer has run.
    Captum: ``LayerActivation``.

    Args:
        model: an ``nn.Module`` or forward function.
        layer: a module, its dotted name, or a list of these (then the result is a list).
        inputs: a tensor or tuple of tensors, dim 0 = examples (any dtype: token ids too).
        additional_forward_args: extra arguments passed to ``model`` after the inputs.
        attribute_to_layer_input: the layer's input (as the layer receives it) instead of its output.

    Returns:
        The activation (a tuple for a layer of several tensors; a list for a list of layers).

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> x = torch.randn(5, 3)
        >>> torch.equal(layer_activation(net, "1", x), net[1](net[0](x)))
        True
    """
    many = isinstance(layer, list)
    if many and not layer:
        raise bad_value("layer", "a layer or a non-empty list of layers", "an empty list")
    modules = [resolve_layer(model, one) for one in (layer if many else [layer])]
    xs, _ = as_tuple(inputs)
    args = format_args(additional_forward_args)
    inspect(model, modules, xs, args, at_input=attribute_to_layer_input, empty=True)  # each layer runs once
    acts = forward_to_layers(model, modules, xs, args, at_input=attribute_to_layer_input)
    results = [as_layer_result(hs) for hs in acts]
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
