"""Coalitions of feature groups: which groups keep the input in each perturbation, drawn from an explicit generator.

A coalition is a boolean row over the ``G`` feature groups (True: the group keeps its input value; False: it
takes the baseline). A batch of them is ``[P, G]`` (the same coalitions for every example) or ``[P, N, G]`` (one
per example); :func:`attrfx.ablation.coalition_keeps` turns either into the points the model sees.

- Shapley value sampling walks orderings of the groups from the baseline to the input: :func:`permutations`,
  :func:`antithetic_permutations` (each ordering and its reverse, and both turned by half a walk),
  :func:`walk_coalitions` (the coalitions met on the way) and :func:`walk_contributions` (each group's change of
  the value when it joins);
- exact Shapley values weigh every coalition: :func:`coalitions_of_codes` (coalition ``c`` has group ``j`` where
  bit ``j`` of ``c`` is set) and :func:`shapley_coefficients` (the weight of ``v(S)`` in each group's value);
- KernelSHAP draws coalition sizes from the Shapley kernel, :func:`shapley_kernel_sizes`, and coalitions of
  those sizes in complementary pairs, :func:`kernel_shap_coalitions`; LIME keeps each group with probability
  one half, :func:`bernoulli_coalitions`.

The explained value as a function of coalitions is a :class:`Game` (:func:`coalition_game`): ``v(S)`` is the
model's value with the groups in ``S`` at the input and the others at the baseline, evaluated for many
coalitions per forward pass (:func:`attrfx.ablation.perturbed_values`).

The global RNG is never read or advanced; samples are made on the generator's device and moved to ``device``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional

import torch
from torch import Tensor

from .ablation import (coalition_keeps, feature_groups, feature_masks, kept_points, perturbations_per_pass,
                       output_values, perturbed_values, spread)
from .inputs import Inputs, as_tuple, format_args, format_baselines, restore
from .selectors import Target, format_target


class Game(NamedTuple):
    """The explained value of a batch as a set function of its feature groups, validated once per call."""

    model: Callable
    xs: tuple[Tensor, ...]
    was_tuple: bool
    args: tuple
    target: Target
    bs: tuple[Tensor, ...]     # one baseline per input, broadcastable to it
    ids: Tensor                # the feature ids, sorted: group g is id ids[g]
    groups: tuple[Tensor, ...]  # the masks renumbered 0 .. G−1

    @property
    def n_groups(self) -> int:
        return self.ids.numel()

    @property
    def n_examples(self) -> int:
        return self.xs[0].shape[0]

    def per_pass(self, count: int, perturbations_per_eval: Optional[int]) -> int:
        """How many of ``count`` coalitions share a forward pass (:func:`~attrfx.ablation.perturbations_per_pass`)."""
        return perturbations_per_pass(perturbations_per_eval, self.xs, count)

    def points(self, present: Tensor) -> tuple[Tensor, ...]:
        """The inputs the model sees for coalitions ``present`` (``[P, G]`` or ``[P, N, G]``): ``[P·N, ...]`` each."""
        return kept_points(self.xs, self.bs, coalition_keeps(self.groups, present))

    def values(self, present: Tensor, per_pass: int, counting: Callable = lambda f: f) -> Tensor:
        """``v`` at each coalition of ``present`` for each example, ``[P, N]``, ``per_pass`` coalitions per forward
        pass (no gradients); ``counting`` wraps the function run once per pass (a progress bar's)."""
        explained = output_values(self.model, self.target, len(self.xs), self.n_examples)
        count = present.shape[0]
        return perturbed_values(counting(explained), lambda start, stop: self.points(present[start:stop]), count,
                                self.args, self.n_examples, per_pass)[:, 0]

    def result(self, per_group: Tensor) -> Inputs:
        """A value per example and group (``[N, G]``) given to every element of the group, in the inputs' structure."""
        return restore(tuple(v[0] for v in spread(per_group[None], self.groups, self.xs)), self.was_tuple)


def coalition_game(model: Callable, inputs: Inputs, baselines: Any, target: Any, additional_forward_args: Any,
                   feature_mask: Any) -> Game:
    """Validate the arguments of a coalition method and set up its :class:`Game` (no pass of the model).

    Any integer ids serve (a group per distinct id across the inputs' masks; None: one per element). Inputs may be
    integer (token ids): nothing is differentiated.

    Example:
        >>> game = coalition_game(lambda x: x.sum(1), torch.ones(1, 3), None, None, None, torch.tensor([[4, 4, 9]]))
        >>> game.values(torch.tensor([[True, False], [False, True]]), 2).tolist()
        [[2.0], [1.0]]
    """
    xs, was_tuple = as_tuple(inputs)
    args = format_args(additional_forward_args)
    target = format_target(target, xs[0].shape[0])
    bs = format_baselines(baselines, xs)
    ids, groups = feature_groups(feature_masks(feature_mask, xs))
    return Game(model, xs, was_tuple, args, target, bs, ids, groups)


def permutations(n: int, groups: int, generator: torch.Generator, device: Optional[torch.device] = None) -> Tensor:
    """``n`` orderings of the groups, each uniform over the ``G!`` orderings: ``[n, G]`` (row: the order in which
    the groups join).

    Example:
        >>> sorted(permutations(3, 4, torch.Generator().manual_seed(0))[0].tolist())
        [0, 1, 2, 3]
    """
    keys = torch.rand((n, groups), generator=generator, dtype=torch.float64, device=generator.device)
    return keys.argsort(1).to(device or generator.device)


def antithetic_permutations(n: int, groups: int, generator: torch.Generator, device: Optional[torch.device] = None,
                            turns: int = 2) -> Tensor:
    """``n`` orderings in antithetic pairs ``(π, π reversed)``, in blocks of ``turns`` pairs: ``π`` turned by
    ``j·G/turns`` places for ``j < turns``, each followed by its reverse. ``[n, G]``; a short last block is cut.

    Each ordering is uniform (a fixed turn of a uniform ordering is uniform), so averages over them stay unbiased.
    Within a pair a group that joins late in one joins early in the other: for a value with interactions between
    pairs of groups at most (``v(S) = Σ aᵢ + Σ bᵢⱼ`` over the groups and pairs in ``S``) a pair's mean
    contribution is the Shapley value exactly. The turns spread each group's positions within a block over the
    whole walk (with two: ``p``, ``G−1−p``, and the same half a walk away), a stratification of the coalition
    sizes it joins.

    Example:
        >>> orders = antithetic_permutations(4, 6, torch.Generator().manual_seed(0))
        >>> torch.equal(orders[1], orders[0].flip(0)), torch.equal(orders[2], orders[0].roll(3))
        (True, True)
    """
    blocks = -(-n // (2 * turns))
    first = permutations(blocks, groups, generator, device)
    turned = torch.stack([first.roll(j * groups // turns, 1) for j in range(turns)], 1)   # [blocks, turns, G]
    return torch.stack([turned, turned.flip(2)], 2).reshape(-1, groups)[:n]


def walk_coalitions(orders: Tensor) -> Tensor:
    """The coalitions met walking each ordering from the baseline to the input, the empty and the full one left out:
    ``[n·(G−1), G]``, row ``k`` of ordering ``p`` holding its first ``k + 1`` groups.

    Example:
        >>> walk_coalitions(torch.tensor([[2, 0, 1]])).int().tolist()
        [[0, 0, 1], [1, 0, 1]]
    """
    n, g = orders.shape
    ranks = orders.argsort(1)
    steps = torch.arange(1, g, device=orders.device)
    return (ranks[:, None, :] < steps[None, :, None]).reshape(n * (g - 1), g)


def walk_contributions(orders: Tensor, walk: Tensor) -> Tensor:
    """Each group's marginal contribution on each walk: ``walk[p, k]`` is the value with the first ``k`` groups of
    ordering ``p`` (``[n, G + 1, ...]``, from ``v(∅)`` to ``v(all)``); the result ``[n, G, ...]`` is indexed by
    group. Each walk's contributions sum to ``v(all) − v(∅)``.

    Example:
        >>> walk_contributions(torch.tensor([[1, 0]]), torch.tensor([[0.0, 5.0, 7.0]])).tolist()
        [[2.0, 5.0]]
    """
    steps = walk[:, 1:] - walk[:, :-1]                        # step k: group orders[:, k] joins
    ranks = orders.argsort(1)
    index = ranks.reshape(ranks.shape + (1,) * (steps.dim() - 2)).expand_as(steps)
    return steps.gather(1, index)


def coalitions_of_codes(codes: Tensor, groups: int) -> Tensor:
    """The coalitions numbered ``codes``: group ``j`` is present where bit ``j`` of the code is set, ``[C, G]``.

    Example:
        >>> coalitions_of_codes(torch.arange(4), 2).int().tolist()
        [[0, 0], [1, 0], [0, 1], [1, 1]]
    """
    bits = torch.arange(groups, device=codes.device)
    return (codes[:, None] >> bits) & 1 == 1


def shapley_coefficients(present: Tensor) -> Tensor:
    """The weight of ``v(S)`` in each group's Shapley value, for the coalitions ``present`` (``[C, G]``): ``[C, G]``,
    float64.

    ``φⱼ = Σ_{S∌j} w(|S|)·(v(S ∪ {j}) − v(S))`` with ``w(s) = s!(G−1−s)!/G!``, so ``v(S)`` enters ``φⱼ`` with
    ``w(|S|−1)`` where ``j ∈ S`` and ``−w(|S|)`` where not; summed over all ``2^G`` coalitions this is exact.

    Example:
        >>> shapley_coefficients(coalitions_of_codes(torch.arange(4), 2)).tolist()
        [[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]]
    """
    g = present.shape[1]
    w = [0.0] + [1.0 / (g * math.comb(g - 1, s)) for s in range(g)] + [0.0]   # w(s) at s + 1; w(−1) = w(G) = 0
    w = torch.tensor(w, dtype=torch.float64, device=present.device)
    size = present.sum(1, keepdim=True)
    return torch.where(present, w[size], -w[size + 1])


def shapley_kernel_sizes(groups: int) -> Tensor:
    """The Shapley kernel's distribution of coalition sizes ``1 .. G−1``: ``p(s) ∝ (G−1) / (s(G−s))``, ``[G−1]``.

    Example:
        >>> [round(p, 4) for p in shapley_kernel_sizes(4).tolist()]
        [0.3636, 0.2727, 0.3636]
    """
    s = torch.arange(1, groups, dtype=torch.float64)
    p = (groups - 1) / (s * (groups - s))
    return p / p.sum()


def sized_coalitions(sizes: Tensor, groups: int, generator: torch.Generator) -> Tensor:
    """One coalition per entry of ``sizes`` (any shape), uniform among those of that size: ``[*sizes.shape, G]``.

    Example:
        >>> sized_coalitions(torch.tensor([0, 2, 3]), 3, torch.Generator().manual_seed(0)).sum(-1).tolist()
        [0, 2, 3]
    """
    keys = torch.rand(tuple(sizes.shape) + (groups,), generator=generator, dtype=torch.float64,
                      device=generator.device)
    return keys.argsort(-1).argsort(-1) < sizes.to(generator.device)[..., None]


def kernel_shap_coalitions(n: int, n_examples: int, groups: int, generator: torch.Generator,
                           device: Optional[torch.device] = None) -> Tensor:
    """KernelSHAP's ``n`` coalitions per example, ``[n, N, G]``: the full one, the empty one, then coalitions whose
    sizes follow :func:`shapley_kernel_sizes`, uniform within a size, in complementary pairs (``S``, then the
    groups not in ``S``; an odd count ends unpaired).

    Each drawn coalition has the kernel's distribution (the kernel is symmetric in ``s ↔ G − s``); pairing makes
    the least-squares fit see both sides of every coalition, which cancels much of its sampling error. With one
    group, every coalition is full or empty, so they alternate.

    Example:
        >>> z = kernel_shap_coalitions(6, 1, 5, torch.Generator().manual_seed(0))[:, 0].int()
        >>> z[:2].tolist(), torch.equal(z[2], 1 - z[3])
        ([[1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], True)
    """
    ends = torch.tensor([True, False], device=generator.device)
    if groups < 2:
        drawn = ends.repeat(-(-n // 2))[:n, None, None].expand(n, n_examples, groups)
        return drawn.to(device or generator.device)
    pairs = -(-max(n - 2, 0) // 2)
    sizes = torch.multinomial(shapley_kernel_sizes(groups).to(generator.device), pairs * n_examples,
                              replacement=True, generator=generator).reshape(pairs, n_examples) + 1
    drawn = sized_coalitions(sizes, groups, generator)
    paired = torch.stack([drawn, ~drawn], 1).reshape(2 * pairs, n_examples, groups)
    first = ends[:, None, None].expand(2, n_examples, groups)
    return torch.cat([first, paired])[:n].to(device or generator.device)


def bernoulli_coalitions(n: int, n_examples: int, groups: int, generator: torch.Generator,
                         device: Optional[torch.device] = None, p: float = 0.5) -> Tensor:
    """LIME's coalitions, ``[n, N, G]``: each group present with probability ``p``, independently.

    Example:
        >>> bernoulli_coalitions(4, 2, 3, torch.Generator().manual_seed(0)).shape
        torch.Size([4, 2, 3])
    """
    keys = torch.rand((n, n_examples, groups), generator=generator, dtype=torch.float64, device=generator.device)
    return (keys < p).to(device or generator.device)
