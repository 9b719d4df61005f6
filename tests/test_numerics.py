"""Numerics and types: non-finite values, baselines of another dtype or device, float64/bfloat16, a batch of one,
integer token inputs, and inputs that cannot reach the explained value.

Decisions tested here:
- Non-finite inputs or baselines are not rejected: NaN and ±inf propagate exactly as in Captum, and only
  into the examples that hold them (every other example's attribution is unchanged).
- Baselines take the inputs' dtype and device: a float32 or integer baseline for float64 inputs is cast; a
  baseline that cannot be copied to the inputs' device (e.g. a ``meta`` tensor) is a clear error naming it.
- bfloat16 runs end to end and stays close to float32; float64 matches Captum at 1e-6 (the parity tests).
- Memory layout: ``channels_last`` image batches give the attributions of contiguous ones.
- Token ids: layer methods attribute at the ``nn.Embedding`` layer; a method that needs gradients with
  respect to the inputs, or a path between them (``layer_conductance``), says so and names `inputs`.
"""

import pytest
import torch
from captum.attr import (LayerGradCam, LayerGradientXActivation, NeuronFeatureAblation, NeuronGradient,
                         NeuronIntegratedGradients, LayerConductance)
from torch import nn

import attrfx
from attrfx import axioms
from models import MLP, ConvNet, SideInput, randn, seeded
from parity import assert_parity

ZEROS = torch.zeros(3, 5, dtype=torch.float64)

# Every model-based public method, by default on the MLP (5 → 3) at hidden layer "act2" (6 neurons), neuron 1;
# ``at=(layer, neuron)`` for another model.
AT = ("act2", 1)
ALL = {
    "neuron_gradient": lambda m, x, at=AT, **kw: attrfx.neuron_gradient(m, at[0], x, at[1], **kw),
    "neuron_integrated_gradients": lambda m, x, at=AT, **kw: attrfx.neuron_integrated_gradients(
        m, at[0], x, at[1], n_steps=6, **kw),
    "neuron_conductance": lambda m, x, at=AT, **kw: attrfx.neuron_conductance(m, at[0], x, at[1], target=2, n_steps=6,
                                                                               **kw),
    "neuron_gradient_shap": lambda m, x, at=AT, **kw: attrfx.neuron_gradient_shap(
        m, at[0], x, at[1], kw.pop("baselines", ZEROS).to(x.dtype), generator=torch.Generator().manual_seed(0), **kw),
    "neuron_deeplift": lambda m, x, at=AT, **kw: attrfx.neuron_deeplift(m, at[0], x, at[1], **kw),
    "layer_deeplift": lambda m, x, at=AT, **kw: attrfx.layer_deeplift(m, at[0], x, target=2, **kw),
    "layer_deeplift_shap": lambda m, x, at=AT, **kw: attrfx.layer_deeplift_shap(
        m, at[0], x, kw.pop("baselines", ZEROS).to(x.dtype), target=2, **kw),
    "neuron_deeplift_shap": lambda m, x, at=AT, **kw: attrfx.neuron_deeplift_shap(
        m, at[0], x, at[1], kw.pop("baselines", ZEROS).to(x.dtype), **kw),
    "neuron_guided_backprop": lambda m, x, at=AT, **kw: attrfx.neuron_guided_backprop(m, at[0], x, at[1], **kw),
    "neuron_deconvolution": lambda m, x, at=AT, **kw: attrfx.neuron_deconvolution(m, at[0], x, at[1], **kw),
    "neuron_feature_ablation": lambda m, x, at=AT, **kw: attrfx.neuron_feature_ablation(m, at[0], x, at[1], **kw),
    "layer_feature_ablation": lambda m, x, at=AT, **kw: attrfx.layer_feature_ablation(m, at[0], x, target=2, **kw),
    "layer_feature_permutation": lambda m, x, at=AT, **kw: attrfx.layer_feature_permutation(  # a shuffle within each
        m, at[0], x, target=2, perm_func=lambda h, mask: torch.where(mask, h.flip(1), h), **kw),  # example: exact
    "layer_gradient_x_activation": lambda m, x, at=AT, **kw: attrfx.layer_gradient_x_activation(
        m, at[0], x, target=2, **kw),
    "layer_gradcam": lambda m, x, at=AT, **kw: attrfx.layer_gradcam(m, at[0], x, target=2, **kw),
    "layer_lrp": lambda m, x, at=AT, **kw: attrfx.layer_lrp(m, at[0], x, target=2,  # (ConvNet's Softplus: through)
                                                        rules={nn.Softplus: ("identity", {})}, **kw),
    "layer_conductance": lambda m, x, at=AT, **kw: attrfx.layer_conductance(m, at[0], x, target=2, n_steps=6, **kw),
    "layer_activation": lambda m, x, at=AT, **kw: attrfx.layer_activation(m, at[0], x, **kw),
    "layer_gradient_shap": lambda m, x, at=AT, **kw: attrfx.layer_gradient_shap(
        m, at[0], x, kw.pop("baselines", ZEROS).to(x.dtype), target=2, generator=torch.Generator().manual_seed(0),
        **kw),
    "layer_integrated_gradients": lambda m, x, at=AT, **kw: attrfx.layer_integrated_gradients(
        m, at[0], x, target=2, n_steps=6, **kw),
}
SAMPLED = ("neuron_gradient_shap", "layer_gradient_shap")  # draws depend on the dtype: compared only where the
#                                                              sample cannot matter
TAKES_BASELINES = ["neuron_integrated_gradients", "neuron_conductance", "neuron_deeplift", "neuron_feature_ablation",
                   "layer_conductance"]


