"""feature_ablation, occlusion, feature_permutation and their layer forms: parity with Captum 0.9.0, laws,
mechanisms (batched passes, the part before a layer run once), sampling, errors."""

import itertools
import math

import pytest
import torch
from captum.attr import (FeatureAblation, FeaturePermutation, LayerFeatureAblation, LayerFeaturePermutation,
                         Occlusion)
from hypothesis import given, strategies as st
from torch import nn

import attrfx
from attrfx import axioms
from _models_rules import PoolNet, TwoInputs
from models import ConvNet, MLP, MultiInput, Residual, randn, seeded
from parity import assert_parity

CONV_GROUPS = torch.arange(64).reshape(1, 1, 8, 8) // 16 * 3 + 5       # four row bands, ids 5, 8, 11, 14
PER_EXAMPLE = torch.stack([(torch.arange(64).reshape(1, 8, 8) // 8 + i) % 5 for i in range(3)])  # [3, 1, 8, 8]
MULTI_X = (randn(3, 4), randn(3, 3, seed=2))
SCALE = randn(3, 1, seed=3)


def multi(dtype=torch.float64):
    return seeded(MultiInput, dtype=dtype)


def cast(value, dtype):
    if isinstance(value, tuple):
        return tuple(cast(v, dtype) for v in value)
    return value.to(dtype) if isinstance(value, torch.Tensor) and value.is_floating_point() else value


def same_as_float64(theirs, like):
    """Captum's occlusion divides in float32 whatever the model's dtype; attrfx keeps the output's dtype."""
    if isinstance(theirs, tuple):
        return tuple(same_as_float64(t, o) for t, o in zip(theirs, like))
    return theirs.to(like.dtype)


# --- feature_ablation ---------------------------------------------------------------------------------------------

ABLATION_CASES = {  # model, inputs, target, baselines, feature_mask, additional_forward_args
    "mlp, single elements": (MLP, randn(3, 5), 1, None, None, None),
    "mlp, shared ids not from 0, list target": (MLP, randn(3, 5), [0, 2, 1], 0.5, torch.tensor([[7, 7, 3, 9, 3]]),
                                                None),
    "conv, row bands, tensor baseline row": (ConvNet, randn(3, 2, 8, 8), 2, randn(1, 2, 8, 8, seed=4), CONV_GROUPS,
                                             None),
    "conv, per-example masks, full baselines": (ConvNet, randn(3, 2, 8, 8), torch.tensor([3, 0, 1]),
                                                randn(3, 2, 8, 8, seed=5), PER_EXAMPLE, None),
    "multi, ids shared across inputs": (MultiInput, MULTI_X, 1, (0.25, randn(1, 3, seed=9)),
                                        (torch.tensor([[0, 1, 1, 2]]), torch.tensor([[2, 0, 3], [1, 1, 0], [3, 2, 0]])),
                                        (SCALE, True)),
    "multi, default masks, one arg": (MultiInput, MULTI_X, 0, (0, 1), None, SCALE),
}


@pytest.mark.parametrize("ppe", [1, 3, None])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", ABLATION_CASES)
def test_feature_ablation_parity(case, dtype, ppe):
    factory, x, target, base, mask, afa = ABLATION_CASES[case]
    model, x, base, afa = seeded(factory, dtype=dtype), cast(x, dtype), cast(base, dtype), cast(afa, dtype)
    ours = attrfx.feature_ablation(model, x, target=target, baselines=base, feature_mask=mask,
                                   additional_forward_args=afa, perturbations_per_eval=ppe)
    theirs = FeatureAblation(model).attribute(x, target=target, baselines=base, feature_mask=mask,
                                              additional_forward_args=afa, perturbations_per_eval=ppe or 1)
    assert_parity(ours, theirs, dtype=dtype)


def test_feature_ablation_of_token_ids_and_a_plain_function():
    emb = seeded(lambda: nn.Sequential(nn.Embedding(10, 3), nn.Flatten(), nn.Linear(12, 2)))
    tokens = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    ours = attrfx.feature_ablation(lambda t: emb(t), tokens, target=1, baselines=0)
    assert_parity(ours, FeatureAblation(lambda t: emb(t)).attribute(tokens, target=1, baselines=0))
    ours = attrfx.occlusion(lambda t: emb(t), tokens, (2,), target=0, baselines=9)
    assert_parity(ours, Occlusion(lambda t: emb(t)).attribute(tokens, (2,), target=0, baselines=9).double())


# --- occlusion ----------------------------------------------------------------------------------------------------

OCCLUSION_CASES = {  # model, inputs, windows, strides, target, baselines, additional_forward_args
    "conv, 3x3 windows every 2": (ConvNet, randn(3, 2, 8, 8), (1, 3, 3), (1, 2, 2), 1, None, None),
    "conv, clipped edge windows, int stride": (ConvNet, randn(2, 2, 8, 8), (2, 3, 3), 3, [0, 3], 0.3, None),
    "conv, window spans a dim, stride beyond it": (ConvNet, randn(2, 2, 8, 8), (2, 8, 2), (5, 9, 2), 2,
                                                   randn(1, 2, 8, 8, seed=4), None),
    "mlp, one-dim windows, default stride": (MLP, randn(3, 5), (2,), None, torch.tensor([0, 1, 2]), -1.0, None),
    "multi, a window per input": (MultiInput, MULTI_X, ((2,), (2,)), (1, (2,)), 1, (0.5, randn(3, 3, seed=8)),
                                  (SCALE, False)),
}


@pytest.mark.parametrize("ppe", [1, 4, None])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", OCCLUSION_CASES)
def test_occlusion_parity(case, dtype, ppe):
    factory, x, windows, strides, target, base, afa = OCCLUSION_CASES[case]
    model, x, base, afa = seeded(factory, dtype=dtype), cast(x, dtype), cast(base, dtype), cast(afa, dtype)
    ours = attrfx.occlusion(model, x, windows, strides=strides, target=target, baselines=base,
                            additional_forward_args=afa, perturbations_per_eval=ppe)
    theirs = Occlusion(model).attribute(x, windows, strides=strides, target=target, baselines=base,
                                        additional_forward_args=afa, perturbations_per_eval=ppe or 1)
    assert_parity(ours, same_as_float64(theirs, ours), dtype=dtype)


def test_occlusion_of_three_inputs_of_several_dims():
    f = lambda a, b, c: a.sum(1) * b.prod(1) + (c ** 2).sum((1, 2)) * a[:, 0]  # noqa: E731
    xs = (randn(2, 3), randn(2, 2, seed=2), randn(2, 3, 4, seed=3))
    windows, strides = ((2,), (1,), (2, 3)), (1, 1, (1, 2))
    ours = attrfx.occlusion(f, xs, windows, strides=strides, perturbations_per_eval=5)
    assert_parity(ours, same_as_float64(Occlusion(f).attribute(xs, windows, strides=strides), ours))


def test_occlusion_with_one_window_per_input_is_ablation_of_the_whole_input():
    model, x = seeded(ConvNet), randn(2, 2, 8, 8)
    whole = attrfx.occlusion(model, x, (2, 8, 8), target=1, baselines=0.2)
    ablated = attrfx.feature_ablation(model, x, target=1, baselines=0.2, feature_mask=torch.tensor(0))
    torch.testing.assert_close(whole, ablated, rtol=1e-12, atol=1e-12)


# --- feature_permutation: exact where the permutation cannot matter, else in distribution ----------------------

PERMUTATION_CASES = {  # model, two examples, target, feature_mask, additional_forward_args
    "conv, row bands": (ConvNet, randn(2, 2, 8, 8), 1, CONV_GROUPS, None),
    "conv, per-example masks": (ConvNet, randn(2, 2, 8, 8), [0, 3], PER_EXAMPLE[:2], None),
    "mlp, single elements": (MLP, randn(2, 5), 2, None, None),
    "multi, ids shared across inputs": (MultiInput, (randn(2, 4), randn(2, 3, seed=2)), 0,
                                        (torch.tensor([[0, 1, 1, 2]]), torch.tensor([[2, 0, 4]])), (SCALE[:2], True)),
}


@pytest.mark.parametrize("ppe", [1, 2, None])
@pytest.mark.parametrize("case", PERMUTATION_CASES)
def test_feature_permutation_parity_with_two_examples(case, ppe):
    """With two examples the only permutation other than the identity is the swap: the result is Captum's."""
    factory, x, target, mask, afa = PERMUTATION_CASES[case]
    model = seeded(factory)
    ours = attrfx.feature_permutation(model, x, target=target, feature_mask=mask, additional_forward_args=afa,
                                      perturbations_per_eval=ppe, generator=torch.Generator().manual_seed(1))
    theirs = FeaturePermutation(model).attribute(x, target=target, feature_mask=mask, additional_forward_args=afa,
                                                 perturbations_per_eval=ppe or 1)
    assert_parity(ours, theirs)


def test_feature_permutation_with_a_perm_func_equals_captum():
    model, x = seeded(ConvNet), randn(3, 2, 8, 8)
    roll = lambda x, mask: torch.where(mask, x.roll(1, 0), x)  # noqa: E731 (a deterministic shuffle)
    ours = attrfx.feature_permutation(model, x, target=2, feature_mask=CONV_GROUPS, perm_func=roll,
                                      perturbations_per_eval=3)
    theirs = FeaturePermutation(model, perm_func=roll).attribute(x, target=2, feature_mask=CONV_GROUPS)
    assert_parity(ours, theirs)


def outcome_frequencies(attr, x):
    """How often example i got ``x_i − x_k`` (the feature took example k's value), over features and calls."""
    counts = torch.zeros(3, 3)
    for i, k in itertools.product(range(3), range(3)):
        counts[i, k] = torch.isclose(attr[:, i], (x[i, 0] - x[k, 0]).expand_as(attr[:, i])).sum()
    return counts / counts.sum(1, keepdim=True)


def test_feature_permutation_agrees_with_captum_in_distribution():
    """``f = Σ x`` with every feature of an example equal: example i's attribution is ``x_i − x_π(i)``, and π is
    uniform over the five non-identity permutations of three examples: P(π(i) = i) = 1/5, 2/5 for each other."""
    x = torch.tensor([[1.0], [10.0], [100.0]]).expand(3, 40).contiguous()
    f = lambda v: v.sum(1)  # noqa: E731
    g = torch.Generator().manual_seed(0)
    ours = torch.stack([attrfx.feature_permutation(f, x, generator=g) for _ in range(25)])   # [25, 3, 40]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        theirs = torch.stack([FeaturePermutation(f).attribute(x) for _ in range(25)])
    expected = torch.full((3, 3), 0.4) - 0.2 * torch.eye(3)
    for sample in (ours, theirs):
        freq = outcome_frequencies(sample.permute(0, 2, 1).reshape(-1, 3), x)
        assert torch.allclose(freq, expected, atol=0.06), freq   # 1000 draws per example: ±4.6 standard errors


def test_the_same_generator_state_gives_the_same_result_and_the_global_rng_is_untouched():
    model, x = seeded(ConvNet), randn(4, 2, 8, 8)
    state = torch.random.get_rng_state()
    a = attrfx.feature_permutation(model, x, target=0, generator=torch.Generator().manual_seed(3))
    b = attrfx.feature_permutation(model, x, target=0, generator=torch.Generator().manual_seed(3))
    c = attrfx.feature_permutation(model, x, target=0, generator=torch.Generator().manual_seed(4))
    d = attrfx.layer_feature_permutation(model, "pool", x, target=0, generator=torch.Generator().manual_seed(3))
    e = attrfx.layer_feature_permutation(model, "pool", x, target=0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, c) and torch.equal(d, e)
    assert torch.equal(torch.random.get_rng_state(), state)


# --- the layer forms ----------------------------------------------------------------------------------------------

LAYER_CASES = {  # model, inputs, layer, target, layer_baselines, layer_mask, at_input, additional_forward_args
    "conv pool, channels": (ConvNet, randn(3, 2, 8, 8), "pool", 2, None, torch.arange(4).reshape(1, 4, 1, 1), False,
                            None),
    "conv conv2 input, scalar baseline": (ConvNet, randn(3, 2, 8, 8), "conv2", 1, 0.1, None, True, None),
    "conv act2, per-example mask": (ConvNet, randn(3, 2, 8, 8), "act2", [0, 1, 3], randn(1, 3, 3, 3, seed=6),
                                    torch.arange(27).reshape(1, 3, 3, 3).repeat(3, 1, 1, 1) % torch.tensor(
                                        [2, 3, 5]).reshape(3, 1, 1, 1), False, None),
    "mlp act1, groups": (MLP, randn(4, 5), "act1", 0, 0.5, torch.tensor([[0, 0, 1, 1, 2, 2, 3]]), False, None),
    "multi act, extra args": (MultiInput, MULTI_X, "act", 1, None, None, False, (SCALE, True)),
    "multi fc_b input": (MultiInput, MULTI_X, "fc_b", 0, randn(3, 3, seed=4), torch.tensor([[0, 1, 0]]), True, SCALE),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", LAYER_CASES)
def test_layer_feature_ablation_parity(case, dtype):
    factory, x, layer, target, base, mask, at_input, afa = LAYER_CASES[case]
    model, x, base, afa = seeded(factory, dtype=dtype), cast(x, dtype), cast(base, dtype), cast(afa, dtype)
    ours = attrfx.layer_feature_ablation(model, layer, x, target=target, layer_baselines=base, layer_mask=mask,
                                         attribute_to_layer_input=at_input, additional_forward_args=afa)
    theirs = LayerFeatureAblation(model, model.get_submodule(layer)).attribute(
        x, target=target, layer_baselines=base, layer_mask=mask, attribute_to_layer_input=at_input,
        additional_forward_args=afa)   # (its default perturbations_per_eval=1: Captum mis-expands list targets)
    assert_parity(ours, theirs, dtype=dtype)


@pytest.mark.parametrize("ppe", [2, None])
def test_layer_feature_ablation_batches_any_target_form(ppe):
    model, x = seeded(ConvNet), randn(3, 2, 8, 8)
    mask = torch.arange(4).reshape(1, 4, 1, 1)
    batched = attrfx.layer_feature_ablation(model, "pool", x, target=[0, 1, 3], layer_mask=mask,
                                            perturbations_per_eval=ppe)
    theirs = LayerFeatureAblation(model, model.pool).attribute(x, target=[0, 1, 3], layer_mask=mask)
    assert_parity(batched, theirs)


class PairOut(nn.Module):
    """A layer giving two tensors (a tuple activation)."""

    def __init__(self):
        super().__init__()
        self.fc, self.out = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x):
        return self.fc(x).chunk(2, dim=1)


class TupleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.pair, self.out = PairOut(), nn.Linear(6, 2)

    def forward(self, x):
        a, b = self.pair(x)
        return self.out(torch.cat([torch.tanh(a), b * 2], 1))


def test_layer_feature_ablation_of_a_tuple_activation():
    model, x = seeded(TupleNet), randn(3, 4)
    mask = (torch.tensor([[0, 1, 1]]), torch.tensor([[1, 2, 3]]))
    ours = attrfx.layer_feature_ablation(model, "pair", x, target=1, layer_mask=mask, layer_baselines=(0.5, 0))
    theirs = LayerFeatureAblation(model, model.pair).attribute(x, target=1, layer_mask=mask, layer_baselines=(0.5, 0))
    assert_parity(ours, theirs)


@pytest.mark.parametrize("case", ["pool", "act2", "fc"])
def test_layer_feature_permutation_parity_with_two_examples(case):
    """Captum's LayerFeaturePermutation applies ``target`` twice (fails for any target): compare on one output."""
    model, x = seeded(ConvNet), randn(2, 2, 8, 8)
    one = lambda v: model(v)[:, 2]  # noqa: E731
    layer = model.get_submodule(case)
    mask = {"pool": torch.arange(4).reshape(1, 4, 1, 1), "act2": None, "fc": torch.tensor([[0, 1, 0, 1]])}[case]
    ours = attrfx.layer_feature_permutation(model, case, x, target=2, layer_mask=mask,
                                            generator=torch.Generator().manual_seed(0))
    theirs = LayerFeaturePermutation(one, layer).attribute(x, layer_mask=mask)
    assert_parity(ours, theirs)


def test_layer_forms_at_the_input_of_the_first_layer_are_the_output_forms():
    model, x = seeded(MLP), randn(4, 5)
    mask = torch.tensor([[0, 1, 1, 2, 0]])
    torch.testing.assert_close(attrfx.layer_feature_ablation(model, "fc1", x, target=1, layer_mask=mask,
                                                             attribute_to_layer_input=True, layer_baselines=0.3),
                               attrfx.feature_ablation(model, x, target=1, feature_mask=mask, baselines=0.3))
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    torch.testing.assert_close(attrfx.layer_feature_permutation(model, "fc1", x, target=1, layer_mask=mask,
                                                                attribute_to_layer_input=True, generator=g()),
                               attrfx.feature_permutation(model, x, target=1, feature_mask=mask, generator=g()))


# --- mechanisms: batched passes; the part before the layer runs once -------------------------------------------

def rows_seen(module):
    rows = []
    return rows, module.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))


@pytest.mark.parametrize("method", ["feature_ablation", "occlusion", "feature_permutation"])
def test_the_default_batches_every_perturbation_into_one_pass(method):
    model, x = seeded(ConvNet), randn(3, 2, 8, 8)
    extra = {"feature_ablation": dict(feature_mask=CONV_GROUPS), "occlusion": dict(sliding_window_shapes=(2, 4, 4)),
             "feature_permutation": dict(feature_mask=CONV_GROUPS, generator=torch.Generator())}[method]
    rows, handle = rows_seen(model.conv1)
    try:
        default = getattr(attrfx, method)(model, x, target=1, **extra)
        one = getattr(attrfx, method)(model, x, target=1, perturbations_per_eval=1, **extra)
    finally:
        handle.remove()
    count = 4 if method != "occlusion" else 1 * 5 * 5
    assert rows == [3, 3 * count] + [3] * (1 + count)          # default: x, then all perturbations in one pass
    if method != "feature_permutation":
        torch.testing.assert_close(default, one, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["layer_feature_ablation", "layer_feature_permutation"])
def test_layer_forms_run_the_part_before_the_layer_once_per_batch(method):
    model, x = seeded(ConvNet), randn(3, 2, 8, 8)
    before, h1 = rows_seen(model.conv1)
    after, h2 = rows_seen(model.fc)
    extra = dict(generator=torch.Generator()) if method == "layer_feature_permutation" else {}
    try:
        getattr(attrfx, method)(model, "pool", x, target=1, layer_mask=torch.arange(4).reshape(1, 4, 1, 1),
                                perturbations_per_eval=2, **extra)
    finally:
        h1.remove(), h2.remove()
    # one whole pass; then the part before the layer on no examples: a check on x's activation, 4 channels 2 a pass
    assert before == [3, 0, 0, 0] and after == [3, 3, 6, 6]


def test_a_layer_inside_a_residual_reruns_the_whole_model_and_still_equals_captum():
    model, x = seeded(Residual), randn(3, 4)
    before, handle = rows_seen(model.fc_in)
    try:
        ours = attrfx.layer_feature_ablation(model, "inner", x, target=1, perturbations_per_eval=5)
    finally:
        handle.remove()
    assert before == [3, 0, 15]            # the check fails (the skip reads fc_in's rows): x repeated, as Captum
    assert_parity(ours, LayerFeatureAblation(model, model.inner).attribute(x, target=1))


def test_a_layer_whose_rest_depends_on_the_batch_values_is_not_cut():
    """The rest of the model reads a value from before the layer that an empty batch changes: caught by the check."""

    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.act, self.out = nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)

        def forward(self, x):
            gate = 2.0 if x.numel() > 0 else 1.0   # (an empty batch before the layer would halve the output)
            return self.out(self.act(self.fc(x))) * gate

    model, x = seeded(Gated), randn(3, 3)
    ours = attrfx.layer_feature_ablation(model, "act", x, target=0)
    assert_parity(ours, LayerFeatureAblation(model, model.act).attribute(x, target=0))


