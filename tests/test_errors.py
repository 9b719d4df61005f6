"""Every bad input raises a ValueError/TypeError naming the method, the argument, what was expected and given."""

import inspect
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import attrfx
from attrfx import axioms
from _models_rules import GeluNet
from models import ConvNet, MLP, MultiInput, Reused, ReusedResidual, TupleLayer, randn, seeded

MLP_X = randn(4, 5)


def mlp():
    return seeded(MLP)


def raises(error, *fragments):
    """``pytest.raises`` whose message must contain every fragment (in order)."""
    return pytest.raises(error, match=".*".join(re.escape(f) for f in fragments))


CASES = [
    # selectors
    ("wrong selector length names the layer's shape",
     lambda: attrfx.neuron_gradient(seeded(ConvNet), "conv1", randn(2, 2, 8, 8), (1, 2)),
     ValueError, ["neuron_gradient:", "`selector`", "'conv1'", "(N, 4, 6, 6)", "3 indices", "2 ((1, 2))"]),
    ("int selector on a 4-d layer",
     lambda: attrfx.neuron_integrated_gradients(seeded(ConvNet), "relu1", randn(2, 2, 8, 8), 1),
     ValueError, ["neuron_integrated_gradients:", "`selector`", "(N, 4, 6, 6)", "1 (1)"]),
    ("selector index out of range",
     lambda: attrfx.neuron_conductance(mlp(), "fc2", MLP_X, 6, target=0),
     ValueError, ["neuron_conductance:", "`selector`", "(N, 6)", "index 6 for dimension 1 of size 6"]),
    ("selector of a bad type",
     lambda: attrfx.neuron_gradient(mlp(), "fc2", MLP_X, 1.5),
     TypeError, ["neuron_gradient:", "`selector`", "int", "float"]),
    ("empty list of selectors",
     lambda: attrfx.neuron_gradient(mlp(), "fc2", MLP_X, []),
     ValueError, ["`selector`", "non-empty list", "an empty list"]),
    ("a bad selector inside a list",
     lambda: attrfx.neuron_gradient(mlp(), "fc2", MLP_X, [1, (1, 2)]),
     ValueError, ["`selector[1]`", "1 indices", "2 ((1, 2))"]),
    ("callable selector returning several values per example",
     lambda: attrfx.neuron_gradient(mlp(), "fc2", MLP_X, lambda h: h[:, :2]),
     ValueError, ["neuron_gradient:", "`selector` (a callable)", "shape (N,)", "shape (N, 2)"]),
    ("index selector on a layer with two output tensors",
     lambda: attrfx.neuron_gradient(seeded(TupleLayer), "pair", randn(3, 3), 1),
     ValueError, ["`selector`", "a callable", "'pair' gives 2 tensors"]),
    # baselines
    ("baselines of the wrong shape",
     lambda: attrfx.neuron_integrated_gradients(mlp(), "fc2", MLP_X, 1, baselines=torch.zeros(4, 3)),
     ValueError, ["neuron_integrated_gradients:", "`baselines[0]`", "(4, 5)", "shape (4, 3)"]),
    ("baselines of a bad type",
     lambda: attrfx.layer_conductance(mlp(), "fc2", MLP_X, baselines="zeros", target=0),
     TypeError, ["layer_conductance:", "`baselines[0]`", "str"]),
    ("one baseline for two inputs",
     lambda: attrfx.neuron_conductance(seeded(MultiInput), "act", (randn(2, 4), randn(2, 3)), 1, target=0,
                                       baselines=(0.0,)),
     ValueError, ["neuron_conductance:", "`baselines`", "one baseline per input (2)", "1 baselines"]),
    ("baseline distribution of the wrong shape",
     lambda: attrfx.neuron_gradient_shap(mlp(), "fc2", MLP_X, 1, torch.zeros(5, 4)),
     ValueError, ["neuron_gradient_shap:", "`baselines[0]`", "(n_baselines, 5)", "shape (5, 4)"]),
    # quadrature
    ("unknown method",
     lambda: attrfx.neuron_integrated_gradients(mlp(), "fc2", MLP_X, 1, method="simpson"),
     ValueError, ["neuron_integrated_gradients:", "`method`", "gausslegendre", "'simpson'"]),
    ("n_steps < 1",
     lambda: attrfx.neuron_integrated_gradients(mlp(), "fc2", MLP_X, 1, n_steps=0),
     ValueError, ["`n_steps`", "at least 1", "got 0"]),
    ("trapezoid needs n_steps >= 2",
     lambda: attrfx.neuron_conductance(mlp(), "fc2", MLP_X, 1, target=0, n_steps=1),
     ValueError, ["neuron_conductance:", "`n_steps`", "at least 2", "got 1"]),
    ("n_steps not an int",
     lambda: attrfx.layer_conductance(mlp(), "fc2", MLP_X, target=0, n_steps=2.5),
     TypeError, ["layer_conductance:", "`n_steps`", "int", "float"]),
    ("layer conductance n_steps < 1",
     lambda: attrfx.layer_conductance(mlp(), "fc2", MLP_X, target=0, n_steps=0),
     ValueError, ["layer_conductance:", "`n_steps`", "positive int", "got 0"]),
    ("internal_batch_size < 1",
     lambda: attrfx.layer_conductance(mlp(), "fc2", MLP_X, target=0, internal_batch_size=0),
     ValueError, ["`internal_batch_size`", "positive int", "got 0"]),
    # layers
    ("layer not in the model (by name)",
     lambda: attrfx.layer_gradcam(mlp(), "fc9", MLP_X, target=0),
     ValueError, ["layer_gradcam:", "`layer`", "submodule", "'fc9'"]),
    ("layer not in the model (a module)",
     lambda: attrfx.layer_gradient_x_activation(mlp(), torch.nn.Linear(5, 7), MLP_X, target=0),
     ValueError, ["layer_gradient_x_activation:", "`layer`", "submodule of the model", "Linear"]),
    ("layer of a bad type",
     lambda: attrfx.neuron_gradient(mlp(), 3, MLP_X, 1),
     TypeError, ["neuron_gradient:", "`layer`", "nn.Module", "int"]),
    ("layer that runs twice",
     lambda: attrfx.layer_conductance(seeded(Reused), "act", randn(2, 3), target=0),
     ValueError, ["layer_conductance:", "`layer`", "exactly once", "'act'", "ran 2 times"]),
    ("layer that runs twice, counted by the first pass",
     lambda: attrfx.neuron_gradient(seeded(Reused), "act", randn(2, 3), 0),
     ValueError, ["neuron_gradient:", "`layer`", "exactly once", "'act'", "ran 2 times"]),
    ("layer that runs twice where the rest of the model needs rows",
     lambda: attrfx.neuron_guided_backprop(seeded(ReusedResidual), "act", randn(2, 3), 0),
     ValueError, ["neuron_guided_backprop:", "`layer`", "exactly once", "'act'", "ran 2 times"]),
    ("layer that never runs",
     lambda: attrfx.neuron_gradient(lambda x: seeded(MLP).fc1(x), mlp().fc2, MLP_X, 1),
     ValueError, ["neuron_gradient:", "`layer`", "did not run"]),
    ("a layer name with a plain forward function",
     lambda: attrfx.neuron_gradient(lambda x: x, "fc1", MLP_X, 1),
     TypeError, ["neuron_gradient:", "`layer`", "nn.Module"]),
    # targets
    ("target out of range",
     lambda: attrfx.layer_conductance(mlp(), "fc2", MLP_X, target=3),
     ValueError, ["layer_conductance:", "`target`", "(N, 3)", "3 for dimension 1 of size 3"]),
    ("per-example target out of range",
     lambda: attrfx.neuron_conductance(mlp(), "fc2", MLP_X, 1, target=[0, 1, 5, 0]),
     ValueError, ["neuron_conductance:", "`target`", "(N, 3)", "got [0, 1, 5, 0] for"]),
    ("target missing for a multi-output model",
     lambda: attrfx.layer_gradient_x_activation(mlp(), "fc2", MLP_X),
     ValueError, ["layer_gradient_x_activation:", "`target`", "shape (N, 3)", "got None"]),
    ("target list of the wrong length",
     lambda: attrfx.layer_gradcam(mlp(), "fc2", MLP_X, target=[0, 1]),
     ValueError, ["layer_gradcam:", "`target`", "one entry per example (4)", "2 entries"]),
    ("target with too many indices",
     lambda: attrfx.layer_gradcam(mlp(), "fc2", MLP_X, target=(0, 1)),
     ValueError, ["`target`", "(N, 3)", "(1)", "got 2"]),
    ("float target tensor",
     lambda: attrfx.layer_gradcam(mlp(), "fc2", MLP_X, target=torch.zeros(4)),
     ValueError, ["`target`", "int tensor", "torch.float32"]),
    # inputs
    ("inputs of different batch sizes",
     lambda: attrfx.neuron_gradient(seeded(MultiInput), "act", (randn(2, 4), randn(3, 3)), 1),
     ValueError, ["neuron_gradient:", "`inputs`", "same number of examples", "[2, 3]"]),
    ("inputs that are not tensors",
     lambda: attrfx.neuron_gradient(mlp(), "fc2", [[1.0] * 5], 1),
     TypeError, ["neuron_gradient:", "`inputs`", "torch.Tensor", "list"]),
    ("integer inputs for a method that takes input gradients",
     lambda: attrfx.neuron_gradient(mlp(), "fc2", torch.ones(2, 5, dtype=torch.long), 1),
     ValueError, ["neuron_gradient:", "`inputs`", "floating-point", "torch.int64"]),
    # sampling
    ("negative stdevs",
     lambda: attrfx.neuron_gradient_shap(mlp(), "fc2", MLP_X, 1, torch.zeros(3, 5), stdevs=-1.0),
     ValueError, ["neuron_gradient_shap:", "`stdevs`", "non-negative", "-1.0"]),
    ("stdevs of the wrong length",
     lambda: attrfx.neuron_gradient_shap(mlp(), "fc2", MLP_X, 1, torch.zeros(3, 5), stdevs=(0.1, 0.2)),
     ValueError, ["`stdevs`", "one float per input (1)", "2 values"]),
    ("n_samples < 1",
     lambda: attrfx.neuron_gradient_shap(mlp(), "fc2", MLP_X, 1, torch.zeros(3, 5), n_samples=0),
     ValueError, ["neuron_gradient_shap:", "`n_samples`", "positive int", "got 0"]),
    ("generator of a bad type",
     lambda: attrfx.neuron_gradient_shap(mlp(), "fc2", MLP_X, 1, torch.zeros(3, 5), generator=0),
     TypeError, ["neuron_gradient_shap:", "`generator`", "torch.Generator", "int"]),
    # layer maps
    ("interpolate a 2-d map",
     lambda: attrfx.interpolate(torch.zeros(2, 3), (4, 4)),
     ValueError, ["`layer_attribution`", "3-, 4- or 5-d", "shape (2, 3)"]),
]


