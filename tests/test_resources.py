"""Resources: nothing of a call outlives it, and a thousand calls keep memory flat.

- weakrefs to everything a call touches — the model, its inputs, baselines, targets, extra arguments, the
  result and every intermediate activation of every module (path points included) — are dead as soon as the
  caller drops its own references: nothing is cached, stored on the model or in a global, and no reference
  cycle holds a tensor (checked with the garbage collector switched off, then again after a collection);
- 1,000 consecutive calls of every method on a tiny model leave the number of live tensors unchanged and
  the resident memory within noise.
"""

import gc
import itertools
import weakref

import psutil
import pytest
import torch
from torch import nn

import attrfx


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.act, self.out = nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)

    def forward(self, x, scale):
        return self.out(self.act(self.fc(x))) * scale


def tiny():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Tiny().eval()


CALLS = {
    "neuron_gradient": lambda m, x, b, t, s: attrfx.neuron_gradient(m, "act", x, [1, 2], additional_forward_args=s),
    "neuron_integrated_gradients": lambda m, x, b, t, s: attrfx.neuron_integrated_gradients(
        m, "act", x, 1, baselines=b, n_steps=4, internal_batch_size=4, additional_forward_args=s),
    "neuron_conductance": lambda m, x, b, t, s: attrfx.neuron_conductance(
        m, "act", x, (slice(0, 3),), baselines=b, target=t, n_steps=4, additional_forward_args=s),
    "neuron_gradient_shap": lambda m, x, b, t, s: attrfx.neuron_gradient_shap(
        m, "act", x, 1, b, n_samples=3, stdevs=0.1, additional_forward_args=s, generator=torch.Generator()),
    "layer_deeplift": lambda m, x, b, t, s: attrfx.layer_deeplift(m, "act", x, baselines=b, target=t,
                                                                  return_convergence_delta=True,
                                                                  additional_forward_args=s),
    "layer_deeplift_shap": lambda m, x, b, t, s: attrfx.layer_deeplift_shap(m, "fc", x, b.expand(2, 3), target=t,
                                                                            additional_forward_args=s),
    "neuron_deeplift": lambda m, x, b, t, s: attrfx.neuron_deeplift(m, "act", x, 1, baselines=b,
                                                                    additional_forward_args=s),
    "neuron_deeplift_shap": lambda m, x, b, t, s: attrfx.neuron_deeplift_shap(m, "act", x, 1, b.expand(2, 3),
                                                                              additional_forward_args=s),
    "neuron_guided_backprop": lambda m, x, b, t, s: attrfx.neuron_guided_backprop(m, "out", x, 1,
                                                                                  additional_forward_args=s),
    "neuron_deconvolution": lambda m, x, b, t, s: attrfx.neuron_deconvolution(m, "out", x, 0,
                                                                              additional_forward_args=s),
    "neuron_feature_ablation": lambda m, x, b, t, s: attrfx.neuron_feature_ablation(
        m, "act", x, 1, baselines=b, perturbations_per_eval=2, additional_forward_args=s),
    "layer_feature_ablation": lambda m, x, b, t, s: attrfx.layer_feature_ablation(
        m, "act", x, layer_baselines=0.5, target=t, perturbations_per_eval=3, additional_forward_args=s),
    "layer_feature_permutation": lambda m, x, b, t, s: attrfx.layer_feature_permutation(
        m, "fc", x, target=t, additional_forward_args=s, generator=torch.Generator()),
    "layer_gradient_x_activation": lambda m, x, b, t, s: attrfx.layer_gradient_x_activation(
        m, ["fc", "act"], x, target=t, additional_forward_args=s),
    "layer_lrp": lambda m, x, b, t, s: attrfx.layer_lrp(m, "act", x, target=t, additional_forward_args=s,
                                                        return_convergence_delta=True),
    "layer_gradcam": lambda m, x, b, t, s: attrfx.layer_gradcam(m, "act", x, target=t, additional_forward_args=s),
    "layer_conductance": lambda m, x, b, t, s: attrfx.layer_conductance(
        m, "act", x, baselines=b, target=t, n_steps=4, return_convergence_delta=True, additional_forward_args=s),
    "layer_activation": lambda m, x, b, t, s: attrfx.layer_activation(m, ["fc", "act"], x, additional_forward_args=s),
    "layer_gradient_shap": lambda m, x, b, t, s: attrfx.layer_gradient_shap(
        m, "act", x, b.expand(2, 3), n_samples=3, stdevs=0.1, target=t, additional_forward_args=s,
        generator=torch.Generator()),
    "layer_integrated_gradients": lambda m, x, b, t, s: attrfx.layer_integrated_gradients(
        m, "act", x, baselines=b, target=t, n_steps=4, internal_batch_size=4, return_convergence_delta=True,
        additional_forward_args=s),
}


def test_every_method_is_covered():
    assert set(CALLS) == {n for n in attrfx.__all__ if n.startswith(("neuron_", "layer_"))}


def flat(result):
    return [result] if isinstance(result, torch.Tensor) else [t for part in result for t in flat(part)]


def run_and_watch(name):
    """Make a call; return weakrefs to everything it touched (the caller's references are gone on return)."""
    model = tiny()
    x = torch.randn(3, 3).requires_grad_()
    b, t, s = torch.randn(1, 3), torch.tensor([0, 1, 1]), torch.rand(3, 1) + 0.5
    seen = []

    def note(module, args, output):  # the test's own hooks keep weakrefs only
        seen.extend(weakref.ref(v) for v in (*args, *(output if isinstance(output, tuple) else (output,)))
                    if isinstance(v, torch.Tensor))

    for module in model.modules():
        module.register_forward_hook(note)
    result = CALLS[name](model, x, b, t, s)
    refs = [weakref.ref(o) for o in (model, x, b, t, s)] + [weakref.ref(r) for r in flat(result)]
    return refs + seen, len(seen)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_nothing_of_a_call_stays_referenced_after_it_returns(name):
    run_and_watch(name)  # first calls may import lazily (torch keeps such frames in a cycle once)
    gc.collect()
    gc.disable()  # dead on release alone: no reference cycle keeps a tensor alive
    try:
        refs, intermediates = run_and_watch(name)
        alive = [r() for r in refs if r() is not None]
    finally:
        gc.enable()
    assert intermediates > 0
    described = [type(a).__name__ + (str(tuple(a.shape)) if isinstance(a, torch.Tensor) else "") for a in alive]
    del alive
    gc.collect()
    assert all(r() is None for r in refs), "still referenced after a garbage collection"
    assert described == [], f"kept alive by reference cycles until a collection: {described}"


def live_tensors():
    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))


def test_a_thousand_calls_keep_memory_flat():
    model, x = tiny(), torch.randn(2, 3)
    b, t, s = torch.randn(1, 3), torch.tensor([0, 1]), torch.rand(2, 1) + 0.5
    methods = itertools.cycle(sorted(CALLS))

    def calls(count):
        for _ in range(count):
            CALLS[next(methods)](model, x, b, t, s)

    calls(120)  # warm up allocator pools and lazily built caches
    process = psutil.Process()
    tensors, rss = live_tensors(), process.memory_info().rss
    calls(1000)
    grown = process.memory_info().rss - rss
    assert live_tensors() == tensors, "tensors accumulate across calls"
    assert grown < 16 * 2**20, f"resident memory grew by {grown / 2**20:.1f} MiB over 1,000 calls"
