"""KernelSHAP and LIME: a weighted linear model of the explained value over sampled coalitions of feature groups.

Both evaluate the model at ``n_samples`` coalitions per example (:class:`~attrfx.coalitions.Game`), weigh each
perturbation, and fit a linear model of the values on the coalitions (:mod:`attrfx.surrogate`); its coefficients
are the attributions. They differ in three choices: which coalitions (KernelSHAP: sizes from the Shapley kernel,
in complementary pairs; LIME: each group kept with probability one half), the weights (KernelSHAP: 1, and a
large weight on the empty and the full coalition; LIME: an exponential kernel of the cosine distance to the
input) and the fit (KernelSHAP: weighted least squares, whose coefficients tend to the Shapley values; LIME:
lasso with ``alpha=0.01``). Every choice can be replaced.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import torch
from torch import Tensor, nn  # noqa: F401 (the examples use nn)

from .._api import public
from .._errors import bad_type, bad_value, check_count
from ..coalitions import Game, bernoulli_coalitions, coalition_game, kernel_shap_coalitions
from ..inputs import restore
from ..noise import make_generator
from ..surrogate import Fit, as_fit, cosine_kernel, kernel_shap_weights, lasso, weighted_least_squares
from .shapley import coalition_values


@public
def kernel_shap(model, inputs, *, baselines=None, target=None, additional_forward_args=None, feature_mask=None,
                n_samples=25, perturbations_per_eval=None, return_input_shape=True, show_progress=False,
                interpretable_model=None, generator=None):
    """KernelSHAP: the weighted least-squares fit of ``F`` over coalitions drawn from the Shapley kernel.

    The coalitions: the full one, the empty one, then sizes ``s`` with ``p(s) ∝ (M−1)/(s(M−s))``, uniform within
    a size, each followed by its complement (each drawn coalition has Captum's distribution; pairs halve much of
    the fit's sampling error). Weights: 1, and ``1e6`` on the empty and the full coalition, so the coefficients
    sum to ``F(x) − F(b)`` up to that weight. As ``n_samples`` grows they tend to the Shapley values of the
    feature groups. Captum: ``KernelShap``.

    Args:
        model: an ``nn.Module`` or forward function, one value per example (with ``target``).
        inputs: a tensor or tuple of tensors, dim 0 = examples (each example gets its own fit).
        baselines: None (zeros), a number, a tensor broadcastable to each input, or a tuple.
        target: which output to explain.
        additional_forward_args: extra arguments passed to ``model`` after the inputs.
        feature_mask: integer ids per input, broadcastable to it, numbered ``0 .. M−1`` (each id used, shared
            across inputs). None: every element is a feature.
        n_samples: coalitions per example (the first two: full and empty).
        perturbations_per_eval: coalitions per forward pass (Captum: 1; None lets attrfx choose; the result is
            the same).
        return_input_shape: attributions shaped like ``inputs``; False: the coefficients, ``[N, M]``.
        show_progress: draw a progress bar, one step per forward pass.
        interpretable_model: the fit, ``(X [N, S, M], y [N, S], w [N, S]) → [N, M]`` (default
            :func:`~attrfx.surrogate.weighted_least_squares`), or a Captum interpretable model (beyond Captum,
            whose KernelShap fixes it).
        generator: the ``torch.Generator`` the coalitions are drawn from (None: a fresh one).

    Returns:
        Attributions shaped like ``inputs``, or ``[N, M]`` coefficients.

    Example:
        >>> net = nn.Linear(4, 1)
        >>> x, mask = torch.randn(2, 4), torch.tensor([[0, 0, 1, 2]])
        >>> phi = kernel_shap(net, x, feature_mask=mask, return_input_shape=False,
        ...                   generator=torch.Generator().manual_seed(0))
        >>> torch.allclose(phi, torch.stack([(x[:, :2] * net.weight[0, :2]).sum(1), x[:, 2] * net.weight[0, 2],
        ...                                  x[:, 3] * net.weight[0, 3]], 1), atol=1e-5)
        True

    References:
        Lundberg & Lee, "A unified approach to interpreting model predictions", 2017;
        Covert & Lee, "Improving KernelSHAP", 2021.
    """
    game = _surrogate_game(model, inputs, baselines, target, additional_forward_args, feature_mask)
    n = check_count("n_samples", n_samples)
    fit = as_fit(interpretable_model, weighted_least_squares)
    present = kernel_shap_coalitions(n, game.n_examples, game.n_groups, make_generator(generator), game.xs[0].device)
    coefs = _fitted(game, present, present, kernel_shap_weights(present).T, fit, perturbations_per_eval,
                    "kernel_shap", show_progress)
    return game.result(coefs) if return_input_shape else coefs


@public
def lime(model, inputs, *, baselines=None, target=None, additional_forward_args=None, feature_mask=None,
         n_samples=25, perturbations_per_eval=None, return_input_shape=True, show_progress=False,
         interpretable_model=None, similarity_func=None, perturb_func=None, generator=None):
    """LIME: a weighted lasso fit of ``F`` over random coalitions, weighted by closeness to the input.

    Each example draws ``n_samples`` coalitions (each feature kept with probability 1/2), weighs each perturbed
    input ``x̃`` by ``exp(−(1 − cos(x, x̃))² / 2)`` and fits ``min Σ w (F − b − zβ)² / (2 Σ w) + 0.01‖β‖₁``.
    Captum: ``Lime`` (its defaults: ``SkLearnLasso(alpha=0.01)``, the cosine kernel of width 1, Bernoulli(1/2)).

    Args:
        model: an ``nn.Module`` or forward function, one value per example (with ``target``).
        inputs: a tensor or tuple of tensors, dim 0 = examples (each example gets its own fit).
        baselines: None (zeros), a number, a tensor broadcastable to each input, or a tuple.
        target: which output to explain.
        additional_forward_args: extra arguments passed to ``model`` after the inputs.
        feature_mask: integer ids per input, broadcastable to it, numbered ``0 .. M−1`` (each id used).
            None: every element is a feature.
        n_samples: perturbations per example.
        perturbations_per_eval: coalitions per forward pass (Captum: 1; None lets attrfx choose; the result is
            the same).
        return_input_shape: attributions shaped like ``inputs``; False: the coefficients, ``[N, M]``.
        show_progress: draw a progress bar, one step per forward pass.
        interpretable_model: the fit, ``(X [N, S, M], y [N, S], w [N, S]) → [N, M]`` (default
            :func:`~attrfx.surrogate.lasso`, ``alpha=0.01``), or a Captum interpretable model (``fit`` and
            ``representation``, e.g. ``SkLearnLasso(alpha=0.01)``).
        similarity_func: Captum's form, ``(inputs, perturbed_inputs, interpretable_sample, **kwargs) → weight``,
            called per example and sample; None: the cosine kernel (:func:`~attrfx.surrogate.cosine_kernel`).
        perturb_func: Captum's form, ``(inputs, **kwargs) → [1, M]`` interpretable sample (nonzero: kept), or a
            generator function yielding them, per example; None: Bernoulli(1/2) per feature. Both callables get
            the keyword arguments ``num_interp_features``, ``baselines``, ``feature_mask`` (of the example, as
            in Captum) and ``generator``.
        generator: the ``torch.Generator`` the default coalitions are drawn from (None: a fresh one).

    Returns:
        Attributions shaped like ``inputs``, or ``[N, M]`` coefficients.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))
        >>> lime(net, torch.randn(2, 4), n_samples=50, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([2, 4])

    References:
        Ribeiro, Singh & Guestrin, "Why should I trust you?": Explaining the predictions of any classifier, 2016.
    """
    game = _surrogate_game(model, inputs, baselines, target, additional_forward_args, feature_mask)
    n = check_count("n_samples", n_samples)
    fit = as_fit(interpretable_model, lasso)
    gen = make_generator(generator)
    if perturb_func is None:
        design = bernoulli_coalitions(n, game.n_examples, game.n_groups, gen, game.xs[0].device)
    else:
        design = _drawn(game, _callback("perturb_func", perturb_func), n, gen)
    present = design != 0
    if similarity_func is None:
        weights = cosine_kernel(game.xs, game.bs, game.groups, present).T
    else:
        weights = _similarities(game, _callback("similarity_func", similarity_func), design, present, gen)
    coefs = _fitted(game, design, present, weights, fit, perturbations_per_eval, "lime", show_progress)
    return game.result(coefs) if return_input_shape else coefs


def _surrogate_game(model, inputs, baselines, target, additional_forward_args, feature_mask) -> Game:
    """The game of a surrogate method, whose ids must be ``0 .. M−1``: the fit has one coefficient per id."""
    game = coalition_game(model, inputs, baselines, target, additional_forward_args, feature_mask)
    if not torch.equal(game.ids, torch.arange(game.n_groups, device=game.ids.device)):
        shown = game.ids.tolist()
        raise bad_value("feature_mask", "feature ids numbered 0 .. M-1, each id used (the surrogate has one "
                        "coefficient per id, in id order)", f"ids {shown if len(shown) <= 8 else shown[:8] + ['...']}")
    return game


def _fitted(game: Game, design: Tensor, present: Tensor, weights: Tensor, fit: Fit, perturbations_per_eval: Any,
            name: str, show_progress: bool) -> Tensor:
    """The fit's coefficients ``[N, M]`` for the model's values at coalitions ``present`` (``[S, N, M]``), the
    design ``design`` (``[S, N, M]``, the coalitions as numbers) and the weights ``[N, S]``."""
    values = coalition_values(game, present, perturbations_per_eval, name, show_progress)        # [S, N]
    x = design.transpose(0, 1).to(values.dtype)
    coefs = fit(x, values.T, weights.to(device=values.device, dtype=torch.float64))
    return torch.as_tensor(coefs, device=values.device).reshape(game.n_examples, game.n_groups).to(values.dtype)


def _callback(name: str, fn: Any) -> Callable:
    if not callable(fn):
        raise bad_type(name, "None or a callable in Captum's form", fn)
    return fn


def _example_kwargs(game: Game, i: int, gen: torch.Generator) -> tuple[Any, dict]:
    """Example ``i``'s inputs in the user's structure, and the keyword arguments Captum gives its callbacks."""
    one = lambda ts: restore(tuple(torch.broadcast_to(t, x.shape)[i:i + 1] for t, x in zip(ts, game.xs)),  # noqa
                             game.was_tuple)
    return one(game.xs), dict(num_interp_features=game.n_groups, baselines=one(game.bs),
                              feature_mask=one(game.groups), generator=gen)


def _drawn(game: Game, perturb_func: Callable, n: int, gen: torch.Generator) -> Tensor:
    """``n`` interpretable samples per example from a Captum-form ``perturb_func``: ``[n, N, M]``."""
    rows = []
    for i in range(game.n_examples):
        inputs, kwargs = _example_kwargs(game, i, gen)
        first = perturb_func(inputs, **kwargs)
        if isinstance(first, Iterator):
            samples = [next(first, None) for _ in range(n)]
        else:
            samples = [first] + [perturb_func(inputs, **kwargs) for _ in range(n - 1)]
        rows.append(torch.stack([_sample(s, game.n_groups) for s in samples]))
    return torch.stack(rows, 1).to(game.xs[0].device)


def _sample(sample: Any, m: int) -> Tensor:
    flat = None if sample is None else torch.as_tensor(sample).reshape(-1)
    if flat is None or flat.numel() != m:
        shown = "no sample (the generator ended)" if flat is None else f"{flat.numel()} values"
        raise bad_value("perturb_func", f"a function giving one interpretable sample of {m} values per call (or a "
                        f"generator of them, one per sample)", shown)
    return flat.cpu().double()


def _similarities(game: Game, similarity_func: Callable, design: Tensor, present: Tensor,
                  gen: torch.Generator) -> Tensor:
    """Each sample's weight from a Captum-form ``similarity_func``, called per example and sample: ``[N, S]``."""
    out = torch.empty(game.n_examples, design.shape[0], dtype=torch.float64)
    for s in range(design.shape[0]):
        points = game.points(present[s:s + 1])
        for i in range(game.n_examples):
            inputs, kwargs = _example_kwargs(game, i, gen)
            perturbed = restore(tuple(p[i:i + 1] for p in points), game.was_tuple)
            weight = similarity_func(inputs, perturbed, design[s, i][None].float(), **kwargs)
            out[i, s] = float(torch.as_tensor(weight).reshape(-1)[0])
    return out
