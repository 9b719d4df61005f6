"""The mechanisms behind attrfx's speed, pinned by counting work (never by timing).

- early exit: neuron methods that explain a hidden neuron alone never run the
  modules after the layer on the attributed rows;
- many neurons: a list of K selectors runs the model prefix once, not K times,
  and gives exactly the K single-selector results;
- path points folded into the batch: one forward pass per chunk of path
  points, and ``internal_batch_size`` bounds the rows of each pass without
  changing the result.

Every method learns the layer's shape (and the output's) and rejects layers
that run twice. Neuron gradient, integrated gradients and the rule-based
methods (DeepLift, DeepLiftSHAP, guided backpropagation, deconvolution) learn
it from their first real pass, whose model goes on
after the layer with an empty batch to count the layer's runs; layer gradient
× activation, Grad-CAM and layer conductance from their first pass, which runs
the whole model anyway; the other methods run one small inspection pass
first, on an empty batch (a callable selector is called on real passes only).
The counts below allow exactly that one small pass and nothing else.
Where a Linear likely feeds the layer and the passes are big, the small pass
runs first to trace it (``tests/test_slicing.py``).
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

import attrfx
from attrfx import gradients

N = 5          # examples; the inspection pass sees no rows, or min(2, N) = 2 where the model needs rows
INSPECT = 2
STEPS = 6


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act1 = nn.Linear(4, 6), nn.Tanh()
        self.fc2, self.act2 = nn.Linear(6, 5), nn.ReLU()
        self.fc3 = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc3(self.act2(self.fc2(self.act1(self.fc1(x)))))


def make():
    torch.manual_seed(0)
    net = Net().double().eval()
    x = torch.randn(N, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    return net, x


def worked(rows: list[int]) -> list[int]:
    """The passes that did real work: those on a non-empty batch."""
    return [r for r in rows if r]


@contextlib.contextmanager
def rows_seen(*modules):
    """Record, per module, the number of rows of each forward call."""
    seen = {m: [] for m in modules}
    handles = [m.register_forward_hook(lambda mod, inp, out: seen[mod].append(out.shape[0])) for m in modules]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def _shap(net, layer, x, sel, **kw):
    g = torch.Generator().manual_seed(3)
    return attrfx.neuron_gradient_shap(net, layer, x, sel, torch.zeros(3, 4, dtype=x.dtype), n_samples=STEPS,
                                       generator=g, **kw)


NEURON_ONLY = {   # methods that explain the neuron alone: the rest of the model is not needed
    "neuron_gradient": lambda net, layer, x, sel: attrfx.neuron_gradient(net, layer, x, sel),
    "neuron_integrated_gradients": lambda net, layer, x, sel: attrfx.neuron_integrated_gradients(
        net, layer, x, sel, n_steps=STEPS),
    "neuron_gradient_shap": _shap,
    "neuron_deeplift": lambda net, layer, x, sel: attrfx.neuron_deeplift(net, layer, x, sel),
    "neuron_guided_backprop": lambda net, layer, x, sel: attrfx.neuron_guided_backprop(net, layer, x, sel),
    "neuron_deconvolution": lambda net, layer, x, sel: attrfx.neuron_deconvolution(net, layer, x, sel),
    "neuron_feature_ablation": lambda net, layer, x, sel: attrfx.neuron_feature_ablation(net, layer, x, sel),
}
NEURON_ONLY = {k: v for k, v in NEURON_ONLY.items() if hasattr(attrfx, k)}


@pytest.mark.parametrize("method", sorted(NEURON_ONLY))
def test_neuron_methods_stop_at_the_layer(method):
    net, x = make()
    with rows_seen(net.fc1, net.fc2, net.act2, net.fc3) as seen:
        NEURON_ONLY[method](net, "fc2", x, 1)
    for after in (net.act2, net.fc3):   # only one empty batch reaches them, never the attributed rows
        assert seen[after] == [0], f"{method}: {seen[after]} rows after the layer"
    assert max(seen[net.fc1]) >= N     # the prefix did the real work


class NeedsRows(Net):
    def forward(self, x):
        if x.shape[0] == 0:
            raise RuntimeError("no rows")
        return super().forward(x)


def _twin(net: nn.Module) -> Net:
    ref = Net().double().eval()
    ref.load_state_dict(net.state_dict())
    return ref


def test_empty_inspection_falls_back_to_real_examples():
    torch.manual_seed(0)
    net, x = NeedsRows().double().eval(), make()[1]
    conductance = lambda model: attrfx.neuron_conductance(model, "fc2", x, 1, target=0, n_steps=STEPS)
    with rows_seen(net.fc3) as seen:
        out = conductance(net)
    assert seen[net.fc3] == [INSPECT, STEPS * N]
    torch.testing.assert_close(out, conductance(_twin(net)), rtol=0, atol=0)


class AddsEarlierRows(Net):
    """The layer's output meets a tensor made before it, so the rest cannot run on an empty batch."""

    def forward(self, x):
        return self.fc3(self.act2(self.fc2(self.act1(self.fc1(x)))) + 0 * x[:, :1])


