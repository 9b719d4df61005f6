"""Feature ablation: how much the explained value drops when a group of input features takes the baseline.

The primitives (feature masks, batched ablation, the pass-free ablation of a Linear's neurons) are in
:mod:`attrfx.ablation`.
"""

from __future__ import annotations

from typing import Optional

import torch  # noqa: F401 (the examples use torch and nn)
from torch import Tensor, nn  # noqa: F401

from .._api import public
from .._errors import check_count
from .._progress import progress
from ..ablation import LINEAR_ABLATION_ELEMENTS, ablate, feature_masks, linear_ablation, linear_fed
from ..gradients import neuron_values
from ..inputs import format_baselines
from ..problem import NeuronProblem, neuron_problem


@public
def neuron_feature_ablation(model, layer, inputs, selector, *, baselines=None, additional_forward_args=None,
                            feature_mask=None, attribute_to_neuron_input=False, perturbations_per_eval=1,
                            show_progress=False):
    """Feature ablation of a hidden neuron: ``n(x) − n(x with a feature group set to the baseline)``.

    Every element of a group gets the group's drop. Groups come from
    ``feature_mask`` (ids shared across inputs) or are single elements. No
    gradients are recorded and the model stops at the layer. Captum:
    ``NeuronFeatureAblation``.

    Args:
        model: an ``nn.Module`` or forward function.
        layer: the layer (module or dotted name) holding the neuron.
        inputs: a tensor or tuple of tensors, dim 0 = examples.
        selector: int, tuple of ints/slices, callable, or a list of these.
        baselines: None (zeros), a number, a tensor broadcastable to each input, or a tuple.
        additional_forward_args: extra arguments passed to ``model`` after the inputs.
        feature_mask: an integer tensor per input, broadcastable to it (dim 0 of size 1 or N).
        attribute_to_neuron_input: select the neuron from the layer's input.
        perturbations_per_eval: how many ablations share one forward pass (memory, never the result).
        show_progress: draw a progress bar (on stderr, or a notebook widget), one step per forward pass.

    Returns:
        Attributions shaped like ``inputs`` (leading K for a list of selectors).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> mask = torch.tensor([[0, 0, 1, 1]])
        >>> neuron_feature_ablation(net, "0", torch.randn(5, 4), 2, feature_mask=mask).shape
        torch.Size([5, 4])

    References:
        Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", 2014.
    """
    p = neuron_problem(model, layer, inputs, selector, additional_forward_args, attribute_to_neuron_input,
                       need_float=False, narrows=True)
    bs = format_baselines(baselines, p.xs)
    masks = feature_masks(feature_mask, p.xs)
    per_eval = check_count("perturbations_per_eval", perturbations_per_eval)
    fed = _linear_fed(p)
    if fed is not None:
        with progress("neuron_feature_ablation", 1, enabled=show_progress) as bar:
            total = bar.counting(linear_ablation)(p.site.path, p.site.only, p.neurons, p.xs, bs, masks, fed)
        return p.result(total)
    groups = torch.unique(torch.cat([m.flatten() for m in masks])).numel()
    values = neuron_values(p.model, p.layer, p.neurons, (), p.at_input, p.site.only)
    with progress("neuron_feature_ablation", 1 + -(-groups // per_eval), enabled=show_progress) as bar:
        total = ablate(bar.counting(values), p.xs, bs, masks, p.args, perturbations_per_eval)
    return p.result(total)


def _linear_fed(p: NeuronProblem) -> Optional[int]:
    """The input that the narrowed Linear feeding the layer reads as it is, when :func:`linear_ablation` applies:
    a two-dimensional activation of that Linear, its elements bounded by :data:`LINEAR_ABLATION_ELEMENTS`."""
    if p.site.path is None:
        return None
    fed = linear_fed(p.model, p.layer, p.site.only, p.xs, p.args)
    small = fed is not None and p.xs[fed].numel() * p.site.only.index.numel() <= LINEAR_ABLATION_ELEMENTS
    return fed if small else None
