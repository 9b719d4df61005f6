"""shapley_values and shapley_value_sampling: parity with Captum 0.9.0, the Shapley laws, sampling, errors.

Captum accumulates its Shapley attributions in float32 whatever the model's dtype (attrfx keeps the output's
dtype), so parity is checked at the float32 tolerance. Sampling: where every ordering gives the same answer (an
additive model) attrfx equals Captum exactly; elsewhere the estimate is unbiased (mean over generator seeds) and
its antithetic pairs are exact for games with pairwise interactions only.
"""

import math

import pytest
import torch
from captum.attr import ShapleyValues, ShapleyValueSampling
from hypothesis import given, strategies as st
from torch import nn

import attrfx
from attrfx import axioms
from attrfx.coalitions import (antithetic_permutations, coalitions_of_codes, permutations, shapley_coefficients,
                               walk_coalitions, walk_contributions)
from attrfx.testing import mlps
from models import MLP, MultiInput, randn, seeded
from parity import close, gen





class Additive(nn.Module):
    """``F(x)ₖ = Σᵢ cₖᵢ sin(xᵢ) + |cₖᵢ| xᵢ³``, a sum of one-feature terms: every ordering gives the Shapley value."""

    def __init__(self, width=5, outputs=3):
        super().__init__()
        self.c = nn.Parameter(torch.randn(outputs, width))

    def forward(self, x, scale=None):
        out = torch.sin(x.flatten(1)) @ self.c.T + x.flatten(1).pow(3) @ self.c.abs().T
        return out if scale is None else out * scale


class AdditivePair(nn.Module):
    """Two inputs, additive across all their elements."""

    def forward(self, a, b):
        value = torch.tanh(a).sum(1) + 2 * b.pow(2).flatten(1).sum(1)
        return value[:, None] * torch.tensor([1.0, -3.0], dtype=a.dtype)


def pairwise(x):
    """A game with interactions between pairs of features only: ``Σ aᵢxᵢ + Σ bᵢⱼ xᵢxⱼ``."""
    a = torch.arange(1.0, x.shape[1] + 1, dtype=x.dtype)
    b = torch.arange(x.shape[1] ** 2, dtype=x.dtype).reshape(x.shape[1], -1).sin()
    return x @ a + ((x @ b) * x).sum(1)


MASKS = {
    "none": None,
    "shared": torch.tensor([[0, 0, 1, 2, 2]]),
    "ids not from 0": torch.tensor([[4, 1, 1, 3, 4]]),
    "per example": torch.tensor([[0, 1, 1, 2, 2], [2, 2, 0, 1, 1], [1, 0, 2, 0, 0]]),
}


# --- shapley_values: exact, equal to Captum's ShapleyValues ----------------------------------------------------------

@pytest.mark.parametrize("mask", list(MASKS.values()), ids=list(MASKS))
@pytest.mark.parametrize("baselines", [None, 0.5, randn(1, 5, seed=4), randn(3, 5, seed=5)],
                         ids=["none", "number", "row", "per-example"])
@pytest.mark.parametrize("target", [0, [2, 1, 0], torch.tensor([1])], ids=["int", "list", "tensor"])
def test_shapley_values_equal_captum(mask, baselines, target):
    model, x = seeded(MLP), randn(3, 5)
    ours = attrfx.shapley_values(model, x, baselines=baselines, target=target, feature_mask=mask)
    theirs = ShapleyValues(model).attribute(x, baselines=baselines, target=target, feature_mask=mask)
    close(ours, theirs)
    assert ours.dtype == torch.float64


@pytest.mark.parametrize("ppe", [1, 3, None])
def test_shapley_values_tuple_inputs_ids_across_inputs_and_forward_args(ppe):
    model = seeded(MultiInput, dtype=torch.float32)
    xs = (randn(2, 4, dtype=torch.float32), randn(2, 3, seed=2, dtype=torch.float32))
    mask = (torch.tensor([[0, 1, 1, 2]]), torch.tensor([[2, 0, 3]]))
    scale = randn(2, 1, seed=3, dtype=torch.float32)
    base = (0.25, randn(1, 3, seed=9, dtype=torch.float32))
    ours = attrfx.shapley_values(model, xs, baselines=base, target=1, additional_forward_args=(scale, True),
                                 feature_mask=mask, perturbations_per_eval=ppe)
    theirs = ShapleyValues(model).attribute(xs, baselines=base, target=1, additional_forward_args=(scale, True),
                                            feature_mask=mask, perturbations_per_eval=ppe or 1)
    assert isinstance(ours, tuple) and len(ours) == 2
    close(ours, theirs)


