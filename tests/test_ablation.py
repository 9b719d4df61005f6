"""neuron_feature_ablation and the ablation primitives: parity with Captum 0.9.0, laws, errors."""

import pytest
import torch
from captum.attr import NeuronFeatureAblation
from hypothesis import given, strategies as st
from torch import nn

import attrfx
from attrfx.ablation import feature_masks
from _models_rules import Chain, PoolNet, TwoInputs, neuron_value
from models import randn, seeded
from parity import assert_parity


def pool_case(dtype=torch.float64):
    return seeded(PoolNet, dtype=dtype), randn(2, 2, 8, 8, dtype=dtype)


GROUPS = torch.arange(64).reshape(1, 1, 8, 8) // 16          # four row bands, shared by both channels
PER_EXAMPLE = torch.stack([GROUPS[0], (GROUPS[0] + 1) % 4])   # a different grouping for each example

CASES = [   # (layer, selector, feature_mask, baselines)
    ("conv2", (1, 2, 3), None, None),
    ("pool", (2, slice(0, 2), 1), GROUPS, 0.5),
    ("fc1", 4, PER_EXAMPLE, randn(1, 2, 8, 8, seed=3)),
    ("elu", lambda h: h[:, 0] - 2 * h[:, 3], torch.tensor(0), randn(2, 2, 8, 8, seed=4)),
    ("relu", (0, 1, 1), GROUPS.expand(1, 2, 8, 8) + torch.tensor([0, 4]).reshape(1, 2, 1, 1), None),
]