@pytest.mark.parametrize("call,error,fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_named(call, error, fragments):
    with raises(error, *fragments):
        call()


@pytest.mark.parametrize("call", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_errors_are_attrfx_errors_and_leave_no_hooks(call):
    model = mlp()
    before = axioms.state_of(model)
    with pytest.raises((attrfx.AttrfxValueError, attrfx.AttrfxTypeError)):
        call()
    assert axioms.state_changes(before, axioms.state_of(model)) == []


def test_model_errors_pass_through_unchanged_and_leave_no_hooks():
    model = mlp()
    before = axioms.state_of(model, MLP_X)
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        attrfx.layer_conductance(model, "fc2", randn(4, 6), target=0)
    assert axioms.state_changes(before, axioms.state_of(model, MLP_X)) == []


# --- the boundary: model, flags and counts, one rule for every public method ------------------------------------

def gen():
    return torch.Generator().manual_seed(0)


VALID = {  # a valid call of each method: (arguments after the model, keyword arguments)
    "neuron_gradient": lambda: (("fc2", MLP_X, 1), {}),
    "neuron_integrated_gradients": lambda: (("fc2", MLP_X, 1), {"n_steps": 4}),
    "neuron_conductance": lambda: (("fc2", MLP_X, 1), {"target": 0, "n_steps": 4}),
    "neuron_gradient_shap": lambda: (("fc2", MLP_X, 1, randn(3, 5, seed=2)), {"generator": gen()}),
    "neuron_deeplift": lambda: (("fc2", MLP_X, 1), {}),
    "neuron_deeplift_shap": lambda: (("fc2", MLP_X, 1, randn(3, 5, seed=2)), {}),
    "neuron_guided_backprop": lambda: (("fc2", MLP_X, 1), {}),
    "neuron_deconvolution": lambda: (("fc2", MLP_X, 1), {}),
    "deeplift": lambda: ((MLP_X,), {"target": 0}),
    "deeplift_shap": lambda: ((MLP_X, randn(3, 5, seed=2)), {"target": 0}),
    "layer_deeplift": lambda: (("fc2", MLP_X), {"target": 0}),
    "layer_deeplift_shap": lambda: (("fc2", MLP_X, randn(3, 5, seed=2)), {"target": 0}),
    "guided_backprop": lambda: ((MLP_X,), {"target": 0}),
    "deconvolution": lambda: ((MLP_X,), {"target": 0}),
    "guided_gradcam": lambda: (("act2", MLP_X), {"target": 0}),
    "neuron_feature_ablation": lambda: (("fc2", MLP_X, 1), {}),
    "feature_ablation": lambda: ((MLP_X,), {"target": 0}),
    "occlusion": lambda: ((MLP_X, (2,)), {"target": 0}),
    "feature_permutation": lambda: ((MLP_X,), {"target": 0, "generator": gen()}),
    "layer_feature_ablation": lambda: (("fc2", MLP_X), {"target": 0}),
    "layer_feature_permutation": lambda: (("fc2", MLP_X), {"target": 0, "generator": gen()}),
    "shapley_value_sampling": lambda: ((MLP_X,), {"target": 0, "n_samples": 2, "generator": gen()}),
    "shapley_values": lambda: ((MLP_X,), {"target": 0}),
    "kernel_shap": lambda: ((MLP_X,), {"target": 0, "generator": gen()}),
    "lime": lambda: ((MLP_X,), {"target": 0, "generator": gen()}),
    "layer_gradient_x_activation": lambda: (("fc2", MLP_X), {"target": 0}),
    "layer_gradcam": lambda: (("fc2", MLP_X), {"target": 0}),
    "layer_conductance": lambda: (("fc2", MLP_X), {"target": 0, "n_steps": 4}),
    "saliency": lambda: ((MLP_X,), {"target": 0}),
    "input_x_gradient": lambda: ((MLP_X,), {"target": 0}),
    "layer_activation": lambda: (("fc2", MLP_X), {}),
    "gradient_shap": lambda: ((MLP_X, randn(3, 5, seed=2)), {"target": 0, "generator": gen()}),
    "layer_gradient_shap": lambda: (("fc2", MLP_X, randn(3, 5, seed=2)), {"target": 0, "generator": gen()}),
    "lrp": lambda: ((MLP_X,), {"target": 0, "rules": {"fc1": ("gamma", {"gamma": 0.5})}}),
    "layer_lrp": lambda: (("fc2", MLP_X), {"target": 0}),
    "integrated_gradients": lambda: ((MLP_X,), {"target": 0, "n_steps": 4}),
    "layer_integrated_gradients": lambda: (("fc2", MLP_X), {"target": 0, "n_steps": 4}),
    "internal_influence": lambda: (("fc2", MLP_X), {"target": 0, "n_steps": 4}),
}
COUNT_VALUES = {"n_steps": 4, "internal_batch_size": 8, "n_samples": 3, "perturbations_per_eval": 2, "max_steps": 64}


def call(name, **changes):
    args, kwargs = VALID[name]()
    if "max_steps" in changes:   # used only by adaptive integration
        changes = {"n_steps": "auto", **changes}
    return getattr(attrfx, name)(mlp(), *args, **{**kwargs, **changes})


def flags_of(name):
    """The keyword-only arguments of ``name`` whose default is a bool."""
    params = inspect.signature(getattr(attrfx, name)).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY and isinstance(p.default, bool)]


def counts_of(name):
    return [c for c in COUNT_VALUES if c in inspect.signature(getattr(attrfx, name)).parameters]


FLAG_CASES = [(name, flag) for name in sorted(VALID) for flag in flags_of(name)]
COUNT_CASES = [(name, count) for name in sorted(VALID) for count in counts_of(name)]


def test_every_method_with_a_model_has_a_valid_call():
    methods = {n for n in attrfx.__all__ if inspect.isfunction(getattr(attrfx, n))} - {"interpolate", "noise_tunnel"}
    assert set(VALID) == methods


@pytest.mark.parametrize("name", sorted(VALID))
@pytest.mark.parametrize("model", ["net", None, 3])
def test_model_is_checked_before_anything_else(name, model):
    args, kwargs = VALID[name]()
    with raises(attrfx.AttrfxTypeError, f"{name}: `model` must be an nn.Module or a callable",
                f"got {type(model).__name__}."):
        getattr(attrfx, name)(model, "1", *args[1:], **kwargs)
    with raises(attrfx.AttrfxTypeError, f"{name}: `model`"):
        getattr(attrfx, name)(model=model, layer="1", inputs=MLP_X)


def test_the_flags_are_all_known_to_the_boundary():
    from attrfx._api import FLAGS
    assert {flag for _, flag in FLAG_CASES} == FLAGS


@pytest.mark.parametrize("name,flag", FLAG_CASES, ids=[f"{n}-{f}" for n, f in FLAG_CASES])
@pytest.mark.parametrize("value", ["yes", "", 1, 0, None, torch.tensor(True), [True]])
def test_flags_take_only_true_or_false(name, flag, value):
    with raises(attrfx.AttrfxTypeError, f"{name}: `{flag}` must be True or False; got {type(value).__name__}."):
        call(name, **{flag: value})


@pytest.mark.parametrize("name,flag", FLAG_CASES, ids=[f"{n}-{f}" for n, f in FLAG_CASES])
def test_numpy_bools_are_flags(name, flag):
    default = inspect.signature(getattr(attrfx, name)).parameters[flag].default
    ours, plain = call(name, **{flag: np.bool_(default)}), call(name, **{flag: default})
    for a, b in zip(_flat(ours), _flat(plain)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _flat(result):
    if isinstance(result, torch.Tensor):
        return [result]
    return [t for part in result for t in _flat(part)]


@pytest.mark.parametrize("name,count", COUNT_CASES, ids=[f"{n}-{c}" for n, c in COUNT_CASES])
@pytest.mark.parametrize("kind", [np.int64, np.int32, np.uint8, lambda v: torch.tensor(v)],
                         ids=["int64", "int32", "uint8", "torch"])
def test_counts_take_numpy_and_torch_integers(name, count, kind):
    value = COUNT_VALUES[count]
    for a, b in zip(_flat(call(name, **{count: kind(value)})), _flat(call(name, **{count: value}))):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name,count", COUNT_CASES, ids=[f"{n}-{c}" for n, c in COUNT_CASES])
@pytest.mark.parametrize("value", [True, np.bool_(True), 2.0, np.float64(2.0), torch.tensor(2.0),
                                   torch.tensor([2, 3]), "2"])
def test_counts_refuse_bools_floats_and_strings(name, count, value):
    with raises(attrfx.AttrfxTypeError, f"{name}: `{count}` must be", f"got {type(value).__name__}."):
        call(name, **{count: value})


# --- errors that point at the fix -------------------------------------------------------------------------------

def token_model():
    return seeded(lambda: nn.Sequential(nn.Embedding(9, 3), nn.Flatten(), nn.Linear(12, 2)))


TOKENS = torch.ones(2, 4, dtype=torch.long)


@pytest.mark.parametrize("name", ["neuron_gradient", "neuron_integrated_gradients", "neuron_deeplift"])
def test_token_ids_for_input_gradients_point_to_embeddings(name):
    with raises(attrfx.AttrfxValueError, f"{name}: `inputs` must be floating-point", "inputs_embeds",
                "torch.int64"):
        getattr(attrfx, name)(token_model(), "2", TOKENS, 0)


def test_token_ids_for_a_path_method_point_to_per_token_scores():
    with pytest.raises(attrfx.AttrfxValueError) as info:
        attrfx.layer_conductance(token_model(), "2", TOKENS, target=0)
    message = str(info.value)
    assert "layer_gradient_x_activation at the embedding layer" in message and "one row per token" in message
    assert "layer_gradcam" not in message    # Grad-CAM sums over tokens: no per-token scores
    per_token = attrfx.layer_gradient_x_activation(token_model(), "0", TOKENS, target=0).sum(-1)
    assert per_token.shape == TOKENS.shape   # what the message promises


# --- DeepLift on nonlinearities its rules do not cover ----------------------------------------------------------

DEEPLIFTS = {
    "neuron_deeplift": lambda m, layer, x, sel: attrfx.neuron_deeplift(m, layer, x, sel),
    "neuron_deeplift_shap": lambda m, layer, x, sel: attrfx.neuron_deeplift_shap(m, layer, x, sel, randn(3, 5, seed=2)),
}


@pytest.mark.parametrize("name", sorted(DEEPLIFTS))
def test_deeplift_warns_once_naming_the_modules_it_cannot_rescale(name):
    with pytest.warns(attrfx.RuleCoverageWarning) as record:
        DEEPLIFTS[name](seeded(GeluNet), "fc2", MLP_X, 1)
    assert len(record) == 1 and record[0].filename == __file__
    message = str(record[0].message)
    assert message.startswith(f"{name}: ") and "'gelu' (GELU)" in message and "functional" in message


def test_deeplift_names_every_uncovered_module_by_its_dotted_name():
    model = seeded(lambda: nn.Sequential(nn.Linear(5, 6), nn.SiLU(),
                                         nn.Sequential(nn.Linear(6, 6), nn.Mish(), nn.ReLU()), nn.Linear(6, 2)))
    with pytest.warns(attrfx.RuleCoverageWarning, match=r"'1' \(SiLU\), '2\.1' \(Mish\)"):
        attrfx.neuron_deeplift(model, "3", MLP_X, 0)


@pytest.mark.parametrize("name", sorted(DEEPLIFTS))
def test_deeplift_is_silent_where_its_rules_cover_every_module_that_runs(name):
    behind = seeded(lambda: nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 4), nn.GELU(), nn.Linear(4, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DEEPLIFTS[name](mlp(), "fc2", MLP_X, 1)       # Tanh and ReLU
        DEEPLIFTS[name](behind, "2", MLP_X, 1)        # the GELU after the layer never runs
