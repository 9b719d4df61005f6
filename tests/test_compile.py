"""``torch.compile``: a compiled model gives exactly the eager results, and stays as it was.

Hooks added for one call cannot reach a compiled graph (Dynamo does not guard
on module hooks, so a graph compiled before the call never runs them), and
Dynamo cannot trace ``torch.func`` transforms around a compiled module. So
every public method runs a compiled model's original module (``_orig_mod``),
or a compiled function's original function, eagerly: same results, bit for
bit, whatever the backend; no speed-up. A model with a compiled *submodule*
cannot be unwrapped without changing it, so it is refused with a clear error.
"""

import pytest
import torch
from torch import nn

import attrfx
from attrfx import axioms
from models import ConvNet, randn, seeded

X = randn(3, 2, 8, 8, dtype=torch.float32)

CALLS = {
    "neuron_gradient": lambda m: attrfx.neuron_gradient(m, "conv2", X, (1, 1, 1)),
    "neuron_integrated_gradients": lambda m: attrfx.neuron_integrated_gradients(m, "relu1", X, [(1, 2, 2), (0, 1, 1)],
                                                                                n_steps=5),
    "neuron_conductance": lambda m: attrfx.neuron_conductance(m, "act2", X, (0, 1, 1), target=1, n_steps=5),
    "neuron_gradient_shap": lambda m: attrfx.neuron_gradient_shap(m, "act2", X, (2, 0, 1), X[:2] * 0.1,
                                                                  generator=torch.Generator().manual_seed(0)),
    "neuron_deeplift": lambda m: attrfx.neuron_deeplift(m, "fc", X, 2),
    "layer_deeplift": lambda m: attrfx.layer_deeplift(m, "conv2", X, target=1, return_convergence_delta=True),
    "layer_deeplift_shap": lambda m: attrfx.layer_deeplift_shap(m, m.pool, X, X[:2] * 0.5, target=3),
    "neuron_deeplift_shap": lambda m: attrfx.neuron_deeplift_shap(m, "act2", X, (1, 1, 1), X[:2] * 0.5),
    "neuron_guided_backprop": lambda m: attrfx.neuron_guided_backprop(m, m.conv2, X, (1, 1, 1)),
    "neuron_deconvolution": lambda m: attrfx.neuron_deconvolution(m, "fc", X, 3),
    "neuron_feature_ablation": lambda m: attrfx.neuron_feature_ablation(m, "conv2", X, (0, 2, 2),
                                                                        perturbations_per_eval=16),
    "layer_feature_ablation": lambda m: attrfx.layer_feature_ablation(m, "pool", X, target=1,
                                                                      layer_mask=torch.arange(4).reshape(1, 4, 1, 1)),
    "layer_feature_permutation": lambda m: attrfx.layer_feature_permutation(m, "act2", X, target=2,
                                                                            generator=torch.Generator().manual_seed(0)),
    "layer_gradient_x_activation": lambda m: attrfx.layer_gradient_x_activation(m, ["conv1", m.act2], X, target=0),
    "layer_lrp": lambda m: attrfx.layer_lrp(m, "conv2", X, target=2, rules={"act2": ("identity", {})}),
    "layer_gradcam": lambda m: attrfx.layer_gradcam(m, "conv2", X, target=3),
    "layer_conductance": lambda m: attrfx.layer_conductance(m, "pool", X, target=2, n_steps=5,
                                                            return_convergence_delta=True),
    "layer_activation": lambda m: attrfx.layer_activation(m, ["conv1", m.act2], X),
    "layer_gradient_shap": lambda m: attrfx.layer_gradient_shap(m, "act2", X, X[:2] * 0.1, target=1,
                                                                generator=torch.Generator().manual_seed(0)),
    "layer_integrated_gradients": lambda m: attrfx.layer_integrated_gradients(m, "conv2", X, target=2, n_steps=5,
                                                                              return_convergence_delta=True),
}


@pytest.fixture(scope="module", params=["eager", "aot_eager"])
def compiled(request):
    """A ConvNet, and the same module compiled with the backend, already run once (a warm graph)."""
    model = seeded(ConvNet, dtype=torch.float32)
    fast = torch.compile(model, backend=request.param)
    torch.testing.assert_close(fast(X), model(X))
    return model, fast


def flat(result):
    return axioms._flat(result)


def test_every_method_is_covered():
    assert set(CALLS) == {n for n in attrfx.__all__ if n.startswith(("neuron_", "layer_"))}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_compiled_model_gives_exactly_the_eager_results(compiled, name):
    model, fast = compiled
    before = axioms.state_of(fast)
    eager = CALLS[name](model)
    for a, b in zip(flat(CALLS[name](fast)), flat(eager), strict=True):
        assert torch.equal(a, b)
    assert axioms.state_changes(before, axioms.state_of(fast)) == []
    torch.testing.assert_close(fast(X), model(X))  # and the compiled model still runs as before


def test_a_compiled_function_runs_as_its_original_function():
    model = seeded(ConvNet, dtype=torch.float32)
    forward = torch.compile(lambda x: model(x) * 2.0, backend="eager")
    expected = attrfx.layer_conductance(lambda x: model(x) * 2.0, model.act2, X, target=1, n_steps=4)
    assert torch.equal(attrfx.layer_conductance(forward, model.act2, X, target=1, n_steps=4), expected)
    assert torch.equal(attrfx.neuron_gradient(forward, model.conv1, X, (0, 1, 1)),
                       attrfx.neuron_gradient(model, model.conv1, X, (0, 1, 1)))


def test_a_model_with_a_compiled_submodule_is_refused_clearly():
    model = seeded(ConvNet, dtype=torch.float32)
    model.conv2 = torch.compile(model.conv2, backend="eager")
    before = axioms.state_of(model)
    with pytest.raises(attrfx.AttrfxValueError, match=r"^layer_gradcam: `model` must be a module without "
                                                      r"torch\.compile'd submodules .*; got compiled submodules "
                                                      r"\['conv2'\]\."):
        attrfx.layer_gradcam(model, "act2", X, target=0)
    assert axioms.state_changes(before, axioms.state_of(model)) == []
