"""attrfx at an earlier commit against the working tree, interleaved with Captum and the floor in one process.

    .venv/bin/python -m benchmarks.versions 5a7a985 neuron_gradient/mlp/early layer_gradcam/cnn/early
    .venv/bin/python -m benchmarks.versions 5a7a985 --seconds 6 ALL

The earlier package is extracted with ``git archive`` and imported under another
name (attrfx imports itself relatively), so both versions, Captum and the
floor of ``benchmarks/methods.py`` run on the same model objects, in rotating
order, for ``--seconds`` per row; medians are printed as a Markdown table with
the ratios to the floor and Captum/new, and whether the two versions' results
are bit-identical. Four callables interleaved run colder than the three of
``benchmarks.run``, so compare ratios within a row, not times across scripts.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

import attrfx

from . import methods as M
from .models import NAMES, build
from .run import add_allocator_option, set_allocator

ROOT = Path(__file__).resolve().parent.parent


def import_at(commit: str, folder: Path):
    """The ``attrfx`` package of ``commit``, imported as ``attrfx_<commit>``."""
    name = f"attrfx_{commit}"
    archive = subprocess.run(["git", "archive", commit, "attrfx"], cwd=ROOT, check=True, capture_output=True).stdout
    tar_path = folder / "old.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(folder, filter="data")
    (folder / "attrfx").rename(folder / name)
    sys.path.insert(0, str(folder))
    return importlib.import_module(name)


def using(package, call: Callable) -> Callable:
    """``call`` (a ``benchmarks.methods`` callable) run with ``package`` in place of attrfx."""
    def run():
        M.attrfx = package
        try:
            return call()
        finally:
            M.attrfx = attrfx
    return run


def row(old_package, method: str, model: str, where: str, seconds: float) -> str:
    calls = M.calls(method, build(model), where)
    impls = {"floor": calls.floor, "old": using(old_package, calls.attrfx), "new": calls.attrfx,
             "captum": calls.captum}
    same = torch.equal(impls["old"](), impls["new"]())
    times: dict[str, list[float]] = {k: [] for k in impls}
    start = time.time()
    while time.time() - start < seconds or len(times["new"]) < 5:
        for name, fn in impls.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in times.items()}
    floor = med["floor"]
    return (f"| {model} {where} {method} | {floor:.2f} | {med['old']:.2f} ({med['old'] / floor:.2f}) | "
            f"{med['new']:.2f} ({med['new'] / floor:.2f}) | {med['captum']:.2f} | {med['captum'] / med['new']:.2f} | "
            f"{len(times['new'])} | {'equal' if same else 'differ'} |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("commit", help="the earlier commit (anything git accepts)")
    ap.add_argument("rows", nargs="+", help="METHOD/MODEL/WHERE, or ALL")
    ap.add_argument("--seconds", type=float, default=6.0, help="time per row (default 6)")
    ap.add_argument("--threads", type=int, default=2)
    add_allocator_option(ap)
    args = ap.parse_args(argv)
    allocator = set_allocator(args.allocator)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    rows = ([(m, model, w) for model in NAMES for m, spec in M.SPECS.items() if model in spec.models
             for w in ("early", "late")] if args.rows == ["ALL"] else [tuple(r.split("/")) for r in args.rows])
    with tempfile.TemporaryDirectory() as folder:
        old = import_at(args.commit, Path(folder))
        print(f"old = {args.commit}, new = the working tree; {args.threads} threads, {args.seconds} s per row; "
              f"{allocator}\n")
        print("| row | floor ms | old ms (/floor) | new ms (/floor) | Captum ms | Captum/new | reps | results |")
        print("|---|---|---|---|---|---|---|---|")
        for method, model, where in rows:
            print(row(old, method, model, where, args.seconds), flush=True)


if __name__ == "__main__":
    main()