# --- laws ----------------------------------------------------------------------------------------------------------

def each_example(call, x):
    return torch.cat([call(x[i:i + 1]) for i in range(x.shape[0])])


@given(st.integers(0, 1000), st.sampled_from(["feature_ablation", "occlusion", "layer_feature_ablation"]))
def test_batch_independence(seed, method):
    model, x = seeded(ConvNet, seed=seed % 4), randn(3, 2, 8, 8, seed=seed)
    call = {"feature_ablation": lambda v: attrfx.feature_ablation(model, v, target=1, feature_mask=CONV_GROUPS),
            "occlusion": lambda v: attrfx.occlusion(model, v, (1, 3, 3), strides=(1, 2, 2), target=1),
            "layer_feature_ablation": lambda v: attrfx.layer_feature_ablation(model, "conv2", v, target=1)}[method]
    torch.testing.assert_close(call(x), each_example(call, x), rtol=1e-10, atol=1e-12)


@given(st.integers(0, 1000), st.integers(1, 9),
       st.sampled_from(["feature_ablation", "occlusion", "feature_permutation", "layer_feature_ablation",
                        "layer_feature_permutation", "neuron_feature_ablation"]))
def test_perturbations_per_eval_never_changes_the_result(seed, ppe, method):
    model, x = seeded(ConvNet, seed=seed % 4), randn(3, 2, 8, 8, seed=seed)
    g = lambda: torch.Generator().manual_seed(seed)  # noqa: E731
    call = {
        "feature_ablation": lambda **kw: attrfx.feature_ablation(model, x, target=2, feature_mask=CONV_GROUPS, **kw),
        "occlusion": lambda **kw: attrfx.occlusion(model, x, (2, 3, 3), strides=(1, 2, 3), target=2, **kw),
        "feature_permutation": lambda **kw: attrfx.feature_permutation(model, x, target=2, feature_mask=CONV_GROUPS,
                                                                       generator=g(), **kw),
        "layer_feature_ablation": lambda **kw: attrfx.layer_feature_ablation(model, "pool", x, target=2,
                                                                             layer_mask=CONV_GROUPS[:, :, :3, :3],
                                                                             **kw),
        "layer_feature_permutation": lambda **kw: attrfx.layer_feature_permutation(model, "pool", x, target=2,
                                                                                   generator=g(), **kw),
        "neuron_feature_ablation": lambda **kw: attrfx.neuron_feature_ablation(model, "conv2", x, (1, 2, 2),
                                                                               feature_mask=CONV_GROUPS, **kw),
    }[method]
    torch.testing.assert_close(call(perturbations_per_eval=ppe), call(), rtol=1e-10, atol=1e-12)


