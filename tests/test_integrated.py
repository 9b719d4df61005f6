"""Integrated gradients at the inputs and at a layer, and internal influence: parity with Captum 0.9.0, laws, errors."""

import warnings

import pytest
import torch
from captum.attr import IntegratedGradients, InternalInfluence, LayerIntegratedGradients
from hypothesis import given, strategies as st
from torch import nn

import attrfx
from attrfx import axioms
from attrfx.testing import baselines_for, linear_models, mlp_cases, rules, targets, tensors
from models import MLP, ConvNet, MultiInput, Residual, TupleLayer, randn, seeded
from parity import assert_parity, trapezoid_scale

METHODS = ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre"]
TARGETS = [1, (2,), torch.tensor(0), torch.tensor([3, 0, 1]), [2, 2, 0]]
TARGET_IDS = ["int", "tuple", "0d-tensor", "tensor", "list"]


def conv(dtype=torch.float64):
    return seeded(ConvNet, dtype=dtype), randn(3, 2, 8, 8, dtype=dtype)


def multi(dtype=torch.float64):
    model = seeded(MultiInput, dtype=dtype)
    xs = (randn(3, 4, seed=2, dtype=dtype), randn(3, 3, seed=3, dtype=dtype))
    return model, xs, (randn(3, 1, seed=5, dtype=dtype), True)


def flat_attributions(result):
    parts = result if isinstance(result, (tuple, list)) else (result,)
    return [t for part in parts for t in (part if isinstance(part, tuple) else (part,))]


def assert_delta(ours, attr, delta, dtype=torch.float64, scale=1.0):
    """``ours`` equals Captum's delta for its attributions ``attr`` scaled by ``scale``
    (``Σ scale·attr − (F(x) − F(b))``), within the SPEC tolerance relative to ``Σ |attr|``: a delta is a
    difference of nearly equal sums."""
    flat = flat_attributions(attr)
    summed = sum(t.reshape(t.shape[0], -1).sum(1) for t in flat)
    size = sum(t.reshape(t.shape[0], -1).abs().sum(1) for t in flat)
    expected = delta + (scale - 1) * summed
    assert ours.shape == expected.shape and ours.dtype == expected.dtype
    rtol = {torch.float64: 1e-6, torch.float32: 1e-4}[dtype]
    assert bool(((ours - expected).abs() <= rtol * size + 1e-9).all()), (ours, expected)


def assert_parity_and_delta(ours, theirs, dtype=torch.float64):
    """``(attributions, delta)`` equal Captum's."""
    assert_parity(ours[0], theirs[0], dtype)
    assert_delta(ours[1], theirs[0], theirs[1], dtype)


class Embedder(nn.Module):
    """Token ids ``[B, T]`` → one logit per class; the ids also mask the mean (the inputs reach past the layer)."""

    def __init__(self):
        super().__init__()
        self.embed, self.mix, self.out = nn.Embedding(11, 4), nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, ids):
        mask = (ids != 0).unsqueeze(-1).to(self.out.weight.dtype)
        h = torch.tanh(self.mix(self.embed(ids))) * mask
        return self.out(h.sum(1) / mask.sum(1).clamp_min(1))


def ids():
    return torch.tensor([[3, 1, 4, 1, 5], [9, 2, 6, 5, 0], [5, 8, 9, 7, 9]])


# --- integrated_gradients: parity ------------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("multiply", [True, False])
def test_integrated_gradients_methods_and_delta(method, multiply):
    model, x = conv()
    base = 0.1 * randn(*x.shape, seed=4)
    ours = attrfx.integrated_gradients(model, x, baselines=base, target=1, n_steps=7, method=method,
                                       multiply_by_inputs=multiply, return_convergence_delta=True)
    attr, delta = IntegratedGradients(model, multiply_by_inputs=multiply).attribute(
        x, baselines=base, target=1, n_steps=7, method=method, return_convergence_delta=True)
    scale = trapezoid_scale(method, 7)
    assert_parity(ours[0], attr, scale=scale)
    if multiply:  # Captum's delta is defined for global attributions
        assert_delta(ours[1], attr, delta, scale=scale)


