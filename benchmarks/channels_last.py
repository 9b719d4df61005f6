"""The benchmark CNN's batch in ``torch.channels_last``: what the memory layout alone is worth, to everyone.

Times attrfx, Captum and the floor on the same rows of the main table twice —
the batch as built (contiguous, NCHW) and the same values in ``channels_last``
(NHWC) — interleaved in one process, and prints each one's NHWC/NCHW ratio and
Captum/attrfx within each layout. attrfx takes the inputs as they are (path
points keep their layout); Captum does too, so the layout is the user's choice,
not an edge of either library. Results are checked against the NCHW run.

    python -m benchmarks.channels_last [--rows METHOD/WHERE,...] [--reps 3] [--allocator reuse|system]
"""

from __future__ import annotations

import argparse

import torch

from . import methods as M
from .models import build
from .run import THREADS, add_allocator_option, set_allocator, timed

ROWS = ("neuron_integrated_gradients/late", "neuron_conductance/early", "layer_conductance/late",
        "neuron_gradient/late", "neuron_feature_ablation/late")
"""The CNN rows where Captum and attrfx tie in the main table (Captum/floor ≤ 1.05)."""


def layouts(method: str, where: str, reps: int) -> dict[str, float]:
    """Median seconds per call of attrfx / Captum / floor in each layout, and the largest difference from NCHW."""
    case = build("cnn")
    nhwc = case._replace(inputs=case.inputs.contiguous(memory_format=torch.channels_last))
    fns = {}
    for layout, c in (("nchw", case), ("nhwc", nhwc)):
        for who, fn in M.calls(method, c, where)._asdict().items():
            fns[f"{who} {layout}"] = fn
    diff = max(float((fns[f"{who} nhwc"]() - fns[f"{who} nchw"]()).abs().max()) for who in ("attrfx", "floor"))
    medians = timed(fns, reps, "cpu")
    return {**{name: medians[name] for name in fns}, "diff": diff}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated METHOD/WHERE rows of the CNN")
    ap.add_argument("--reps", type=int, default=3, help="interleaved rounds (median)")
    add_allocator_option(ap)
    args = ap.parse_args(argv)
    allocator = set_allocator(args.allocator)
    torch.set_num_threads(THREADS)
    print(f"CNN, batch 8, {THREADS} threads, {args.reps} interleaved rounds (median); times in s; {allocator}")
    print("| method | layer | attrfx NCHW | attrfx NHWC | Captum NCHW | Captum NHWC | floor NCHW | floor NHWC "
          "| NHWC/NCHW attrfx | Captum | floor | Captum/attrfx NCHW | NHWC | max diff |")
    print("|---|---|" + "---|" * 12)
    for row in args.rows.split(","):
        method, where = row.split("/")
        t = layouts(method, where, args.reps)
        ratio = lambda who: t[f"{who} nhwc"] / t[f"{who} nchw"]
        cells = [f"{t[f'{who} {lay}']:.3f}" for who in ("attrfx", "captum", "floor") for lay in ("nchw", "nhwc")]
        cells += [f"{ratio(who):.2f}" for who in ("attrfx", "captum", "floor")]
        cells += [f"{t['captum nchw'] / t['attrfx nchw']:.2f}", f"{t['captum nhwc'] / t['attrfx nhwc']:.2f}",
                  f"{t['diff']:.1e}"]
        print(f"| {method} | {where} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