@given(st.integers(0, 1000))
def test_one_group_gets_the_whole_change_and_ablation_of_a_linear_model_is_exact(seed):
    model, x, b = seeded(lambda: nn.Linear(5, 3), seed=seed), randn(4, 5, seed=seed), randn(1, 5, seed=seed + 1)
    whole = attrfx.feature_ablation(model, x, target=2, baselines=b, feature_mask=torch.zeros(1, 5, dtype=torch.long))
    change = model(x)[:, 2] - model(b.expand_as(x))[:, 2]
    torch.testing.assert_close(whole, change[:, None].expand_as(x).detach())
    single = attrfx.feature_ablation(model, x, target=2, baselines=b)
    torch.testing.assert_close(single, ((x - b) * model.weight[2]).detach())


class Raising(nn.Module):
    """Raises where more than ``limit`` rows reach ``out`` (so the perturbed passes fail)."""

    def __init__(self, limit):
        super().__init__()
        self.limit, self.fc, self.act, self.out = limit, nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2)

    def forward(self, x):
        h = self.act(self.fc(x))
        if h.shape[0] > self.limit:
            raise RuntimeError("too many rows")
        return self.out(h)


CALLS = {
    "feature_ablation": lambda m, x: attrfx.feature_ablation(m, x, target=1),
    "occlusion": lambda m, x: attrfx.occlusion(m, x, (2,), target=1),
    "feature_permutation": lambda m, x: attrfx.feature_permutation(m, x, target=1, generator=torch.Generator()),
    "layer_feature_ablation": lambda m, x: attrfx.layer_feature_ablation(m, "act", x, target=1),
    "layer_feature_permutation": lambda m, x: attrfx.layer_feature_permutation(m, "act", x, target=1,
                                                                               generator=torch.Generator()),
}


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.parametrize("raises", [False, True])
def test_stateless_also_when_the_model_raises(name, raises):
    model = seeded(lambda: Raising(3 if raises else 10 ** 6)).train()
    x = randn(3, 5).requires_grad_()
    before = axioms.state_of(model, x)
    if raises:
        with pytest.raises(RuntimeError, match="too many rows"):
            CALLS[name](model, x)
    else:
        out = CALLS[name](model, x)
        assert not out.requires_grad and x.grad is None
    assert axioms.state_changes(before, axioms.state_of(model, x)) == []


