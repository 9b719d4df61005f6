"""lrp and layer_lrp against Captum 0.9.0's LRP and LayerLRP, the conservation law, statelessness and the errors."""

import copy
import warnings

import pytest
import torch
from captum.attr import LRP, LayerLRP
from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule, GammaRule, IdentityRule
from hypothesis import given, strategies as st
from torch import nn

import attrfx
from attrfx import propagation
from models import MLP, randn, seeded
from parity import assert_parity


class Conv(nn.Module):
    """Every layer type with a default rule in Captum: Conv2d, ReLU, MaxPool2d, BatchNorm2d, AvgPool2d,
    AdaptiveAvgPool2d, Dropout, Tanh, Linear (flattened in ``forward``). No two of ReLU, Dropout, Tanh in a row:
    there Captum's pass-through hooks apply the later module's derivative (see
    test_pass_through_modules_in_a_row_keep_the_relevance)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.relu1, self.pool1 = nn.Conv2d(2, 4, 3), nn.ReLU(), nn.MaxPool2d(2)
        self.conv2, self.bn, self.relu2 = nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU()
        self.avg, self.adapt = nn.AvgPool2d(1), nn.AdaptiveAvgPool2d(2)
        self.fc1, self.drop, self.act = nn.Linear(20, 6), nn.Dropout(), nn.Tanh()
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        h = self.adapt(self.avg(self.relu2(self.bn(self.conv2(self.pool1(self.relu1(self.conv1(x))))))))
        return self.fc2(self.act(self.fc1(self.drop(h.flatten(1)))))


class TwoInputs(nn.Module):
    """Two inputs joined by a sum, and a per-example scale passed as an extra forward argument."""

    def __init__(self):
        super().__init__()
        self.fc_a, self.fc_b, self.relu, self.out = nn.Linear(4, 6), nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2)

    def forward(self, x1, x2, scale):
        return self.out(self.relu(self.fc_a(x1) + self.fc_b(x2) * scale))


class Scalar(nn.Module):
    """One output per example (no target needed)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.relu, self.fc2 = nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 1)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x))).squeeze(1)


def conv(dtype=torch.float64):
    net = seeded(Conv, dtype=dtype)
    with torch.no_grad():  # running statistics that are not the identity
        net.bn.running_mean.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(3))
        net.bn.running_var.uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(4))
    return net


CAPTUM_RULES = {"epsilon": lambda p: EpsilonRule(p["epsilon"]),
                "gamma": lambda p: GammaRule(p["gamma"], p["set_bias_to_zero"]),
                "alpha1_beta0": lambda p: Alpha1_Beta0_Rule(p["set_bias_to_zero"]),
                "identity": lambda p: IdentityRule()}
RULES = [("epsilon", {"epsilon": 0.05}), ("epsilon", {"epsilon": 1e-6}),
         ("gamma", {"gamma": 0.4, "set_bias_to_zero": False}), ("gamma", {"gamma": 0.1, "set_bias_to_zero": True}),
         ("alpha1_beta0", {"set_bias_to_zero": False}), ("alpha1_beta0", {"set_bias_to_zero": True})]


def captum(cls, model, rules, *ctor):
    """Captum's attribution object with ``rules`` ({name: (kind, params)}) set as module attributes."""
    for name, (kind, params) in rules.items():
        model.get_submodule(name).rule = CAPTUM_RULES[kind](propagation.as_rule((kind, params)).params)
    return cls(model, *ctor)


def run_captum(cls, model, rules, args, kwargs, *ctor):
    with warnings.catch_warnings():  # Captum sets requires_grad on the inputs and says so
        warnings.simplefilter("ignore")
        return captum(cls, model, rules, *ctor).attribute(*args, **kwargs)


