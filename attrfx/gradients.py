"""Gradients of an explained value, by ``torch.func.vjp`` through the probe.

Three kernels cover every gradient method:

- :func:`neuron_input_grads` — ``∂n_k/∂x`` for K neurons: the model runs only
  to the layer, once; each neuron's backward pass starts from its own
  cotangent at the layer (:func:`pull_neurons`);
- :func:`layer_grads` — ``∂F/∂h`` at one or more layers, with ``h``;
- :func:`conductance_grads` — both ``∂n_k/∂x`` and ``∂F/∂h`` from one forward
  pass: the graph is cut at the layer, so the backward from ``F`` stops at
  ``h`` and the backward from ``n_k`` covers only the model up to ``h``.

Unreachable inputs or layers get zero gradients.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from .probe import Activation, LayerInfo, forward_to_layer, forward_with_probe, zero_deltas
from .selectors import Neuron, Target, neuron_cotangent, select_target


VMAP_ELEMENTS = 1 << 20
"""At most this many cotangent elements in all (K neurons × the layer's activation) are pulled back under ``vmap``."""


def vmap_suits(model: Callable, k: int, hs: Activation) -> bool:
    """Whether K neurons' backward passes should run under one ``vmap`` rather than one after another.

    Only when each pass is small and overhead-bound — ``K·numel(h) ≤``
    :data:`VMAP_ELEMENTS` — and every module holding parameters is an
    ``nn.Linear``: torch's batched backward passes of convolution, BatchNorm and
    LayerNorm ran 1.5–4× slower than the loop, while on the MLP's 8 rows
    ``vmap`` was 2× faster (``benchmarks/kernels.py``). Results are equal either way.

    Example:
        >>> vmap_suits(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), 16, (torch.zeros(8, 4),))
        True
        >>> vmap_suits(nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU()), 16, (torch.zeros(8, 4, 6),))
        False
    """
    return (k > 1 and k * sum(h.numel() for h in hs) <= VMAP_ELEMENTS and isinstance(model, nn.Module)
            and all(isinstance(m, nn.Linear) for m in model.modules() if next(m.parameters(False), None) is not None))


def pull_neurons(pull: Callable, neurons: Sequence[Neuron], hs: Activation, batched: bool) -> tuple[Tensor, ...]:
    """``∂n_k/∂x = pull(∂(Σ_rows n_k)/∂h)`` for each neuron: ``[K, N, ...]`` per input.

    ``pull`` is the vjp of ``x ↦ h`` (one forward pass, shared by all K
    neurons); each neuron's cotangent is built at the layer
    (:func:`~attrfx.selectors.neuron_cotangent`), so its backward pass carries
    that neuron alone. With ``batched`` (:func:`vmap_suits`) the K cotangents
    are pulled back under one ``vmap``; otherwise one after another, so
    intermediates are one backward pass's. The last pass frees the graph.

    Example:
        >>> from attrfx.selectors import IndexNeuron
        >>> hs, pull = torch.func.vjp(lambda x: (2 * x,), torch.randn(3, 2))
        >>> pull_neurons(pull, [IndexNeuron((slice(None), 1), False)], hs, False)[0][0].tolist()
        [[0.0, 2.0], [0.0, 2.0], [0.0, 2.0]]
    """
    k = len(neurons)
    if batched:
        cotangents = [neuron_cotangent(n, hs) for n in neurons]
        return torch.func.vmap(functools.partial(pull, retain_graph=False))(
            tuple(torch.stack(c) for c in zip(*cotangents)))
    grads = [pull(neuron_cotangent(n, hs), retain_graph=i < k - 1) for i, n in enumerate(neurons)]
    return tuple(torch.stack(g) for g in zip(*grads))


def neuron_values(model: Callable, layer: nn.Module, neurons: Sequence[Neuron], args: tuple,
                  at_input: bool) -> Callable[..., Tensor]:
    """``x ↦ [n_k(x)]``, shape ``[K, N]``; the forward pass stops at the layer."""

    def values(*xs: Tensor) -> Tensor:
        return stack_values(neurons, forward_to_layer(model, layer, xs, args, at_input=at_input))

    return values


def stack_values(neurons: Sequence[Neuron], hs: Activation) -> Tensor:
    """The neurons' values ``[K, N]`` at the layer's activation ``hs``."""
    return torch.stack([n(hs) for n in neurons])


def neuron_input_grads(model: Callable, layer: nn.Module, neurons: Sequence[Neuron], xs: Sequence[Tensor],
                       args: tuple, *, at_input: bool = False) -> tuple[Tensor, ...]:
    """``∂n_k/∂x`` for each neuron k and input x: tensors ``[K, N, ...]``.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        >>> (g,) = neuron_input_grads(net, net[0], [lambda hs: hs[0][:, 1]], (torch.ones(4, 2),), ())
        >>> torch.equal(g[0, 0], net[0].weight[1])
        True
    """
    return neuron_input_grads_and_values(model, layer, neurons, xs, args, at_input=at_input)[0]


def neuron_input_grads_and_values(model: Callable, layer: nn.Module, neurons: Sequence[Neuron], xs: Sequence[Tensor],
                                  args: tuple, *, at_input: bool = False) -> tuple[tuple[Tensor, ...], Tensor]:
    """:func:`neuron_input_grads` together with the neuron values ``[K, N]`` of the same forward pass."""
    hs, pull = torch.func.vjp(lambda *points: forward_to_layer(model, layer, points, args, at_input=at_input), *xs)
    return pull_neurons(pull, neurons, hs, vmap_suits(model, len(neurons), hs)), stack_values(neurons, hs)


def layer_grads(model: Callable, sites: Sequence[LayerInfo], xs: Sequence[Tensor], args: tuple,
                target: Target) -> tuple[list[Activation], list[Activation]]:
    """``(h, ∂F/∂h)`` at each probe site, for ``F`` the target-selected output."""
    acts, grads, _ = layer_grads_and_output(model, sites, xs, args, target)
    return acts, grads


def layer_grads_and_output(model: Callable, sites: Sequence[LayerInfo], xs: Sequence[Tensor], args: tuple,
                           target: Target) -> tuple[list[Activation], list[Activation], Tensor]:
    """``(h, ∂F/∂h, F)``: :func:`layer_grads` with the explained output ``[N]`` of the same pass."""
    n, device = xs[0].shape[0], xs[0].device

    def explained(deltas):
        acts, output = forward_with_probe(model, sites, xs, args, deltas)
        return select_target(output, target), acts

    deltas = [zero_deltas(site, n, device) for site in sites]
    value, pull, acts = torch.func.vjp(explained, deltas, has_aux=True)
    (grads,) = pull(torch.ones_like(value), retain_graph=False)
    return acts, list(grads), value


def conductance_grads(model: Callable, site: LayerInfo, neurons: Sequence[Neuron], xs: Sequence[Tensor], args: tuple,
                      target: Target) -> tuple[tuple[Tensor, ...], Tensor]:
    """``(∂n_k/∂x, ∂F/∂n_k)`` from one forward pass: ``[K, N, ...]`` per input, and ``[K, N]``.

    ``∂F/∂n_k`` is the selector applied to ``∂F/∂h`` (exact for one neuron; the
    sum of the neurons' gradients for a slice).
    """
    input_grads, rates, _ = conductance_grads_and_values(model, site, neurons, xs, args, target)
    return input_grads, rates


def conductance_grads_and_values(model: Callable, site: LayerInfo, neurons: Sequence[Neuron], xs: Sequence[Tensor],
                                 args: tuple, target: Target) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
    """:func:`conductance_grads` with the neuron values ``n_k`` ``[K, N]`` of the same forward pass."""
    n = xs[0].shape[0]

    def explained(deltas):
        def activation_and_output(*points):
            acts, output = forward_with_probe(model, [site], points, args, [deltas], cut=True)
            return acts[0], select_target(output, target)

        hs, pull, output = torch.func.vjp(activation_and_output, *xs, has_aux=True)
        grads = pull_neurons(pull, neurons, hs, vmap_suits(model, len(neurons), hs))
        return output, (grads, stack_values(neurons, hs))

    output, pull, (input_grads, values) = torch.func.vjp(explained, zero_deltas(site, n, xs[0].device), has_aux=True)
    (layer_grad,) = pull(torch.ones_like(output), retain_graph=False)
    return input_grads, stack_values(neurons, layer_grad), values