@pytest.mark.parametrize("name", CALLS)
def test_progress_bar_counts_the_forward_passes(name, capsys):
    model, x = seeded(lambda: Raising(10 ** 6)), randn(3, 5)
    quiet = CALLS[name](model, x)
    shown = {"feature_permutation": lambda: attrfx.feature_permutation(
                 model, x, target=1, generator=torch.Generator(), show_progress=True, perturbations_per_eval=2),
             "layer_feature_permutation": lambda: attrfx.layer_feature_permutation(
                 model, "act", x, target=1, generator=torch.Generator(), show_progress=True,
                 perturbations_per_eval=2)}.get(name, lambda: getattr(attrfx, name)(
                     model, *(("act",) if name.startswith("layer") else ()), x,
                     *(((2,),) if name == "occlusion" else ()), target=1, perturbations_per_eval=2,
                     show_progress=True))()
    frame = capsys.readouterr().err.rstrip("\n").split("\r")[-1]
    groups = {"occlusion": 4, "layer_feature_ablation": 4, "layer_feature_permutation": 4}.get(name, 5)
    passes = (2 if name.startswith("layer") else 1) + math.ceil(groups / 2)
    assert frame.startswith(f"{name}: 100%|") and f"| {passes}/{passes} [" in frame
    if "permutation" not in name:
        torch.testing.assert_close(shown, quiet, rtol=0, atol=0)


