"""Perturbation: how much the explained value drops when some input features are replaced.

Three *hows* — ablation (a feature group takes the baseline), occlusion (a sliding window takes the baseline),
permutation (a feature group is shuffled among the examples) — each a :class:`~attrfx.ablation.Perturbations`
(occlusion's from :mod:`attrfx.windows`) — and three *whats / wheres*, all evaluated by one kernel,
:func:`~attrfx.ablation.perturbation_attributions`:

- an output at the inputs: :func:`feature_ablation`, :func:`occlusion`, :func:`feature_permutation`;
- an output at a layer: :func:`layer_feature_ablation`, :func:`layer_feature_permutation` (the layer's activation
  is perturbed; the model's part before the layer runs once for the batch, not once per perturbation, where the
  model allows it: :func:`~attrfx.ablation.replaced_values`);
- a hidden neuron at the inputs: :func:`neuron_feature_ablation` (the model stops at the layer).

``perturbations_per_eval=None`` (the default) lets attrfx choose how many perturbations share a forward pass
(:func:`~attrfx.ablation.perturbations_per_pass`); an int is honoured exactly; neither changes the result. No
gradients are recorded.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch  # noqa: F401 (the examples use torch and nn)
from torch import Tensor, nn  # noqa: F401

from .._api import public
from .._errors import check_count
from .._progress import progress
from ..ablation import (LINEAR_ABLATION_ELEMENTS, Perturbations, ablations, feature_masks, layer_activation_and_output,
                        linear_ablation, linear_fed, perturbation_attributions, perturbations_per_pass, permutations,
                        output_values, replaced_values, target_values)
from ..gradients import neuron_values
from ..inputs import Inputs, as_tuple, format_args, format_baselines
from ..noise import make_generator
from ..probe import resolve_layer
from ..problem import NeuronProblem, OutputProblem, as_layer_result, neuron_problem
from ..selectors import format_target
from ..windows import occlusion_windows, occlusions


def _output_problem(model: Callable, inputs: Inputs, target: Any, additional_forward_args: Any) -> OutputProblem:
    """An output explained at the inputs; any dtype of inputs (token ids too: nothing is differentiated)."""
    xs, was_tuple = as_tuple(inputs)
    args, target = format_args(additional_forward_args), format_target(target, xs[0].shape[0])
    return OutputProblem(model, xs, was_tuple, args, target)


def _passes(count: int, per_pass: int) -> int:
    return -(-count // per_pass)


def _at_inputs(name: str, p: OutputProblem, perturbations: Perturbations, perturbations_per_eval: Optional[int],
               show_progress: bool) -> Inputs:
    """The output method's kernel: ``F(x) − F(x perturbed)`` at the inputs, the perturbations batched."""
    per_pass = perturbations_per_pass(perturbations_per_eval, p.xs, perturbations.count)
    values = output_values(p.model, p.target, len(p.xs), p.n_examples)
    with progress(name, 1 + _passes(perturbations.count, per_pass), enabled=show_progress) as bar:
        total = perturbation_attributions(bar.counting(values), p.xs, p.args, perturbations, per_pass)
    return p.result(total)


def _at_layer(name: str, model: Callable, layer: Any, inputs: Inputs, target: Any, additional_forward_args: Any,
              at_input: bool, perturbations_of: Callable[[tuple[Tensor, ...]], Perturbations],
              perturbations_per_eval: Optional[int], show_progress: bool) -> Any:
    """The layer method's kernel: ``F(x) − F(x with the layer's activation perturbed)``.

    One pass gives the activation ``h`` and ``F(x)``; one more checks that the part after the layer runs alone
    (:func:`~attrfx.ablation.replaced_values`); then the perturbed copies of ``h`` go through the rest of the model,
    batched.
    """
    xs, _ = as_tuple(inputs)
    args, module = format_args(additional_forward_args), resolve_layer(model, layer)
    n, tgt = xs[0].shape[0], format_target(target, xs[0].shape[0])
    if perturbations_per_eval is not None:  # checked before any pass
        check_count("perturbations_per_eval", perturbations_per_eval)
    hs, output = layer_activation_and_output(model, module, xs, args, at_input)
    initial = target_values(output, tgt, n, n)
    perturbations = perturbations_of(hs)
    per_pass = perturbations_per_pass(perturbations_per_eval, hs, perturbations.count)
    values = replaced_values(model, module, xs, args, tgt, at_input, hs, initial)
    with progress(name, 2 + _passes(perturbations.count, per_pass), enabled=show_progress) as bar:
        bar.advance(2)
        total = perturbation_attributions(bar.counting(values), hs, (), perturbations, per_pass, initial[None])
    return as_layer_result([t[0] for t in total])


