"""GradientSHAP: the expected gradient times ``(x̃ − b)`` over input noise, baselines and points between them.

One sample (:func:`draw`) — per example, ``n_samples`` noisy inputs ``x̃ = x + σε``, baselines ``b`` from the
distribution and points ``b + u(x̃ − b)`` — serves every form. At the inputs (:func:`gradient_shap`,
:func:`neuron_gradient_shap`) one kernel, :func:`per_sample`, averages the input gradients of the problem's
explained value (:mod:`attrfx.problem`: an output or a neuron); at a layer (:func:`layer_gradient_shap`) the
gradient is taken at the layer and multiplied by the layer's change ``h(x̃) − h(b)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import torch  # noqa: F401 (the examples use torch and nn)
from torch import Tensor, nn  # noqa: F401

from .._api import public
from .._errors import check_count
from .._progress import progress
from ..inputs import Inputs, fold, format_distribution, repeat_args
from ..noise import gaussian_noise, make_generator, sample_baselines, uniform
from ..probe import call_model, forward_to_layer
from ..problem import as_layer_result, layer_problem, neuron_problem, output_problem
from ..selectors import select_target


class Sample(NamedTuple):
    """``n_samples`` draws per example, each ``[S, B, ...]`` per input."""

    noisy: tuple[Tensor, ...]   # x̃ = x + σε
    base: tuple[Tensor, ...]    # b, one row of the distribution (the same row for every input)
    points: tuple[Tensor, ...]  # b + u(x̃ − b), u ~ U(0, 1) per example and draw

    @property
    def n_samples(self) -> int:
        return self.noisy[0].shape[0]


def draw(xs: tuple[Tensor, ...], baselines: Any, inputs: Inputs, n_samples: Any, stdevs: Any,
         generator: Optional[torch.Generator]) -> Sample:
    """Check the sampling arguments and draw the sample from ``generator`` (noise, then baselines, then ``u``).

    Example:
        >>> s = draw((torch.ones(2, 3),), torch.zeros(4, 3), None, 5, 0.0, torch.Generator().manual_seed(0))
        >>> s.points[0].shape, bool(((s.points[0] >= 0) & (s.points[0] <= 1)).all())
        (torch.Size([5, 2, 3]), True)
    """
    dists = format_distribution(baselines, inputs, xs)
    n_samples = check_count("n_samples", n_samples)
    gen = make_generator(generator)
    noisy = gaussian_noise(xs, stdevs, n_samples, gen)
    base = sample_baselines(dists, n_samples, xs[0].shape[0], gen)
    u = uniform(n_samples, xs[0].shape[0], xs[0], gen)
    return Sample(noisy, base, tuple(_lerp(b, x, u) for x, b in zip(noisy, base)))


def per_sample(p: Any, sample: Sample, multiply_by_inputs: bool, name: str, show_progress: bool) -> tuple[Tensor, ...]:
    """``∂f/∂x`` at each point (times ``x̃ − b``): ``[K, S, B, ...]`` per input, for ``p`` a neuron problem
    (K neurons) or an output problem (K = 1); all points in one pass. Their mean over S is GradientSHAP."""
    s = sample.n_samples
    with progress(name, 1, enabled=show_progress) as bar:
        grads = bar.counting(p.input_grads)(tuple(fold(pt) for pt in sample.points), s)
    grads = tuple(g.reshape((g.shape[0],) + tuple(x.shape)) for g, x in zip(grads, sample.noisy))
    return _times_change(grads, sample.noisy, sample.base, multiply_by_inputs)


def convergence_delta(p: Any, sample: Sample, attributions: tuple[Tensor, ...]) -> Tensor:
    """Per draw ``Σ attributions − (F(x̃) − F(b))``, shape ``[B·S]`` in Captum's order (each example's draws
    together), from per-draw attributions ``[S, B, ...]``; ``p`` holds the model, arguments and target."""
    s, n = sample.n_samples, p.n_examples
    total = sum(a.reshape(s, n, -1).sum(2) for a in attributions)
    args, target = repeat_args(p.args, n, s), p.target.repeat(s)
    ends = [select_target(call_model(p.model, tuple(fold(t) for t in ts), args), target).reshape(s, n)
            for ts in (sample.noisy, sample.base)]
    return (total - (ends[0] - ends[1])).T.reshape(-1)


@public
def gradient_shap(model, inputs, baselines, *, n_samples=5, stdevs=0.0, target=None, additional_forward_args=None,
                  return_convergence_delta=False, multiply_by_inputs=True, generator=None, show_progress=False):
    """GradientSHAP of a model output: ``E[(x̃ − b)·∂F/∂x(b + u(x̃ − b))]``.

    The expectation is over ``n_samples`` draws per example of input noise
    ``x̃ = x + σε``, a baseline ``b`` from the distribution and ``u ~ U(0, 1)``,
    all from ``generator``; for a linear model it is ``(x − E[b])·w``. Captum:
    ``GradientShap``.

    Args:
        model: an ``nn.Module`` or forward function.
        inputs: a tensor or tuple of tensors, dim 0 = examples.
        baselines: a distribution, tensor(s) with dim 0 = baseline samples, or a
            callable taking ``inputs`` (or nothing) and returning one.
        n_samples: draws per example.
        stdevs: standard deviation of the input noise (one float, or one per input).
        target: which output to explain: None, int, tuple, tensor or list, or a callable from the model output
            to one value per row (see :mod:`attrfx.selectors`); a per-example target follows its draws.
        additional_forward_args: extra arguments passed to ``model`` after the inputs; per-example tensors
            follow the draws.
        return_convergence_delta: also return, per draw, ``Σ attributions − (F(x̃) − F(b))``
            (shape ``[B·n_samples]``, each example's draws together).
        multiply_by_inputs: multiply by ``x̃ − b`` (global) or not (local: the expected gradient).
        generator: a ``torch.Generator``; the same state gives the same result.
        show_progress: draw a progress bar (on stderr, or a notebook widget): one pass.

    Returns:
        Attributions shaped like ``inputs`` (and the delta with ``return_convergence_delta``).

    Example:
        >>> net = nn.Linear(3, 2)
        >>> g = torch.Generator().manual_seed(0)
        >>> attr = gradient_shap(net, torch.ones(4, 3), torch.zeros(6, 3), target=1, generator=g)
        >>> torch.allclose(attr, net.weight[1].expand(4, 3))
        True

    References:
        Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", 2017.
    """
    p = output_problem(model, inputs, target, additional_forward_args)
    sample = draw(p.xs, baselines, inputs, n_samples, stdevs, generator)
    attrs = per_sample(p, sample, multiply_by_inputs, "gradient_shap", show_progress)
    result = p.result(tuple(a.mean(1) for a in attrs))
    return (result, convergence_delta(p, sample, tuple(a[0] for a in attrs))) if return_convergence_delta else result


@public
def neuron_gradient_shap(model, layer, inputs, selector, baselines, *, n_samples=5, stdevs=0.0,
                         additional_forward_args=None, attribute_to_neuron_input=False, multiply_by_inputs=True,
                         generator=None, show_progress=False):
    """GradientSHAP of a hidden neuron: ``E[(x̃ − b)·∂n/∂x(b + u(x̃ − b))]``.

    The expectation is over ``n_samples`` draws of input noise ``x̃ = x + σε``,
    a baseline ``b`` from the distribution and ``u ~ U(0, 1)``, all from
    ``generator``. Captum: ``NeuronGradientShap``.

    Args:
        baselines: a distribution, tensor(s) with dim 0 = baseline samples, or a
            callable taking ``inputs`` and returning one.
        n_samples: samples per example.
        stdevs: standard deviation of the input noise (one float, or one per input).
        generator: a ``torch.Generator``; the same state gives the same result.
        show_progress: draw a progress bar (on stderr, or a notebook widget), one step per forward pass (all
            samples run in one).
        Other arguments as in :func:`neuron_gradient`.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
        >>> g = torch.Generator().manual_seed(0)
        >>> neuron_gradient_shap(net, "0", torch.randn(5, 3), 1, torch.zeros(8, 3), generator=g).shape
        torch.Size([5, 3])

    References:
        Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", 2017.
    """
    p = neuron_problem(model, layer, inputs, selector, additional_forward_args, attribute_to_neuron_input,
                       batch_total_ok=True, narrows=True)
    sample = draw(p.xs, baselines, inputs, n_samples, stdevs, generator)
    return p.result(tuple(a.mean(1) for a in per_sample(p, sample, multiply_by_inputs, "neuron_gradient_shap",
                                                        show_progress)))


@public
def layer_gradient_shap(model, layer, inputs, baselines, *, n_samples=5, stdevs=0.0, target=None,
                        additional_forward_args=None, return_convergence_delta=False, attribute_to_layer_input=False,
                        multiply_by_inputs=True, generator=None, show_progress=False):
    """GradientSHAP at a layer: ``E[(h(x̃) − h(b))·∂F/∂h(b + u(x̃ − b))]``.

    The points are drawn between inputs and baselines as for :func:`gradient_shap`;
    the gradient is taken at the layer's activation ``h`` there, and multiplied by
    the layer's change between the noisy input and the baseline. Captum:
    ``LayerGradientShap``.

    Args:
        layer: the layer (module or dotted name).
        attribute_to_layer_input: attribute to the layer's input instead of its output.
        multiply_by_inputs: multiply by ``h(x̃) − h(b)`` (global) or not (local: the expected gradient).
        return_convergence_delta: also return, per draw, ``Σ attributions − (F(x̃) − F(b))``
            (shape ``[B·n_samples]``, each example's draws together).
        Other arguments as in :func:`gradient_shap`.

    Returns:
        Attributions shaped like the layer's activation (a tuple for a layer of several tensors).

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
        >>> g = torch.Generator().manual_seed(0)
        >>> layer_gradient_shap(net, "1", torch.randn(5, 3), torch.zeros(8, 3), target=0, generator=g).shape
        torch.Size([5, 4])

    References:
        Lundberg & Lee, "A Unified Approach to Interpreting Model Predictions", 2017.
    """
    p = layer_problem(model, [layer], inputs, target, additional_forward_args, attribute_to_layer_input,
                      deferrable=True)
    sample = draw(p.xs, baselines, inputs, n_samples, stdevs, generator)
    s, n = sample.n_samples, p.n_examples
    with progress("layer_gradient_shap", 2 if multiply_by_inputs else 1, enabled=show_progress) as bar:
        _, (grads,) = bar.counting(p.grads)(tuple(fold(pt) for pt in sample.points), s)
        unfold = lambda ts: tuple(t.reshape((s, n) + tuple(t.shape[1:])) for t in ts)
        if multiply_by_inputs:  # h(x̃) and h(b) from one pass that stops at the layer
            both = tuple(torch.cat([fold(x), fold(b)]) for x, b in zip(sample.noisy, sample.base))
            hs = bar.counting(forward_to_layer)(p.model, p.layers[0], both, repeat_args(p.args, n, 2 * s),
                                                at_input=attribute_to_layer_input)
            ends = [unfold(h.chunk(2)[i] for h in hs) for i in (0, 1)]
            attrs = _times_change(unfold(grads), ends[0], ends[1], True)
        else:
            attrs = unfold(grads)
    result = as_layer_result([a.mean(0) for a in attrs])
    return (result, convergence_delta(p, sample, attrs)) if return_convergence_delta else result


def _times_change(grads: tuple[Tensor, ...], ends: tuple[Tensor, ...], starts: tuple[Tensor, ...],
                  multiply: bool) -> tuple[Tensor, ...]:
    """``grads · (end − start)`` (global), or ``grads`` (local)."""
    return tuple(g * (e - b) for g, e, b in zip(grads, ends, starts)) if multiply else grads


def _lerp(b: Tensor, x: Tensor, u: Tensor) -> Tensor:
    """``b + u·(x − b)`` with ``u`` of shape ``[S, B]`` broadcast over the feature dims."""
    u = u.reshape(tuple(u.shape) + (1,) * (x.dim() - 2))
    return u * x + (1 - u) * b
