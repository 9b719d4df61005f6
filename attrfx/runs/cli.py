"""The command line: ``python -m attrfx run ...`` attributes a dataset, ``python -m attrfx show DIR`` summarises it.

::

    python -m attrfx run --model MODULE:FACTORY --data MODULE:FACTORY --method NAME [--layer L] [--selector S]
                         [--target T|labels|predicted] [--batch-size N] [--chunk-size N] [--set KEY=VALUE ...]
                         --out DIR [--resume] [--no-progress]
    torchrun --nproc_per_node=2 -m attrfx run ...      the same, one share of the chunks per process
    python -m attrfx show DIR

A factory is a plain function of no arguments: the model's returns an
``nn.Module`` (put on this process's device, :func:`~attrfx.runs.world.rank_device`,
and in eval mode), the data's a dataset of examples (batched by ``--batch-size``),
a ``DataLoader`` or a list of batches. ``--set`` values, ``--selector`` and
``--target`` are read as JSON where they parse (``n_steps=20``, ``baselines=0.0``;
JSON lists become tuples), as strings otherwise (``method=riemann_trapezoid``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any, Callable, Optional

import numpy as np

import attrfx

from .. import methods
from .._errors import AttrfxTypeError, AttrfxValueError, bad_value
from . import store
from .runner import attribute_dataset
from .world import rank_device


def factory(spec: str, what: str) -> Callable[[], Any]:
    """The function named by ``MODULE:FUNCTION``.

    Example:
        >>> factory("attrfx.demo:digits_cnn", "--model").__name__
        'digits_cnn'
    """
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise bad_value(what, "MODULE:FUNCTION (e.g. mypackage.models:make_model)", repr(spec))
    fn = getattr(importlib.import_module(module_name), name, None)
    if not callable(fn):
        raise bad_value(what, f"a function of module {module_name}", repr(spec))
    return fn


def value(text: str) -> Any:
    """A command-line value: JSON where it parses (lists as tuples), the text itself otherwise.

    Example:
        >>> value("20"), value("[1, 2]"), value("riemann_trapezoid"), value("null")
        (20, (1, 2), 'riemann_trapezoid', None)
    """
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return text
    return _tuples(parsed)


def _tuples(parsed: Any) -> Any:
    return tuple(_tuples(p) for p in parsed) if isinstance(parsed, list) else parsed


def assignments(pairs: list[str]) -> dict:
    """``KEY=VALUE`` pairs as keyword arguments (:func:`value` for each value)."""
    arguments = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise bad_value("--set", "KEY=VALUE with KEY an argument name", repr(pair))
        arguments[key] = value(text)
    return arguments


def method_named(name: str) -> Callable:
    """The attrfx method called ``name``."""
    if name not in methods.__all__:
        raise bad_value("--method", f"the name of an attrfx method (one of {methods.__all__})", repr(name))
    return getattr(attrfx, name)


def run(args: argparse.Namespace) -> None:
    import torch

    model = factory(args.model, "--model")()
    if isinstance(model, torch.nn.Module):
        model = model.to(rank_device()).eval()
    data = factory(args.data, "--data")()
    arguments = assignments(args.set)
    arguments.update({k: v for k, v in (("layer", args.layer), ("selector", args.selector)) if v is not None})
    target = None if args.target is None else value(args.target)
    attribute_dataset(method_named(args.method), model, data, out=args.out, target=target, resume=args.resume,
                      batch_size=args.batch_size, chunk_size=args.chunk_size, show_progress=not args.no_progress,
                      **arguments)


def describe_run(directory: str) -> str:
    """The text ``show`` prints: the run's settings and status, and its summary where it is complete."""
    path = store.as_directory(directory)
    settings = store.read_json(path / store.RUN)
    if settings is None:
        raise bad_value("DIR", "a directory holding an attrfx run (with run.json)", repr(directory))
    lines = [f"run in {path}", f"method: {settings['method'].get('callable', settings['method'])}",
             f"arguments: {json.dumps(settings['arguments'])}  target: {json.dumps(settings['target'])}",
             f"data: {json.dumps(settings['data'])}"]
    if store.read_json(path / store.COMPLETE) is None:
        layout = store.read_json(path / store.LAYOUT)
        total = store.Layout.from_record(layout).chunks if layout else "?"
        return "\n".join(lines + [f"status: incomplete, {len(store.committed(path))} of {total} chunks committed "
                                  "(continue it with --resume)"])
    run_ = store.load_run(path)
    lines.append(f"status: complete, {len(run_)} examples")
    summaries = run_.summary if isinstance(run_.summary, tuple) else (run_.summary,)  # a tuple for tuple inputs
    for i, s in enumerate(summaries):
        lines.append(f"attributions[{i}]: shape {tuple(s.mean.shape)} per example; over examples and features: "
                     f"mean {s.mean.mean():.4g}, mean |a| {s.mean_abs.mean():.4g}, std {s.std.mean():.4g}, "
                     f"min {s.minimum.min():.4g}, max {s.maximum.max():.4g}")
        if s.class_counts is not None:
            per_class = ", ".join(f"{k}: {int(n)} ex, Σ mean {np.nansum(m):.4g}"
                                  for k, (n, m) in enumerate(zip(s.class_counts, s.class_means)) if n)
            lines.append(f"  per class (by {store.read_layout(path).classes}; examples, sum of the mean "
                         f"attribution): {per_class}")
    for name, values in run_.diagnostics.items():
        v = np.abs(values[:])
        lines.append(f"{name}: |mean| {v.mean():.3g}, |max| {v.max():.3g} (example {int(run_.index[int(v.argmax())])})")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m attrfx", description="Attribute a dataset, or show a run.")
    commands = p.add_subparsers(dest="command", required=True)
    r = commands.add_parser("run", help="attribute every example of a dataset into DIR (also under torchrun)")
    r.add_argument("--model", required=True, help="MODULE:FACTORY returning the nn.Module")
    r.add_argument("--data", required=True, help="MODULE:FACTORY returning a dataset, DataLoader or list of batches")
    r.add_argument("--method", required=True, help="an attrfx method, e.g. integrated_gradients")
    r.add_argument("--layer", help="the layer's dotted name (layer and neuron methods)")
    r.add_argument("--selector", type=value, help="the neuron (neuron methods), as JSON: 3 or [0, 1, 1]")
    r.add_argument("--target", help="an int, a JSON list, labels or predicted")
    r.add_argument("--batch-size", type=int, help="batch a dataset of examples")
    r.add_argument("--chunk-size", type=int, help="rows per chunk on disk (a multiple of the batch size)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a method argument (repeatable)")
    r.add_argument("--out", required=True, help="the run's directory")
    r.add_argument("--resume", action="store_true", help="continue the run in --out (its settings must match)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    s = commands.add_parser("show", help="print a run's settings, status and summary")
    s.add_argument("dir")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "run":
            run(args)
        else:
            print(describe_run(args.dir))
    except (AttrfxValueError, AttrfxTypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
