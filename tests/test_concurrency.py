"""Threads sharing one model: each call sees only its own hooks and rules, and gets exactly the serial result.

Four threads start together (a barrier) and run different methods on the same
model instance, several times each, with the interpreter switching threads
as often as it can; every result must equal (bit for bit) the result of the
same call made alone, and the model must be left as it was. A rule-based
method (guided backprop, DeepLift) running next to a plain-gradient one is
the sharpest check: a rule leaking to another thread changes that thread's
gradients. A model in training mode (BatchNorm) exercises the buffer copies
of :func:`attrfx.probe.call_model`.
"""

import sys
import threading

import pytest
import torch
from torch import nn

import attrfx
from attrfx import axioms
from models import ConvNet, randn, seeded


class Normed(nn.Module):
    """fc → BatchNorm → Tanh → fc → ReLU → out, to be used in training mode."""

    def __init__(self):
        super().__init__()
        self.fc, self.bn, self.act = nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh()
        self.fc2, self.relu, self.out = nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3)

    def forward(self, x):
        return self.out(self.relu(self.fc2(self.act(self.bn(self.fc(x))))))


CONV_X, NORMED_X = randn(3, 2, 8, 8), randn(4, 5)

CONV_CALLS = {
    "neuron_gradient": lambda m: attrfx.neuron_gradient(m, "conv2", CONV_X, (1, 1, 1)),
    "neuron_integrated_gradients": lambda m: attrfx.neuron_integrated_gradients(m, "relu1", CONV_X,
                                                                                [(1, 2, 2), (2, 1, 3)],
                                                                                n_steps=6),
    "neuron_conductance": lambda m: attrfx.neuron_conductance(m, "act2", CONV_X, (0, 1, 1), target=1, n_steps=6,
                                                              internal_batch_size=6),
    "neuron_gradient_shap": lambda m: attrfx.neuron_gradient_shap(m, "act2", CONV_X, (2, 0, 1), CONV_X[:2] * 0.1,
                                                                  generator=torch.Generator().manual_seed(0)),
    "neuron_deeplift": lambda m: attrfx.neuron_deeplift(m, "fc", CONV_X, 2),
    "layer_deeplift": lambda m: attrfx.layer_deeplift(m, "conv2", CONV_X, baselines=0.1, target=1,
                                                      return_convergence_delta=True),
    "layer_deeplift_shap": lambda m: attrfx.layer_deeplift_shap(m, "pool", CONV_X, CONV_X[:2] * 0.5, target=[0, 3, 2]),
    "neuron_deeplift_shap": lambda m: attrfx.neuron_deeplift_shap(m, "act2", CONV_X, (1, 1, 1), CONV_X[:2] * 0.5),
    "neuron_guided_backprop": lambda m: attrfx.neuron_guided_backprop(m, "conv2", CONV_X, (1, 1, 1)),
    "neuron_deconvolution": lambda m: attrfx.neuron_deconvolution(m, "fc", CONV_X, 3),
    "neuron_feature_ablation": lambda m: attrfx.neuron_feature_ablation(m, "conv2", CONV_X, (0, 2, 2),
                                                                        perturbations_per_eval=32),
    "layer_feature_ablation": lambda m: attrfx.layer_feature_ablation(m, "pool", CONV_X, target=[0, 3, 2],
                                                                      layer_baselines=0.1),
    "layer_feature_permutation": lambda m: attrfx.layer_feature_permutation(
        m, "act2", CONV_X, target=1, perturbations_per_eval=4, generator=torch.Generator().manual_seed(0)),
    "layer_gradient_x_activation": lambda m: attrfx.layer_gradient_x_activation(m, ["conv1", "act2"], CONV_X, target=0),
    "layer_lrp": lambda m: attrfx.layer_lrp(m, "conv2", CONV_X, target=1, attribute_to_layer_input=True,
                                            rules={"act2": ("identity", {}), nn.Conv2d: ("gamma", {"gamma": 0.5})}),
    "layer_gradcam": lambda m: attrfx.layer_gradcam(m, "conv2", CONV_X, target=3),
    "layer_conductance": lambda m: attrfx.layer_conductance(m, "pool", CONV_X, target=2, n_steps=6,
                                                            return_convergence_delta=True),
    "layer_activation": lambda m: attrfx.layer_activation(m, ["relu1", "act2"], CONV_X),
    "layer_gradient_shap": lambda m: attrfx.layer_gradient_shap(m, "pool", CONV_X, CONV_X[:2] * 0.1, target=1,
                                                                generator=torch.Generator().manual_seed(0)),
    "layer_integrated_gradients": lambda m: attrfx.layer_integrated_gradients(m, "conv2", CONV_X, target=1, n_steps=6,
                                                                              internal_batch_size=9),
}

