"""The rules primitive: rules as data, torch.func compatibility, restoration on every exit, statelessness."""

import pytest
import torch
from torch import nn

import attrfx
from attrfx import rules
from _models_rules import Chain, PoolNet, Raises, ReusedRelu, assert_same, snapshot
from models import randn, seeded

ALL = [attrfx.neuron_deeplift, attrfx.neuron_guided_backprop, attrfx.neuron_deconvolution,
       lambda *a: attrfx.neuron_deeplift_shap(*a, randn(3, *a[2].shape[1:], seed=7)),
       attrfx.neuron_feature_ablation]
NAMES = ["deeplift", "guided_backprop", "deconvolution", "deeplift_shap", "feature_ablation"]


def test_rule_maps_are_data():
    class MyRelu(nn.ReLU):
        pass
    assert rules.GUIDED_BACKPROP.rule_for(MyRelu()) is rules.guided_relu     # isinstance, as Captum
    assert rules.DEEPLIFT_RESCALE.rule_for(MyRelu()) is None                 # exact types, as Captum
    assert rules.DEEPLIFT_RESCALE.rule_for(nn.GELU()) is None
    assert set(rules.DEEPLIFT_RESCALE.rules) == {nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus,
                                                 nn.Softmax, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d}


def test_rules_work_under_torch_func_transforms():
    x = torch.tensor([[-1.0, 2.0, 0.5]], dtype=torch.float64)
    cot = torch.tensor([[[3.0, -1.0, 2.0]], [[-2.0, 4.0, 1.0]]], dtype=torch.float64)
    y, pull = torch.func.vjp(lambda t: rules.guided_relu(nn.ReLU(), t, t.relu()), x)
    (g,) = torch.func.vmap(pull)(cot)
    torch.testing.assert_close(g, cot.clamp(min=0) * (x > 0))
    both = torch.tensor([2.0, -1.0, 0.0, 0.0], dtype=torch.float64)       # input [2, -1], reference [0, 0]
    g = torch.func.grad(lambda t: rules.rescale(nn.Tanh(), t, torch.tanh(t)).sum())(both)
    torch.testing.assert_close(g[:2], torch.tanh(both[:2]) / both[:2])
    torch.testing.assert_close(g, torch.func.grad(lambda t: rules.rescale(nn.Tanh(), t, torch.tanh(t))
                                                  .sum())(both))


def _plain_grad(fn):
    """``torch.func.grad``'s contract on plain autograd (no transform active)."""
    def grad(t):
        leaf = t.detach().requires_grad_()
        return torch.autograd.grad(fn(leaf), leaf)[0]
    return grad


FUNCTION_RULES = {  # every rule made of an autograd.Function, with a module and an input of [input; reference] rows
    "deconv": (rules.deconv_relu, nn.ReLU(), (4, 3)),
    "rescale": (rules.rescale, nn.ReLU(), (4, 3)),
    "softmax": (rules.rescale_softmax, nn.Softmax(dim=1), (4, 3)),
    "maxpool": (rules.rescale_maxpool, nn.MaxPool1d(2), (4, 2, 6)),
}


@pytest.mark.parametrize("name", FUNCTION_RULES)
def test_function_rules_agree_on_plain_autograd_and_under_torch_func(name):
    """Plain autograd takes a shorter ``apply`` than ``torch.func``: both give the same gradient."""
    rule, module, shape = FUNCTION_RULES[name]
    both = randn(*shape, seed=3)
    weights = randn(*module(both).shape, seed=4)

    def explained(t):
        return (rule(module, t, module(t)) * weights).sum()

    torch.testing.assert_close(_plain_grad(explained)(both), torch.func.grad(explained)(both), rtol=0, atol=0)
    assert not torch.equal(_plain_grad(explained)(both), torch.func.grad(lambda t: (module(t) * weights).sum())(both))


@pytest.mark.parametrize("grad", [torch.func.grad, _plain_grad], ids=["torch.func", "autograd"])
def test_epsilon_fallback_keeps_the_ordinary_gradient(grad):
    both = torch.tensor([0.7, -0.3, 0.7, 0.5], dtype=torch.float64)       # Δx = 0 for the first unit
    for module, f in [(nn.Sigmoid(), torch.sigmoid), (nn.ELU(), nn.functional.elu)]:
        g = grad(lambda t: rules.rescale(module, t, f(t)).sum())(both)
        ordinary = grad(lambda t: f(t).sum())(both)
        torch.testing.assert_close(g[0], ordinary[0])
        torch.testing.assert_close(g[1], (f(both[1:2]) - f(both[3:4]))[0] / (both[1] - both[3]))


