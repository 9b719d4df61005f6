"""Path points as a vmap axis, or folded into the batch: which is faster, and at what memory?

Runs neuron integrated gradients both ways from the same primitives and prints
median times (interleaved repetitions, one process) and their ratio, and
checks the results agree. attrfx folds by default; this script is the
measurement behind that choice.

    python -m benchmarks.layouts [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from attrfx import gradients, paths, probe, quadrature, selectors


def mlp() -> tuple[nn.Module, nn.Module, torch.Tensor]:
    net = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)).eval()
    return net, net[3], torch.randn(8, 784)


def cnn() -> tuple[nn.Module, nn.Module, torch.Tensor]:
    block = lambda c_in, c_out: [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
    net = nn.Sequential(*block(3, 32), *block(32, 32), nn.MaxPool2d(2), *block(32, 64), *block(64, 64),
                        nn.MaxPool2d(2), *block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))
    return net.eval(), net[11], torch.randn(8, 3, 32, 32)


def neuron_ig(net, layer, x, n_steps: int, layout: str, chunk: int | None) -> torch.Tensor:
    (site,) = probe.inspect_layers(net, [layer], (x,), ())
    neurons, _ = selectors.neuron_selectors(tuple(0 for _ in site.shapes[0]), site)
    rule = quadrature.gausslegendre(n_steps)
    zero = (torch.zeros(()),)
    grads_at = lambda points: gradients.neuron_input_grads(net, layer, neurons, points, ())
    with torch.no_grad():
        if layout == "fold":
            (total,) = paths.integrate_path(lambda pts, s: grads_at(pts), (x,), zero, rule, chunk or n_steps)
        else:
            def integrand(nodes):
                (points,) = paths.straight_line((x,), zero, nodes.alphas)
                (g,) = torch.func.vmap(lambda p: grads_at((p,)), chunk_size=chunk)(points)
                return (g,)  # [s, K, B, ...]
            (total,) = paths.integrate(integrand, rule, n_steps)
    return total[0] * x


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, n_steps={args.steps}, batch 8\n")
    print(f"{'model':6s} {'vmap chunk':>10s} {'fold [ms]':>10s} {'vmap [ms]':>10s} {'vmap/fold':>10s} {'max |diff|':>11s}")
    for name, build in [("MLP", mlp), ("CNN", cnn)]:
        net, layer, x = build()
        for chunk in (None, 10):
            fold = lambda: neuron_ig(net, layer, x, args.steps, "fold", None)
            vmapped = lambda: neuron_ig(net, layer, x, args.steps, "vmap", chunk)
            diff = float((fold() - vmapped()).abs().max())
            times = {"fold": [], "vmap": []}
            for _ in range(args.repeats):  # interleaved
                times["fold"].append(_timed(fold))
                times["vmap"].append(_timed(vmapped))
            f, v = (1e3 * statistics.median(times[k]) for k in ("fold", "vmap"))
            print(f"{name:6s} {str(chunk or 'all'):>10s} {f:10.1f} {v:10.1f} {v / f:10.2f} {diff:11.2e}")


if __name__ == "__main__":
    main()