NORMED_CALLS = {
    "neuron_gradient": lambda m: attrfx.neuron_gradient(m, "act", NORMED_X, 1),
    "neuron_integrated_gradients": lambda m: attrfx.neuron_integrated_gradients(m, "act", NORMED_X, 2, n_steps=5),
    "neuron_guided_backprop": lambda m: attrfx.neuron_guided_backprop(m, "out", NORMED_X, 0),
    "layer_conductance": lambda m: attrfx.layer_conductance(m, "bn", NORMED_X, target=2, n_steps=5),
    "layer_gradient_x_activation": lambda m: attrfx.layer_gradient_x_activation(m, "fc2", NORMED_X, target=0),
    "neuron_feature_ablation": lambda m: attrfx.neuron_feature_ablation(m, "act", NORMED_X, 3),
}

# Four different methods per run; every method appears, rule-based next to plain-gradient ones.
CONV_GROUPS = [
    ["neuron_gradient", "neuron_guided_backprop", "neuron_deeplift", "layer_conductance"],
    ["layer_deeplift", "neuron_gradient", "layer_deeplift_shap", "layer_gradcam"],
    ["neuron_integrated_gradients", "neuron_deconvolution", "layer_gradcam", "neuron_deeplift_shap"],
    ["neuron_conductance", "neuron_gradient_shap", "neuron_feature_ablation", "layer_gradient_x_activation"],
    ["layer_activation", "layer_gradient_shap", "neuron_gradient", "layer_gradcam"],
    ["layer_integrated_gradients", "neuron_deeplift", "layer_conductance", "neuron_gradient"],
    ["layer_lrp", "neuron_gradient", "layer_gradcam", "neuron_deeplift"],
    ["layer_feature_ablation", "neuron_guided_backprop", "layer_feature_permutation", "neuron_gradient"],
]
NORMED_GROUPS = [
    ["neuron_gradient", "neuron_guided_backprop", "layer_conductance", "layer_gradient_x_activation"],
    ["neuron_integrated_gradients", "neuron_feature_ablation", "neuron_gradient", "layer_conductance"],
]


def flat(result):
    return axioms._flat(result)


def run_together(model, calls, names, repeats=4):
    """Run ``names`` in four threads at once, ``repeats`` times each; return each thread's results or error."""
    barrier = threading.Barrier(len(names))
    out = {i: [] for i in range(len(names))}

    def work(i, name):
        try:
            barrier.wait(timeout=30)
            for _ in range(repeats):
                out[i].append(calls[name](model))
        except BaseException as err:  # noqa: B902 - reported by the test
            out[i].append(err)

    threads = [threading.Thread(target=work, args=(i, name)) for i, name in enumerate(names)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        sys.setswitchinterval(interval)
    assert not any(t.is_alive() for t in threads), "a thread hung (deadlock?)"
    return out


def check(model, calls, names):
    serial = {name: calls[name](model) for name in set(names)}
    before = axioms.state_of(model)
    results = run_together(model, calls, names)
    for i, name in enumerate(names):
        assert results[i], f"{name}: no result"
        for result in results[i]:
            assert not isinstance(result, BaseException), f"{name} raised {result!r}"
            for a, b in zip(flat(result), flat(serial[name]), strict=True):
                assert torch.equal(a, b), f"{name}: a threaded result differs from the serial one"
    assert axioms.state_changes(before, axioms.state_of(model)) == []


@pytest.mark.parametrize("names", CONV_GROUPS, ids=["-".join(n[:2]) for n in CONV_GROUPS])
def test_four_threads_on_one_model_give_the_serial_results(names):
    check(seeded(ConvNet), CONV_CALLS, names)


@pytest.mark.parametrize("names", NORMED_GROUPS, ids=["-".join(n[:2]) for n in NORMED_GROUPS])
def test_four_threads_on_one_model_in_training_mode(names):
    check(seeded(Normed).train(), NORMED_CALLS, names)


def test_every_method_runs_in_a_thread_group():
    assert {n for g in CONV_GROUPS for n in g} == set(CONV_CALLS)
    public = {n for n in attrfx.__all__ if n.startswith(("neuron_", "layer_"))}
    assert set(CONV_CALLS) == public


def test_a_thread_that_raises_does_not_disturb_the_others():
    """One thread's failing call (an attrfx error inside the probe) while others attribute the same model."""
    model = seeded(ConvNet)
    calls = dict(CONV_CALLS, bad=lambda m: attrfx.neuron_gradient(m, "conv2", CONV_X, (9, 9, 9)))
    serial = {n: calls[n](model) for n in ["neuron_gradient", "neuron_guided_backprop", "layer_gradcam"]}
    results = run_together(model, calls, ["bad", "neuron_gradient", "neuron_guided_backprop", "layer_gradcam"])
    assert all(isinstance(r, attrfx.AttrfxValueError) for r in results[0])
    for i, name in enumerate(["neuron_gradient", "neuron_guided_backprop", "layer_gradcam"], start=1):
        for result in results[i]:
            assert not isinstance(result, BaseException), f"{name} raised {result!r}"
            assert all(torch.equal(a, b) for a, b in zip(flat(result), flat(serial[name])))
    assert all(len(m._forward_hooks) + len(m._forward_pre_hooks) == 0 for m in model.modules())