# --- parity ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r[0]}-{r[1]}")
@pytest.mark.parametrize("where", [("conv1", "fc2"), ("conv2", "pool1", "bn"), ("fc1", "adapt")])
def test_lrp_equals_captum_for_each_rule_on_a_conv_net(dtype, rule, where):
    # (alpha1_beta0 does not suit BatchNorm's weights, Captum says: gamma there)
    rules = {name: ("gamma", {"gamma": 0.3}) if name == "bn" and rule[0] == "alpha1_beta0" else rule for name in where}
    x = randn(3, 2, 8, 8, dtype=dtype)
    ours, delta = attrfx.lrp(conv(dtype), x, target=[0, 2, 1], rules=rules, return_convergence_delta=True)
    theirs, their_delta = run_captum(LRP, conv(dtype), rules, (x,), dict(target=[0, 2, 1], return_convergence_delta=True))
    assert_parity(ours, theirs, dtype)
    assert_parity(delta, their_delta, dtype)


@pytest.mark.parametrize("rule", RULES[:1] + RULES[2:5:2], ids=lambda r: r[0])
def test_lrp_equals_captum_on_an_mlp_with_every_target_form(rule):
    x = randn(4, 5)
    rules = {"fc1": rule, "fc3": ("gamma", {"gamma": 0.2})}
    for target in [1, [0, 1, 2, 1], torch.tensor([2, 0, 0, 1]), torch.tensor(2)]:
        ours = attrfx.lrp(seeded(MLP), x, target=target, rules=rules)
        assert_parity(ours, run_captum(LRP, seeded(MLP), rules, (x,), dict(target=target)))
    scalar = attrfx.lrp(seeded(Scalar), x)
    assert_parity(scalar, run_captum(LRP, seeded(Scalar), {}, (x,), {}))


def test_identity_rule_equals_captum_where_its_input_comes_from_a_ruled_layer():
    # (Captum's identity rule after a ReLU, Dropout or Tanh module passes the gradient instead of the relevance:
    # its activation hook reads the gradient before the identity rule replaces it.)
    net = lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double().eval()
    model = seeded(net)
    with torch.no_grad():
        model[1].running_var.fill_(1.7)
    x = randn(5, 3)
    ours = attrfx.lrp(model, x, target=1, rules={nn.BatchNorm1d: ("identity", {})})
    theirs = run_captum(LRP, copy.deepcopy(model), {"1": ("identity", {})}, (x,), dict(target=1))
    assert_parity(ours, theirs)


def test_lrp_equals_captum_on_tuple_inputs_with_extra_forward_args():
    x1, x2, scale = randn(4, 4), randn(4, 3, seed=2), randn(4, 1, seed=3)
    rules = {"fc_b": ("gamma", {"gamma": 0.5}), "fc_a": ("alpha1_beta0", {})}
    ours, delta = attrfx.lrp(seeded(TwoInputs), (x1, x2), target=1, additional_forward_args=(scale,), rules=rules,
                             return_convergence_delta=True)
    theirs, their_delta = run_captum(LRP, seeded(TwoInputs), rules, ((x1, x2),),
                                     dict(target=1, additional_forward_args=(scale,), return_convergence_delta=True))
    assert isinstance(ours, tuple) and len(ours) == 2
    assert_parity(ours, theirs)
    assert_parity(delta, their_delta)


@pytest.mark.parametrize("at_input", [False, True])
@pytest.mark.parametrize("layer", ["conv1", "pool1", "conv2", "bn", "adapt", "fc1", "fc2"])
def test_layer_lrp_equals_captum(layer, at_input):
    x = randn(3, 2, 8, 8)
    rules = {"conv1": ("gamma", {"gamma": 0.3}), "fc1": ("epsilon", {"epsilon": 0.01})}
    ours, delta = attrfx.layer_lrp(conv(), layer, x, target=[1, 0, 2], rules=rules, attribute_to_layer_input=at_input,
                                   return_convergence_delta=True)
    model = conv()
    theirs, their_delta = run_captum(LayerLRP, model, rules, (x,),
                                     dict(target=[1, 0, 2], attribute_to_layer_input=at_input,
                                          return_convergence_delta=True), model.get_submodule(layer))
    assert_parity(ours, theirs)
    assert_parity(delta, their_delta)


