"""Gradients of an explained value, by ``torch.func.vjp`` through the probe.

Three kernels cover every gradient method:

- :func:`neuron_input_grads` — ``∂n_k/∂x`` for K neurons: the model runs only
  to the layer, once; the K backward passes are one ``vmap`` over cotangents;
- :func:`layer_grads` — ``∂F/∂h`` at one or more layers, with ``h``;
- :func:`conductance_grads` — both ``∂n_k/∂x`` and ``∂F/∂h`` from one forward
  pass: the graph is cut at the layer, so the backward from ``F`` stops at
  ``h`` and the backward from ``n_k`` covers only the model up to ``h``.

Unreachable inputs or layers get zero gradients.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from .probe import Activation, LayerInfo, forward_to_layer, forward_with_probe, zero_deltas
from .selectors import Neuron, Target, select_target


def pull_each(pull: Callable, values: Tensor) -> tuple[Tensor, ...]:
    """Vector-Jacobian products for each row of ``values`` ``[K, N]``: results ``[K, N, ...]``.

    One backward pass per row, all from the one forward pass behind ``pull``, run
    one after another, so intermediates are one backward pass's, not K's.
    ``benchmarks/kernels.py`` compares ``vmap`` over the K cotangents: with K = 64
    on CPU it was 7.7× slower than this loop on the ResNet-style CNN, but 4×
    faster on the MLP.
    """
    k = values.shape[0]
    if k == 1:
        return tuple(g.unsqueeze(0) for g in pull(torch.ones_like(values)))
    basis = torch.eye(k, dtype=values.dtype, device=values.device)[:, :, None].expand(k, k, values.shape[1])
    per_row = [pull(cotangent) for cotangent in basis]
    return tuple(torch.stack(gs) for gs in zip(*per_row))


def neuron_values(model: Callable, layer: nn.Module, neurons: Sequence[Neuron], args: tuple,
                  at_input: bool) -> Callable[..., Tensor]:
    """``x ↦ [n_k(x)]``, shape ``[K, N]``; the forward pass stops at the layer."""

    def values(*xs: Tensor) -> Tensor:
        hs = forward_to_layer(model, layer, xs, args, at_input=at_input)
        return torch.stack([n(hs) for n in neurons])

    return values


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
    values, pull = torch.func.vjp(neuron_values(model, layer, neurons, args, at_input), *xs)
    return pull_each(pull, values), values


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
    (grads,) = pull(torch.ones_like(value))
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
        def neurons_and_output(*points):
            acts, output = forward_with_probe(model, [site], points, args, [deltas], cut=True)
            return torch.stack([nr(acts[0]) for nr in neurons]), select_target(output, target)

        values, pull, output = torch.func.vjp(neurons_and_output, *xs, has_aux=True)
        return output, (pull_each(pull, values), values)

    output, pull, (input_grads, values) = torch.func.vjp(explained, zero_deltas(site, n, xs[0].device), has_aux=True)
    (layer_grad,) = pull(torch.ones_like(output))
    return input_grads, torch.stack([nr(layer_grad) for nr in neurons]), values
