"""Two kernel choices behind attrfx, measured against Captum and the autograd floor.

1. K neurons in one call: after one shared forward pass, the K backward
   passes (each from its neuron's cotangent at the layer) run one by one,
   all under one ``torch.func.vmap`` over the K cotangents, or in the blocks
   ``attrfx.gradients.neurons_per_pass`` chooses (all three timed here by
   setting ``gradients.VMAP_ELEMENTS``). Compared with K Captum calls and the
   K floor (one forward pass, K ``autograd.grad`` calls on its graph).
2. Neuron conductance: attrfx nests two ``gradients.vjp`` (one per side of
   the layer; plain autograd outside ``torch.func`` transforms); the
   alternative is two pruned ``autograd.grad`` calls over one cut forward pass
   of a model called with detached parameters. Compared with Captum's
   ``NeuronConductance`` (trapezoid result × n/(n−1)) and the floor.

    python -m benchmarks.kernels [--reps 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

import attrfx
from attrfx import gradients, probe, selectors
from attrfx.probe import forward_with_probe, zero_deltas
from attrfx.selectors import select_target

from . import methods, models
from .run import add_allocator_option, set_allocator


def interleaved(runs: dict, reps: int) -> dict:
    """Median seconds of each callable, repetitions interleaved, after one warm-up each."""
    for fn in runs.values():
        fn()
    times: dict = {name: [] for name in runs}
    for _ in range(reps):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


K_ROWS = [("mlp", "neuron_gradient"), ("cnn", "neuron_gradient"), ("tfm", "neuron_gradient"),
          ("mlp", "neuron_integrated_gradients"), ("mlp", "neuron_conductance")]
"""(model, method) pairs of the K-neuron comparison: 8 rows per pass for neuron_gradient, 400 on the paths."""


def k_neurons(case, method: str, which: str, k: int, reps: int) -> None:
    """K neurons one pass each, in one batched pass, and in attrfx's blocks; K Captum calls; the K floor."""
    sels = methods.k_selectors(case, which, k)
    calls = methods.k_calls(method, case, which, sels)

    def attrfx_with(limit):
        def run():
            gradients.VMAP_ELEMENTS = limit
            try:
                return calls.attrfx()
            finally:
                gradients.VMAP_ELEMENTS = chosen
        return run

    chosen = gradients.VMAP_ELEMENTS
    runs = {"loop": attrfx_with(0), "one pass": attrfx_with(1 << 62), "attrfx": attrfx_with(chosen)}
    torch.testing.assert_close(runs["loop"](), runs["one pass"](), rtol=1e-5, atol=1e-7)
    name = case.layers[which]
    (site,) = probe.inspect_layers(case.model, [case.model.get_submodule(name)], (case.inputs,), ())
    rows = case.inputs.shape[0] * (1 if method == "neuron_gradient" else methods.Settings().n_steps)
    per_pass = gradients.neurons_per_pass(case.model, k, (torch.empty((rows,) + site.shapes[0]),))
    t = interleaved({**runs, "Captum": calls.captum, "floor": calls.floor}, reps)
    print(f"{case.name:4s} {which:5s} {method:28s} K={k:<3d} loop {1e3 * t['loop']:8.1f} ms  "
          f"one pass {1e3 * t['one pass']:8.1f} ms  attrfx (blocks of {per_pass}) {1e3 * t['attrfx']:8.1f} ms  "
          f"Captum/attrfx {t['Captum'] / t['attrfx']:5.2f}  attrfx/floor {t['attrfx'] / t['floor']:5.2f}")


def plain_conductance(model, site, neurons, points, target):
    """The alternative kernel: one cut forward pass, two pruned ``autograd.grad`` calls."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    call = lambda *a: torch.func.functional_call(model, params, a)
    with torch.enable_grad():
        x = tuple(p.detach().requires_grad_() for p in points)
        delta = tuple(d.requires_grad_() for d in zero_deltas(site, x[0].shape[0], x[0].device))
        acts, out = forward_with_probe(call, [site], x, (), [delta], cut=True)
        (g_h,) = torch.autograd.grad(select_target(out, target).sum(), delta, retain_graph=True)
        g_x = torch.autograd.grad(torch.stack([nr(acts[0]) for nr in neurons])[0].sum(), x)
    return g_x, torch.stack([nr((g_h,)) for nr in neurons])


def conductance(case, which: str, n_steps: int, reps: int) -> None:
    model, x = case.model, case.inputs
    name, sel = case.layers[which], case.neurons[which]
    layer = model.get_submodule(name)
    (site,) = probe.inspect_layers(model, [layer], (x,), ())
    neurons, _ = selectors.neuron_selectors(sel, site)
    b = x.shape[0]
    rule = attrfx.quadrature.riemann_trapezoid(n_steps)
    points = tuple(attrfx.inputs.fold(p) for p in attrfx.paths.straight_line((x,), (torch.zeros(()),), rule.alphas))
    target = selectors.format_target(case.target, b).repeat(n_steps)

    def nested():
        with torch.no_grad():
            return gradients.conductance_grads(model, site, neurons, points, (), target)

    a, p = nested(), plain_conductance(model, site, neurons, points, target)
    assert torch.allclose(a[0][0][0], p[0][0], atol=1e-6) and torch.allclose(a[1], p[1], atol=1e-6)
    captum = methods._captum().NeuronConductance(model, layer)
    fz = methods.frozen(model)
    t = interleaved({"attrfx (nested vjp)": lambda: attrfx.neuron_conductance(model, name, x, sel, target=case.target,
                                                                              n_steps=n_steps),
                     "kernel: nested vjp": nested,
                     "kernel: plain autograd": lambda: plain_conductance(model, site, neurons, points, target),
                     "Captum": lambda: captum.attribute(x, sel, target=case.target, n_steps=n_steps),
                     "floor": methods.floor_neuron_conductance(fz, fz.get_submodule(name), sel, x, case.target,
                                                               n_steps)}, reps)
    a = t["attrfx (nested vjp)"]
    print(f"{case.name:4s} {which:5s} n={n_steps}  attrfx {1e3 * a:8.1f} ms  "
          f"plain/nested kernel {t['kernel: plain autograd'] / t['kernel: nested vjp']:5.2f}  "
          f"Captum/attrfx {t['Captum'] / a:5.2f}  attrfx/floor {a / t['floor']:5.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--k", type=int, default=64)
    add_allocator_option(parser)
    args = parser.parse_args(argv)
    allocator = set_allocator(args.allocator)
    warnings.filterwarnings("ignore", category=UserWarning, module="captum")  # the oracle's advice on requires_grad
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, medians of {args.reps} interleaved runs; "
          f"{allocator}\n")
    print(f"1. K = {args.k} neurons in one call: one backward pass per neuron (loop), all in one batched pass, "
          f"attrfx's blocks")
    for name, method in K_ROWS:
        k_neurons(models.build(name), method, "early", args.k, args.reps)
    print("\n2. neuron_conductance kernel: nested vjp vs two autograd.grad calls (riemann_trapezoid, 50 steps)")
    cnn = models.build("cnn")
    for which in ("early", "late"):
        conductance(cnn, which, 50, args.reps)


if __name__ == "__main__":
    main()