def test_shapley_values_of_token_ids():
    """Integer inputs: nothing is differentiated; the baseline is a token id."""
    model = seeded(lambda: nn.Sequential(nn.Embedding(9, 3), nn.Flatten(), nn.Tanh(), nn.Linear(12, 2)))
    ids = torch.tensor([[1, 4, 2, 8], [3, 3, 0, 5]])
    ours = attrfx.shapley_values(model, ids, baselines=0, target=1)
    close(ours, ShapleyValues(model).attribute(ids, baselines=0, target=1))
    assert ours.dtype == torch.float64


def test_exact_weights_are_the_orderings_average():
    """The coefficient form equals averaging marginal contributions over all G! orderings, done by hand."""
    g = 4
    present = coalitions_of_codes(torch.arange(2 ** g), g)
    v = torch.randn(2 ** g, dtype=torch.float64, generator=gen(3))
    exact = shapley_coefficients(present).T @ v
    import itertools
    orders = torch.tensor(list(itertools.permutations(range(g))))
    codes = lambda order, k: sum(1 << int(j) for j in order[:k])  # noqa: E731
    walk = torch.stack([torch.stack([v[codes(o, k)] for k in range(g + 1)]) for o in orders])
    torch.testing.assert_close(walk_contributions(orders, walk).mean(0), exact)


def test_too_many_groups_for_exact_values_is_an_error():
    with pytest.raises(attrfx.AttrfxValueError, match="shapley_values: `feature_mask` must be a grouping into at "
                                                      "most 24 feature groups .*; got 30 groups"):
        attrfx.shapley_values(lambda x: x.sum(1), torch.ones(1, 30))


# --- shapley_value_sampling: equal to Captum where the sample cannot matter --------------------------------------

@pytest.mark.parametrize("mask", list(MASKS.values()), ids=list(MASKS))
@pytest.mark.parametrize("n_samples", [1, 2, 5])
@pytest.mark.parametrize("ppe", [1, 4, None])
def test_sampling_on_an_additive_model_equals_captum(mask, n_samples, ppe):
    model, x = seeded(Additive), randn(3, 5)
    scale = randn(3, 1, seed=6)
    ours = attrfx.shapley_value_sampling(model, x, baselines=randn(1, 5, seed=2), target=[0, 2, 1],
                                         additional_forward_args=scale, feature_mask=mask, n_samples=n_samples,
                                         perturbations_per_eval=ppe, generator=gen())
    theirs = ShapleyValueSampling(model).attribute(x, baselines=randn(1, 5, seed=2), target=[0, 2, 1],
                                                   additional_forward_args=scale, feature_mask=mask,
                                                   n_samples=n_samples, perturbations_per_eval=ppe or 1)
    close(ours, theirs)


def test_sampling_on_an_additive_model_tuple_inputs_equal_captum():
    model, xs = AdditivePair(), (randn(2, 3), randn(2, 2, 2, seed=3))
    mask = (torch.tensor([[0, 1, 1]]), torch.tensor([[[2, 0], [3, 3]]]))
    ours = attrfx.shapley_value_sampling(model, xs, target=1, feature_mask=mask, n_samples=3, generator=gen())
    close(ours, ShapleyValueSampling(model).attribute(xs, target=1, feature_mask=mask, n_samples=3))


def test_sampling_is_unbiased():
    """Over many generator seeds the mean estimate is the exact value (within 5 standard errors), like Captum's."""
    model, x, mask = seeded(MLP), randn(2, 5), MASKS["shared"]
    exact = attrfx.shapley_values(model, x, target=0, feature_mask=mask)
    runs = torch.stack([attrfx.shapley_value_sampling(model, x, target=0, feature_mask=mask, n_samples=1,
                                                      generator=gen(s)) for s in range(300)])
    error = (runs.mean(0) - exact).abs()
    spread = runs.std(0) / math.sqrt(runs.shape[0])
    assert (error <= 5 * spread + 1e-12).all()
    assert (runs.std(0) > 0).any()      # the sample matters here: the check above is not trivial


def test_antithetic_pairs_are_exact_with_pairwise_interactions():
    """One ordering and its reverse give the Shapley values of ``Σ aᵢxᵢ + Σ bᵢⱼxᵢxⱼ``; one ordering alone does not."""
    x = randn(3, 5)
    exact = attrfx.shapley_values(pairwise, x)
    pair = attrfx.shapley_value_sampling(pairwise, x, n_samples=2, generator=gen(1))
    torch.testing.assert_close(pair, exact)
    single = attrfx.shapley_value_sampling(pairwise, x, n_samples=1, generator=gen(1))
    assert not torch.allclose(single, exact)


