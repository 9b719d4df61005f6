"""Only the selected neurons' rows of the Linear feeding the layer are computed (``attrfx.slicing``).

Every neuron method that runs the model only to the layer gives the same
result with the Linear narrowed to the selected rows as with the whole
Linear (``likely_chain`` patched to find nothing: the unsliced path), and
the narrowing happens where it should (a spy on ``narrow_linear``) and
nowhere else: a functional op or a reused Linear between it and the layer, a
hook on the chain, a callable selector, the layer's input, training mode,
selectors reading over half the rows. Methods that learn the layer on their
first pass guess the rows for it; where the guess does not hold, that pass
is run again with the whole Linear and no later pass narrows. Neuron
conductance runs the whole Linear but pulls the neurons back through their
rows alone (a spy on ``rows_with_gradients``).
"""

from __future__ import annotations

import pytest
import torch
from captum.attr import NeuronGradient, NeuronIntegratedGradients
from hypothesis import given, strategies as st
from torch import nn

import attrfx
from attrfx import slicing
from models import MLP, randn, seeded
from parity import assert_parity

# FFN's LayerNorm and GELU have no DeepLift rule (a RuleCoverageWarning says so); here narrowed and whole passes
# are compared, which the warning does not concern.
pytestmark = pytest.mark.filterwarnings("ignore::attrfx.RuleCoverageWarning")


class FFN(nn.Module):
    """A transformer feed-forward block on ``[B, 3, 4]``: norm → up (4→10) → GELU → Dropout → down, mean."""

    def __init__(self):
        super().__init__()
        self.norm, self.up, self.act = nn.LayerNorm(4), nn.Linear(4, 10), nn.GELU()
        self.drop, self.down = nn.Dropout(0.5), nn.Linear(10, 3)

    def forward(self, x):
        return self.down(self.drop(self.act(self.up(self.norm(x))))).mean(1)


class Doubled(nn.Module):
    """fc → ×2 (a functional op) → ReLU: the ReLU's input is no module's output."""

    def __init__(self):
        super().__init__()
        self.fc, self.relu, self.out = nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2)

    def forward(self, x):
        return self.out(self.relu(self.fc(x) * 2))


class Normed(nn.Module):
    """fc → LayerNorm → ReLU: a module mixing the features between the Linear and the layer."""

    def __init__(self):
        super().__init__()
        self.fc, self.norm, self.relu, self.out = nn.Linear(5, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 2)

    def forward(self, x):
        return self.out(self.relu(self.norm(self.fc(x))))


class Twice(nn.Module):
    """The same Linear twice before the ReLU: the ReLU reads its second run."""

    def __init__(self):
        super().__init__()
        self.fc, self.relu, self.out = nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 2)

    def forward(self, x):
        return self.out(self.relu(self.fc(torch.tanh(self.fc(x)))))


MLP_X, FFN_X = randn(4, 5), randn(4, 3, 4, seed=2)
MLP_BASE, FFN_BASE = randn(3, 5, seed=3), randn(3, 3, 4, seed=4)

METHODS = {
    "neuron_gradient": lambda m, layer, x, sel, base: attrfx.neuron_gradient(m, layer, x, sel),
    "neuron_integrated_gradients": lambda m, layer, x, sel, base: attrfx.neuron_integrated_gradients(
        m, layer, x, sel, n_steps=6),
    "neuron_integrated_gradients auto": lambda m, layer, x, sel, base: attrfx.neuron_integrated_gradients(
        m, layer, x, sel, n_steps="auto", max_steps=512, tolerance=1e-2),
    "neuron_gradient_shap": lambda m, layer, x, sel, base: attrfx.neuron_gradient_shap(
        m, layer, x, sel, base, n_samples=3, stdevs=0.1, generator=torch.Generator().manual_seed(0)),
    "neuron_deeplift": lambda m, layer, x, sel, base: attrfx.neuron_deeplift(m, layer, x, sel),
    "neuron_deeplift_shap": lambda m, layer, x, sel, base: attrfx.neuron_deeplift_shap(m, layer, x, sel, base),
    "neuron_guided_backprop": lambda m, layer, x, sel, base: attrfx.neuron_guided_backprop(m, layer, x, sel),
    "neuron_deconvolution": lambda m, layer, x, sel, base: attrfx.neuron_deconvolution(m, layer, x, sel),
    "neuron_feature_ablation": lambda m, layer, x, sel, base: attrfx.neuron_feature_ablation(m, layer, x, sel),
}