def test_first_pass_counts_runs_on_an_empty_batch():
    net, x = make()
    with rows_seen(net.fc1, net.fc2, net.fc3) as seen:
        attrfx.neuron_gradient(net, "fc2", x, 1)
    assert seen == {net.fc1: [N], net.fc2: [N], net.fc3: [0]}    # no inspection pass


@pytest.mark.parametrize("selector", [(1, 2), 9, "a"])
def test_first_pass_errors_leave_grad_mode_and_no_hooks(selector):
    net, x = make()
    with pytest.raises((ValueError, TypeError), match="selector"):
        attrfx.neuron_gradient(net, "fc2", x, selector)
    assert torch.is_grad_enabled()
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())


def test_first_pass_falls_back_to_the_inspection_when_the_rest_needs_rows():
    torch.manual_seed(0)
    net, x = AddsEarlierRows().double().eval(), make()[1]
    with rows_seen(net.fc1, net.fc3) as seen:
        out = attrfx.neuron_gradient(net, "fc2", x, 1)
    assert seen[net.fc1] == [N, 0] and seen[net.fc3] == [0]      # the real pass, then the inspection pass
    torch.testing.assert_close(out, attrfx.neuron_gradient(_twin(net), "fc2", x, 1), rtol=0, atol=0)


def test_conductance_runs_the_whole_model_once_per_chunk():
    net, x = make()
    with rows_seen(net.fc1, net.fc3) as seen:
        attrfx.neuron_conductance(net, "fc2", x, 1, target=0, n_steps=STEPS)
    assert seen[net.fc1] == [0, STEPS * N]
    assert seen[net.fc3] == [0, STEPS * N]


K_METHODS = {
    "neuron_gradient": (lambda net, x, sel: attrfx.neuron_gradient(net, "act2", x, sel), N),
    "neuron_integrated_gradients": (
        lambda net, x, sel: attrfx.neuron_integrated_gradients(net, "act2", x, sel, n_steps=STEPS), STEPS * N),
    "neuron_conductance": (
        lambda net, x, sel: attrfx.neuron_conductance(net, "act2", x, sel, target=2, n_steps=STEPS), STEPS * N),
    "neuron_gradient_shap": (lambda net, x, sel: _shap(net, "act2", x, sel), STEPS * N),
}
SELECTORS = [0, 1, (2,), 3, 4, (slice(0, 3),)]


@pytest.mark.parametrize("method", sorted(K_METHODS))
def test_k_neurons_run_the_prefix_once(method):
    fn, rows = K_METHODS[method]
    net, x = make()
    with rows_seen(net.fc1, net.fc2) as seen:
        fn(net, x, SELECTORS)
    for prefix in (net.fc1, net.fc2):
        assert worked(seen[prefix]) == [rows] and seen[prefix].count(0) <= 1