@pytest.mark.parametrize("draw", [permutations, antithetic_permutations])
def test_orderings_are_uniform_and_paired(draw):
    orders = draw(6000, 3, gen(2))
    counts = torch.bincount(orders[:, 0] * 9 + orders[:, 1] * 3 + orders[:, 2], minlength=27)
    seen = counts[counts > 0]
    assert seen.numel() == 6 and (seen - 1000).abs().max() < 150        # 3! orderings, ~1000 each (sd ≈ 29)
    pairs = antithetic_permutations(5, 4, gen(2))
    assert torch.equal(pairs[1], pairs[0].flip(0)) and torch.equal(pairs[3], pairs[2].flip(0))
    assert torch.equal(pairs[2], pairs[0].roll(2))                        # the pair turned by half a walk
    assert sorted(pairs[4].tolist()) == [0, 1, 2, 3] and not torch.equal(pairs[4], pairs[0])


def test_a_walk_meets_each_prefix():
    coalitions = walk_coalitions(torch.tensor([[1, 3, 0, 2]]))
    assert coalitions.int().tolist() == [[0, 1, 0, 0], [0, 1, 0, 1], [1, 1, 0, 1]]


# --- the laws, for every sample ----------------------------------------------------------------------------------

@st.composite
def games(draw):
    model = draw(mlps(n_inputs=5, n_outputs=2))
    x = torch.randn(draw(st.integers(1, 3)), 5, generator=gen(draw(st.integers(0, 999))), dtype=torch.float64)
    ids = draw(st.lists(st.integers(0, 3), min_size=5, max_size=5))
    base = draw(st.sampled_from([None, 0.3, -1.0]))
    return model, x, torch.tensor([ids]), base


def group_values(phi, mask):
    """One value per group: the value its elements hold."""
    ids = torch.unique(mask)
    return torch.stack([phi[:, (mask[0] == i).nonzero()[0, 0]] for i in ids], 1)


@given(case=games(), n_samples=st.integers(1, 4), seed=st.integers(0, 99), exact=st.booleans())
def test_efficiency_for_every_sample(case, n_samples, seed, exact):
    model, x, mask, base = case
    phi = (attrfx.shapley_values(model, x, baselines=base, target=1, feature_mask=mask) if exact else
           attrfx.shapley_value_sampling(model, x, baselines=base, target=1, feature_mask=mask, n_samples=n_samples,
                                         generator=gen(seed)))
    change = axioms.output_difference(model, x, baselines=base, target=1)
    torch.testing.assert_close(group_values(phi, mask).sum(1), change, rtol=1e-9, atol=1e-12)


@given(case=games(), seed=st.integers(0, 99), exact=st.booleans())
def test_a_group_the_model_ignores_gets_zero(case, seed, exact):
    """Dummy: a group the model never reads has no effect on any coalition, so it gets zero (to rounding: the same
    row can come out of a batched matmul a last bit apart at another position in the batch)."""
    model, x, mask, base = case
    ignored = mask.max() + 1
    wide = torch.cat([x, torch.randn(x.shape[0], 2, generator=gen(seed), dtype=x.dtype)], 1)
    reads = lambda z: model(z[:, :5])  # noqa: E731
    wide_mask = torch.cat([mask, torch.full((1, 2), int(ignored))], 1)
    kw = dict(baselines=base, target=0, feature_mask=wide_mask)
    phi = (attrfx.shapley_values(reads, wide, **kw) if exact else
           attrfx.shapley_value_sampling(reads, wide, n_samples=3, generator=gen(seed), **kw))
    torch.testing.assert_close(phi[:, 5:], torch.zeros_like(phi[:, 5:]), rtol=0, atol=1e-14)


@given(seed=st.integers(0, 999), n=st.integers(1, 3))
def test_symmetric_groups_get_equal_values(seed, n):
    """Symmetry: groups the model treats alike (swapping them changes no coalition's value) get equal values."""
    model = seeded(lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)), seed=seed)
    x = torch.randn(n, 2, generator=gen(seed), dtype=torch.float64)
    swapped = lambda z: model(torch.stack([z[:, 0] + z[:, 1], z[:, 0] * z[:, 1], z[:, 2]], 1))  # noqa: E731
    z = torch.cat([x[:, :1], x[:, :1], x[:, 1:]], 1)      # features 0 and 1 equal, and their baselines too
    phi = attrfx.shapley_values(swapped, z)
    torch.testing.assert_close(phi[:, 0], phi[:, 1], rtol=1e-12, atol=1e-12)


# --- mechanisms: evaluations, batching, randomness, progress, state ---------------------------------------------------

class Counting:
    def __init__(self, model):
        self.model, self.passes, self.rows = model, 0, 0

    def __call__(self, *args):
        self.passes += 1
        self.rows += args[0].shape[0]
        return self.model(*args)


