"""Guided backpropagation and deconvolution: gradients whose ReLUs pass only positive values back.
"""

from __future__ import annotations

import torch  # noqa: F401 (the examples use torch and nn)
from torch import Tensor, nn  # noqa: F401

from .. import rules
from .._api import public
from ..problem import gradient_under, rule_problem


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