@public
def feature_ablation(model, inputs, *, baselines=None, target=None, additional_forward_args=None, feature_mask=None,
                     perturbations_per_eval=None, show_progress=False):
    """Feature ablation: ``F(x) − F(x with a feature group set to the baseline)``, given to each element of the group.

    Groups come from ``feature_mask`` (any integer ids, shared across inputs: an id in several inputs ablates all
    of its elements at once) or are single elements. Captum: ``FeatureAblation``.

    Args:
        model: an ``nn.Module`` or forward function returning one row per example.
        inputs: a tensor or tuple of tensors, dim 0 = examples (any dtype: token ids too).
        baselines: None (zeros), a number, a tensor broadcastable to each input, or a tuple of these.
        target: which output to explain (None, int, tuple, tensor, list or callable).
        additional_forward_args: extra arguments passed to ``model`` after the inputs.
        feature_mask: an integer tensor per input, broadcastable to it (dim 0 of size 1 or N).
        perturbations_per_eval: how many ablations share one forward pass. Captum: 1; None lets attrfx choose
            (as many as fit in :data:`~attrfx.ablation.PERTURBED_ELEMENTS`); the results are equal.
        show_progress: draw a progress bar, one step per forward pass.

    Returns:
        Attributions shaped like ``inputs``, in the model output's dtype.

    Example:
        >>> net = nn.Linear(4, 2)
        >>> mask = torch.tensor([[0, 0, 1, 1]])
        >>> attr = feature_ablation(net, torch.ones(3, 4), target=1, feature_mask=mask)
        >>> torch.allclose(attr[:, 0], net.weight[1, :2].sum().expand(3))
        True

    References:
        Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", 2014.
    """
    p = _output_problem(model, inputs, target, additional_forward_args)
    perturbations = ablations(p.xs, format_baselines(baselines, p.xs), feature_masks(feature_mask, p.xs))
    return _at_inputs("feature_ablation", p, perturbations, perturbations_per_eval, show_progress)


@public
def occlusion(model, inputs, sliding_window_shapes, *, strides=None, baselines=None, target=None,
              additional_forward_args=None, perturbations_per_eval=None, show_progress=False):
    """Occlusion: a window slides over each input, taking the baseline; an element gets the mean of
    ``F(x) − F(x occluded)`` over the windows covering it.

    Along each dim after the first, windows start every ``stride`` elements, ``⌈(s − w) / stride⌉ + 1`` of them,
    the last clipped at the edge. Captum: ``Occlusion``.

    Args:
        model: an ``nn.Module`` or forward function returning one row per example.
        inputs: a tensor or tuple of tensors, dim 0 = examples.
        sliding_window_shapes: the window, a tuple of ints (one per dim after the first) per input; for one
            input, one tuple.
        strides: None (1), an int for every dim, or per input an int or a tuple of ints (one per dim).
        baselines: None (zeros), a number, a tensor broadcastable to each input, or a tuple of these.
        target: which output to explain (None, int, tuple, tensor, list or callable).
        additional_forward_args: extra arguments passed to ``model`` after the inputs.
        perturbations_per_eval: how many windows share one forward pass. Captum: 1; None lets attrfx choose;
            the results are equal.
        show_progress: draw a progress bar, one step per forward pass.

    Returns:
        Attributions shaped like ``inputs``, in the model output's dtype (Captum's are float32).

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> occlusion(net, torch.randn(2, 1, 4, 4), (1, 2, 2), strides=(1, 2, 2), target=0).shape
        torch.Size([2, 1, 4, 4])

    References:
        Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", 2014.
    """
    p = _output_problem(model, inputs, target, additional_forward_args)
    windows = occlusion_windows(sliding_window_shapes, strides, p.xs)
    perturbations = occlusions(p.xs, format_baselines(baselines, p.xs), windows)
    return _at_inputs("occlusion", p, perturbations, perturbations_per_eval, show_progress)


