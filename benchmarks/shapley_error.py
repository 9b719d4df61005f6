"""Attribution error against exact Shapley values, as a function of model evaluations: attrfx and Captum 0.9.0.

    .venv/bin/python -m benchmarks.shapley_error                 # the small models (~1 min on 2 CPU cores)
    .venv/bin/python -m benchmarks.shapley_error --case cifar    # the issue's case (~4 min): CIFAR-sized, 64 groups

Every model is wrapped in a counter, so an evaluation is one input row the model saw, per example. The error of an
estimate ``φ̂`` of the Shapley values ``φ`` is ``‖φ̂ − φ‖ / ‖φ‖`` per example (over its groups), as a root mean square
over examples and repetitions (generator seeds for attrfx, global seeds for Captum, which samples from the global
RNG). ``φ`` is :func:`attrfx.shapley_values` (exact) on the small models; on the CIFAR case, where ``2^64``
coalitions are out of reach, a long antithetic run of ``shapley_value_sampling`` (its own error is printed; it is
far below the errors compared).

Rows:

- ``captum`` — ``ShapleyValueSampling`` with ``n`` orderings: ``n·G + 1`` evaluations;
- ``attrfx`` — ``shapley_value_sampling`` (antithetic orderings, shared end points) with ``n/2`` orderings:
  ``(n/2)(G − 1) + 2`` evaluations, at most half of Captum's;
- ``plain`` — the same walks from independent orderings (the primitives without the antithetic pairing), with
  ``n/2`` orderings: what the pairing buys;
- ``kernel_shap`` — Captum's ``KernelShap`` and attrfx's ``kernel_shap`` (paired coalitions) at the same number of
  evaluations as Captum's sampling, for reference (their limit is the Shapley value too).

The claim checked: at every budget, attrfx with half of Captum's evaluations has at most Captum's error.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import torch
from torch import Tensor, nn

import attrfx
from attrfx.coalitions import coalition_game, permutations, walk_coalitions, walk_contributions


class Counted(nn.Module):
    """``model``, counting the rows it is called on."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x: Tensor) -> Tensor:
        self.rows += x.shape[0]
        return self.model(x)


def per_example(model: Counted, n: int, run) -> tuple[Tensor, float]:
    """``run()`` and the evaluations it made per example."""
    model.rows = 0
    with torch.no_grad():
        out = run()
    return out, model.rows / n


def plain_sampling(model, x, mask, target, n_samples, generator) -> Tensor:
    """Shapley value sampling from independent orderings, through the same primitives as attrfx's."""
    game = coalition_game(model, x, None, target, None, mask)
    orders = permutations(n_samples, game.n_groups, generator)
    ends = torch.tensor([[False], [True]]).expand(2, game.n_groups)
    v = game.values(torch.cat([ends, walk_coalitions(orders)]), 4096)
    walk = torch.cat([v[:1].expand(n_samples, 1, -1), v[2:].reshape(n_samples, game.n_groups - 1, -1),
                      v[1:2].expand(n_samples, 1, -1)], 1)
    return game.result(walk_contributions(orders, walk).mean(0).T)


def group_values(phi: Tensor, mask: Tensor) -> Tensor:
    """``[N, G]``: the value each group's elements hold (groups numbered 0 .. G−1)."""
    flat_mask = mask.expand(phi.shape).reshape(phi.shape[0], -1)
    sums = torch.zeros(phi.shape[0], int(mask.max()) + 1, dtype=torch.float64)
    counts = torch.zeros_like(sums)
    sums.scatter_add_(1, flat_mask, phi.reshape(phi.shape[0], -1).double())
    counts.scatter_add_(1, flat_mask, torch.ones_like(sums[:, :1]).expand(-1, flat_mask.shape[1]).contiguous())
    return sums / counts


def relative_errors(estimates: list[Tensor], exact: Tensor, mask: Tensor) -> float:
    """The RMS over examples and repetitions of ``‖φ̂ − φ‖ / ‖φ‖``."""
    ref = group_values(exact, mask)
    errs = [((group_values(e, mask) - ref).norm(dim=1) / ref.norm(dim=1)) ** 2 for e in estimates]
    return math.sqrt(torch.cat(errs).mean().item())