def test_layer_lrp_takes_a_list_of_layers_as_captum():
    x = randn(4, 5)
    ours, deltas = attrfx.layer_lrp(seeded(MLP), ["fc1", "fc3"], x, target=2, return_convergence_delta=True)
    model = seeded(MLP)
    theirs, their_deltas = run_captum(LayerLRP, model, {}, (x,), dict(target=2, return_convergence_delta=True),
                                      [model.fc1, model.fc3])
    assert isinstance(ours, list) and isinstance(deltas, list)
    assert_parity(ours, theirs)
    assert_parity(deltas, their_deltas)


def test_layer_lrp_at_the_first_layers_input_is_lrp():
    x = randn(3, 2, 8, 8)
    rules = {"conv2": ("alpha1_beta0", {})}
    at_input = attrfx.layer_lrp(conv(), "conv1", x, target=1, rules=rules, attribute_to_layer_input=True)
    assert_parity(at_input, attrfx.lrp(conv(), x, target=1, rules=rules))


def test_rules_by_module_win_over_names_and_names_over_types():
    x, model = randn(4, 5), seeded(MLP)
    gamma, eps = ("gamma", {"gamma": 0.7}), ("epsilon", {"epsilon": 0.3})
    mixed = attrfx.lrp(model, x, target=0, rules={nn.Linear: gamma, "fc2": eps, model.fc3: eps})
    plain = attrfx.lrp(model, x, target=0, rules={"fc1": gamma, "fc2": eps, "fc3": eps})
    assert torch.equal(mixed, plain)
    assert not torch.equal(mixed, attrfx.lrp(model, x, target=0, rules={nn.Linear: gamma}))


def test_a_rule_for_a_type_covers_its_subclasses_and_flatten_can_pass_relevance_through():
    class Wide(nn.Linear):  # no default rule: Captum's defaults go by exact type
        pass

    x = randn(2, 1, 4, 4)
    net = seeded(lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), Wide(8, 3)))
    plain = seeded(lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)))
    with pytest.raises(attrfx.AttrfxTypeError, match="rule for module '3'"):
        attrfx.lrp(net, x, target=0, rules={nn.Flatten: ("identity", {})})
    for rule in [("epsilon", {}), ("gamma", {"gamma": 0.5})]:
        ours = attrfx.lrp(net, x, target=0, rules={nn.Flatten: ("identity", {}), nn.Linear: rule})
        assert torch.equal(ours, attrfx.lrp(plain, x, target=0, rules={nn.Flatten: ("identity", {}), "3": rule}))
    unflattened = attrfx.lrp(plain, x, target=0, rules={nn.Flatten: ("identity", {})})
    assert unflattened.shape == x.shape


# --- laws ------------------------------------------------------------------------------------------------------

@given(seed=st.integers(0, 2 ** 16), widths=st.lists(st.integers(1, 6), min_size=1, max_size=3),
       n=st.integers(1, 4), gamma=st.floats(0.0, 2.0))