def test_sampling_costs_g_minus_one_evaluations_per_ordering():
    """``v(∅)`` and ``v(all)`` are shared: ``n·(G−1) + 2`` evaluations per example (Captum: ``n·G + 1``)."""
    model, x, mask = Counting(seeded(MLP)), randn(4, 5), MASKS["shared"]
    attrfx.shapley_value_sampling(model, x, target=0, feature_mask=mask, n_samples=6, generator=gen())
    assert model.rows == (6 * 2 + 2) * 4 and model.passes == 1
    attrfx.shapley_values(model, x, target=0, feature_mask=mask, perturbations_per_eval=3)
    assert model.rows - (6 * 2 + 2) * 4 == 2 ** 3 * 4 and model.passes == 1 + 3


@pytest.mark.parametrize("method", ["shapley_values", "shapley_value_sampling"])
def test_perturbations_per_eval_never_changes_the_result(method):
    model, x = seeded(MLP), randn(3, 5)
    call = lambda ppe: getattr(attrfx, method)(  # noqa: E731
        model, x, target=2, feature_mask=MASKS["per example"], perturbations_per_eval=ppe,
        **({"generator": gen(4), "n_samples": 5} if method == "shapley_value_sampling" else {}))
    first = call(1)
    for ppe in (2, 7, None):
        torch.testing.assert_close(call(ppe), first, rtol=1e-12, atol=1e-14)


def test_same_generator_state_same_result_and_the_global_rng_is_untouched():
    model, x = seeded(MLP), randn(2, 5)
    state = torch.get_rng_state()
    a = attrfx.shapley_value_sampling(model, x, target=0, n_samples=3, generator=gen(11))
    b = attrfx.shapley_value_sampling(model, x, target=0, n_samples=3, generator=gen(11))
    c = attrfx.shapley_value_sampling(model, x, target=0, n_samples=3, generator=gen(12))
    fresh = attrfx.shapley_value_sampling(model, x, target=0, n_samples=3)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)   # bit-equal but for batched-BLAS rounding
    assert not torch.allclose(a, c) and fresh.shape == a.shape
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("method,steps", [("shapley_values", 3), ("shapley_value_sampling", 4)])
def test_progress_bar_counts_forward_passes(method, steps, capsys):
    model, x = seeded(MLP), randn(2, 5)
    kw = dict(target=0, feature_mask=MASKS["shared"], perturbations_per_eval=3)
    if method == "shapley_value_sampling":
        kw.update(n_samples=5, generator=gen())                     # 5·2 + 2 = 12 coalitions, 3 per pass
    quiet = getattr(attrfx, method)(model, x, **kw)
    if method == "shapley_value_sampling":
        kw["generator"] = gen()
    shown = getattr(attrfx, method)(model, x, show_progress=True, **kw)
    err = capsys.readouterr().err
    assert f"{method}: 100%|" in err and f"| {steps}/{steps} [" in err
    torch.testing.assert_close(shown, quiet, rtol=1e-12, atol=1e-14)


def test_model_and_inputs_are_left_as_they_were():
    model, x = seeded(MLP), randn(2, 5)
    before = axioms.state_of(model, x)
    attrfx.shapley_value_sampling(model, x, target=0, n_samples=2, generator=gen())
    attrfx.shapley_values(model, x, target=0, feature_mask=MASKS["shared"])
    assert axioms.state_changes(before, axioms.state_of(model, x)) == []


# --- bad input ----------------------------------------------------------------------------------------------------

ERRORS = [
    (dict(n_samples=0), ValueError, ["shapley_value_sampling: `n_samples` must be a positive int; got 0."]),
    (dict(n_samples=2.0), TypeError, ["`n_samples` must be a positive int; got float."]),
    (dict(generator=3), TypeError, ["`generator` must be None or a torch.Generator; got int."]),
    (dict(feature_mask=torch.zeros(1, 4, dtype=torch.long)), ValueError,
     ["`feature_mask[0]` must be a tensor that broadcasts to the input shape (2, 5)", "shape (1, 4)"]),
    (dict(feature_mask=torch.zeros(2, 5)), ValueError, ["`feature_mask[0]` must be a tensor of integer feature ids",
                                                       "torch.float32"]),
    (dict(feature_mask="mask"), TypeError, ["`feature_mask[0]` must be a torch.Tensor", "str"]),
    (dict(perturbations_per_eval=0), ValueError, ["`perturbations_per_eval` must be a positive int; got 0."]),
    (dict(target=7), ValueError, ["`target` must be in range"]),
]


@pytest.mark.parametrize("kwargs,error,fragments", ERRORS,
                         ids=[f"{i}-{next(iter(e[0]))}" for i, e in enumerate(ERRORS)])
def test_bad_input_is_named(kwargs, error, fragments):
    import re
    for method in ("shapley_value_sampling", "shapley_values"):
        if method == "shapley_values" and ("n_samples" in kwargs or "generator" in kwargs):
            continue
        with pytest.raises(error, match=".*".join(re.escape(f) for f in fragments)):
            getattr(attrfx, method)(seeded(MLP), randn(2, 5), **{"target": 0, **kwargs})
