"""GradientSHAP: the expected gradient times ``(x̃ − b)`` over input noise, baselines and points between them.
"""

from __future__ import annotations

import torch  # noqa: F401 (the examples use torch and nn)
from torch import Tensor, nn  # noqa: F401

from .._api import public
from .._errors import check_count
from .._progress import progress
from ..inputs import fold, format_distribution
from ..noise import gaussian_noise, make_generator, sample_baselines, uniform
from ..problem import neuron_problem


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
    dists = format_distribution(baselines, inputs, p.xs)
    check_count("n_samples", n_samples)
    gen = make_generator(generator)
    noisy = gaussian_noise(p.xs, stdevs, n_samples, gen)
    base = sample_baselines(dists, n_samples, p.n_examples, gen)
    u = uniform(n_samples, p.n_examples, p.xs[0], gen)
    points = tuple(_lerp(b, x, u) for x, b in zip(noisy, base))
    with progress("neuron_gradient_shap", 1, enabled=show_progress) as bar:
        grads = bar.counting(p.input_grads)(tuple(fold(pt) for pt in points), n_samples)
    per_sample = tuple(g.reshape((g.shape[0],) + tuple(x.shape)) for g, x in zip(grads, noisy))
    if multiply_by_inputs:
        per_sample = tuple(g * (x - b) for g, x, b in zip(per_sample, noisy, base))
    return p.result(tuple(g.mean(1) for g in per_sample))


def _lerp(b: Tensor, x: Tensor, u: Tensor) -> Tensor:
    """``b + u·(x − b)`` with ``u`` of shape ``[S, B]`` broadcast over the feature dims."""
    u = u.reshape(tuple(u.shape) + (1,) * (x.dim() - 2))
    return u * x + (1 - u) * b