CASES = {  # model, layer, inputs, baselines, selector, the Linear feeding the layer, the rows read
    "mlp act1": (MLP, "act1", MLP_X, MLP_BASE, (2,), "fc1", [2]),
    "mlp fc2 (the Linear itself)": (MLP, "fc2", MLP_X, MLP_BASE, [(1,), (-1,)], "fc2", [1, 5]),
    "mlp act2 list": (MLP, "act2", MLP_X, MLP_BASE, [(0,), (4,), (0,)], "fc2", [0, 4]),
    "ffn act": (FFN, "act", FFN_X, FFN_BASE, (1, 7), "up", [7]),
    "ffn drop (through GELU and Dropout)": (FFN, "drop", FFN_X, FFN_BASE, [(0, 3), (2, slice(8, 10))], "up",
                                            [3, 8, 9]),
}


@pytest.fixture
def narrowed(monkeypatch):
    """The (Linear, rows) of every narrowed run."""
    seen, real = [], slicing.narrow_linear

    def spy(linear, x, rows):
        seen.append((linear, rows.tolist()))
        return real(linear, x, rows)

    monkeypatch.setattr(slicing, "narrow_linear", spy)
    return seen


def no_chain(patch):
    for module in (attrfx.problem, slicing):
        patch.setattr(module, "likely_chain", lambda model, layer: None)


def unsliced(monkeypatch, call):
    with monkeypatch.context() as patch:
        no_chain(patch)
        return call()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", CASES)
def test_narrowed_linear_gives_the_whole_linears_results(method, case, narrowed, monkeypatch):
    factory, layer, x, base, sel, feeder, rows = CASES[case]
    model = seeded(factory)
    call = lambda: METHODS[method](model, layer, x, sel, base)  # noqa: E731
    ours = call()
    assert narrowed and all(linear is model.get_submodule(feeder) and r == rows for linear, r in narrowed)
    count = len(narrowed)
    torch.testing.assert_close(ours, unsliced(monkeypatch, call), rtol=1e-10, atol=1e-12)
    assert len(narrowed) == count, "the unsliced path narrowed a Linear"


@given(picks=st.lists(st.tuples(st.integers(0, 2), st.integers(-10, 9)), min_size=1, max_size=4),
       method=st.sampled_from(["neuron_gradient", "neuron_integrated_gradients", "neuron_deeplift_shap",
                               "neuron_feature_ablation"]))
def test_any_index_selectors_read_the_same_neurons_narrowed(picks, method):
    model = seeded(FFN)
    call = lambda: METHODS[method](model, "act", FFN_X, list(picks), FFN_BASE)  # noqa: E731
    with pytest.MonkeyPatch.context() as patch:
        rows = sorted({j % 10 for _, j in picks})
        seen = []
        real = slicing.narrow_linear
        patch.setattr(slicing, "narrow_linear", lambda lin, x, r: seen.append(r.tolist()) or real(lin, x, r))
        ours = call()
        assert all(r == rows for r in seen) and (bool(seen) == (2 * len(rows) <= 10))
        no_chain(patch)
        torch.testing.assert_close(ours, call(), rtol=1e-10, atol=1e-12)


def test_the_linears_own_matmul_runs_on_no_rows(monkeypatch):
    model, shapes = seeded(MLP), []
    real = torch.nn.functional.linear

    def spy(x, weight, bias=None):
        shapes.append((x.shape[0], tuple(weight.shape)))
        return real(x, weight, bias)

    monkeypatch.setattr(torch.nn.functional, "linear", spy)
    attrfx.neuron_gradient(model, "act2", MLP_X, [(1,), (3,)])
    real_rows = [s for s in shapes if s[0] > 0]
    assert (4, (6, 7)) not in real_rows  # fc2 whole, on the batch: never
    assert real_rows == [(4, (7, 5)), (4, (2, 7))]  # fc1 whole, then fc2's two selected rows


def test_captum_parity_narrowed(narrowed):
    model = seeded(MLP)
    assert_parity(attrfx.neuron_gradient(model, "act2", MLP_X, (3,)),
                  NeuronGradient(model, model.act2).attribute(MLP_X, (3,)))
    assert_parity(attrfx.neuron_integrated_gradients(model, "act1", MLP_X, (6,), n_steps=20),
                  NeuronIntegratedGradients(model, model.act1).attribute(MLP_X, (6,), n_steps=20))
    assert [rows for _, rows in narrowed] == [[3], [6]]


