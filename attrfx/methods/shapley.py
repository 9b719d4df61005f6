"""Shapley values of feature groups: each group's average change of the explained value when it joins a coalition.

The explained value of a coalition ``S`` of feature groups is ``v(S) = F(x on S, baseline elsewhere)``
(:class:`~attrfx.coalitions.Game`). :func:`shapley_values` weighs all ``2^G`` coalitions exactly;
:func:`shapley_value_sampling` averages the groups' contributions along sampled orderings, in antithetic pairs
(an ordering and its reverse), each ordering one walk from the baseline to the input whose contributions sum to
``F(x) − F(b)`` (efficiency holds for every sample). No gradients; the coalitions of many walks share a forward
pass. The primitives are in :mod:`attrfx.coalitions`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn  # noqa: F401 (the examples use nn)

from .._api import public
from .._errors import bad_value, check_count
from .._progress import progress
from ..coalitions import (Game, antithetic_permutations, coalition_game, coalitions_of_codes, shapley_coefficients,
                          walk_coalitions, walk_contributions)
from ..noise import make_generator

MAX_EXACT_GROUPS = 24
""":func:`shapley_values` evaluates ``2^G`` coalitions per example: at most this many groups."""

EXACT_BLOCK = 1 << 14
""":func:`shapley_values` weighs the coalitions in blocks of about this many (memory)."""


@public
def shapley_value_sampling(model, inputs, *, baselines=None, target=None, additional_forward_args=None,
                           feature_mask=None, n_samples=25, perturbations_per_eval=None, show_progress=False,
                           generator=None):
    """Shapley value sampling: each feature group's change of ``F`` when it joins, averaged over random orderings.

    ``φⱼ ≈ (1/n) Σₚ v(Sₚⱼ ∪ {j}) − v(Sₚⱼ)``, ``Sₚⱼ`` the groups before ``j`` in ordering ``p``. The ``n_samples``
    orderings come in antithetic pairs (each ordering, then its reverse), in blocks of four (the pair, and the pair
    turned by half a walk: :func:`~attrfx.coalitions.antithetic_permutations`): every ordering is uniform, so the
    mean is the Shapley value's unbiased estimate as in Captum, with less variance for the same evaluations (exact
    for models whose groups interact at most in pairs; ``benchmarks/RESULTS-shapley.md``). Each walk costs
    ``G − 1`` evaluations (``v(∅) = F(b)`` and ``v(all) = F(x)`` are shared), and its contributions sum to
    ``F(x) − F(b)``. Captum: ``ShapleyValueSampling``.

    Args:
        model: an ``nn.Module`` or forward function, one value per example (with ``target``).
        inputs: a tensor or tuple of tensors, dim 0 = examples (integer inputs too: nothing is differentiated).
        baselines: None (zeros), a number, a tensor broadcastable to each input, or a tuple.
        target: which output to explain (int, tuple, tensor, list, or a callable of the output).
        additional_forward_args: extra arguments passed to ``model`` after the inputs.
        feature_mask: integer ids per input, broadcastable to it; elements with one id (across inputs too) join
            together. None: every element is a group. Any integers serve as ids.
        n_samples: the number of orderings.
        perturbations_per_eval: coalitions per forward pass (Captum: 1; None lets attrfx choose within
            :data:`attrfx.ablation.PERTURBED_ELEMENTS`; the result is the same).
        show_progress: draw a progress bar, one step per forward pass.
        generator: the ``torch.Generator`` the orderings are drawn from (None: a fresh one).

    Returns:
        Attributions shaped like ``inputs``, every element of a group holding the group's value.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))
        >>> x, mask = torch.randn(2, 4), torch.tensor([[0, 0, 1, 2]])
        >>> phi = shapley_value_sampling(net, x, feature_mask=mask, generator=torch.Generator().manual_seed(0))
        >>> torch.allclose(phi[:, 1:].sum(1), (net(x) - net(torch.zeros(1, 4)))[:, 0])   # one value per group
        True

    References:
        Castro, Gómez & Tejada, "Polynomial calculation of the Shapley value based on sampling", 2009;
        Mitchell et al., "Sampling permutations for Shapley value estimation", 2022.
    """
    game = coalition_game(model, inputs, baselines, target, additional_forward_args, feature_mask)
    n_samples = check_count("n_samples", n_samples)
    orders = antithetic_permutations(n_samples, game.n_groups, make_generator(generator), game.xs[0].device)
    ends = torch.tensor([[False], [True]], device=orders.device).expand(2, game.n_groups)
    present = torch.cat([ends, walk_coalitions(orders)])
    v = coalition_values(game, present, perturbations_per_eval, "shapley_value_sampling", show_progress)
    walk = torch.cat([v[:1].expand(n_samples, 1, -1), v[2:].reshape(n_samples, game.n_groups - 1, game.n_examples),
                      v[1:2].expand(n_samples, 1, -1)], 1)                  # [n, G + 1, N]: v(∅) .. v(all)
    return game.result(walk_contributions(orders, walk).mean(0).T)


@public
def shapley_values(model, inputs, *, baselines=None, target=None, additional_forward_args=None, feature_mask=None,
                   perturbations_per_eval=None, show_progress=False):
    """Exact Shapley values of feature groups, from all ``2^G`` coalitions.

    ``φⱼ = Σ_{S∌j} |S|!(G−|S|−1)!/G! · (v(S ∪ {j}) − v(S))``: each coalition is evaluated once and enters every
    group's value with its weight (:func:`~attrfx.coalitions.shapley_coefficients`), accumulated in float64.
    Captum (``ShapleyValues``) walks all ``G!`` orderings, ``G·G!`` evaluations; the values are the same.

    Args:
        model: an ``nn.Module`` or forward function, one value per example (with ``target``).
        inputs: a tensor or tuple of tensors, dim 0 = examples.
        baselines: None (zeros), a number, a tensor broadcastable to each input, or a tuple.
        target: which output to explain.
        additional_forward_args: extra arguments passed to ``model`` after the inputs.
        feature_mask: integer ids per input, broadcastable to it (at most :data:`MAX_EXACT_GROUPS` distinct ids).
            None: every element is a group.
        perturbations_per_eval: coalitions per forward pass (Captum: 1; None lets attrfx choose; the result is
            the same).
        show_progress: draw a progress bar, one step per forward pass.

    Returns:
        Attributions shaped like ``inputs``; they sum to ``F(x) − F(b)`` per example.

    Example:
        >>> f = lambda x: x[:, 0] * x[:, 1] + x[:, 2]
        >>> shapley_values(f, torch.tensor([[2.0, 3.0, 1.0]])).tolist()
        [[3.0, 3.0, 1.0]]

    References:
        Shapley, "A value for n-person games", 1953.
    """
    game = coalition_game(model, inputs, baselines, target, additional_forward_args, feature_mask)
    g = game.n_groups
    if g > MAX_EXACT_GROUPS:
        raise bad_value("feature_mask", f"a grouping into at most {MAX_EXACT_GROUPS} feature groups (exact Shapley "
                        f"values evaluate 2^G coalitions; use shapley_value_sampling for more)", f"{g} groups")
    total = 1 << g
    per_pass = game.per_pass(total, perturbations_per_eval)
    block = per_pass * -(-min(EXACT_BLOCK, total) // per_pass)
    phi = torch.zeros(game.n_examples, g, dtype=torch.float64, device=game.xs[0].device)
    with progress("shapley_values", -(-total // per_pass), enabled=show_progress) as bar:
        for start in range(0, total, block):
            present = coalitions_of_codes(torch.arange(start, min(start + block, total), device=phi.device), g)
            v = game.values(present, per_pass, bar.counting)
            phi += v.T.double() @ shapley_coefficients(present)
    return game.result(phi.to(v.dtype))


def coalition_values(game: Game, present: Tensor, perturbations_per_eval, name: str, show_progress: bool) -> Tensor:
    """:meth:`~attrfx.coalitions.Game.values` at ``present`` (``[P, N]``), under method ``name``'s progress bar of
    its forward passes."""
    per_pass = game.per_pass(present.shape[0], perturbations_per_eval)
    with progress(name, -(-present.shape[0] // per_pass), enabled=show_progress) as bar:
        return game.values(present, per_pass, bar.counting)