@public
def feature_permutation(model, inputs, *, target=None, additional_forward_args=None, feature_mask=None,
                        perturbations_per_eval=None, show_progress=False, perm_func=None, generator=None):
    """Permutation importance: ``F(x) − F(x with a feature group shuffled among the examples)``.

    Each group takes, for every example, the group's values of another example (a random permutation of the batch,
    never the identity; one per group and input), and every element of the group gets the drop. Groups come from
    ``feature_mask`` as for :func:`feature_ablation`. Captum: ``FeaturePermutation``.

    Args:
        model: an ``nn.Module`` or forward function returning one row per example.
        inputs: a tensor or tuple of tensors, dim 0 = examples (at least 2).
        target: which output to explain (None, int, tuple, tensor, list or callable).
        additional_forward_args: extra arguments passed to ``model`` after the inputs.
        feature_mask: an integer tensor per input, broadcastable to it (dim 0 of size 1 or N).
        perturbations_per_eval: how many permuted groups share one forward pass. Captum: 1; None lets attrfx
            choose; the results are equal (the permutations are drawn before any pass).
        show_progress: draw a progress bar, one step per forward pass.
        perm_func: ``(x, mask) → x`` with the elements where ``mask`` (bool, broadcastable to ``x``) is True
            shuffled among the examples; None: a uniform random permutation other than the identity, from
            ``generator``.
        generator: a ``torch.Generator``; the same state gives the same result (None: a fresh one).

    Returns:
        Attributions shaped like ``inputs``, in the model output's dtype.

    Example:
        >>> net = nn.Linear(3, 1)
        >>> x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
        >>> attr = feature_permutation(net, x, generator=torch.Generator().manual_seed(0))
        >>> torch.allclose(attr, (x - x.flip(0)) * net.weight)   # two examples: the permutation is a swap
        True

    References:
        Breiman, "Random Forests", Machine Learning 45, 2001 (permutation importance).
    """
    p = _output_problem(model, inputs, target, additional_forward_args)
    perturbations = permutations(p.xs, feature_masks(feature_mask, p.xs), make_generator(generator), perm_func)
    return _at_inputs("feature_permutation", p, perturbations, perturbations_per_eval, show_progress)


@public
def layer_feature_ablation(model, layer, inputs, *, layer_baselines=None, target=None, additional_forward_args=None,
                           layer_mask=None, attribute_to_layer_input=False, perturbations_per_eval=None,
                           show_progress=False):
    """Feature ablation at a layer: ``F(x) − F(x with a group of the layer's activation set to the baseline)``.

    The model's part before the layer runs once for the batch (on no examples after that, where the model allows:
    Captum reruns it for every perturbation). Captum: ``LayerFeatureAblation``.

    Args:
        model: an ``nn.Module`` or forward function returning one row per example.
        layer: the layer (module or dotted name).
        inputs: a tensor or tuple of tensors, dim 0 = examples.
        layer_baselines: None (zeros), a number, a tensor broadcastable to the layer's activation, or a tuple.
        target: which output to explain (None, int, tuple, tensor, list or callable).
        additional_forward_args: extra arguments passed to ``model`` after the inputs.
        layer_mask: an integer tensor per activation tensor, broadcastable to it (dim 0 of size 1 or N).
        attribute_to_layer_input: ablate the layer's input instead of its output.
        perturbations_per_eval: how many ablations share one forward pass. Captum: 1; None lets attrfx choose;
            the results are equal.
        show_progress: draw a progress bar, one step per forward pass (beyond Captum).

    Returns:
        Attributions shaped like the layer's activation (a tuple for a layer of several tensors).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> layer_feature_ablation(net, "1", torch.randn(5, 4), target=1).shape
        torch.Size([5, 3])
    """
    def perturbations_of(hs: tuple[Tensor, ...]) -> Perturbations:
        return ablations(hs, format_baselines(layer_baselines, hs, "layer_baselines"),
                         feature_masks(layer_mask, hs, "layer_mask", "the layer's activation"))

    return _at_layer("layer_feature_ablation", model, layer, inputs, target, additional_forward_args,
                     attribute_to_layer_input, perturbations_of, perturbations_per_eval, show_progress)