# --- errors ---------------------------------------------------------------------------------------------------------

def raises(error, *fragments):
    import re
    return pytest.raises(error, match=".*".join(re.escape(f) for f in fragments))


ERRORS = [
    ("feature mask of the wrong shape",
     lambda: attrfx.feature_ablation(seeded(MLP), randn(2, 5), target=0,
                                     feature_mask=torch.zeros(1, 4, dtype=torch.long)),
     ValueError, ["feature_ablation:", "`feature_mask[0]`", "broadcasts to the input shape (2, 5)", "shape (1, 4)"]),
    ("feature mask of floats",
     lambda: attrfx.feature_permutation(seeded(MLP), randn(2, 5), target=0, feature_mask=torch.zeros(1, 5)),
     ValueError, ["feature_permutation:", "`feature_mask[0]`", "integer feature ids", "torch.float32"]),
    ("layer mask of the wrong shape",
     lambda: attrfx.layer_feature_ablation(seeded(MLP), "act1", randn(2, 5), target=0,
                                           layer_mask=torch.zeros(1, 5, dtype=torch.long)),
     ValueError, ["layer_feature_ablation:", "`layer_mask[0]`", "the layer's activation shape (2, 7)", "shape (1, 5)"]),
    ("layer baselines of the wrong shape",
     lambda: attrfx.layer_feature_ablation(seeded(MLP), "act1", randn(2, 5), target=0, layer_baselines=torch.zeros(3)),
     ValueError, ["layer_feature_ablation:", "`layer_baselines[0]`", "(2, 7)", "shape (3,)"]),
    ("window larger than the input",
     lambda: attrfx.occlusion(seeded(ConvNet), randn(2, 2, 8, 8), (1, 9, 2), target=0),
     ValueError, ["occlusion:", "`sliding_window_shapes`", "no larger than the input's shape (2, 8, 8)",
                  "window (1, 9, 2)"]),
    ("window with the wrong number of dims",
     lambda: attrfx.occlusion(seeded(ConvNet), randn(2, 2, 8, 8), (3, 3), target=0),
     ValueError, ["occlusion:", "`sliding_window_shapes`", "3 ints", "(3, 3)"]),
    ("window of size 0",
     lambda: attrfx.occlusion(seeded(MLP), randn(2, 5), (0,), target=0),
     ValueError, ["occlusion:", "`sliding_window_shapes`", "positive ints", "(0,)"]),
    ("window not a tuple",
     lambda: attrfx.occlusion(seeded(MLP), randn(2, 5), 2, target=0),
     TypeError, ["occlusion:", "`sliding_window_shapes`", "a tuple of 1 ints", "int"]),
    ("one window for two inputs",
     lambda: attrfx.occlusion(multi(), MULTI_X, ((2,),), target=0),
     ValueError, ["occlusion:", "`sliding_window_shapes`", "one entry per input (2)", "1 entries"]),
    ("stride < 1",
     lambda: attrfx.occlusion(seeded(ConvNet), randn(2, 2, 8, 8), (1, 2, 2), strides=(1, 0, 2), target=0),
     ValueError, ["occlusion:", "`strides`", "positive ints", "(1, 0, 2)"]),
    ("stride beyond the window",
     lambda: attrfx.occlusion(seeded(ConvNet), randn(2, 2, 8, 8), (1, 2, 2), strides=3, target=0),
     ValueError, ["occlusion:", "`strides`", "no larger than the window (1, 2, 2)", "strides (3, 3, 3)"]),
    ("stride of the second input",
     lambda: attrfx.occlusion(multi(), MULTI_X, ((1,), (1,)), strides=(1, 1.5), target=0,
                              additional_forward_args=SCALE),
     TypeError, ["occlusion:", "`strides[1]`", "an int or a tuple of 1 ints", "float"]),
    ("one example to permute",
     lambda: attrfx.feature_permutation(seeded(MLP), randn(1, 5), target=0),
     ValueError, ["feature_permutation:", "`inputs`", "at least 2 examples", "got 1 example"]),
    ("perm_func of the wrong shape",
     lambda: attrfx.layer_feature_permutation(seeded(MLP), "act1", randn(2, 5), target=0,
                                              perm_func=lambda x, mask: x[:1]),
     ValueError, ["layer_feature_permutation:", "`perm_func`", "shaped like x (2, 7)", "shape (1, 7)"]),
    ("a generator that is not one",
     lambda: attrfx.feature_permutation(seeded(MLP), randn(2, 5), target=0, generator=3),
     TypeError, ["feature_permutation:", "`generator`", "torch.Generator", "int"]),
    ("a model summing the batch",
     lambda: attrfx.feature_ablation(lambda x: seeded(MLP)(x)[:, 0].sum(), randn(2, 5)),
     ValueError, ["feature_ablation:", "example dimension"]),
    ("a model with fixed output rows",
     lambda: attrfx.occlusion(lambda x: seeded(MLP)(x)[:2], randn(2, 5), (1,), target=0),
     ValueError, ["occlusion:", "`model`", "one row per input row", "2 values"]),
    ("perturbations_per_eval of 0",
     lambda: attrfx.layer_feature_ablation(seeded(MLP), "act1", randn(2, 5), target=0, perturbations_per_eval=0),
     ValueError, ["layer_feature_ablation:", "`perturbations_per_eval`", "a positive int", "got 0"]),
]


