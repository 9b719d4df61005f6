"""Guided backpropagation and deconvolution: gradients whose ReLUs pass only positive values back.

The neuron and output forms are one kernel, :func:`~attrfx.problem.gradient_under` a rule map of
:mod:`attrfx.rules`; guided Grad-CAM composes :func:`guided_backprop` with :func:`~attrfx.layer_gradcam`.
"""

from __future__ import annotations

import warnings

import torch  # noqa: F401 (the examples use torch and nn)
from torch import Tensor, nn  # noqa: F401

from .. import rules
from .._api import public
from .._errors import bad_value
from ..inputs import as_tuple, restore
from ..problem import gradient_under, output_problem, require_module, rule_problem
from .gradient import _MODES, interpolate, layer_gradcam


@public
def neuron_guided_backprop(model, layer, inputs, selector, *, additional_forward_args=None,
                           attribute_to_neuron_input=False):
    """Guided backpropagation of a hidden neuron: ``∂n/∂x`` with ReLUs passing only positive gradients.

    Each ``nn.ReLU`` passes ``relu(g)·[x > 0]`` (:data:`attrfx.rules.GUIDED_BACKPROP`);
    a ReLU used several times gets the rule at each call. Captum: ``NeuronGuidedBackprop``.

    Args:
        model: an ``nn.Module`` (its ReLUs must be ``nn.ReLU`` submodules).
        Other arguments as in :func:`neuron_deeplift`.

    Returns:
        Attributions shaped like ``inputs`` (leading K for a list of selectors).

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> bool((neuron_guided_backprop(net, "2", torch.randn(5, 3), [0, 1]).shape == (2, 5, 3)))
        True

    References:
        Springenberg et al., "Striving for Simplicity: The All Convolutional Net", 2014.
    """
    p = rule_problem(model, layer, inputs, selector, additional_forward_args, attribute_to_neuron_input)
    return gradient_under(rules.GUIDED_BACKPROP, p)


@public
def neuron_deconvolution(model, layer, inputs, selector, *, additional_forward_args=None,
                         attribute_to_neuron_input=False):
    """Deconvolution of a hidden neuron: ``∂n/∂x`` with each ReLU passing ``relu(g)`` whatever its input.

    (:data:`attrfx.rules.DECONVOLUTION`.) Captum: ``NeuronDeconvolution``.

    Args:
        model: an ``nn.Module`` (its ReLUs must be ``nn.ReLU`` submodules).
        Other arguments as in :func:`neuron_deeplift`.

    Returns:
        Attributions shaped like ``inputs`` (leading K for a list of selectors).

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> neuron_deconvolution(net, "2", torch.randn(5, 3), 0).shape
        torch.Size([5, 3])

    References:
        Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", 2014.
    """
    p = rule_problem(model, layer, inputs, selector, additional_forward_args, attribute_to_neuron_input)
    return gradient_under(rules.DECONVOLUTION, p)


@public
def guided_backprop(model, inputs, *, target=None, additional_forward_args=None):
    """Guided backpropagation of a model output: ``∂F/∂x`` with ReLUs passing only positive gradients.

    Each ``nn.ReLU`` passes ``relu(g)·[x > 0]`` (:data:`attrfx.rules.GUIDED_BACKPROP`). Captum: ``GuidedBackprop``.

    Args:
        model: an ``nn.Module`` (its ReLUs must be ``nn.ReLU`` submodules).
        inputs: a tensor or tuple of tensors, dim 0 = examples.
        target: which output to explain: None, int, tuple, tensor, list, or a callable of the output.
        additional_forward_args: extra arguments passed to ``model`` after the inputs.

    Returns:
        Attributions shaped like ``inputs``.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> guided_backprop(net, torch.randn(5, 3), target=1).shape
        torch.Size([5, 3])

    References:
        Springenberg et al., "Striving for Simplicity: The All Convolutional Net", 2014.
    """
    require_module(model)
    return gradient_under(rules.GUIDED_BACKPROP, output_problem(model, inputs, target, additional_forward_args))


