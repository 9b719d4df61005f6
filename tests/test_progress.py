"""``show_progress=True`` draws a tqdm bar on stderr, stays small on a non-terminal, and never changes the result."""

import subprocess
import sys

import pytest
import torch
import tqdm.std

import attrfx
from models import MLP, randn, seeded

X = randn(2, 5)
BASES = randn(3, 5, seed=2)

CALLS = {  # method → (call, its steps: forward passes; examples with n_steps="auto")
    "neuron_integrated_gradients": (lambda m, **kw: attrfx.neuron_integrated_gradients(
        m, "act2", X, 1, n_steps=6, internal_batch_size=4, **kw), 3),
    "neuron_conductance": (lambda m, **kw: attrfx.neuron_conductance(
        m, "act2", X, 1, target=0, n_steps=6, internal_batch_size=6, **kw), 2),
    "layer_conductance": (lambda m, **kw: attrfx.layer_conductance(
        m, "act2", X, target=0, n_steps=5, internal_batch_size=4, **kw), 3),
    "neuron_feature_ablation": (lambda m, **kw: attrfx.neuron_feature_ablation(
        m, "act2", X, 1, perturbations_per_eval=2, **kw), 4),
    "neuron_gradient_shap": (lambda m, **kw: attrfx.neuron_gradient_shap(
        m, "act2", X, 1, BASES, n_samples=4, generator=torch.Generator().manual_seed(0), **kw), 1),
}

AUTO = {
    "neuron_integrated_gradients": lambda m, **kw: attrfx.neuron_integrated_gradients(m, "act2", X, 1, n_steps="auto",
                                                                                      **kw),
    "neuron_conductance": lambda m, **kw: attrfx.neuron_conductance(m, "act2", X, 1, target=0, n_steps="auto", **kw),
    "layer_conductance": lambda m, **kw: attrfx.layer_conductance(m, "act2", X, target=0, n_steps="auto", **kw),
}


def last_frame(err):
    """The bar as it was left: the text after the last carriage return."""
    return err.rstrip("\n").split("\r")[-1]


def same(a, b):
    a, b = (a,) if isinstance(a, torch.Tensor) else tuple(a), (b,) if isinstance(b, torch.Tensor) else tuple(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_progress_bar_counts_forward_passes_and_leaves_the_result_alone(name, capsys):
    call, steps = CALLS[name]
    model = seeded(MLP)
    quiet = call(model)
    assert capsys.readouterr().err == ""
    shown = call(model, show_progress=True)
    err = capsys.readouterr().err
    assert err.endswith("\n") and last_frame(err).startswith(f"{name}: 100%|")
    assert f"| {steps}/{steps} [" in last_frame(err)
    same(shown, quiet)


@pytest.mark.parametrize("name", sorted(AUTO))
def test_auto_steps_show_examples_settled_and_evaluations(name, capsys):
    model = seeded(MLP)
    quiet = AUTO[name](model)
    shown = AUTO[name](model, show_progress=True)
    frame = last_frame(capsys.readouterr().err)
    assert frame.startswith(f"{name}: 100%|") and "| 2/2 [" in frame and "example" in frame
    assert int(frame.split("evaluations=")[1].rstrip("]").strip()) >= 2 * 8     # the first pass: 8 nodes each
    same(shown, quiet)


def test_a_non_terminal_gets_a_few_frames_not_one_per_step(capsys, monkeypatch):
    """tqdm redraws at most every ``mininterval``: with its clock stopped, 200 steps give the first and last frames."""
    monkeypatch.setattr(tqdm.std, "time", lambda: 1000.0)
    attrfx.neuron_integrated_gradients(seeded(MLP), "act2", X, 1, n_steps=200, internal_batch_size=2,
                                       show_progress=True)
    err = capsys.readouterr().err
    assert "| 200/200 [" in last_frame(err)
    assert err.count("\r") <= 3 and len(err) < 400


def test_neuron_gradient_shap_takes_show_progress_like_the_other_long_methods():
    long = ["neuron_integrated_gradients", "neuron_conductance", "layer_conductance", "neuron_feature_ablation",
            "neuron_gradient_shap"]
    for name in long:
        assert getattr(attrfx, name).__wrapped__.__kwdefaults__["show_progress"] is False


def test_a_call_without_a_bar_does_not_import_tqdm_auto():
    """(torch imports tqdm itself; ``tqdm.auto``, with its notebook and asyncio parts, only a drawn bar needs.)"""
    code = ("import sys, torch, attrfx; from torch import nn\n"
            "net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))\n"
            "attrfx.layer_conductance(net, '1', torch.randn(2, 3), target=0, n_steps=4)\n"
            "print('tqdm.auto' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
