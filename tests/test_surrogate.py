"""kernel_shap, lime and the surrogate primitives: parity with Captum 0.9.0 and scikit-learn, convergence, errors.

Captum fits its surrogates with scikit-learn in float32 and returns float32 (attrfx fits in float64 and keeps the
output's dtype), so parity is checked at the float32 tolerance. Where the sample matters, the same coalitions are
given to both (a ``perturb_func`` that is a seeded generator function), and Captum's lasso is solved to
convergence (scikit-learn's default ``tol=1e-4`` stops early; attrfx's lasso converges).
"""

import functools
import math
import re

import numpy as np
import pytest
import torch
from captum._utils.models.linear_model import SkLearnLasso, SkLearnLinearRegression, SkLearnRidge
from captum.attr import KernelShap, Lime
from captum.attr._core.lime import get_exp_kernel_similarity_function
from sklearn.linear_model import Lasso, LinearRegression
from torch import nn

import attrfx
from attrfx import axioms
from attrfx.coalitions import kernel_shap_coalitions, shapley_kernel_sizes
from attrfx.surrogate import cosine_kernel, kernel_shap_weights, lasso, weighted_least_squares
from models import MLP, MultiInput, randn, seeded
from parity import close, gen, seeded_coalitions





def tight_lasso():
    return SkLearnLasso(alpha=0.01, tol=1e-6, max_iter=100000)



# --- the fits: equal to scikit-learn ---------------------------------------------------------------------------------

def design(seed, n=3, s=12, m=4):
    g = gen(seed)
    x = (torch.rand(n, s, m, generator=g) < 0.5).double()
    y = x @ torch.randn(m, generator=g, dtype=torch.float64) + 0.3 * torch.randn(n, s, generator=g, dtype=torch.float64)
    return x, y, torch.rand(n, s, generator=g, dtype=torch.float64) + 0.1