@pytest.mark.parametrize("layer,selector,mask,baselines", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("ppe", [1, 3])
@pytest.mark.parametrize("at_input", [False, True])
def test_parity(layer, selector, mask, baselines, ppe, at_input):
    model, x = pool_case()
    ours = attrfx.neuron_feature_ablation(model, layer, x, selector, baselines=baselines, feature_mask=mask,
                                          perturbations_per_eval=ppe, attribute_to_neuron_input=at_input)
    theirs = NeuronFeatureAblation(model, model.get_submodule(layer)).attribute(
        x, selector, baselines=baselines, feature_mask=mask, perturbations_per_eval=ppe,
        attribute_to_neuron_input=at_input)
    assert_parity(ours, theirs)


@pytest.mark.parametrize("ppe", [1, 2, 5])
@pytest.mark.parametrize("masks", ["none", "shared", "per_input"])
def test_parity_tuple_inputs_cross_input_ids(ppe, masks):
    model = seeded(TwoInputs, dtype=torch.float32)
    xs = (randn(3, 4, dtype=torch.float32), randn(3, 3, seed=2, dtype=torch.float32))
    scale = randn(3, 1, seed=3, dtype=torch.float32)
    mask = {"none": None,
            "shared": (torch.tensor([[0, 1, 1, 2]]), torch.tensor([[2, 0, 3], [1, 1, 0], [3, 2, 0]])),
            "per_input": (torch.tensor([[0, 0, 1, 1]]), torch.tensor([[2, 3, 3]]))}[masks]
    base = (0.25, randn(1, 3, seed=9, dtype=torch.float32))
    ours = attrfx.neuron_feature_ablation(model, "leaky", xs, 2, baselines=base, additional_forward_args=scale,
                                          feature_mask=mask, perturbations_per_eval=ppe)
    theirs = NeuronFeatureAblation(model, model.leaky).attribute(
        xs, 2, baselines=base, additional_forward_args=(scale,), feature_mask=mask, perturbations_per_eval=ppe)
    assert_parity(ours, theirs, dtype=torch.float32)


def test_list_of_selectors_shares_the_forward_passes():
    model, x = pool_case()
    calls = []
    handle = model.conv1.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    sels = [(1, 2, 3), (0, slice(None), 1), lambda h: h[:, 2, 1, 1] ** 2]
    try:
        many = attrfx.neuron_feature_ablation(model, "conv2", x, sels, feature_mask=GROUPS, perturbations_per_eval=3)
    finally:
        handle.remove()
    # one inspection pass on no examples, the unablated batch, then ceil(4 / 3) = 2 passes of stacked ablations
    assert calls == [0, 2, 6, 2]
    for k, s in enumerate(sels):
        torch.testing.assert_close(many[k], attrfx.neuron_feature_ablation(model, "conv2", x, s, feature_mask=GROUPS))


def test_forward_stops_at_layer_and_records_no_graph():
    model, x = pool_case()
    after = []
    handle = model.fc2.register_forward_hook(lambda m, i, o: after.append(1))
    grad_modes = []
    pre = model.conv1.register_forward_pre_hook(lambda m, i: grad_modes.append(torch.is_grad_enabled()))
    try:
        out = attrfx.neuron_feature_ablation(model, "fc1", x.requires_grad_(), 1, feature_mask=GROUPS)
    finally:
        handle.remove(), pre.remove()
    # fc2 runs only in the two-example inspection pass that learns the layer's shape
    assert after == [1] and not any(grad_modes) and not out.requires_grad and x.grad is None


@given(st.integers(0, 10_000), st.integers(1, 7))
def test_perturbations_per_eval_never_changes_the_result(seed, ppe):
    model, x = seeded(Chain, seed=seed), randn(3, 5, seed=seed)
    mask = torch.tensor([[0, 1, 1, 2, 3]])
    one = attrfx.neuron_feature_ablation(model, "act2", x, [1, 4], feature_mask=mask, baselines=0.3)
    many = attrfx.neuron_feature_ablation(model, "act2", x, [1, 4], feature_mask=mask, baselines=0.3,
                                          perturbations_per_eval=ppe)
    torch.testing.assert_close(one, many)


@given(st.integers(0, 10_000), st.integers(0, 5))
def test_one_group_gets_the_total_change(seed, neuron):
    model = seeded(lambda: Chain(nn.Tanh), seed=seed)
    x, b = randn(3, 5, seed=seed), randn(1, 5, seed=seed + 1)
    attr = attrfx.neuron_feature_ablation(model, "fc2", x, neuron, baselines=b, feature_mask=torch.zeros(1, 5, dtype=torch.long))
    change = neuron_value(model, "fc2", (x,), neuron) - neuron_value(model, "fc2", (b.expand_as(x),), neuron)
    torch.testing.assert_close(attr, change[:, None].expand_as(x))


def test_integer_inputs_and_plain_function():
    emb = nn.Embedding(10, 3).double()
    model = nn.Sequential(emb, nn.Flatten(), nn.Linear(12, 2)).double()
    tokens = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    ours = attrfx.neuron_feature_ablation(lambda t: model(t), model[2], tokens, 1, baselines=0)
    theirs = NeuronFeatureAblation(lambda t: model(t), model[2]).attribute(tokens, 1, baselines=0)
    assert_parity(ours, theirs)


def test_default_masks_number_every_element_across_inputs():
    masks = feature_masks(None, (torch.zeros(2, 2, 2), torch.zeros(2, 3)))
    assert [m.tolist() for m in masks] == [[[[0, 1], [2, 3]]], [[4, 5, 6]]]


def test_errors():
    model, x = seeded(Chain), randn(2, 5)
    with pytest.raises(ValueError, match=r"neuron_feature_ablation: `feature_mask\[0\]` must be a tensor that "
                                         r"broadcasts to the input shape \(2, 5\)"):
        attrfx.neuron_feature_ablation(model, "fc2", x, 0, feature_mask=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer feature ids"):
        attrfx.neuron_feature_ablation(model, "fc2", x, 0, feature_mask=torch.zeros(1, 5))
    with pytest.raises(ValueError, match="one mask per input"):
        attrfx.neuron_feature_ablation(model, "fc2", x, 0, feature_mask=(torch.zeros(1, 5, dtype=torch.long),) * 2)
    for bad, kind in [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError)]:
        with pytest.raises(kind, match="`perturbations_per_eval` must be a positive int"):
            attrfx.neuron_feature_ablation(model, "fc2", x, 0, perturbations_per_eval=bad)


class Tabular(nn.Module):
    """Two inputs; ``fc`` reads the first one flattened (``[B, 2, 4]``: 8 features), then Tanh, Dropout, ReLU."""

    def __init__(self):
        super().__init__()
        self.flat, self.fc, self.tanh, self.drop = nn.Flatten(), nn.Linear(8, 12), nn.Tanh(), nn.Dropout(0.3)
        self.relu, self.side, self.out = nn.ReLU(), nn.Linear(3, 2), nn.Linear(12, 2)

    def forward(self, x, extra):
        return self.out(self.relu(self.drop(self.tanh(self.fc(self.flat(x)))))) + self.side(extra)


class Transposed(Tabular):
    """The same, but ``fc`` reads the first input transposed (a copy, not the input as it is)."""

    def forward(self, x, extra):
        return self.out(self.relu(self.drop(self.tanh(self.fc(x.transpose(1, 2).flatten(1)))))) + self.side(extra)


TAB_X = (randn(5, 2, 4, seed=11), randn(5, 3, seed=12))
TAB_MASKS = {
    "none": None,
    "shared ids": (torch.tensor([[[0, 0, 1, 1], [2, 2, 1, 4]]]), torch.tensor([[4, 5, 0]])),
    "per example": (torch.arange(8).reshape(1, 2, 4).repeat(5, 1, 1) % torch.arange(2, 7).reshape(5, 1, 1),
                    torch.tensor([[7, 7, 8]])),
}
TAB_SELECTORS = {"one": 3, "a list with a slice": [(1,), (slice(4, 6),), (11,)]}


@pytest.fixture
def linear_ablations(monkeypatch):
    """How many calls of neuron_feature_ablation took the no-pass route of attrfx.ablation.linear_ablation."""
    from attrfx.methods import ablation
    seen, real = [], ablation.linear_ablation
    monkeypatch.setattr(ablation, "linear_ablation", lambda *a: seen.append(1) or real(*a))
    return seen


def by_passes(call):
    from attrfx.methods import ablation
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ablation, "_linear_fed", lambda p: None)
        return call()