@pytest.mark.parametrize("grad", [torch.func.grad, _plain_grad], ids=["torch.func", "autograd"])
def test_rescale_without_small_differences_is_the_ratio(grad):
    both = torch.tensor([0.7, -0.3, 0.2, 0.5], dtype=torch.float64)       # every |Δx| ≥ eps
    g = grad(lambda t: rules.rescale(nn.Tanh(), t, torch.tanh(t)).sum())(both)
    ratio = (torch.tanh(both[:2]) - torch.tanh(both[2:])) / (both[:2] - both[2:])
    torch.testing.assert_close(g, torch.cat([ratio, ratio]))


@pytest.mark.parametrize("method", ALL, ids=NAMES)
def test_stateless_after_success(method):
    model, x = seeded(PoolNet), randn(2, 2, 8, 8)
    model.train()      # training flags must come back as they were
    before = snapshot(model, x)
    method(model, "fc1", x, [1, 2])
    assert_same(before, snapshot(model, x))


@pytest.mark.parametrize("method", ALL, ids=NAMES)
def test_stateless_when_the_model_raises(method):
    model, x = seeded(Raises), randn(2, 3)
    before = snapshot(model, x)
    with pytest.raises(RuntimeError, match="boom"):
        method(model, "fc2", x, 0)
    assert_same(before, snapshot(model, x))


def test_rules_act_only_where_a_graph_is_recorded():
    calls = []
    counting = rules.RuleMap("counting", {nn.ReLU: lambda mod, x, y: calls.append(mod) or y})
    model = seeded(Chain)
    with rules.applied(model, counting):
        with torch.no_grad():
            model(randn(2, 5))
        assert calls == []
        model(randn(2, 5))
    assert len(calls) == sum(isinstance(m, nn.ReLU) for m in model.modules()) > 0


BY_RULE = [(rules.GUIDED_BACKPROP, attrfx.neuron_guided_backprop), (rules.DECONVOLUTION, attrfx.neuron_deconvolution),
           (rules.DEEPLIFT_RESCALE, attrfx.neuron_deeplift)]


@pytest.mark.parametrize("rule_map, method", BY_RULE, ids=["guided", "deconv", "rescale"])
def test_a_module_registered_twice_gets_its_rule_once(rule_map, method):
    plain, aliased = seeded(Chain), seeded(Chain)
    aliased.alias = aliased.act1            # the same ReLU under a second name, still called once
    x = randn(4, 5)
    with rules.applied(aliased, rule_map):
        assert len(aliased.act1._forward_hooks) == 1
    torch.testing.assert_close(method(aliased, "fc2", x, 1), method(plain, "fc2", x, 1), rtol=0, atol=0)


def test_applied_restores_on_exception():
    model = seeded(Chain)
    before = snapshot(model, randn(1, 5))
    with pytest.raises(KeyError):
        with rules.applied(model, rules.DEEPLIFT_RESCALE):
            assert len(model.act1._forward_hooks) == 1
            raise KeyError("inside")
    assert_same(before, snapshot(model, randn(1, 5)))


def test_reused_module_is_an_error_for_deeplift():
    model, x = seeded(ReusedRelu), randn(3, 3)
    before = snapshot(model, x)
    with pytest.raises(ValueError, match="neuron_deeplift: module 'relu' \\(ReLU\\) runs more than once"):
        attrfx.neuron_deeplift(model, "fc3", x, 0)
    with pytest.raises(ValueError, match="runs more than once"):
        attrfx.neuron_deeplift_shap(model, "fc3", x, 0, randn(2, 3))
    assert_same(before, snapshot(model, x))


@pytest.mark.parametrize("method", ALL[:4], ids=NAMES[:4])
def test_plain_callable_is_rejected(method):
    net = seeded(Chain)
    with pytest.raises(TypeError, match="`model` must be an nn.Module"):
        method(lambda x: net(x), net.fc2, randn(2, 5), 0)
