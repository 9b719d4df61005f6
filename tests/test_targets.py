"""Targets and selectors as users write them: callables, structured model outputs, per-example selectors, and
index selectors (or targets) that leave out trailing dimensions of size 1.

Captum takes no callable target; its oracle here is the same model wrapped so that it returns the callable's
value (one per example), explained with ``target=None``.
"""

import dataclasses

import pytest
import torch
from captum.attr import (LayerConductance, LayerGradCam, LayerGradientXActivation, NeuronConductance,
                         NeuronFeatureAblation, NeuronGradient, NeuronIntegratedGradients)
from torch import nn

import attrfx
from attrfx import axioms
from models import ConvNet, MLP, randn, seeded
from parity import assert_parity

N = 4
LABELS = torch.tensor([2, 0, 1, 2])


def log_prob(out):
    """A target no index can express: the log-probability of class 1."""
    return torch.log_softmax(out, 1)[:, 1]


@dataclasses.dataclass
class Scores:
    logits: torch.Tensor
    hidden: torch.Tensor


class Structured(nn.Module):
    """``inner``'s logits inside a dict, a dataclass or a tuple (``kind``), or as they are (``"tensor"``)."""

    def __init__(self, inner, kind):
        super().__init__()
        self.inner, self.kind = inner, kind

    def forward(self, x):
        logits = self.inner(x)
        hidden = logits.detach() * 0
        return {"tensor": lambda: logits, "dict": lambda: {"hidden": hidden, "logits": logits},
                "dataclass": lambda: Scores(logits, hidden), "tuple": lambda: (logits, hidden)}[self.kind]()


UNWRAP = {"tensor": lambda out: out, "dict": lambda out: out["logits"], "dataclass": lambda out: out.logits,
          "tuple": lambda out: out[0]}
KINDS = sorted(UNWRAP)


def oracle_forward(inner, fn):
    """What Captum explains for ``target=fn``: the inner model's logits mapped by ``fn``, one value per example."""
    return lambda x: fn(inner(x))