@pytest.mark.parametrize("call,error,fragments", [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_bad_input_is_named(call, error, fragments):
    with raises(error, *fragments):
        call()


def test_feature_ablation_accepts_any_integer_ids_as_captum_does():
    model, x = seeded(TwoInputs), (randn(2, 4), randn(2, 3, seed=2))
    mask = (torch.tensor([[-3, 40, 40, 7]]), torch.tensor([[7, -3, 1000]]))
    ours = attrfx.feature_ablation(model, x, target=0, feature_mask=mask, additional_forward_args=SCALE[:2])
    theirs = FeatureAblation(model).attribute(x, target=0, feature_mask=mask, additional_forward_args=SCALE[:2])
    assert_parity(ours, theirs)


def test_neuron_and_layer_and_output_forms_share_one_kernel(monkeypatch):
    from attrfx.methods import ablation
    seen, real = [], ablation.perturbation_attributions
    monkeypatch.setattr(ablation, "perturbation_attributions", lambda *a, **k: seen.append(1) or real(*a, **k))
    model, x = seeded(PoolNet), randn(2, 2, 8, 8)
    attrfx.feature_ablation(model, x, target=0, feature_mask=CONV_GROUPS)
    attrfx.occlusion(model, x, (2, 4, 4), target=0)
    attrfx.feature_permutation(model, x, target=0, feature_mask=CONV_GROUPS)
    attrfx.layer_feature_ablation(model, "pool", x, target=0)
    attrfx.layer_feature_permutation(model, "pool", x, target=0)
    attrfx.neuron_feature_ablation(model, "pool", x, (0, 1, 1), feature_mask=CONV_GROUPS)
    assert len(seen) == 6


# --- the benchmark's floors compute the methods ---------------------------------------------------------------

@pytest.mark.parametrize("method,where", [("feature_ablation", "output"), ("occlusion", "output"),
                                          ("layer_feature_ablation", "early"), ("layer_feature_ablation", "late")])
def test_the_benchmark_floor_computes_the_method(method, where):
    """(On the benchmark MLP; the floor's layer mask and windows are those of the timed rows.)"""
    from benchmarks import methods, models
    calls = methods.calls(method, models.build("mlp"), where)
    torch.testing.assert_close(calls.floor(), calls.attrfx(), rtol=1e-5, atol=1e-6)


class InPlaceResidual(nn.Module):
    """In-place activations after the layers and a ``+=`` residual, returning a dict (a Hugging Face-style output)."""

    def __init__(self):
        super().__init__()
        self.fc, self.act, self.inner = nn.Linear(4, 5), nn.ReLU(inplace=True), nn.Linear(5, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        h = self.act(self.fc(x))          # fc's output is overwritten in place
        h += self.inner(h)                # the residual written into h itself
        return {"logits": self.head(torch.relu_(h))}




@torch.no_grad()
def layer_drops_by_hand(model, module, x, change):
    """``F(x) − F(x with unit i of the module's output changed)`` for every unit, one plain pass each: the output
    replaced by a fresh tensor in a forward hook (what the model then does to it in place, it does as usual)."""
    logit = lambda: model(x.clone())["logits"][:, 1]  # noqa: E731
    full, columns = logit(), []
    for i in range(module.out_features):
        def swap(m, a, out, i=i):
            new = out.clone()
            new[:, i] = change(out)[:, i]
            return new
        handle = module.register_forward_hook(swap)
        try:
            columns.append(full - logit())
        finally:
            handle.remove()
    return torch.stack(columns, 1)


@pytest.mark.parametrize("layer", ["fc", "inner", "head"])
@pytest.mark.parametrize("method", ["layer_feature_ablation", "layer_feature_permutation"])
def test_layer_forms_on_in_place_residual_models_with_dict_outputs_equal_the_whole_model(method, layer):
    """The part after the layer run alone equals the whole model rerun, by hand, where the layer's output is then
    overwritten in place (``fc``), sits on a ``+=`` residual (``inner``), and the output is a dict."""
    model, x = seeded(InPlaceResidual), randn(6, 4)
    module = model.get_submodule(layer)
    if method == "layer_feature_ablation":
        ours = attrfx.layer_feature_ablation(model, layer, x, target=lambda out: out["logits"][:, 1])
        expected = layer_drops_by_hand(model, module, x, torch.zeros_like)
    else:
        flip = lambda t, mask: t.flip(0) * mask + t * ~mask  # noqa: E731
        ours = attrfx.layer_feature_permutation(model, layer, x, target=lambda out: out["logits"][:, 1],
                                                perm_func=flip)
        expected = layer_drops_by_hand(model, module, x, lambda out: out.flip(0))
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-12)
    assert torch.equal(x, randn(6, 4))


@pytest.mark.parametrize("method", ["feature_ablation", "feature_permutation", "occlusion"])
def test_output_forms_on_in_place_residual_models_with_dict_outputs_equal_captum(method):
    model, x = seeded(InPlaceResidual), randn(6, 4)

    def logit(v):
        return model(v)["logits"][:, 1]

    target = lambda out: out["logits"][:, 1]  # noqa: E731
    if method == "occlusion":
        ours = attrfx.occlusion(model, x, (2,), target=target)
        theirs = Occlusion(logit).attribute(x, (2,)).double()  # Captum's occlusion returns float32 (documented)
    else:
        extra = dict(perm_func=lambda t, mask: t.flip(0) * mask + t * ~mask) if method == "feature_permutation" \
            else {}
        cls = FeatureAblation if method == "feature_ablation" else FeaturePermutation
        ours = getattr(attrfx, method)(model, x, target=target, **extra)
        theirs = cls(logit, **extra).attribute(x)
    assert_parity(ours, theirs, torch.float64 if method != "occlusion" else torch.float32)
    assert torch.equal(x, randn(6, 4))
