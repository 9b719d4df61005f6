"""noise_tunnel against Captum 0.9.0's NoiseTunnel where the noise cannot matter, in distribution where it does,
and its own laws: batching never changes the result, the global RNG is untouched, stdevs=0 gives the method."""

import warnings

import pytest
import torch
from captum.attr import LayerConductance, LayerGradientXActivation, NeuronGradient, NeuronIntegratedGradients, NoiseTunnel
from torch import nn

import attrfx
from models import MLP, MultiInput, randn, seeded
from parity import assert_parity
from test_errors import VALID, mlp

X = randn(4, 5)


def captum_nt(instance, inputs, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return NoiseTunnel(instance).attribute(inputs, **kwargs)


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_no_noise_equals_captum_and_the_method(nt_type):
    model = seeded(MLP)
    ours = attrfx.noise_tunnel(attrfx.neuron_gradient, model, "fc2", X, 1, nt_type=nt_type, stdevs=0.0, nt_samples=3)
    theirs = captum_nt(NeuronGradient(model, model.fc2), X, neuron_selector=1, nt_type=nt_type, stdevs=0.0,
                       nt_samples=3)
    assert_parity(ours, theirs)
    plain = attrfx.neuron_gradient(model, "fc2", X, 1)
    expected = {"smoothgrad": plain, "smoothgrad_sq": plain * plain, "vargrad": torch.zeros_like(plain)}[nt_type]
    assert torch.equal(ours, expected)  # exactly: the running mean of equal samples is the sample


def test_no_noise_gives_the_method_exactly_for_every_deterministic_method():
    sampling = {name for name, make in VALID.items() if "generator" in make()[1]}
    for name in sorted(set(VALID) - sampling):
        method = getattr(attrfx, name)
        args, kwargs = VALID[name]()
        plain = method(mlp(), *args, **kwargs)
        smoothed = attrfx.noise_tunnel(method, mlp(), *args, stdevs=0.0, nt_samples=3, nt_samples_batch_size=2,
                                       **kwargs)
        for a, b in zip(flat(smoothed), flat(plain), strict=True):
            assert torch.equal(a, b), name
    for name in sorted(sampling):  # sampling methods: their own generator, their result's structure
        args, kwargs = VALID[name]()
        smoothed = attrfx.noise_tunnel(getattr(attrfx, name), mlp(), *args, stdevs=0.1, nt_samples=2, **kwargs)
        assert [t.shape for t in flat(smoothed)] == [t.shape for t in flat(getattr(attrfx, name)(mlp(), *args,
                                                                                                  **kwargs))]


def flat(result):
    return [result] if isinstance(result, torch.Tensor) else [t for part in result for t in flat(part)]


def test_per_example_arguments_and_deltas_follow_the_samples_as_in_captum():
    model, target = seeded(MLP), [0, 2, 1, 0]
    ours, delta = attrfx.noise_tunnel(attrfx.layer_conductance, model, "fc2", X, target=target, n_steps=5,
                                      baselines=randn(4, 5, seed=7), stdevs=0.0, nt_samples=3,
                                      return_convergence_delta=True)
    theirs, their_delta = captum_nt(LayerConductance(model, model.fc2), X, target=target, n_steps=5,
                                    baselines=randn(4, 5, seed=7), stdevs=0.0, nt_samples=3,
                                    return_convergence_delta=True)
    assert_parity(ours, theirs)
    assert_parity(delta, their_delta)
    multi = seeded(MultiInput)
    xs, scale = (randn(4, 4), randn(4, 3, seed=2)), randn(4, 1, seed=3)
    ours = attrfx.noise_tunnel(attrfx.layer_gradient_x_activation, multi, "fc_a", xs, target=torch.tensor([1, 0, 0, 1]),
                               additional_forward_args=(scale, True), stdevs=(0.0, 0.0), nt_samples=2)
    theirs = captum_nt(LayerGradientXActivation(multi, multi.fc_a), xs, target=torch.tensor([1, 0, 0, 1]),
                       additional_forward_args=(scale, True), stdevs=(0.0, 0.0), nt_samples=2)
    assert_parity(ours, theirs)


def test_a_linear_neuron_is_smoothed_exactly_whatever_the_noise():
    model = seeded(MLP)
    g = torch.Generator().manual_seed(0)
    ours = attrfx.noise_tunnel(attrfx.neuron_integrated_gradients, model, "fc1", X, 2, stdevs=1.0, nt_samples=6,
                               method="riemann_middle", n_steps=3, multiply_by_inputs=False, generator=g)
    with torch.random.fork_rng(devices=[]):
        theirs = captum_nt(NeuronIntegratedGradients(model, model.fc1, multiply_by_inputs=False), X,
                           neuron_selector=2, stdevs=1.0, nt_samples=6, method="riemann_middle", n_steps=3)
    assert_parity(ours, theirs)


class HalfSquare(nn.Module):
    """``h = x²/2``, so ``∂h/∂x = x``: smoothgrad ``x``, smoothgrad_sq ``x² + σ²``, vargrad ``σ²``."""

    def forward(self, x):
        return 0.5 * x * x


def test_in_distribution_the_moments_of_the_gradient():
    x, sigma, n = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64), 0.7, 4000
    g = torch.Generator().manual_seed(1)
    moments = {nt: attrfx.noise_tunnel(attrfx.neuron_gradient, nn.Sequential(HalfSquare()), "0", x, (slice(None),), nt_type=nt,
                                       stdevs=sigma, nt_samples=n, nt_samples_batch_size=1000, generator=g)
               for nt in ["smoothgrad", "smoothgrad_sq", "vargrad"]}
    error = 5 * sigma / n ** 0.5  # five standard errors of a mean of N(x, σ²)
    assert (moments["smoothgrad"] - x).abs().max() < error
    assert (moments["vargrad"] - sigma ** 2).abs().max() < 5 * sigma ** 2 * (2 / n) ** 0.5
    assert (moments["smoothgrad_sq"] - (x * x + sigma ** 2)).abs().max() < 5 * (4 * x * x * sigma ** 2 + 2 * sigma ** 4).max() ** 0.5 / n ** 0.5
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        half = nn.Sequential(HalfSquare())
        theirs = captum_nt(NeuronGradient(half, half[0]), x, neuron_selector=(slice(None),),
                           stdevs=sigma, nt_samples=n)
    assert (moments["smoothgrad"] - theirs).abs().max() < 2 * error