def test_relevance_is_conserved_without_bias(seed, widths, n, gamma):
    """``Σ relevance = F(x)`` at the inputs and at every layer for bias-free ReLU nets (ε = 1e-9), epsilon or gamma."""
    sizes = [4] + widths + [3]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = [m for a, b in zip(sizes, sizes[1:]) for m in (nn.Linear(a, b, bias=False), nn.ReLU())]
        net = nn.Sequential(*layers[:-1]).double()
    x = torch.randn(n, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    output = net(x)[:, 1]
    kept = output.abs() > 1e-6  # rows whose relevance is not absorbed by ε
    # (alpha1_beta0 is left out: a neuron whose weights are all negative has z = 0 and absorbs its relevance)
    for rules in [None, {nn.Linear: ("gamma", {"gamma": gamma})}]:
        relevance, delta = attrfx.lrp(net, x, target=1, rules=rules, return_convergence_delta=True)
        torch.testing.assert_close(relevance.sum(1)[kept], output[kept], rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(delta[kept], torch.zeros_like(delta[kept]), rtol=0, atol=1e-6)
        for name in [str(i) for i in range(0, len(net), 2)]:
            at_layer = attrfx.layer_lrp(net, name, x, target=1, rules=rules)
            torch.testing.assert_close(at_layer.sum(1)[kept], output[kept], rtol=1e-6, atol=1e-9)


def test_pass_through_modules_in_a_row_keep_the_relevance():
    # Captum 0.9.0 multiplies the relevance by Tanh's derivative here (its ReLU hook reads the gradient before
    # the Tanh hook replaces it), so the relevance at the input is not conserved; attrfx passes it through both.
    net = seeded(lambda: nn.Sequential(nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Tanh(), nn.Linear(4, 2, bias=False)))
    x = randn(5, 3)
    relevance = attrfx.lrp(net, x, target=0)
    at_tanh = attrfx.layer_lrp(net, "2", x, target=0, rules={})
    at_relu = attrfx.layer_lrp(net, "1", x, target=0)
    torch.testing.assert_close(at_relu, at_tanh)
    torch.testing.assert_close(relevance.sum(1), at_tanh.sum(1))


def test_bias_and_epsilon_absorb_relevance():
    x, model = randn(4, 5), seeded(MLP)
    _, with_bias = attrfx.lrp(model, x, target=0, return_convergence_delta=True)
    _, large_eps = attrfx.lrp(model, x, target=0, return_convergence_delta=True,
                              rules={nn.Linear: ("epsilon", {"epsilon": 10.0})})
    assert with_bias.abs().max() > 1e-3
    assert large_eps.abs().min() > with_bias.abs().min()


@given(seed=st.integers(0, 2 ** 16), n=st.integers(1, 5))
def test_lrp_is_batch_independent(seed, n):
    x = torch.randn(n, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    rules = {"fc1": ("gamma", {"gamma": 0.25})}
    together = attrfx.lrp(seeded(MLP), x, target=2, rules=rules)
    alone = torch.cat([attrfx.lrp(seeded(MLP), x[i:i + 1], target=2, rules=rules) for i in range(n)])
    torch.testing.assert_close(together, alone, rtol=1e-12, atol=1e-15)


def test_lrp_composes_with_torch_func_vmap():
    model, x = seeded(MLP), randn(3, 2, 5)
    rules = {"fc2": ("gamma", {"gamma": 0.5})}
    mapped = torch.func.vmap(lambda rows: attrfx.lrp(model, rows, target=1, rules=rules))(x)
    looped = torch.stack([attrfx.lrp(model, rows, target=1, rules=rules) for rows in x])
    torch.testing.assert_close(mapped, looped, rtol=1e-10, atol=1e-12)


# --- nothing left on the model ---------------------------------------------------------------------------------

def state(model):
    return ([(name, sorted(vars(m)), dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks))
             for name, m in model.named_modules()],
            {k: v.clone() for k, v in model.state_dict().items()})


def assert_same_state(before, after):
    assert before[0] == after[0]
    assert before[1].keys() == after[1].keys()
    assert all(torch.equal(before[1][k], after[1][k]) for k in before[1])


class Raising(nn.Module):
    def forward(self, x):
        raise RuntimeError("the model failed")


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r[0]}-{r[1]}")
def test_no_attribute_hook_or_weight_is_left_on_the_model(rule):
    model, x = conv(), randn(2, 2, 8, 8)
    before = state(model)
    attrfx.lrp(model, x, target=0, rules={nn.Conv2d: rule, nn.Linear: rule})
    attrfx.layer_lrp(model, "conv2", x, target=0, rules={nn.Conv2d: rule}, attribute_to_layer_input=True)
    assert_same_state(before, state(model))
    failing = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3), Raising()).double()
    before = state(failing)
    with pytest.raises(RuntimeError, match="the model failed"):
        attrfx.lrp(failing, randn(2, 5), target=0, rules={Raising: ("identity", {}), "0": rule})
    assert_same_state(before, state(failing))
    with pytest.raises(attrfx.AttrfxTypeError):
        attrfx.lrp(failing, randn(2, 5), target=0)   # Raising has no default rule
    assert_same_state(before, state(failing))


