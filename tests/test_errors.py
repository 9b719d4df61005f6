"""Every bad input raises a ValueError/TypeError naming the method, the argument, what was expected and given."""

import re

import pytest
import torch

import attrfx
from attrfx import axioms
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