@pytest.mark.parametrize("shape", [(3, 12, 4), (2, 5, 8)], ids=["overdetermined", "underdetermined"])
def test_weighted_least_squares_is_sklearns_linear_regression(shape):
    x, y, w = design(1, *shape)
    ours = weighted_least_squares(x, y, w)
    for i in range(shape[0]):
        fitted = LinearRegression().fit(x[i].numpy(), y[i].numpy(), sample_weight=w[i].numpy())
        np.testing.assert_allclose(ours[i].numpy(), fitted.coef_, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("alpha", [0.001, 0.01, 0.3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lasso_is_sklearns_lasso(alpha, seed):
    x, y, w = design(seed, s=30, m=6)
    ours = lasso(x, y, w, alpha=alpha)
    for i in range(x.shape[0]):
        fitted = Lasso(alpha=alpha, tol=1e-14, max_iter=10**6).fit(x[i].numpy(), y[i].numpy(),
                                                                   sample_weight=w[i].numpy())
        np.testing.assert_allclose(ours[i].numpy(), fitted.coef_, rtol=1e-7, atol=1e-9)
    assert alpha < 0.3 or (ours == 0).any()   # a strong penalty zeroes some coefficients: the ℓ1 term is there


def test_cosine_kernel_is_captums_similarity():
    x, b = randn(3, 2, 5), randn(1, 2, 5, seed=4)
    groups = torch.tensor([[[0, 0, 1, 2, 2], [3, 3, 1, 0, 4]]])
    present = torch.rand(7, 3, 5, generator=gen(2)) < 0.5
    present[0] = False                      # the all-baseline perturbation too
    ours = cosine_kernel((x,), (b,), (groups,), present)
    captum = get_exp_kernel_similarity_function()
    for s in range(7):
        points = torch.where(present[s][torch.arange(3)[:, None], groups.reshape(1, -1)].reshape(x.shape), x, b)
        for i in range(3):
            assert math.isclose(ours[s, i].item(), captum(x[i:i + 1], points[i:i + 1], None), rel_tol=1e-6)


def test_kernel_shap_coalitions_follow_the_kernel_in_pairs():
    z = kernel_shap_coalitions(20002, 1, 6, gen(3))[:, 0]
    assert z[0].all() and not z[1].any()
    assert torch.equal(z[2::2], ~z[3::2])                      # each drawn coalition is followed by its complement
    sizes = torch.bincount(z[2::2].sum(1), minlength=6)[1:].double() / 10000
    torch.testing.assert_close(sizes, shapley_kernel_sizes(6), atol=0.015, rtol=0)
    assert kernel_shap_weights(z[:3]).tolist() == [1e6, 1e6, 1.0]


# --- kernel_shap ---------------------------------------------------------------------------------------------------

MASKS = {
    "none": None,
    "shared": torch.tensor([[0, 0, 1, 2, 2]]),
    "per example": torch.tensor([[0, 1, 1, 2, 2], [2, 2, 0, 1, 1], [1, 0, 2, 0, 0]]),
}


@pytest.mark.parametrize("mask", list(MASKS.values()), ids=list(MASKS))
@pytest.mark.parametrize("baselines", [None, 0.5, randn(1, 5, seed=4)], ids=["none", "number", "row"])
@pytest.mark.parametrize("return_input_shape", [True, False])
@pytest.mark.parametrize("ppe", [1, None])
def test_kernel_shap_on_a_linear_model_equals_captum(mask, baselines, return_input_shape, ppe):
    """On a linear model the fit is exact whatever the coalitions (given enough of them)."""
    model, x = seeded(lambda: nn.Linear(5, 3)), randn(3, 5)
    kw = dict(baselines=baselines, target=[0, 2, 1], feature_mask=mask, n_samples=40,
              return_input_shape=return_input_shape)
    ours = attrfx.kernel_shap(model, x, perturbations_per_eval=ppe, generator=gen(), **kw)
    theirs = KernelShap(model).attribute(x, perturbations_per_eval=ppe or 1, **kw)
    close(ours, theirs)


def test_kernel_shap_tuple_inputs_and_forward_args_equal_captum():
    model = seeded(lambda: nn.Linear(7, 2))
    two = lambda a, b, scale: model(torch.cat([a, b.flatten(1)], 1)) * scale  # noqa: E731
    xs, scale = (randn(2, 3), randn(2, 2, 2, seed=2)), randn(2, 1, seed=3)
    mask = (torch.tensor([[0, 1, 1]]), torch.tensor([[[2, 0], [3, 3]]]))
    kw = dict(baselines=(0.2, randn(1, 2, 2, seed=5)), target=1, additional_forward_args=(scale,), feature_mask=mask,
              n_samples=30)
    close(attrfx.kernel_shap(two, xs, generator=gen(), **kw), KernelShap(two).attribute(xs, **kw))


def test_kernel_shap_converges_to_the_shapley_values():
    model, x, mask = seeded(MLP), randn(2, 5), MASKS["shared"]
    exact = attrfx.shapley_values(model, x, target=1, feature_mask=mask, baselines=0.3)
    errors = [max((attrfx.kernel_shap(model, x, target=1, feature_mask=mask, baselines=0.3, n_samples=n,
                                      generator=gen(seed)) - exact).abs().max().item() for seed in range(3))
              for n in (8, 64, 2048)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-3 * exact.abs().max().item()


def test_kernel_shap_is_efficient():
    """The heavy weights on the empty and full coalitions make the coefficients sum to F(x) − F(b)."""
    model, x = seeded(MLP), randn(3, 5)
    phi = attrfx.kernel_shap(model, x, target=0, n_samples=20, return_input_shape=False, generator=gen(1))
    change = axioms.output_difference(model, x, target=0)
    torch.testing.assert_close(phi.sum(1), change, rtol=1e-5, atol=1e-6)


def test_kernel_shap_takes_another_fit():
    """interpretable_model replaces the fit: a Captum model, or a function (here ridge regression by hand)."""
    model, x = seeded(MLP), randn(2, 5)
    kw = dict(target=0, n_samples=30, return_input_shape=False)
    plain = attrfx.kernel_shap(model, x, generator=gen(2), **kw)
    captum = attrfx.kernel_shap(model, x, generator=gen(2), interpretable_model=SkLearnLinearRegression(), **kw)
    close(captum, plain, rtol=1e-4, atol=1e-6)    # scikit-learn fits in float64 here; Captum returns float32

    def ridge(xd, y, w, lam=1.0):
        xc = torch.cat([xd, torch.ones_like(xd[..., :1])], -1) * w[..., None].sqrt()
        a = xc.transpose(-1, -2) @ xc + lam * torch.eye(xc.shape[-1], dtype=xc.dtype)
        return torch.linalg.solve(a, xc.transpose(-1, -2) @ (y * w.sqrt())[..., None])[..., :-1, 0]

    ridged = attrfx.kernel_shap(model, x, generator=gen(2), interpretable_model=ridge, **kw)
    assert ridged.shape == plain.shape and not torch.allclose(ridged, plain, atol=1e-3)


# --- lime ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mask", list(MASKS.values()), ids=list(MASKS))
@pytest.mark.parametrize("return_input_shape", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lime_with_the_same_coalitions_equals_captum(mask, return_input_shape, dtype):
    model, x = seeded(MLP, dtype=dtype), randn(3, 5, dtype=dtype)
    kw = dict(baselines=0.2, target=[1, 0, 2], feature_mask=mask, n_samples=40, return_input_shape=return_input_shape)
    ours = attrfx.lime(model, x, perturb_func=seeded_coalitions(3), **kw)
    theirs = Lime(model, interpretable_model=tight_lasso(), perturb_func=seeded_coalitions(3)).attribute(x, **kw)
    # Captum's lasso sees float32 data: a coefficient at the edge of the ℓ1 threshold (|correlation| ≈ alpha) moves
    # by that rounding, seen up to 5e-5 on attributions of ~0.3
    close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert ours.dtype == dtype


def test_lime_with_captums_callbacks_and_tuple_inputs_equals_captum():
    model = seeded(MultiInput)
    xs, scale = (randn(2, 4), randn(2, 3, seed=2)), randn(2, 1, seed=3)
    mask = (torch.tensor([[0, 1, 1, 2]]), torch.tensor([[2, 0, 3]]))
    similarity = get_exp_kernel_similarity_function("euclidean", 2.0)
    kw = dict(target=1, additional_forward_args=(scale,), feature_mask=mask, n_samples=30)
    ours = attrfx.lime(model, xs, perturb_func=seeded_coalitions(5), similarity_func=similarity,
                       interpretable_model=tight_lasso(), **kw)
    theirs = Lime(model, interpretable_model=tight_lasso(), similarity_func=similarity,
                  perturb_func=seeded_coalitions(5)).attribute(xs, **kw)
    assert isinstance(ours, tuple)
    close(ours, theirs)


def test_lime_takes_a_perturb_func_that_returns_one_sample_per_call():
    model, x = seeded(MLP), randn(1, 5)
    calls = []

    def every_other(inputs, **kwargs):
        calls.append(kwargs)
        k = len(calls)
        return torch.tensor([[(k + j) % 2 for j in range(kwargs["num_interp_features"])]])

    attrfx.lime(model, x, target=0, n_samples=6, perturb_func=every_other)
    assert len(calls) == 6
    assert set(calls[0]) == {"num_interp_features", "baselines", "feature_mask", "generator"}


def test_lime_default_is_a_fair_coin_per_feature():
    """The default coalitions keep each feature with probability 1/2 (the design's mean over many draws)."""
    from attrfx.coalitions import bernoulli_coalitions
    z = bernoulli_coalitions(4000, 2, 5, gen(1))
    torch.testing.assert_close(z.double().mean((0, 1)), torch.full((5,), 0.5, dtype=torch.float64), atol=0.02, rtol=0)


def test_lime_mean_over_seeds_agrees_with_captum_on_a_linear_model():
    """Where the sample matters (lasso shrinkage depends on it), the two agree in distribution: mean over draws."""
    model, x = seeded(lambda: nn.Linear(5, 1)), randn(1, 5)
    ours = torch.stack([attrfx.lime(model, x, n_samples=30, generator=gen(s)) for s in range(40)]).mean(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        theirs = torch.stack([Lime(model).attribute(x, n_samples=30) for _ in range(40)]).mean(0)
    torch.testing.assert_close(ours, theirs.double(), atol=0.05 * x.abs().max().item(), rtol=0)


# --- mechanisms ---------------------------------------------------------------------------------------------------

class Counting:
    def __init__(self, model):
        self.model, self.passes = model, 0

    def __call__(self, *args):
        self.passes += 1
        return self.model(*args)


@pytest.mark.parametrize("method", ["kernel_shap", "lime"])
def test_one_forward_pass_by_default_and_the_same_result_by_coalition(method):
    model, x = Counting(seeded(MLP)), randn(3, 5)
    fn = getattr(attrfx, method)
    batched = fn(model, x, target=0, n_samples=10, generator=gen(7))
    assert model.passes == 1
    one = fn(model, x, target=0, n_samples=10, perturbations_per_eval=1, generator=gen(7))
    assert model.passes == 1 + 10
    torch.testing.assert_close(batched, one, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["kernel_shap", "lime"])
def test_same_generator_state_same_result_and_the_global_rng_is_untouched(method):
    model, x, fn = seeded(MLP), randn(2, 5), getattr(attrfx, method)
    state = torch.get_rng_state()
    a, b = fn(model, x, target=0, generator=gen(1)), fn(model, x, target=0, generator=gen(1))
    c = fn(model, x, target=0, generator=gen(2))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)   # bit-equal but for batched-BLAS rounding
    assert not torch.allclose(a, c)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("method", ["kernel_shap", "lime"])
def test_progress_bar_counts_forward_passes(method, capsys):
    model, x = seeded(MLP), randn(2, 5)
    getattr(attrfx, method)(model, x, target=0, n_samples=7, perturbations_per_eval=3, show_progress=True,
                            generator=gen())
    err = capsys.readouterr().err
    assert f"{method}: 100%|" in err and "| 3/3 [" in err


def test_model_and_inputs_are_left_as_they_were():
    model, x = seeded(MLP), randn(2, 5)
    before = axioms.state_of(model, x)
    attrfx.kernel_shap(model, x, target=0, generator=gen())
    attrfx.lime(model, x, target=0, generator=gen())
    assert axioms.state_changes(before, axioms.state_of(model, x)) == []


# --- bad input ----------------------------------------------------------------------------------------------------

ERRORS = [
    (dict(n_samples=0), ValueError, "`n_samples` must be a positive int; got 0."),
    (dict(feature_mask=torch.tensor([[1, 1, 2, 3, 3]])), ValueError,
     "`feature_mask` must be feature ids numbered 0 .. M-1, each id used (the surrogate has one coefficient per id, "
     "in id order); got ids [1, 2, 3]."),
    (dict(feature_mask=torch.tensor([[0, 0, 2, 3, 3]])), ValueError, "got ids [0, 2, 3]."),
    (dict(feature_mask=torch.zeros(2, 5, dtype=torch.float64)), ValueError,
     "`feature_mask[0]` must be a tensor of integer feature ids; got dtype torch.float64."),
    (dict(feature_mask=torch.zeros(1, 3, dtype=torch.long)), ValueError, "`feature_mask[0]` must be a tensor that "
                                                                           "broadcasts to the input shape (2, 5)"),
    (dict(interpretable_model="lasso"), TypeError, "`interpretable_model` must be None, a function"),
    (dict(return_input_shape="yes"), TypeError, "`return_input_shape` must be True or False; got str."),
    (dict(generator=1), TypeError, "`generator` must be None or a torch.Generator; got int."),
]


@pytest.mark.parametrize("method", ["kernel_shap", "lime"])
@pytest.mark.parametrize("kwargs,error,message", ERRORS, ids=[f"{i}-{next(iter(e[0]))}" for i, e in enumerate(ERRORS)])
def test_bad_input_is_named(method, kwargs, error, message):
    with pytest.raises(error, match=re.escape(f"{method}: ") + ".*" + re.escape(message)):
        getattr(attrfx, method)(seeded(MLP), randn(2, 5), target=0, **kwargs)


@pytest.mark.parametrize("perturb_func,message", [
    (lambda inputs, **kw: torch.ones(1, 3), "`perturb_func` must be a function giving one interpretable sample of 5 "
                                            "values per call (or a generator of them, one per sample); got 3 values."),
    (lambda inputs, **kw: iter([torch.ones(1, 5)]), "got no sample (the generator ended)."),
    ("f", "`perturb_func` must be None or a callable in Captum's form; got str."),
], ids=["wrong length", "ended early", "not callable"])
def test_bad_perturb_func_is_named(perturb_func, message):
    with pytest.raises((ValueError, TypeError), match=re.escape("lime: ") + ".*" + re.escape(message)):
        attrfx.lime(seeded(MLP), randn(2, 5), target=0, n_samples=3, perturb_func=perturb_func)


def test_ridge_from_captum_is_accepted_too():
    """Any Captum interpretable model with fit/representation is a fit (here SkLearnRidge)."""
    model, x = seeded(MLP), randn(1, 5)
    ours = attrfx.lime(model, x, target=0, n_samples=20, perturb_func=seeded_coalitions(1),
                       interpretable_model=SkLearnRidge(alpha=0.5))
    theirs = Lime(model, interpretable_model=SkLearnRidge(alpha=0.5), perturb_func=seeded_coalitions(1)).attribute(
        x, target=0, n_samples=20)
    close(ours, theirs)



def test_lime_with_a_vanishing_penalty_is_weighted_least_squares():
    """functools.partial(lasso, alpha=...) is a fit; as alpha → 0 it becomes weighted least squares."""
    model, x = seeded(MLP), randn(2, 5)
    kw = dict(target=0, n_samples=60, perturb_func=seeded_coalitions(2))
    loose = attrfx.lime(model, x, interpretable_model=functools.partial(lasso, alpha=1e-12), **kw)
    plain = attrfx.lime(model, x, interpretable_model=weighted_least_squares, **kw)
    torch.testing.assert_close(loose, plain, rtol=1e-6, atol=1e-9)
    assert not torch.allclose(attrfx.lime(model, x, **kw), plain, atol=1e-4)