@public
def layer_feature_permutation(model, layer, inputs, *, target=None, additional_forward_args=None, layer_mask=None,
                              attribute_to_layer_input=False, perturbations_per_eval=None, show_progress=False,
                              perm_func=None, generator=None):
    """Permutation importance at a layer: ``F(x) − F(x with a group of the layer's activation shuffled among the
    examples)``, as :func:`feature_permutation` does at the inputs.

    The model's part before the layer runs once for the batch where the model allows. Captum:
    ``LayerFeaturePermutation`` (without ``attribute_to_layer_input``, ``perm_func`` or ``show_progress``).

    Args:
        model: an ``nn.Module`` or forward function returning one row per example.
        layer: the layer (module or dotted name).
        inputs: a tensor or tuple of tensors, dim 0 = examples (at least 2).
        target: which output to explain (None, int, tuple, tensor, list or callable).
        additional_forward_args: extra arguments passed to ``model`` after the inputs.
        layer_mask: an integer tensor per activation tensor, broadcastable to it (dim 0 of size 1 or N).
        attribute_to_layer_input: permute the layer's input instead of its output.
        perturbations_per_eval: how many permuted groups share one forward pass. Captum: 1; None lets attrfx
            choose; the results are equal.
        show_progress: draw a progress bar, one step per forward pass.
        perm_func: ``(h, mask) → h`` with the masked elements shuffled among the examples; None: a uniform random
            permutation other than the identity, from ``generator``.
        generator: a ``torch.Generator``; the same state gives the same result (None: a fresh one).

    Returns:
        Attributions shaped like the layer's activation (a tuple for a layer of several tensors).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> g = torch.Generator().manual_seed(0)
        >>> layer_feature_permutation(net, "1", torch.randn(5, 4), target=1, generator=g).shape
        torch.Size([5, 3])
    """
    gen = make_generator(generator)

    def perturbations_of(hs: tuple[Tensor, ...]) -> Perturbations:
        return permutations(hs, feature_masks(layer_mask, hs, "layer_mask", "the layer's activation"), gen, perm_func)

    return _at_layer("layer_feature_permutation", model, layer, inputs, target, additional_forward_args,
                     attribute_to_layer_input, perturbations_of, perturbations_per_eval, show_progress)


@public
def neuron_feature_ablation(model, layer, inputs, selector, *, baselines=None, additional_forward_args=None,
                            feature_mask=None, attribute_to_neuron_input=False, perturbations_per_eval=None,
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
        perturbations_per_eval: how many ablations share one forward pass. Captum: 1; None lets attrfx choose;
            the results are equal.
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
    perturbations = ablations(p.xs, bs, masks)
    per_pass = perturbations_per_pass(perturbations_per_eval, p.xs, perturbations.count)
    fed = _linear_fed(p)
    if fed is not None:
        with progress("neuron_feature_ablation", 1, enabled=show_progress) as bar:
            total = bar.counting(linear_ablation)(p.site.path, p.site.only, p.neurons, p.xs, bs, masks, fed)
        return p.result(total)
    values = neuron_values(p.model, p.layer, p.neurons, (), p.at_input, p.site.only)
    with progress("neuron_feature_ablation", 1 + _passes(perturbations.count, per_pass), enabled=show_progress) as bar:
        total = perturbation_attributions(bar.counting(values), p.xs, p.args, perturbations, per_pass)
    return p.result(total)


def _linear_fed(p: NeuronProblem) -> Optional[int]:
    """The input that the narrowed Linear feeding the layer reads as it is, when :func:`linear_ablation` applies:
    a two-dimensional activation of that Linear, its elements bounded by :data:`LINEAR_ABLATION_ELEMENTS`."""
    if p.site.path is None:
        return None
    fed = linear_fed(p.model, p.layer, p.site.only, p.xs, p.args)
    small = fed is not None and p.xs[fed].numel() * p.site.only.index.numel() <= LINEAR_ABLATION_ELEMENTS
    return fed if small else None