def test_every_method_is_covered():
    assert set(ALL) == {n for n in attrfx.__all__ if n.startswith(("neuron_", "layer_"))}


# --- non-finite values -----------------------------------------------------------------------------------------

def poisoned(x, value):
    x = x.clone()
    x[1, 2] = value
    return x


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_non_finite_inputs_propagate_like_captum(value):
    model, x = seeded(MLP), poisoned(randn(4, 5), value)
    assert_nan_parity(attrfx.neuron_gradient(model, "act2", x, 1), NeuronGradient(model, model.act2).attribute(x, 1))
    assert_nan_parity(attrfx.neuron_integrated_gradients(model, "act2", x, 1, n_steps=5),
                      NeuronIntegratedGradients(model, model.act2).attribute(x, 1, n_steps=5))
    assert_nan_parity(attrfx.layer_conductance(model, "act2", x, target=0, n_steps=5),
                      LayerConductance(model, model.act2).attribute(x, target=0, n_steps=5))
    assert_nan_parity(attrfx.layer_gradient_x_activation(model, "fc2", x, target=1),
                      LayerGradientXActivation(model, model.fc2).attribute(x, target=1))


def assert_nan_parity(ours, theirs):
    theirs = theirs.detach()
    assert torch.equal(ours.isnan(), theirs.isnan()), "NaN in different places than Captum"
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-9, equal_nan=True)


@pytest.mark.parametrize("name", sorted(ALL))
@pytest.mark.parametrize("where", ["inputs", "baselines"])
def test_non_finite_values_stay_in_their_example(name, where):
    """Every method runs; the examples without the NaN get exactly their clean attribution."""
    model, x = seeded(MLP), randn(4, 5)
    if where == "baselines" and name not in TAKES_BASELINES:
        kw, dirty_x = {}, poisoned(x, float("nan"))  # no per-example baseline: poison the input instead
    elif where == "baselines":
        kw, dirty_x = {"baselines": poisoned(torch.zeros_like(x), float("nan"))}, x
    else:
        kw, dirty_x = {}, poisoned(x, float("nan"))
    clean = ALL[name](model, x)
    dirty = ALL[name](model, dirty_x, **kw)
    keep = [0, 2, 3]  # example 1 holds the NaN
    for c, d in zip(axioms._flat(clean), axioms._flat(dirty)):
        if name in ("neuron_gradient_shap", "neuron_deeplift_shap"):
            continue  # baselines are drawn per example: compare only that the call ran and kept the shape
        torch.testing.assert_close(d[keep], c[keep], rtol=1e-12, atol=1e-12)
    assert all(c.shape == d.shape for c, d in zip(axioms._flat(clean), axioms._flat(dirty)))