@pytest.mark.parametrize("method", sorted(K_METHODS))
def test_k_neurons_equal_k_single_calls(method):
    fn, _ = K_METHODS[method]
    net, x = make()
    many = fn(net, x, SELECTORS)
    assert many.shape == (len(SELECTORS),) + tuple(x.shape)
    for k, sel in enumerate(SELECTORS):
        torch.testing.assert_close(many[k], fn(net, x, sel), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("per_pass", [1, 3, 64], ids=["one-by-one", "blocks-of-3", "one-batched-pass"])
@pytest.mark.parametrize("method", sorted(K_METHODS))
def test_k_backward_passes_give_the_single_results_in_any_blocks(method, per_pass, monkeypatch):
    blocks, pull_block = [], gradients._pull_block

    def counted(pull, neurons, *args, **kwargs):
        blocks.append(len(neurons))
        return pull_block(pull, neurons, *args, **kwargs)

    monkeypatch.setattr(gradients, "neurons_per_pass", lambda model, k, hs: min(k, per_pass))
    monkeypatch.setattr(gradients, "_pull_block", counted)
    net, x = make()
    fn, _ = K_METHODS[method]
    callable_selector = lambda h: h[:, 1] * h[:, 2]                   # its cotangent comes from a vjp
    many = fn(net, x, SELECTORS + [callable_selector])
    k = len(SELECTORS) + 1
    assert blocks == [min(per_pass, k - i) for i in range(0, k, per_pass)]
    blocks.clear()
    for i, sel in enumerate(SELECTORS + [callable_selector]):
        torch.testing.assert_close(many[i], fn(net, x, sel), rtol=1e-12, atol=1e-12)


def test_neurons_per_pass_batches_only_linear_prefixes_within_the_element_budget(monkeypatch):
    monkeypatch.setattr(gradients, "VMAP_ELEMENTS", 1000)
    linear = nn.Sequential(nn.Linear(4, 16), nn.ReLU())
    h = (torch.zeros(8, 16),)                                          # 128 cotangent elements per neuron
    assert gradients.neurons_per_pass(linear, 64, h) == 7
    assert gradients.neurons_per_pass(linear, 5, h) == 5
    assert gradients.neurons_per_pass(linear, 1, h) == 1
    assert gradients.neurons_per_pass(linear, 64, (torch.zeros(8, 1 << 14),)) == 1     # one neuron over budget
    assert gradients.neurons_per_pass(nn.Sequential(nn.Linear(4, 16), nn.LayerNorm(16)), 64, h) == 1
    assert gradients.neurons_per_pass(lambda x: x, 64, h) == 1                         # not a module


CHUNKED = {
    "neuron_integrated_gradients": lambda net, x, ibs: attrfx.neuron_integrated_gradients(
        net, "act1", x, 2, n_steps=STEPS, internal_batch_size=ibs),
    "neuron_conductance": lambda net, x, ibs: attrfx.neuron_conductance(
        net, "act1", x, 2, target=1, n_steps=STEPS, internal_batch_size=ibs),
    "layer_conductance": lambda net, x, ibs: attrfx.layer_conductance(
        net, "act1", x, target=1, n_steps=STEPS, internal_batch_size=ibs),
}


@pytest.mark.parametrize("method", sorted(CHUNKED))
@pytest.mark.parametrize("ibs", [N, 2 * N, 3 * N + 1])
def test_internal_batch_size_bounds_rows_and_keeps_the_result(method, ibs):
    net, x = make()
    with rows_seen(net.fc1) as seen:
        whole = CHUNKED[method](net, x, None)
    assert worked(seen[net.fc1]) == [STEPS * N + (method == "layer_conductance") * N]   # unchunked: one pass
    with rows_seen(net.fc1) as seen:
        chunked = CHUNKED[method](net, x, ibs)
    work = worked(seen[net.fc1])
    bound = max(ibs, 2 * N) if method == "layer_conductance" else ibs   # differences need 2 nodes per chunk
    assert max(work) <= bound and len(work) > 1
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-12)


def test_layer_methods_run_one_pass():
    net, x = make()
    with rows_seen(net.fc1, net.fc3) as seen:
        attrfx.layer_gradient_x_activation(net, "act1", x, target=0)
    assert seen[net.fc1] == [N] and seen[net.fc3] == [N]      # the one pass also checks the layer and target


def test_a_callable_selector_is_called_on_the_real_pass_alone():
    net, x = make()
    calls = []
    with rows_seen(net.fc1) as seen:
        attrfx.neuron_gradient(net, "act1", x, [1, lambda h: calls.append(h.shape[0]) or h[:, 2]])
    assert seen[net.fc1] == [N] and calls == [N]      # no inspection pass: the first real pass learns the layer