@public
def deconvolution(model, inputs, *, target=None, additional_forward_args=None):
    """Deconvolution of a model output: ``∂F/∂x`` with each ReLU passing ``relu(g)`` whatever its input.

    (:data:`attrfx.rules.DECONVOLUTION`.) Captum: ``Deconvolution``.

    Args:
        Arguments as in :func:`guided_backprop`.

    Returns:
        Attributions shaped like ``inputs``.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> deconvolution(net, torch.randn(5, 3), target=0).shape
        torch.Size([5, 3])

    References:
        Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", 2014.
    """
    require_module(model)
    return gradient_under(rules.DECONVOLUTION, output_problem(model, inputs, target, additional_forward_args))


@public
def guided_gradcam(model, layer, inputs, *, target=None, additional_forward_args=None, interpolate_mode="nearest",
                   attribute_to_layer_input=False):
    """Guided Grad-CAM: guided backpropagation times the Grad-CAM map resized to the input.

    ``guided_backprop(x) · interpolate(relu(layer_gradcam(h)), x's spatial size)`` per input.
    An input the map cannot be resized to (another number of spatial dims, or a mode
    for another rank) gets an empty tensor and a warning, as in Captum; a map of a layer
    without spatial dims (one value per example) multiplies an input without spatial dims
    as it is (Captum returns an empty tensor there). Captum: ``GuidedGradCam``.

    Args:
        model: an ``nn.Module`` (its ReLUs must be ``nn.ReLU`` submodules).
        layer: the layer (module or dotted name) of the Grad-CAM map, usually the last convolution;
            its activation must be one tensor.
        inputs: a tensor or tuple of tensors, dim 0 = examples.
        target: which output to explain: None, int, tuple, tensor, list, or a callable of the output.
        additional_forward_args: extra arguments passed to ``model`` after the inputs.
        interpolate_mode: how the map is resized (:func:`~attrfx.interpolate`).
        attribute_to_layer_input: take the Grad-CAM map at the layer's input.

    Returns:
        Attributions shaped like ``inputs``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2))
        >>> guided_gradcam(net, "0", torch.randn(2, 1, 6, 6), target=1).shape
        torch.Size([2, 1, 6, 6])

    References:
        Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
        Localization", 2017.
    """
    require_module(model)
    if not isinstance(interpolate_mode, str) or interpolate_mode not in _MODES:
        raise bad_value("interpolate_mode", f"one of {sorted(_MODES)}", repr(interpolate_mode))
    cam = layer_gradcam.__wrapped__(model, layer, inputs, target=target,
                                    additional_forward_args=additional_forward_args,
                                    attribute_to_layer_input=attribute_to_layer_input, relu_attributions=True)
    if isinstance(cam, tuple):
        raise bad_value("layer", "a layer whose activation is one tensor, for one Grad-CAM map",
                        f"an activation of {len(cam)} tensors")
    xs, was_tuple = as_tuple(inputs)
    guided, _ = as_tuple(guided_backprop.__wrapped__(model, inputs, target=target,
                                                     additional_forward_args=additional_forward_args))
    out = []
    for i, (g, x) in enumerate(zip(guided, xs)):
        out.append(_times_map(g, cam, x, i, interpolate_mode))
    return restore(out, was_tuple)


def _times_map(guided: Tensor, cam: Tensor, x: Tensor, i: int, mode: str) -> Tensor:
    """``guided · cam`` resized to ``x``'s spatial dims; an empty tensor (with a warning) where it cannot be.
    Inputs and maps without spatial dims (``[N, F]`` and ``[N, 1]``) need no resizing."""
    if x.dim() == cam.dim() == 2:
        return guided * cam
    if x.dim() != cam.dim() or cam.dim() not in _MODES[mode]:
        warnings.warn(f"guided_gradcam: the Grad-CAM map of shape {tuple(cam.shape)} cannot be resized with mode "
                      f"{mode!r} to input {i} of shape {tuple(x.shape)}; its attribution is an empty tensor "
                      f"(as in Captum).", stacklevel=5)
        return torch.empty(0, dtype=guided.dtype, device=guided.device)
    return guided * interpolate(cam, tuple(x.shape[2:]), mode)