def hook_on_fc1(model):
    model.fc1.register_forward_hook(lambda module, inputs, output: output + 1)
    return model


class Checked(nn.Module):
    """fc → a check that every feature is nonzero (raises otherwise) → ReLU: a narrowed fc fails the check."""

    def __init__(self):
        super().__init__()
        self.fc, self.relu, self.out = nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2)

    def forward(self, x):
        h = self.fc(x)
        if not bool((h != 0).all()):
            raise RuntimeError("a feature is exactly zero")
        return self.out(self.relu(h))


NOT_NARROWED = {  # model factory, layer, selector, attribute to the layer's input
    "a hook on the Linear": (lambda: hook_on_fc1(seeded(MLP)), "act1", (1,), False),
    "a LayerNorm between": (lambda: seeded(Normed), "relu", (1,), False),
    "a callable selector": (lambda: seeded(MLP), "act1", lambda h: h[:, 1], False),
    "the layer's input": (lambda: seeded(MLP), "act2", (1,), True),
    "training mode": (lambda: seeded(MLP).train(), "act1", (1,), False),
    "over half the rows": (lambda: seeded(MLP), "act1", [(0,), (1,), (2,), (3,)], False),
}

GUESSED_WRONG = {  # registration order suggests a Linear → ReLU chain that the first pass does not confirm
    "a functional op between": (lambda: seeded(Doubled), "relu", (1,), False),
    "the Linear reused": (lambda: seeded(Twice), "relu", (1,), False),
    "a check that fails on the narrowed Linear": (lambda: seeded(Checked), "relu", (1,), False),
}


def plain_gradient(model, layer, x, sel, at_input):
    with torch.enable_grad():
        xg = x.clone().requires_grad_()
        acts = {}
        handle = model.get_submodule(layer).register_forward_hook(
            lambda m, i, o: acts.update(h=i[0] if at_input else o))
        model(xg)
        handle.remove()
        value = sel(acts["h"]) if callable(sel) else sum(acts["h"][(slice(None),) + s] for s in
                                                          (sel if isinstance(sel, list) else [sel]))
        return torch.autograd.grad(value.sum(), xg)[0]