@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
@pytest.mark.parametrize("baseline", [None, -0.25, "one-row", "full"])
def test_integrated_gradients_targets_and_baselines(target, baseline):
    model, x = conv()
    base = {"one-row": randn(1, 2, 8, 8, seed=7), "full": randn(3, 2, 8, 8, seed=8)}.get(baseline, baseline)
    ours = attrfx.integrated_gradients(model, x, baselines=base, target=target, n_steps=5)
    theirs = IntegratedGradients(model).attribute(x, baselines=base, target=target, n_steps=5)
    assert_parity(ours, theirs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("internal_batch_size", [None, 4, 7])
def test_integrated_gradients_tuple_inputs_forward_args_and_batching(dtype, internal_batch_size):
    model, xs, args = multi(dtype)
    base = (0.5, randn(1, 3, seed=9, dtype=dtype))
    ours = attrfx.integrated_gradients(model, xs, baselines=base, target=[0, 1, 1], additional_forward_args=args,
                                       n_steps=6, internal_batch_size=internal_batch_size,
                                       return_convergence_delta=True)
    theirs = IntegratedGradients(model).attribute(xs, baselines=base, target=[0, 1, 1], additional_forward_args=args,
                                                  n_steps=6, internal_batch_size=internal_batch_size,
                                                  return_convergence_delta=True)
    assert isinstance(ours[0], tuple)
    assert_parity_and_delta(ours, theirs, dtype)


@pytest.mark.parametrize("factory,shape", [(MLP, (4, 5)), (Residual, (4, 4)), (TupleLayer, (4, 3))])
def test_integrated_gradients_models(factory, shape):
    model = seeded(factory, dtype=torch.float32)
    x = randn(*shape, dtype=torch.float32)
    ours = attrfx.integrated_gradients(model, x, target=1, n_steps=9, method="riemann_middle")
    theirs = IntegratedGradients(model).attribute(x, target=1, n_steps=9, method="riemann_middle")
    assert_parity(ours, theirs, torch.float32)


def test_integrated_gradients_auto_converges_to_the_integral():
    model, xs, args = multi()
    kwargs = dict(baselines=(0.5, -0.5), target=[0, 1, 1], additional_forward_args=args)
    attr, conv = attrfx.integrated_gradients(model, xs, n_steps="auto", tolerance=1e-8, max_steps=512,
                                             return_convergence_delta=True, **kwargs)
    assert isinstance(conv, attrfx.adaptive.Convergence) and bool(conv.converged.all())
    theirs = IntegratedGradients(model).attribute(xs, n_steps=64, **kwargs)  # a smooth model: Gauss–Legendre exact
    assert_parity(attr, theirs)
    _, delta = IntegratedGradients(model).attribute(xs, n_steps=64, return_convergence_delta=True, **kwargs)
    assert_delta(conv.delta, attr, delta)


def test_integrated_gradients_auto_reports_the_gap_it_leaves():
    model, x = conv()
    with pytest.warns(attrfx.adaptive.IntegrationBudgetWarning, match="integrated_gradients"):
        attr, conv_ = attrfx.integrated_gradients(model, x, target=1, n_steps="auto", tolerance=1e-9, max_steps=8,
                                                  return_convergence_delta=True)
    gap = attr.flatten(1).sum(1) - axioms.output_difference(model, x, target=1)
    assert not bool(conv_.converged.any()) and float(gap.abs().min()) > 1e-6
    torch.testing.assert_close(conv_.delta, gap, rtol=0, atol=1e-10)
    assert conv_.evaluations.tolist() == [8, 8, 8]


# --- layer_integrated_gradients: parity ------------------------------------------------------------------------

@pytest.mark.parametrize("layer", ["conv1", "relu1", "pool", "conv2", "act2", "fc"])
@pytest.mark.parametrize("at_input", [False, True])
@pytest.mark.parametrize("multiply", [True, False])
def test_layer_integrated_gradients_layers(layer, at_input, multiply):
    model, x = conv()
    base = 0.2 * randn(*x.shape, seed=4)
    ours = attrfx.layer_integrated_gradients(model, layer, x, baselines=base, target=2, n_steps=5,
                                             attribute_to_layer_input=at_input, multiply_by_inputs=multiply,
                                             return_convergence_delta=True)
    theirs = LayerIntegratedGradients(model, model.get_submodule(layer), multiply_by_inputs=multiply).attribute(
        x, baselines=base, target=2, n_steps=5, attribute_to_layer_input=at_input, return_convergence_delta=True)
    assert_parity_and_delta(ours, theirs)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
def test_layer_integrated_gradients_methods_and_targets(method, target):
    model, x = conv()
    ours = attrfx.layer_integrated_gradients(model, "conv2", x, baselines=-0.1, target=target, n_steps=4,
                                             method=method, return_convergence_delta=True)
    attr, delta = LayerIntegratedGradients(model, model.conv2).attribute(
        x, baselines=-0.1, target=target, n_steps=4, method=method, return_convergence_delta=True)
    scale = trapezoid_scale(method, 4)
    assert_parity(ours[0], attr, scale=scale)
    assert_delta(ours[1], attr, delta, scale=scale)


@pytest.mark.parametrize("method", ["riemann_left", "riemann_trapezoid"])
@pytest.mark.parametrize("layer", ["conv1", "relu1"])
def test_layer_integrated_gradients_path_points_are_exact(method, layer):
    """At α = 0 the zero baseline gives every position of a channel the same value: the max-pool's ties are
    broken as in Captum only if the layer holds exactly the path point."""
    model, x = conv()
    ours = attrfx.layer_integrated_gradients(model, layer, x, target=1, n_steps=3, method=method)
    theirs = LayerIntegratedGradients(model, model.get_submodule(layer)).attribute(x, target=1, n_steps=3,
                                                                                   method=method)
    assert_parity(ours, theirs, scale=trapezoid_scale(method, 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("internal_batch_size", [None, 5])
@pytest.mark.parametrize("layer", ["fc_a", "act"])
def test_layer_integrated_gradients_tuple_inputs_forward_args(dtype, internal_batch_size, layer):
    model, xs, args = multi(dtype)
    base = (randn(3, 4, seed=11, dtype=dtype), 0.3)
    kwargs = dict(baselines=base, target=1, additional_forward_args=args, n_steps=6,
                  internal_batch_size=internal_batch_size, return_convergence_delta=True)
    ours = attrfx.layer_integrated_gradients(model, layer, xs, **kwargs)
    theirs = LayerIntegratedGradients(model, model.get_submodule(layer)).attribute(xs, **kwargs)
    assert_parity_and_delta(ours, theirs, dtype)


def test_layer_integrated_gradients_tuple_output_layer():
    model, x = seeded(TupleLayer), randn(4, 3)
    ours = attrfx.layer_integrated_gradients(model, "pair", x, target=0, n_steps=6)
    theirs = LayerIntegratedGradients(model, model.pair).attribute(x, target=0, n_steps=6)
    assert isinstance(ours, tuple) and len(ours) == 2
    assert_parity(ours, theirs)


@pytest.mark.parametrize("layers", [["fc_a", "fc_b"], ["fc_in", "inner"]], ids=["independent", "dependent"])
def test_layer_integrated_gradients_list_of_layers(layers):
    """Captum replaces each layer's activation by its path point, also one made from another listed layer."""
    if layers[0] == "fc_a":
        model, xs, args = multi()
    else:  # inner reads fc_in's output; fc_in reaches the output also through the skip connection
        model, xs, args = seeded(Residual), randn(3, 4), None
    ours = attrfx.layer_integrated_gradients(model, layers, xs, target=0, additional_forward_args=args, n_steps=5,
                                             return_convergence_delta=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Captum warns about a list of layers
        theirs = LayerIntegratedGradients(model, [model.get_submodule(n) for n in layers]).attribute(
            xs, target=0, additional_forward_args=args, n_steps=5, return_convergence_delta=True)
    assert isinstance(ours[0], list) and len(ours[0]) == len(layers)
    assert_parity_and_delta((tuple(ours[0]), ours[1]), (tuple(theirs[0]), theirs[1]))


class Fork(nn.Module):
    """``fc3`` reads ``act(fc2(·))``; ``side`` reads ``fc2``'s output too, so ``fc2``'s input reaches the output past
    ``fc3``. At their inputs, ``fc3``'s depends on ``fc2``'s, and each is read by its layer alone."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(4, 5), nn.Linear(5, 5), nn.Tanh()
        self.fc3, self.side = nn.Linear(5, 2), nn.Linear(5, 2)

    def forward(self, x):
        b = self.fc2(self.fc1(x))
        return torch.tanh(self.fc3(self.act(b))) + self.side(torch.sin(b))


@pytest.mark.parametrize("at_input", [False, True])
def test_layer_integrated_gradients_list_of_dependent_layers(at_input):
    model, x = seeded(Fork), randn(3, 4)
    ours = attrfx.layer_integrated_gradients(model, ["fc2", "fc3"], x, target=1, n_steps=5,
                                             attribute_to_layer_input=at_input, return_convergence_delta=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Captum warns about a list of layers
        theirs = LayerIntegratedGradients(model, [model.fc2, model.fc3]).attribute(
            x, target=1, n_steps=5, attribute_to_layer_input=at_input, return_convergence_delta=True)
    assert_parity_and_delta((tuple(ours[0]), ours[1]), (tuple(theirs[0]), theirs[1]))


@pytest.mark.parametrize("baseline", [None, 1, "ids"])
def test_layer_integrated_gradients_token_ids_at_an_embedding(baseline):
    model, x = seeded(Embedder), ids()
    base = torch.tensor([[1, 1, 1, 1, 0]]) if baseline == "ids" else baseline
    ours = attrfx.layer_integrated_gradients(model, "embed", x, baselines=base, target=[0, 2, 1], n_steps=8,
                                             return_convergence_delta=True)
    theirs = LayerIntegratedGradients(model, model.embed).attribute(x, baselines=base, target=[0, 2, 1], n_steps=8,
                                                                    return_convergence_delta=True)
    assert_parity_and_delta(ours, theirs)


def test_layer_integrated_gradients_on_a_tiny_transformer():
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=16, max_position_embeddings=16, num_labels=3)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.BertForSequenceClassification(config).double().eval()
    x, mask = torch.tensor([[2, 7, 9, 3], [2, 5, 3, 0]]), torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])

    def logits(ids, attention_mask):
        return model(input_ids=ids, attention_mask=attention_mask).logits

    layer = model.bert.embeddings.word_embeddings
    ours = attrfx.layer_integrated_gradients(logits, layer, x, target=1, additional_forward_args=(mask,), n_steps=6,
                                             return_convergence_delta=True)
    theirs = LayerIntegratedGradients(logits, layer).attribute(x, target=1, additional_forward_args=(mask,),
                                                               n_steps=6, return_convergence_delta=True)
    assert_parity_and_delta(ours, theirs)


# --- internal_influence: parity --------------------------------------------------------------------------------

@pytest.mark.parametrize("layer", ["conv1", "relu1", "conv2", "act2", "fc"])
@pytest.mark.parametrize("at_input", [False, True])
def test_internal_influence_layers(layer, at_input):
    model, x = conv()
    ours = attrfx.internal_influence(model, layer, x, baselines=0.1, target=3, n_steps=5,
                                     attribute_to_layer_input=at_input)
    theirs = InternalInfluence(model, model.get_submodule(layer)).attribute(
        x, baselines=0.1, target=3, n_steps=5, attribute_to_layer_input=at_input)
    assert_parity(ours, theirs)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
def test_internal_influence_methods_and_targets(method, target):
    model, x = conv()
    base = randn(1, 2, 8, 8, seed=3)
    ours = attrfx.internal_influence(model, "pool", x, baselines=base, target=target, n_steps=4, method=method)
    theirs = InternalInfluence(model, model.pool).attribute(x, baselines=base, target=target, n_steps=4,
                                                            method=method)
    assert_parity(ours, theirs, scale=trapezoid_scale(method, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("internal_batch_size", [None, 5])
def test_internal_influence_tuple_inputs_and_tuple_layers(dtype, internal_batch_size):
    model, xs, args = multi(dtype)
    kwargs = dict(target=[1, 0, 1], additional_forward_args=args, n_steps=6, internal_batch_size=internal_batch_size)
    ours = attrfx.internal_influence(model, "act", xs, **kwargs)
    theirs = InternalInfluence(model, model.act).attribute(xs, **kwargs)
    assert_parity(ours, theirs, dtype)
    pair = seeded(TupleLayer, dtype=dtype)
    x = randn(4, 3, dtype=dtype)
    assert_parity(attrfx.internal_influence(pair, "pair", x, target=1, n_steps=5),
                  InternalInfluence(pair, pair.pair).attribute(x, target=1, n_steps=5), dtype)


# --- laws ------------------------------------------------------------------------------------------------------

@given(case=mlp_cases(), data=st.data())
def test_integrated_gradients_is_complete_and_converges(case, data):
    target = data.draw(targets(case.n_outputs, case.inputs.shape[0]), label="target")
    base = data.draw(baselines_for(case.inputs), label="baselines")
    change = axioms.output_difference(case.model, case.inputs, baselines=base, target=target)
    gaps = {n: attrfx.integrated_gradients(case.model, case.inputs, baselines=base, target=target, n_steps=n,
                                           return_convergence_delta=True)[1] for n in (2, 64)}
    assert float(gaps[64].abs().max()) <= 1e-6 * float(change.abs().max()) + 1e-9
    assert float(gaps[64].abs().max()) <= float(gaps[2].abs().max()) + 1e-9


@given(case=mlp_cases(), data=st.data())
def test_layer_integrated_gradients_is_complete_at_a_cut(case, data):
    """Every path from the inputs to the output passes the hidden layer: Σ attributions → F(x) − F(b)."""
    target = data.draw(targets(case.n_outputs, case.inputs.shape[0]), label="target")
    base = data.draw(baselines_for(case.inputs), label="baselines")
    change = axioms.output_difference(case.model, case.inputs, baselines=base, target=target)
    attr, delta = attrfx.layer_integrated_gradients(case.model, case.layer, case.inputs, baselines=base,
                                                    target=target, n_steps=64, return_convergence_delta=True)
    assert float((attr.flatten(1).sum(1) - change).abs().max()) <= 1e-6 * float(change.abs().max()) + 1e-9
    torch.testing.assert_close(delta, attr.flatten(1).sum(1) - change, rtol=0, atol=1e-12)


@given(model=linear_models(), x=tensors((3, 4)), data=st.data())
def test_path_integrals_are_exact_on_linear_models(model, x, data):
    method, n_steps = data.draw(rules(), label="method"), data.draw(st.integers(2, 6), label="n_steps")
    base = data.draw(baselines_for(x), label="baselines")
    target = data.draw(st.integers(0, 2), label="target")
    weights = model[1].weight[target] @ model[0].weight
    attr = attrfx.integrated_gradients(model, x, baselines=base, target=target, n_steps=n_steps, method=method)
    assert axioms.linear_model_gap(attr, x, weights, baselines=base) < 1e-10
    # at the hidden layer: (h(x) − h(b))·v
    attr = attrfx.layer_integrated_gradients(model, "0", x, baselines=base, target=target, n_steps=n_steps,
                                             method=method)
    h_b = model[0](torch.broadcast_to(torch.as_tensor(0.0 if base is None else base, dtype=x.dtype), x.shape))
    torch.testing.assert_close(attr, (model[0](x) - h_b) * model[1].weight[target], rtol=1e-10, atol=1e-10)
    # internal influence: the constant gradient at the layer
    influence = attrfx.internal_influence(model, "0", x, baselines=base, target=target, n_steps=n_steps, method=method)
    torch.testing.assert_close(influence, model[1].weight[target].expand(3, -1), rtol=1e-10, atol=1e-10)


@given(case=mlp_cases(batch=(2, 4)), data=st.data())
def test_batch_independence_and_internal_batching(case, data):
    target = data.draw(targets(case.n_outputs, 1).filter(lambda t: not isinstance(t, list)), label="target")
    target = target if not isinstance(target, torch.Tensor) or target.dim() == 0 else int(target[0])
    batch = data.draw(st.sampled_from([None, 1, 5]), label="internal_batch_size")
    calls = {
        "integrated_gradients": lambda x, ibs: attrfx.integrated_gradients(case.model, x, target=target, n_steps=6,
                                                                           internal_batch_size=ibs),
        "layer_integrated_gradients": lambda x, ibs: attrfx.layer_integrated_gradients(
            case.model, case.layer, x, target=target, n_steps=6, internal_batch_size=ibs),
        "internal_influence": lambda x, ibs: attrfx.internal_influence(case.model, case.layer, x, target=target,
                                                                       n_steps=6, internal_batch_size=ibs),
    }
    for name, call in calls.items():
        assert axioms.batch_independence_gap(lambda x: call(x, None), case.inputs) < 1e-12, name
        torch.testing.assert_close(call(case.inputs, batch), call(case.inputs, None), rtol=1e-12, atol=1e-12)


class Fails(nn.Module):
    """Raises after its second layer has run (the failure comes mid-pass)."""

    def __init__(self):
        super().__init__()
        self.fc, self.act = nn.Linear(3, 3), nn.Tanh()

    def forward(self, x):
        h = self.act(self.fc(x))
        if h.shape[0] > 2:
            raise RuntimeError("model failure")
        return h


@pytest.mark.parametrize("name", ["integrated_gradients", "layer_integrated_gradients", "internal_influence"])
def test_stateless_also_when_the_model_raises(name):
    for model, x in [(seeded(MLP), randn(2, 5)), (seeded(Fails), randn(2, 3))]:
        method = getattr(attrfx, name)
        layer = () if name == "integrated_gradients" else (model.fc2 if isinstance(model, MLP) else "act",)
        call = lambda: method(model, *layer, x, target=0, n_steps=4)
        assert axioms.statelessness_violations(call, model, x) == []


# --- errors ----------------------------------------------------------------------------------------------------

def test_integer_inputs_point_to_the_layer_form():
    model = seeded(Embedder)
    with pytest.raises(ValueError, match="integrated_gradients: .*inputs.*layer_integrated_gradients at the embedding"):
        attrfx.integrated_gradients(model, ids(), target=0)
    with pytest.raises(ValueError, match="internal_influence: .*inputs"):
        attrfx.internal_influence(model, "mix", ids(), target=0)


@pytest.mark.parametrize("name", ["integrated_gradients", "layer_integrated_gradients", "internal_influence"])
@pytest.mark.parametrize("kwargs,arg", [(dict(n_steps=0), "n_steps"), (dict(n_steps=2.5), "n_steps"),
                                        (dict(method="simpson"), "method"),
                                        (dict(baselines=torch.zeros(2, 5)), "baselines"),
                                        (dict(baselines=(0.0, 0.0)), "baselines"),
                                        (dict(internal_batch_size=0), "internal_batch_size")])
def test_bad_arguments_are_named(name, kwargs, arg):
    model, x = seeded(MLP), randn(3, 5)
    layer = () if name == "integrated_gradients" else ("fc2",)
    with pytest.raises((ValueError, TypeError), match=f"{name}: .*{arg}"):
        getattr(attrfx, name)(model, *layer, x, target=0, **kwargs)


# --- n_steps="auto" for the layer forms -------------------------------------------------------------------------

AUTO = dict(n_steps="auto", tolerance=1e-9, max_steps=1024, return_convergence_delta=True)


def assert_auto_matches(ours, theirs):
    """Adaptive attributions equal Captum's fine fixed rule (a smooth model), and they converged."""
    attr, conv = ours
    assert isinstance(conv, attrfx.adaptive.Convergence) and bool(conv.converged.all())
    assert bool((conv.evaluations < AUTO["max_steps"]).all())
    assert_parity(attr, theirs)


@torch.no_grad()
def path_change(model, layers, x, baselines, target, at_input=False):
    """``F(x; h(x)) − F(x; h(b))``: the model on ``x`` with the layers' outputs (inputs) taken from a pass on ``b``,
    by hand with forward hooks."""
    seen = []
    record = [(l.register_forward_pre_hook(lambda m, a: seen.append(a)) if at_input
               else l.register_forward_hook(lambda m, a, out: seen.append(out))) for l in layers]
    model(torch.broadcast_to(torch.as_tensor(baselines, dtype=x.dtype), x.shape).to(x.dtype))
    for h in record:
        h.remove()
    it = iter(seen)
    swap = [(l.register_forward_pre_hook(lambda m, a, v=next(it): v) if at_input
             else l.register_forward_hook(lambda m, a, out, v=next(it): v)) for l in layers]
    try:
        start = model(x)
    finally:
        for h in swap:
            h.remove()
    pick = lambda out: out[torch.arange(x.shape[0]), torch.as_tensor(target)]
    return pick(model(x)) - pick(start)


@pytest.mark.parametrize("layer,at_input", [("fc_in", False), ("inner", False), ("act", True), ("head", True)])
def test_layer_integrated_gradients_auto_converges_to_the_integral(layer, at_input):
    """``inner`` is on a branch the skip connection bypasses: the attributions do not sum to F(x) − F(b), yet
    the path integral converges (to its own change)."""
    model, x = seeded(Residual), randn(3, 4)
    kwargs = dict(baselines=0.3, target=[0, 1, 1], attribute_to_layer_input=at_input)
    attr, conv_ = attrfx.layer_integrated_gradients(model, layer, x, **AUTO, **kwargs)
    theirs = LayerIntegratedGradients(model, getattr(model, layer)).attribute(x, n_steps=96, **kwargs)
    assert_auto_matches((attr, conv_), theirs)
    change = path_change(model, [getattr(model, layer)], x, 0.3, [0, 1, 1], at_input)
    torch.testing.assert_close(conv_.delta, attr.sum(1) - change, rtol=0, atol=1e-12)
    assert bool((conv_.delta.abs() <= 1e-9 * change.abs() + 1e-14).all())


def test_layer_integrated_gradients_auto_token_ids_and_a_list_of_layers():
    model = seeded(Embedder)
    ours = attrfx.layer_integrated_gradients(model, "embed", ids(), target=2, **AUTO)
    assert_auto_matches(ours, LayerIntegratedGradients(model, model.embed).attribute(ids(), target=2, n_steps=96))
    res = seeded(Residual)
    both, conv_ = attrfx.layer_integrated_gradients(res, ["fc_in", "inner"], randn(3, 4), target=1, **AUTO)
    gap = sum(a.sum(1) for a in both) - axioms.output_difference(res, randn(3, 4), target=1)  # only through them
    torch.testing.assert_close(conv_.delta, gap, rtol=0, atol=1e-12)
    assert float(gap.abs().max()) <= 1e-8 and bool(conv_.converged.all())


def test_layer_integrated_gradients_auto_reports_the_gap_it_leaves():
    model, x = conv()
    with pytest.warns(attrfx.adaptive.IntegrationBudgetWarning, match="layer_integrated_gradients"):
        attr, conv_ = attrfx.layer_integrated_gradients(model, "conv1", x, target=1, n_steps="auto", tolerance=1e-12,
                                                        max_steps=8, return_convergence_delta=True)
    gap = attr.flatten(1).sum(1) - axioms.output_difference(model, x, target=1)
    torch.testing.assert_close(conv_.delta, gap, rtol=0, atol=1e-10)
    assert conv_.evaluations.tolist() == [8, 8, 8] and not bool(conv_.converged.any())


@pytest.mark.parametrize("factory,layer,shape", [(Residual, "inner", (3, 4)), (ConvNet, "conv2", (3, 2, 8, 8))])
def test_internal_influence_auto_converges_to_the_integral(factory, layer, shape):
    model, x = seeded(factory), randn(*shape)
    if factory is ConvNet:   # smooth along the path: no ReLU kinks or pooling switches between 0.9·x and x
        kwargs = dict(baselines=0.9 * x, target=1)
    else:
        kwargs = dict(baselines=0.3, target=[0, 1, 1])
    attr, conv_ = attrfx.internal_influence(model, layer, x, **AUTO, **kwargs)
    theirs = InternalInfluence(model, getattr(model, layer)).attribute(x, n_steps=96, **kwargs)
    assert_auto_matches((attr, conv_), theirs)
    change = axioms.output_difference(model, x, **kwargs)  # the nodes: integrated gradients' completeness
    assert bool((conv_.delta.abs() <= 1e-9 * change.abs() + 1e-14).all())


def test_internal_influence_reports_convergence_only_when_adaptive():
    with pytest.raises(ValueError, match="internal_influence: .*return_convergence_delta"):
        attrfx.internal_influence(seeded(MLP), "fc2", randn(3, 5), target=0, return_convergence_delta=True)