@pytest.mark.parametrize("selector", TAB_SELECTORS)
@pytest.mark.parametrize("mask", TAB_MASKS)
@pytest.mark.parametrize("layer", ["fc", "tanh", "relu"])
def test_a_linear_reading_an_input_ablates_without_a_pass_per_group(layer, mask, selector, linear_ablations):
    model, sel, feature_mask = seeded(Tabular), TAB_SELECTORS[selector], TAB_MASKS[mask]
    base = (randn(1, 2, 4, seed=13), 0.5)
    call = lambda: attrfx.neuron_feature_ablation(model, layer, TAB_X, sel, baselines=base,  # noqa: E731
                                                  feature_mask=feature_mask)
    ours = call()
    assert linear_ablations == [1]
    torch.testing.assert_close(ours, by_passes(call), rtol=1e-10, atol=1e-12)
    assert linear_ablations == [1]
    for k, one in enumerate(sel if isinstance(sel, list) else [sel]):
        theirs = NeuronFeatureAblation(model, model.get_submodule(layer)).attribute(
            TAB_X, one, baselines=base, feature_mask=feature_mask)
        assert_parity(tuple(o[k] for o in ours) if isinstance(sel, list) else ours, theirs)


def test_linear_ablation_float32_parity(linear_ablations):
    model = seeded(Tabular, dtype=torch.float32)
    xs = tuple(x.float() for x in TAB_X)
    ours = attrfx.neuron_feature_ablation(model, "relu", xs, 7)
    assert linear_ablations == [1]
    assert_parity(ours, NeuronFeatureAblation(model, model.relu).attribute(xs, 7), dtype=torch.float32)


@pytest.mark.parametrize("case", ["the Linear reads a copy", "the Linear reads a hidden layer", "a 3-d activation"])
def test_no_linear_ablation_where_the_linear_does_not_read_an_input_as_it_is(case, linear_ablations):
    from models import MLP
    model, layer, xs, sel = {
        "the Linear reads a copy": (seeded(Transposed), "relu", TAB_X, 3),
        "the Linear reads a hidden layer": (seeded(MLP), "act2", randn(4, 5), 1),
        "a 3-d activation": (seeded(lambda: nn.Sequential(nn.Linear(4, 6), nn.ReLU())), "1", randn(3, 2, 4), (0, 2)),
    }[case]
    ours = attrfx.neuron_feature_ablation(model, layer, xs, sel)
    assert linear_ablations == []
    theirs = NeuronFeatureAblation(model, model.get_submodule(layer)).attribute(xs, sel)
    assert_parity(ours, theirs)


@given(groups=st.lists(st.integers(0, 3), min_size=8, max_size=8), rows=st.lists(st.integers(-12, 11), min_size=1,
                                                                                   max_size=4))
def test_linear_ablation_equals_the_passes_for_any_grouping(groups, rows):
    model = seeded(Tabular)
    mask = (torch.tensor(groups).reshape(1, 2, 4), torch.tensor([[1, 5, 5]]))
    call = lambda: attrfx.neuron_feature_ablation(model, "tanh", TAB_X, [(r,) for r in rows],  # noqa: E731
                                                  feature_mask=mask, perturbations_per_eval=2)
    torch.testing.assert_close(call(), by_passes(call), rtol=1e-10, atol=1e-12)