# --- dtypes and devices of baselines ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", TAKES_BASELINES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.float16])
def test_baselines_of_another_dtype_are_cast_to_the_inputs_dtype(name, dtype):
    model, x = seeded(MLP), randn(4, 5)
    values = torch.tensor([[1, -2, 0, 3, 1]], dtype=torch.float64)  # exact in every dtype above
    ours = ALL[name](model, x, baselines=values.to(dtype))
    reference = ALL[name](model, x, baselines=values)
    for a, b in zip(axioms._flat(ours), axioms._flat(reference)):
        assert a.dtype == torch.float64
        assert torch.equal(a, b)


def test_baseline_distributions_of_another_dtype_are_cast():
    model, x = seeded(MLP), randn(4, 5)
    dist = randn(3, 5, seed=4).to(torch.float32).to(torch.float64)
    for name in ["neuron_deeplift_shap", "neuron_gradient_shap"]:
        ours = ALL[name](model, x, baselines=dist.to(torch.float32))
        assert ours.dtype == torch.float64
        assert torch.equal(ours, ALL[name](model, x, baselines=dist))


DEVICES = ["meta"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.device
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", TAKES_BASELINES + ["neuron_deeplift_shap", "neuron_gradient_shap"])
def test_baselines_on_another_device_are_copied_or_named(name, device):
    model, x = seeded(MLP), randn(4, 5)
    base = 0.5 * torch.ones(3 if "shap" in name else 1, 5, dtype=torch.float64)
    if device == "meta":  # cannot be copied to the CPU
        with pytest.raises(attrfx.AttrfxValueError, match=rf"^{name}: `baselines\[0\]` must be a tensor that can "
                                                          rf"be copied to the inputs' device cpu; got a tensor on "
                                                          rf"device meta\."):
            ALL[name](model, x, baselines=base.to(device))
    else:
        assert torch.equal(ALL[name](model, x, baselines=base.to(device)), ALL[name](model, x, baselines=base))


def test_complex_baselines_are_refused():
    model, x = seeded(MLP), randn(4, 5)
    with pytest.raises(attrfx.AttrfxValueError, match=r"`baselines\[0\]` must be a real tensor .*complex128"):
        attrfx.neuron_integrated_gradients(model, "act2", x, 1, baselines=torch.zeros(1, 5, dtype=torch.complex128))


# --- float64 and bfloat16 -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ALL))
def test_bfloat16_runs_and_is_close_to_float32(name):
    x = randn(4, 5)
    ours = ALL[name](seeded(MLP, dtype=torch.bfloat16), x.to(torch.bfloat16))
    reference = ALL[name](seeded(MLP, dtype=torch.float32), x.to(torch.float32))
    for a, b in zip(axioms._flat(ours), axioms._flat(reference)):
        assert a.dtype == torch.bfloat16 and a.shape == b.shape
        assert torch.isfinite(a).all()
        if name in SAMPLED:
            continue
        scale = float(b.abs().max()) + 1e-3
        assert float((a.float() - b).abs().max()) <= 0.1 * scale, "bfloat16 far from float32"


@pytest.mark.parametrize("name", sorted(ALL))
def test_float64_and_float32_agree(name):
    x = randn(4, 5)
    ours = ALL[name](seeded(MLP), x)
    single = ALL[name](seeded(MLP, dtype=torch.float32), x.to(torch.float32))
    for a, b in zip(axioms._flat(ours), axioms._flat(single)):
        assert a.dtype == torch.float64 and b.dtype == torch.float32
        if name in SAMPLED:
            continue
        torch.testing.assert_close(a.float(), b, rtol=1e-4, atol=1e-5)


# --- a batch of one -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ALL))
def test_a_batch_of_one_equals_its_row_of_the_batch(name):
    model, x = seeded(MLP), randn(4, 5)
    whole = ALL[name](model, x)
    for i in range(x.shape[0]):
        alone = ALL[name](model, x[i:i + 1])
        for a, w in zip(axioms._flat(alone), axioms._flat(whole)):
            if name in ("neuron_gradient_shap", "neuron_deeplift_shap"):
                assert a.shape == w[i:i + 1].shape  # samples are drawn per example
                continue
            torch.testing.assert_close(a, w[i:i + 1], rtol=1e-12, atol=1e-12)


# --- memory layout ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ALL))
def test_channels_last_inputs_give_the_attributions_of_contiguous_ones(name):
    """Image batches in ``torch.channels_last`` (a faster layout for convolutions on CPU) are attributed as they
    are: same values as the contiguous batch, and the inputs keep their layout."""
    model, x = seeded(ConvNet), randn(3, 2, 8, 8)
    nhwc = x.contiguous(memory_format=torch.channels_last)
    kw = {"baselines": torch.zeros(2, 2, 8, 8, dtype=torch.float64)} if "shap" in name else {}
    ours = ALL[name](model, nhwc, at=("act2", (1, 0, 2)), **kw)
    reference = ALL[name](model, x, at=("act2", (1, 0, 2)), **kw)
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and not nhwc.is_contiguous()
    for a, b in zip(axioms._flat(ours), axioms._flat(reference)):
        torch.testing.assert_close(a, b)


# --- integer token inputs -------------------------------------------------------------------------------------------

class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.act, self.fc = nn.Embedding(11, 3), nn.Tanh(), nn.Linear(15, 2)

    def forward(self, ids):
        return self.fc(self.act(self.emb(ids)).flatten(1))


def tokens():
    return seeded(Tokens), torch.randint(0, 11, (3, 5), generator=torch.Generator().manual_seed(0))


def test_layer_methods_attribute_at_the_embedding_of_token_ids():
    model, ids = tokens()
    assert_parity(attrfx.layer_gradient_x_activation(model, "emb", ids, target=1),
                  LayerGradientXActivation(model, model.emb).attribute(ids, target=1))
    assert_parity(attrfx.layer_gradient_x_activation(model, ["emb", "act"], ids, target=[0, 1, 1]),
                  LayerGradientXActivation(model, [model.emb, model.act]).attribute(ids, target=[0, 1, 1]))
    assert_parity(attrfx.layer_gradcam(model, "emb", ids, target=0, attr_dim_summation=False),
                  LayerGradCam(model, model.emb).attribute(ids, target=0, attr_dim_summation=False))
    assert_parity(attrfx.neuron_feature_ablation(model, "act", ids, (2, 1), baselines=3),
                  NeuronFeatureAblation(model, model.act).attribute(ids, (2, 1), baselines=3))


NEEDS_FLOAT = ["neuron_gradient", "neuron_integrated_gradients", "neuron_conductance", "neuron_gradient_shap",
               "neuron_deeplift", "neuron_deeplift_shap", "neuron_guided_backprop", "neuron_deconvolution"]


@pytest.mark.parametrize("name", NEEDS_FLOAT + ["layer_conductance"])
def test_methods_that_differentiate_or_interpolate_inputs_refuse_token_ids_clearly(name):
    model, ids = tokens()
    extra = {"neuron_gradient_shap": (torch.zeros(2, 5, dtype=torch.long),),
             "neuron_deeplift_shap": (torch.zeros(2, 5, dtype=torch.long),)}.get(name, ())
    kw = {"target": 0} if name in ("neuron_conductance", "layer_conductance") else {}
    fn = getattr(attrfx, name)
    args = (model, "emb", ids) + (() if name.startswith("layer") else ((0, 1),)) + extra
    before = axioms.state_of(model, ids)
    with pytest.raises(attrfx.AttrfxValueError, match=rf"^{name}: `inputs` must be floating-point tensors.*"
                                                      rf"(embedding layer).*torch\.int64"):
        fn(*args, **kw)
    assert axioms.state_changes(before, axioms.state_of(model, ids)) == []


@pytest.mark.parametrize("name", ["layer_gradient_x_activation", "layer_gradcam"])
def test_layer_methods_at_the_input_of_an_embedding_name_the_layer(name):
    model, ids = tokens()
    with pytest.raises(attrfx.AttrfxValueError, match=rf"^{name}: `layer` must be a layer whose activation is "
                                                      rf"floating-point.*'emb' whose input has dtype torch\.int64"):
        getattr(attrfx, name)(model, "emb", ids, target=0, attribute_to_layer_input=True)


# --- inputs that cannot reach the explained value ----------------------------------------------------------------

SIDE = {  # SideInput: x2 joins after "act"; "unused" runs but never reaches the output
    "neuron_gradient": lambda m, xs: attrfx.neuron_gradient(m, "act", xs, 1),
    "neuron_integrated_gradients": lambda m, xs: attrfx.neuron_integrated_gradients(m, "act", xs, 1, n_steps=4),
    "neuron_conductance": lambda m, xs: attrfx.neuron_conductance(m, "act", xs, 1, target=0, n_steps=4),
    "neuron_gradient_shap": lambda m, xs: attrfx.neuron_gradient_shap(
        m, "act", xs, 1, tuple(torch.zeros(2, *x.shape[1:], dtype=x.dtype) for x in xs),
        generator=torch.Generator().manual_seed(0)),
    "neuron_deeplift": lambda m, xs: attrfx.neuron_deeplift(m, "act", xs, 1),
    "neuron_deeplift_shap": lambda m, xs: attrfx.neuron_deeplift_shap(
        m, "act", xs, 1, tuple(torch.randn(2, *x.shape[1:], dtype=x.dtype) for x in xs)),
    "neuron_guided_backprop": lambda m, xs: attrfx.neuron_guided_backprop(m, "act", xs, 1),
    "neuron_deconvolution": lambda m, xs: attrfx.neuron_deconvolution(m, "act", xs, 1),
    "neuron_feature_ablation": lambda m, xs: attrfx.neuron_feature_ablation(m, "act", xs, 1),
}


@pytest.mark.parametrize("name", sorted(SIDE))
def test_an_input_that_cannot_reach_the_neuron_gets_exact_zeros(name):
    model, xs = seeded(SideInput), (randn(3, 3), randn(3, 4, seed=3))
    first, second = SIDE[name](model, xs)
    assert second.shape == xs[1].shape and torch.equal(second, torch.zeros_like(second))
    assert first.abs().sum() > 0


@pytest.mark.parametrize("name", ["layer_gradient_x_activation", "layer_gradcam", "layer_conductance"])
def test_a_layer_that_cannot_reach_the_output_gets_exact_zeros(name):
    model, xs = seeded(SideInput), (randn(3, 3), randn(3, 4, seed=3))
    result = getattr(attrfx, name)(model, "unused", xs, target=1)
    expected = (3, 1) if name == "layer_gradcam" else (3, 4)
    assert result.shape == expected and torch.equal(result, torch.zeros(expected, dtype=torch.float64))


class Dead(nn.Module):
    """A ReLU layer whose neurons are off everywhere near the origin (large negative bias)."""

    def __init__(self):
        super().__init__()
        self.fc, self.relu, self.out = nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)
        with torch.no_grad():
            self.fc.bias.fill_(-100.0)

    def forward(self, x):
        return self.out(self.relu(self.fc(x)))


DEAD_ZERO = ["neuron_gradient", "neuron_integrated_gradients", "neuron_conductance", "neuron_gradient_shap",
             "neuron_deeplift", "neuron_deeplift_shap", "neuron_guided_backprop", "neuron_feature_ablation"]


@pytest.mark.parametrize("name", DEAD_ZERO)
def test_a_dead_neuron_and_zero_inputs_give_exact_zeros(name):
    """Zero inputs (with the zero baseline) and a neuron that never fires: nothing to attribute."""
    model, x = seeded(Dead), torch.zeros(2, 3, dtype=torch.float64)
    fn = getattr(attrfx, name)
    extra = (torch.zeros(2, 3, dtype=torch.float64),) if "shap" in name else ()
    kw = {"target": 0} if name == "neuron_conductance" else {}
    kw.update({"generator": torch.Generator().manual_seed(0)} if name == "neuron_gradient_shap" else {})
    result = fn(model, "relu", x, 2, *extra, **kw)
    assert result.shape == x.shape and torch.equal(result, torch.zeros_like(x))