def small_models():
    """Two models whose exact Shapley values are cheap: a 10-feature MLP, a 16-patch CNN on 16×16 images."""
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        mlp = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3)).eval()
        cnn = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1),
                            nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 3)).eval()
    patches = (torch.arange(16)[:, None] // 4) * 4 + torch.arange(16)[None, :] // 4
    return [("mlp, 10 features", mlp, torch.randn(16, 10, generator=g), torch.arange(10)[None], 0, (2, 4, 8, 16, 32)),
            ("cnn 16×16, 16 patches", cnn, torch.randn(4, 1, 16, 16, generator=g), patches[None, None], 1,
             (2, 4, 8, 16))]


def cifar_case():
    """The issue's case: the benchmark ResNet on CIFAR-sized images, 64 groups of 4×4 patches (all channels)."""
    from benchmarks.models import build
    case = build("cnn")
    return ("resnet 3×32×32, 64 patches (2 images)", case.model, case.inputs[:2], case.feature_mask, case.target,
            (4, 16))


def measure(name, model, x, mask, target, budgets, reps, reference_samples=None):
    counted = Counted(model)
    n = x.shape[0]
    start = time.time()
    if reference_samples is None:
        exact, _ = per_example(counted, n, lambda: attrfx.shapley_values(counted, x, target=target, feature_mask=mask))
        note = "exact (shapley_values)"
    else:
        exact, _ = per_example(counted, n, lambda: attrfx.shapley_value_sampling(
            counted, x, target=target, feature_mask=mask, n_samples=reference_samples,
            generator=torch.Generator().manual_seed(10**6)))
        half = [attrfx.shapley_value_sampling(counted, x, target=target, feature_mask=mask,
                                              n_samples=reference_samples // 2,
                                              generator=torch.Generator().manual_seed(10**6 + 1))]
        # an independent run with half the samples: its difference from the reference has √3 times its error
        note = (f"reference: attrfx shapley_value_sampling, n_samples={reference_samples}, own error ≈ "
                f"{relative_errors(half, exact, mask) / math.sqrt(3):.4f}")
    print(f"\n### {name}\n\n{note}; {reps} repetitions; {time.time() - start:.0f} s\n")
    print("| Captum n | Captum evals | Captum error | attrfx n | attrfx evals | attrfx error | plain error | "
          "KernelShap (Captum) error | kernel_shap (attrfx) error | attrfx ≤ Captum |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    from captum.attr import KernelShap, ShapleyValueSampling
    groups = int(mask.max()) + 1
    rows = []
    for budget in budgets:
        runs = {k: [] for k in ("captum", "attrfx", "plain", "ks_captum", "ks_attrfx")}
        evals = {}
        for r in range(reps):
            torch.manual_seed(r)
            runs["captum"].append(per_example(counted, n, lambda: ShapleyValueSampling(counted).attribute(
                x, target=target, feature_mask=mask, n_samples=budget, perturbations_per_eval=groups))[0])
            evals["captum"] = counted.rows / n
            gen = torch.Generator().manual_seed(r)
            phi, evals["attrfx"] = per_example(counted, n, lambda: attrfx.shapley_value_sampling(
                counted, x, target=target, feature_mask=mask, n_samples=budget // 2, generator=gen))
            runs["attrfx"].append(phi)
            runs["plain"].append(plain_sampling(counted, x, mask, target, budget // 2,
                                                torch.Generator().manual_seed(r)))
            ks = int(evals["captum"])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                runs["ks_captum"].append(KernelShap(counted).attribute(x, target=target, feature_mask=mask,
                                                                       n_samples=ks, perturbations_per_eval=ks))
            runs["ks_attrfx"].append(attrfx.kernel_shap(counted, x, target=target, feature_mask=mask, n_samples=ks,
                                                        generator=torch.Generator().manual_seed(r)))
        err = {k: relative_errors(v, exact, mask) for k, v in runs.items()}
        rows.append((budget, evals, err))
        print(f"| {budget} | {evals['captum']:.0f} | {err['captum']:.4f} | {budget // 2} | {evals['attrfx']:.0f} | "
              f"{err['attrfx']:.4f} | {err['plain']:.4f} | {err['ks_captum']:.4f} | {err['ks_attrfx']:.4f} | "
              f"{'yes' if err['attrfx'] <= err['captum'] else 'NO'} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=["small", "cifar", "both"], default="small")
    parser.add_argument("--reps", type=int, default=None, help="repetitions per budget (default 20 small, 2 cifar)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.case in ("small", "both"):
        for name, model, x, mask, target, budgets in small_models():
            measure(name, model, x, mask, target, budgets, args.reps or 20)
    if args.case in ("cifar", "both"):
        name, model, x, mask, target, budgets = cifar_case()
        measure(name, model, x, mask, target, budgets, args.reps or 2, reference_samples=192)


if __name__ == "__main__":
    main()