def test_verbose_prints_each_leafs_rule(capsys):
    attrfx.lrp(seeded(MLP), randn(2, 5), target=0, verbose=True, rules={"fc2": ("gamma", {"gamma": 0.5})})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 5
    assert "Applied gamma rule {'gamma': 0.5, 'set_bias_to_zero': False} on layer 'fc2' (Linear)" in printed
    assert "Applied identity rule {} on layer 'act1' (Tanh)" in printed


# --- errors ----------------------------------------------------------------------------------------------------

def test_a_module_without_a_default_rule_is_named():
    net = nn.Sequential(nn.Linear(3, 4), nn.Softplus(), nn.Linear(4, 2))
    with pytest.raises(attrfx.AttrfxTypeError, match=r"^lrp: `rules` must give a rule for module '1', whose type has "
                                                     r"no default LRP rule .*; got Softplus\.$"):
        attrfx.lrp(net, torch.randn(2, 3), target=0)
    with pytest.raises(attrfx.AttrfxTypeError, match=r"^layer_lrp: `rules` must give a rule for module '1'"):
        attrfx.layer_lrp(net, "0", torch.randn(2, 3), target=0)
    assert attrfx.lrp(net, torch.randn(2, 3), target=0, rules={nn.Softplus: ("identity", {})}).shape == (2, 3)


@pytest.mark.parametrize("rules,message", [
    ([("epsilon", {})], r"`rules` must be None or a dict .*; got list\."),
    ({"fc1": "epsilon"}, r"`rules` must be rules given as \(kind, params\)"),
    ({"fc1": ("lrp0", {})}, r"`rules` must be rules whose kind is one of \['alpha1_beta0', 'epsilon', 'gamma', "
                            r"'identity'\]; got 'lrp0'\."),
    ({"fc1": ("gamma", {"alpha": 1.0})}, r"`rules` must be a 'gamma' rule with parameters among \['gamma', "
                                         r"'set_bias_to_zero'\]; got \['alpha'\]\."),
    ({"fc1": ("epsilon", {"epsilon": -1.0})}, r"`rules: epsilon epsilon` must be non-negative; got -1\.0\."),
    ({"fc1": ("gamma", {"gamma": "big"})}, r"`rules: gamma gamma` must be a real number; got str\."),
    ({"fc1": ("gamma", {"set_bias_to_zero": 1})}, r"`rules: gamma set_bias_to_zero` must be True or False"),
    ({"fc9": ("epsilon", {})}, r"`rules` must be the name of a submodule of the model"),
    ({nn.Linear(2, 2): ("epsilon", {})}, r"`rules` must be a submodule of the model"),
    ({"": ("epsilon", {})}, r"`rules` must be keyed by leaf modules .*; got a rule for the model itself \(MLP\)"),
    ({3: ("epsilon", {})}, r"`rules` must be a dict whose keys are modules, dotted names or nn\.Module types; "
                           r"got int\."),
])
def test_bad_rules_are_named(rules, message):
    with pytest.raises((attrfx.AttrfxValueError, attrfx.AttrfxTypeError), match=r"^lrp: " + message):
        attrfx.lrp(seeded(MLP), randn(2, 5), target=0, rules=rules)


def test_rule_based_errors_name_the_argument():
    with pytest.raises(attrfx.AttrfxTypeError, match=r"^lrp: `model` must be an nn\.Module"):
        attrfx.lrp(lambda x: x.sum(1), randn(2, 5))
    with pytest.raises(attrfx.AttrfxValueError, match=r"^layer_lrp: `layer` must be the name of a submodule"):
        attrfx.layer_lrp(seeded(MLP), "fc9", randn(2, 5), target=0)
    with pytest.raises(attrfx.AttrfxTypeError, match=r"^lrp: `verbose` must be True or False; got str\."):
        attrfx.lrp(seeded(MLP), randn(2, 5), target=0, verbose="yes")
    with pytest.raises(attrfx.AttrfxValueError, match=r"^lrp: the identity rule needs a module whose output has as "
                                                      r"many values per example as its input"):
        attrfx.lrp(nn.Sequential(nn.Linear(3, 4), nn.MaxPool1d(2)).double(), randn(2, 3), target=0,
                   rules={nn.MaxPool1d: ("identity", {})})
