"""The benchmark's floor for a rule-based method computes that method's result.

The floor is the least plain-autograd work a method needs; for guided
backpropagation, deconvolution, DeepLift and DeepLiftSHAP that includes the
rule at every ReLU (``benchmarks.methods.FLOOR_RULES``) and, for the DeepLift
pair, making the input-baseline rows and combining their multipliers. Were
any of it left out, the floor would time a different computation.
"""

import pytest
import torch

from benchmarks import methods, models

RULE_METHODS = ["neuron_guided_backprop", "neuron_deconvolution", "neuron_deeplift", "neuron_deeplift_shap"]


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def case(request):
    return models.build(request.param)


@pytest.mark.parametrize("where", ["early", "late"])
@pytest.mark.parametrize("method", RULE_METHODS)
def test_rule_floor_computes_the_method(case, where, method):
    calls = methods.calls(method, case, where)
    torch.testing.assert_close(calls.attrfx(), calls.floor(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", RULE_METHODS[:2])
def test_plain_gradient_floor_differs_from_the_rule(case, method):
    """The check above can fail: without the rule, the floor's gradient is another number."""
    calls = methods.calls(method, case, "late")
    fz = methods.frozen(case.model)
    plain = methods.floor_neuron_grad(fz, fz.get_submodule(case.layers["late"]), case.neurons["late"], case.inputs)()
    assert not torch.allclose(calls.attrfx(), plain, rtol=1e-5, atol=1e-7)