@pytest.mark.parametrize("case", NOT_NARROWED)
def test_no_narrowing_where_other_features_could_matter(case, narrowed):
    factory, layer, sel, at_input = NOT_NARROWED[case]
    model, x = factory(), MLP_X
    ours = attrfx.neuron_gradient(model, layer, x, sel, attribute_to_neuron_input=at_input)
    assert narrowed == []
    got = ours.sum(0) if isinstance(sel, list) else ours
    torch.testing.assert_close(got, plain_gradient(model, layer, x, sel, at_input), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", GUESSED_WRONG)
def test_a_guess_that_does_not_hold_runs_the_pass_again_with_the_whole_linear(case, narrowed):
    factory, layer, sel, at_input = GUESSED_WRONG[case]
    model, x = factory(), MLP_X
    torch.testing.assert_close(attrfx.neuron_gradient(model, layer, x, sel),
                               plain_gradient(model, layer, x, sel, at_input), rtol=1e-10, atol=1e-12)
    assert len(narrowed) == 1  # the guessing pass alone
    ig = attrfx.neuron_integrated_gradients(model, layer, x, sel, n_steps=6, internal_batch_size=8)
    with pytest.MonkeyPatch.context() as patch:
        no_chain(patch)
        expected = attrfx.neuron_integrated_gradients(model, layer, x, sel, n_steps=6, internal_batch_size=8)
    torch.testing.assert_close(ig, expected, rtol=1e-10, atol=1e-12)
    assert len(narrowed) == 2  # IG's first chunk guessed; its other two chunks ran the whole Linear


def test_an_error_before_the_layer_passes_through_after_the_guess(narrowed):
    model = seeded(Checked)
    x = torch.zeros(4, 5, dtype=MLP_X.dtype)
    with torch.no_grad():
        model.fc.bias.zero_()  # fc(0) = 0: the model's own check fails on the real batch too
    with pytest.raises(RuntimeError, match="a feature is exactly zero"):
        attrfx.neuron_gradient(model, "relu", x, (1,))
    assert len(narrowed) == 1
    assert not any(slicing.hooked(m) for m in model.modules())


def test_a_hook_anywhere_on_the_chain_keeps_the_whole_linear(narrowed):
    model = seeded(FFN)
    handle = model.act.register_forward_hook(lambda module, inputs, output: output * 3)
    try:
        attrfx.neuron_gradient(model, "drop", FFN_X, (0, 1))
    finally:
        handle.remove()
    assert narrowed == []
    attrfx.neuron_gradient(model, "drop", FFN_X, (0, 1))
    assert len(narrowed) == 1


def test_a_guess_that_holds_spares_the_inspection_pass(narrowed):
    model, passes = seeded(FFN), []
    model.register_forward_pre_hook(lambda module, inputs: passes.append(inputs[0].shape[0]))
    try:
        ours = attrfx.neuron_gradient(model, "act", FFN_X, (0, 1))
        assert passes == [4] and [rows for _, rows in narrowed] == [[1]]  # one pass, on the batch
        passes.clear()
        ig = attrfx.neuron_integrated_gradients(model, "act", FFN_X, (0, 1), n_steps=6, internal_batch_size=8)
        assert passes == [8, 8, 8] and len(narrowed) == 4  # every chunk narrowed, the first one on a guess
    finally:
        model._forward_pre_hooks.clear()
    torch.testing.assert_close(ours, unsliced(pytest.MonkeyPatch(), lambda: attrfx.neuron_gradient(
        model, "act", FFN_X, (0, 1))), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ig, unsliced(pytest.MonkeyPatch(), lambda: attrfx.neuron_integrated_gradients(
        model, "act", FFN_X, (0, 1), n_steps=6, internal_batch_size=8)), rtol=1e-10, atol=1e-12)


def test_narrowing_leaves_the_model_without_hooks():
    model = seeded(MLP)
    attrfx.neuron_integrated_gradients(model, "act1", MLP_X, (1,), n_steps=4)
    assert not any(slicing.hooked(m) for m in model.modules())


def test_under_a_transform_the_whole_linear_runs(narrowed):
    lin = seeded(lambda: nn.Linear(3, 4))
    only = slicing.LinearRows(lin, torch.tensor([1]))

    def narrowed_call(x):
        with slicing.only_rows(only):
            return lin(x)

    batched = torch.func.vmap(narrowed_call)(randn(2, 5, 3))
    torch.testing.assert_close(batched, lin(randn(2, 5, 3)))
    assert narrowed == []


CONDUCTANCE = {
    "fixed steps": lambda m, layer, x, sel: attrfx.neuron_conductance(m, layer, x, sel, target=1, n_steps=5,
                                                                      internal_batch_size=8),
    "auto steps": lambda m, layer, x, sel: attrfx.neuron_conductance(m, layer, x, sel, target=1, n_steps="auto",
                                                                     max_steps=64, tolerance=1e-2),
}


@pytest.mark.parametrize("method", CONDUCTANCE)
@pytest.mark.parametrize("case", CASES)
def test_conductance_pulls_back_through_the_selected_rows_alone(method, case, monkeypatch):
    """The whole Linear runs (the output needs every feature), but the neurons' backward passes go through their
    rows only; the results equal the whole Linear's."""
    factory, layer, x, _, sel, feeder, rows = CASES[case]
    model, seen = seeded(factory), []
    real = slicing.rows_with_gradients
    monkeypatch.setattr(slicing, "rows_with_gradients",
                        lambda linear, x_, out, r: seen.append((linear, r.tolist())) or real(linear, x_, out, r))
    call = lambda: CONDUCTANCE[method](model, layer, x, sel)  # noqa: E731
    ours = call()
    assert seen and all(linear is model.get_submodule(feeder) and r == rows for linear, r in seen)
    count = len(seen)
    torch.testing.assert_close(ours, unsliced(monkeypatch, call), rtol=1e-10, atol=1e-12)
    assert len(seen) == count, "the unsliced path narrowed a Linear's gradients"


def test_rows_with_gradients_keeps_every_value_and_only_the_rows_gradients():
    lin = seeded(lambda: nn.Linear(4, 6))
    x = randn(3, 4).requires_grad_()
    out = lin(x)
    y = slicing.rows_with_gradients(lin, x, out, torch.tensor([1, 4]))
    torch.testing.assert_close(y, out, rtol=0, atol=1e-15)
    for j in range(6):
        (g,) = torch.autograd.grad(y[:, j].sum(), x, retain_graph=True)
        torch.testing.assert_close(g, lin.weight[j].expand(3, 4) * (j in (1, 4)), rtol=0, atol=1e-15)