@pytest.mark.parametrize("batch", [1, 2, 3, 7])
def test_batching_never_changes_the_result_and_the_global_rng_is_untouched(batch):
    model, state = seeded(MLP), torch.get_rng_state()
    run = lambda size: attrfx.noise_tunnel(attrfx.layer_gradient_x_activation, model, ["fc1", "act2"], X, target=1,
                                           nt_type="vargrad", stdevs=0.3, nt_samples=7, nt_samples_batch_size=size,
                                           generator=torch.Generator().manual_seed(5))
    for a, b in zip(flat(run(batch)), flat(run(None)), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
    listed = lambda size: attrfx.noise_tunnel(attrfx.neuron_gradient, model, "fc2", X, [1, (slice(0, 3),)],
                                              stdevs=0.3, nt_samples=7, nt_samples_batch_size=size,
                                              generator=torch.Generator().manual_seed(5))
    assert listed(batch).shape == (2, 4, 5)
    torch.testing.assert_close(listed(batch), listed(None), rtol=1e-12, atol=1e-15)
    assert torch.equal(torch.get_rng_state(), state)


def test_baselines_drawn_from_a_distribution():
    model = seeded(MLP)
    one_row = randn(1, 5, seed=4).expand(6, 5)
    drawn = attrfx.noise_tunnel(attrfx.neuron_integrated_gradients, model, "fc2", X, 1, baselines=one_row,
                                draw_baseline_from_distrib=True, stdevs=0.0, nt_samples=3, n_steps=4,
                                generator=torch.Generator().manual_seed(0))
    direct = attrfx.neuron_integrated_gradients(model, "fc2", X, 1, baselines=randn(1, 5, seed=4), n_steps=4)
    torch.testing.assert_close(drawn, direct, rtol=1e-12, atol=1e-14)
    two_rows = torch.stack([torch.zeros(5), torch.ones(5)]).double()
    ends = [attrfx.neuron_integrated_gradients(model, "fc1", X, 1, baselines=b[None]) for b in two_rows]
    mixed = attrfx.noise_tunnel(attrfx.neuron_integrated_gradients, model, "fc1", X, 1, baselines=two_rows,
                                draw_baseline_from_distrib=True, stdevs=0.0, nt_samples=50,
                                generator=torch.Generator().manual_seed(0))
    share = (mixed - ends[0]) / (ends[1] - ends[0])  # fc1 is linear: each example's share of the second row
    assert torch.allclose(share, share[:, :1].expand_as(share))
    assert ((share[:, 0] > 0.2) & (share[:, 0] < 0.8)).all() and len(set(share[:, 0].tolist())) > 1


@pytest.mark.parametrize("call,message", [
    (lambda: attrfx.noise_tunnel("saliency", X), r"`method` must be an attrfx attribution method .*; got str\."),
    (lambda: attrfx.noise_tunnel(attrfx.interpolate, X, 2), r"`method` must be an attrfx attribution method"),
    (lambda: attrfx.noise_tunnel(attrfx.neuron_gradient, seeded(MLP), "fc2"), r"`method`'s arguments must fit "
                                                                               r"neuron_gradient\(model, layer, inputs"),
    (lambda: attrfx.noise_tunnel(attrfx.neuron_gradient, seeded(MLP), "fc2", X, 1, nt_type="smooth"),
     r"`nt_type` must be one of \['smoothgrad', 'smoothgrad_sq', 'vargrad'\]; got 'smooth'\."),
    (lambda: attrfx.noise_tunnel(attrfx.neuron_gradient, seeded(MLP), "fc2", X, 1, nt_samples=0),
     r"`nt_samples` must be a positive int; got 0\."),
    (lambda: attrfx.noise_tunnel(attrfx.neuron_gradient, seeded(MLP), "fc2", X, 1, nt_samples_batch_size=1.5),
     r"`nt_samples_batch_size` must be a positive int; got float\."),
    (lambda: attrfx.noise_tunnel(attrfx.neuron_gradient, seeded(MLP), "fc2", X, 1, stdevs=(1.0, 2.0)),
     r"`stdevs` must be a float or one float per input \(1\); got 2 values\."),
    (lambda: attrfx.noise_tunnel(attrfx.neuron_gradient, seeded(MLP), "fc2", X, 1, draw_baseline_from_distrib=1),
     r"`draw_baseline_from_distrib` must be True or False; got int\."),
    (lambda: attrfx.noise_tunnel(attrfx.neuron_gradient, seeded(MLP), "fc2", X, 1, generator=0),
     r"`generator` must be None or a torch.Generator; got int\."),
    (lambda: attrfx.noise_tunnel(attrfx.neuron_gradient, seeded(MLP), "fc2", X, (9,)),
     r"neuron_gradient: `selector`"),
])
def test_bad_arguments_are_named(call, message):
    with pytest.raises((attrfx.AttrfxValueError, attrfx.AttrfxTypeError), match=r"^noise_tunnel: " + message):
        call()


def test_deltas_are_example_major_as_in_captum():
    model, two_rows = seeded(MLP), torch.stack([torch.zeros(5), torch.ones(5)]).double()
    _, delta = attrfx.noise_tunnel(attrfx.layer_conductance, model, "fc2", X, target=1, baselines=two_rows,
                                   draw_baseline_from_distrib=True, stdevs=0.0, nt_samples=6, nt_samples_batch_size=4,
                                   n_steps=2, return_convergence_delta=True, generator=torch.Generator().manual_seed(3))
    per_row = [attrfx.layer_conductance(model, "fc2", X, target=1, baselines=b[None], n_steps=2,
                                        return_convergence_delta=True)[1] for b in two_rows]
    assert delta.shape == (4 * 6,)
    for i, block in enumerate(delta.view(4, 6)):  # example i's six samples, each with one of the two baselines
        assert all(min(abs(d - per_row[0][i]), abs(d - per_row[1][i])) < 1e-12 for d in block)