# (method, case factory, layer inside ``inner``, call of attrfx, call of Captum on the wrapped forward)
LAYER_METHODS = {
    "layer_gradient_x_activation": (
        MLP, (N, 5), "act1",
        lambda model, layer, x, t: attrfx.layer_gradient_x_activation(model, layer, x, target=t),
        lambda fwd, module, x: LayerGradientXActivation(fwd, module).attribute(x)),
    "layer_gradcam": (
        ConvNet, (N, 2, 8, 8), "conv2",
        lambda model, layer, x, t: attrfx.layer_gradcam(model, layer, x, target=t),
        lambda fwd, module, x: LayerGradCam(fwd, module).attribute(x)),
    "layer_conductance": (
        MLP, (N, 5), "fc2",
        lambda model, layer, x, t: attrfx.layer_conductance(model, layer, x, target=t, n_steps=6),
        lambda fwd, module, x: LayerConductance(fwd, module).attribute(x, n_steps=6)),
    "neuron_conductance": (
        MLP, (N, 5), "act2",
        lambda model, layer, x, t: attrfx.neuron_conductance(model, layer, x, 3, target=t, n_steps=6,
                                                             method="gausslegendre"),
        lambda fwd, module, x: NeuronConductance(fwd, module).attribute(x, 3, n_steps=6, method="gausslegendre")),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", sorted(LAYER_METHODS))
def test_callable_target_equals_captum_on_the_wrapped_output(method, kind):
    factory, shape, layer, ours, theirs = LAYER_METHODS[method]
    inner = seeded(factory)
    model, x = Structured(inner, kind), randn(*shape)
    before = axioms.state_of(model, x)
    got = ours(model, f"inner.{layer}", x, lambda out: log_prob(UNWRAP[kind](out)))
    assert axioms.state_changes(before, axioms.state_of(model, x)) == []
    assert_parity(got, theirs(oracle_forward(inner, log_prob), inner.get_submodule(layer), x))


@pytest.mark.parametrize("method", ["layer_conductance", "neuron_conductance"])
def test_callable_target_with_auto_steps_equals_the_index_target(method):
    model, x = seeded(MLP), randn(N, 5)
    call = {"layer_conductance": lambda m, layer, t: attrfx.layer_conductance(
                m, layer, x, target=t, n_steps="auto", return_convergence_delta=True),
            "neuron_conductance": lambda m, layer, t: attrfx.neuron_conductance(
                m, layer, x, 2, target=t, n_steps="auto", return_convergence_delta=True)}[method]
    by_callable, conv = call(Structured(model, "dict"), "inner.act1", lambda out: out["logits"][:, 2])
    by_index, _ = call(model, "act1", 2)
    torch.testing.assert_close(by_callable, by_index, rtol=1e-12, atol=1e-12)
    assert bool(conv.converged.all())
    if method == "layer_conductance":   # completeness against the model run by hand
        change = model(x)[:, 2] - model(torch.zeros_like(x))[:, 2]
        torch.testing.assert_close(by_callable.sum(1), change, rtol=1e-2, atol=1e-6)


def test_output_difference_takes_a_callable_target():
    inner = seeded(MLP)
    model, x = Structured(inner, "dict"), randn(N, 5)
    got = axioms.output_difference(model, x, baselines=0.5, target=lambda out: log_prob(out["logits"]))
    with torch.no_grad():
        expected = log_prob(inner(x)) - log_prob(inner(torch.full_like(x, 0.5)))
    torch.testing.assert_close(got, expected)


def test_a_callable_target_is_called_on_every_row_of_each_pass():
    """The contract: one value per row of what it is given; path points come as S blocks of the N examples."""
    model, x = seeded(MLP), randn(N, 5)
    rows = []

    def by_label(out):
        rows.append(out.shape[0])
        return out[torch.arange(len(out)), LABELS.repeat(len(out) // N)]

    got = attrfx.layer_conductance(model, "fc2", x, target=by_label, n_steps=5)
    assert rows and all(r % N == 0 for r in rows) and max(rows) > N
    theirs = LayerConductance(model, model.fc2).attribute(x, target=LABELS, n_steps=5)
    assert_parity(got, theirs)


def test_a_callable_target_of_the_wrong_shape_names_target():
    model, x = seeded(MLP), randn(N, 5)
    with pytest.raises(attrfx.AttrfxValueError, match=r"^layer_gradient_x_activation: `target` \(a callable\) must "
                       r"return one value per example, a tensor of shape \(N,\); it returned shape \(N, 3\)\.$"):
        attrfx.layer_gradient_x_activation(model, "fc2", x, target=lambda out: out)
    with pytest.raises(attrfx.AttrfxValueError, match=r"`target` \(a callable\).*it returned float\.$"):
        attrfx.layer_gradcam(seeded(ConvNet), "conv2", randn(N, 2, 8, 8), target=lambda out: 1.0)
    with pytest.raises(attrfx.AttrfxValueError, match=r"^neuron_conductance: `target` \(a callable\) .* returned "
                       r"shape \(4,\) for a model output of 20 rows \(methods that stack path points"):
        attrfx.neuron_conductance(model, "fc2", x, 1, target=lambda out: out[torch.arange(N), LABELS], n_steps=5)


STRUCTURED_ERRORS = {
    "dict": "a dict, not a tensor to index: pass target=lambda out: out['logits'][:, ...]",
    "dataclass": "Scores (a dataclass), not a tensor to index: pass target=lambda out: out.logits[:, ...]",
    "tuple": "a tuple, not a tensor to index: pass target=lambda out: out[0][:, ...]",
}


@pytest.mark.parametrize("target,shown", [(1, "1"), (None, "None"), ([0, 1, 2, 0], "a target per example")])
@pytest.mark.parametrize("kind", sorted(STRUCTURED_ERRORS))
def test_an_index_target_on_a_structured_output_shows_the_callable_to_write(kind, target, shown):
    model, x = Structured(seeded(MLP), kind), randn(N, 5)
    calls = [lambda: attrfx.layer_gradient_x_activation(model, "inner.act1", x, target=target),
             lambda: attrfx.layer_conductance(model, "inner.act1", x, target=target, n_steps="auto"),
             lambda: attrfx.neuron_conductance(model, "inner.act1", x, 1, target=target),
             lambda: axioms.output_difference(model, x, target=target)]
    for call in calls:
        with pytest.raises(attrfx.AttrfxValueError) as info:
            call()
        assert f"`target` must be a callable, since the model returns {STRUCTURED_ERRORS[kind]} giving one value " \
               f"per example; got {shown}." in str(info.value)


def test_a_scalar_field_before_the_logits_is_passed_over():
    class WithLoss(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = seeded(MLP)

        def forward(self, x):
            scores = self.inner(x)
            return {"loss": scores.sum(), "scores": scores}

    with pytest.raises(attrfx.AttrfxValueError, match=r"pass target=lambda out: out\['scores'\]\[:, \.\.\.\]"):
        attrfx.layer_gradient_x_activation(WithLoss(), "inner.fc1", randn(N, 5), target=0)


def gather_by_label(h):
    """A per-example selector: each example's neuron is its label's."""
    return h[torch.arange(N), LABELS]


def repeated_by_label(h):
    """The same for stacked rows (S blocks of the N examples)."""
    return h[torch.arange(len(h)), LABELS.repeat(len(h) // N)]


def test_a_per_example_selector_on_neuron_gradient():
    model, x = seeded(MLP), randn(N, 5)
    before = axioms.state_of(model, x)
    got = attrfx.neuron_gradient(model, "act2", x, gather_by_label)
    assert axioms.state_changes(before, axioms.state_of(model, x)) == []
    seen = []
    handle = model.act2.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        xg = x.clone().requires_grad_()
        model(xg)
        (expected,) = torch.autograd.grad(gather_by_label(seen[0]).sum(), xg)
    finally:
        handle.remove()
    torch.testing.assert_close(got, expected)
    assert_parity(got, NeuronGradient(model, model.act2).attribute(x, gather_by_label))


def test_a_per_example_selector_repeated_for_stacked_rows_equals_captum():
    model, x = seeded(MLP), randn(N, 5)
    assert_parity(attrfx.neuron_integrated_gradients(model, "act2", x, repeated_by_label, n_steps=7),
                  NeuronIntegratedGradients(model, model.act2).attribute(x, repeated_by_label, n_steps=7))
    assert_parity(attrfx.neuron_conductance(model, "act2", x, repeated_by_label, target=1, n_steps=7,
                                            method="gausslegendre"),
                  NeuronConductance(model, model.act2).attribute(x, repeated_by_label, target=1, n_steps=7,
                                                                 method="gausslegendre"))
    mask = torch.tensor([[0, 0, 1, 2, 2]])
    theirs = NeuronFeatureAblation(model, model.act2).attribute(x, gather_by_label, feature_mask=mask)
    assert_parity(attrfx.neuron_feature_ablation(model, "act2", x, repeated_by_label, feature_mask=mask), theirs)
    # one ablation per pass (Captum's default): the batch's own rows, as the selector was written
    assert_parity(attrfx.neuron_feature_ablation(model, "act2", x, gather_by_label, feature_mask=mask,
                                                 perturbations_per_eval=1), theirs)


def test_a_per_example_selector_on_stacked_rows_is_a_clear_error():
    model, x = seeded(MLP), randn(N, 5)
    with pytest.raises(attrfx.AttrfxValueError, match=r"^neuron_integrated_gradients: `selector` \(a callable\) .* "
                       r"returned shape \(4,\) for an activation of 28 rows \(methods that stack path points"):
        attrfx.neuron_integrated_gradients(model, "act2", x, gather_by_label, n_steps=7)


def squeezed(width, height):
    """A net whose layer ``act`` gives ``(N, width, height)``."""
    return seeded(lambda: nn.Sequential(nn.Linear(4, width * height), nn.Unflatten(1, (width, height)),
                                        nn.Tanh(), nn.Flatten(), nn.Linear(width * height, 2)))


@pytest.mark.parametrize("width,selector", [(1, 0), (3, 2), (3, (slice(0, 2),))])
def test_a_selector_may_leave_out_trailing_dims_of_size_one(width, selector):
    model, x = squeezed(width, 1), randn(N, 4)
    assert_parity(attrfx.neuron_gradient(model, "2", x, selector),
                  NeuronGradient(model, model[2]).attribute(x, selector))
    assert_parity(attrfx.neuron_integrated_gradients(model, "2", x, [selector, selector], n_steps=5)[1],
                  NeuronIntegratedGradients(model, model[2]).attribute(x, selector, n_steps=5))


def test_a_selector_leaving_out_dims_above_size_one_is_an_error():
    with pytest.raises(attrfx.AttrfxValueError, match=r"`selector` must be one index per non-batch dimension of "
                       r"layer '2', whose output has shape \(N, 1, 3\): 2 indices; got 1 \(0\)\."):
        attrfx.neuron_gradient(squeezed(1, 3), "2", randn(N, 4), 0)


def unflattened(width, height):
    """A net whose output has shape ``(N, width, height)``."""
    return seeded(lambda: nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, width * height),
                                        nn.Unflatten(1, (width, height))))


@pytest.mark.parametrize("target", [2, [0, 2, 1, 1], torch.tensor([1, 0, 2, 2])])
def test_a_target_may_leave_out_trailing_dims_of_size_one(target):
    model, x = unflattened(3, 1), randn(N, 4)
    # Captum takes per-example targets on 2-d outputs only: its oracle runs the model without the Unflatten
    assert_parity(attrfx.layer_gradient_x_activation(model, "1", x, target=target),
                  LayerGradientXActivation(model[:3], model[1]).attribute(x, target=target))
    assert_parity(attrfx.layer_conductance(model, "1", x, target=target, n_steps=5, return_convergence_delta=True),
                  LayerConductance(model[:3], model[1]).attribute(x, target=target, n_steps=5,
                                                                  return_convergence_delta=True))
    if isinstance(target, int):
        assert_parity(attrfx.layer_gradient_x_activation(model, "1", x, target=target),
                      LayerGradientXActivation(model, model[1]).attribute(x, target=target))


def test_a_target_leaving_out_dims_above_size_one_is_an_error():
    with pytest.raises(attrfx.AttrfxValueError, match=r"`target` must be one index per non-batch dimension of the "
                       r"model output of shape \(N, 3, 2\) \(2\); got 1\."):
        attrfx.layer_gradient_x_activation(unflattened(3, 2), "1", randn(N, 4), target=1)
