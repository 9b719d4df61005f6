"""``show_progress=True`` draws a bar on stderr and never changes the result."""

import pytest
import torch

import attrfx
from models import MLP, randn, seeded

CALLS = {
    "neuron_integrated_gradients": (lambda m, x, **kw: attrfx.neuron_integrated_gradients(
        m, "act2", x, 1, n_steps=6, internal_batch_size=4, **kw), "3/3"),
    "neuron_conductance": (lambda m, x, **kw: attrfx.neuron_conductance(
        m, "act2", x, 1, target=0, n_steps=6, internal_batch_size=6, **kw), "2/2"),
    "layer_conductance": (lambda m, x, **kw: attrfx.layer_conductance(
        m, "act2", x, target=0, n_steps=5, internal_batch_size=4, **kw), "3/3"),
    "neuron_feature_ablation": (lambda m, x, **kw: attrfx.neuron_feature_ablation(
        m, "act2", x, 1, perturbations_per_eval=2, **kw), "4/4"),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_progress_bar(name, capsys):
    call, last = CALLS[name]
    model, x = seeded(MLP), randn(2, 5)
    quiet = call(model, x)
    assert capsys.readouterr().err == ""
    shown = call(model, x, show_progress=True)
    err = capsys.readouterr().err
    assert err.startswith(f"\r{name} [") and err.endswith("\n")
    assert err.rstrip("\n").split("\r")[-1].split()[2] == last
    torch.testing.assert_close(shown, quiet, rtol=0, atol=0)
