"""Attributing a dataset: any attrfx method over every batch, streamed to disk, resumable, sharded by rank.

The dataset's rows are cut into chunks of ``chunk_size`` rows (whole batches).
Chunk ``j`` belongs to process ``j mod world_size``, which computes its batches,
writes them (:mod:`attrfx.runs.store`; on a writer thread, while the next chunk
is computed) and folds them into its statistics (:mod:`attrfx.runs.summary`); a
chunk committed by an earlier, interrupted run is read back and folded instead
of computed. At the end the statistics of all processes are merged, and the run
is marked complete. Memory holds two chunks at most.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import inspect
import json
import pathlib
from typing import Any, Callable, Iterator, NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor

from .._api import check_model
from .._errors import AttrfxTypeError, AttrfxValueError, as_flag, bad_type, bad_value, check_count
from .._progress import progress
from ..adaptive import Convergence
from ..inputs import format_args, restore
from ..probe import call_model
from . import store
from .batches import Batch, Source, as_source, fingerprint, parse_batch, tensor_bytes
from .summary import ClassSums, Moments, add_class_sums, class_sums, merge, moments, no_rows, reduce_class_sums
from .summary import reduce_moments, summary
from .world import World, join, leave

TARGETS = "None, an int, a tuple of ints, 'labels', 'predicted', or a callable(outputs, labels) giving a batch's targets"
CHUNK_ROWS = 256  # the default chunk: the fewest whole batches holding at least this many rows


class Plan(NamedTuple):
    """How every batch is attributed: ``method(model, inputs=..., **arguments)`` with the batch's target, a
    generator seeded for the batch (``seed``), and the convergence delta where the method returns one
    (``delta``; ``chosen``: the caller asked for it, rather than the run asking wherever the method can)."""

    method: Callable
    model: Any
    arguments: dict
    target: Any
    seed: Optional[int]
    delta: bool
    chosen: bool
    device: torch.device

    def with_delta(self, delta: bool) -> "Plan":
        """This plan asking for the convergence delta, or not."""
        arguments = {k: v for k, v in self.arguments.items() if k != "return_convergence_delta"}
        return self._replace(arguments={**arguments, **({"return_convergence_delta": True} if delta else {})},
                             delta=delta)


def plan_of(method: Any, model: Any, target: Any, arguments: dict) -> Plan:
    """Check the method, model, target and arguments of a run, before any batch is read."""
    arguments = dict(arguments)  # the generator is taken out below; the caller's dict (the settings) keeps it
    if not callable(method):
        raise bad_type("method", "an attrfx method (a function such as attrfx.integrated_gradients)", method)
    check_model(model)
    name = getattr(method, "__name__", repr(method))
    parameters = inspect.signature(method).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if not (target is None or callable(target) or target in ("labels", "predicted") or _fixed_target(target)):
        raise bad_value("target", TARGETS, repr(target) if not isinstance(target, Tensor) else "a tensor")
    if target is not None and "target" not in parameters and not open_ended:
        raise bad_value("target", f"None for {name}, which explains a neuron or a layer, not an output "
                        "(choose what it explains with its own arguments, e.g. selector=)", repr(target))
    _check_arguments(name, parameters, {**arguments, "inputs": None})
    delta = "return_convergence_delta" in parameters and arguments.get("return_convergence_delta", True) is True
    generator = arguments.pop("generator", None)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise bad_type("generator", "a torch.Generator (each batch draws from one seeded from it and the batch's "
                       "first row, so results do not depend on sharding or resuming)", generator)
    seed = generator.initial_seed() if generator is not None else None
    plan = Plan(method, model, arguments, target, seed, delta, "return_convergence_delta" in arguments,
                _model_device(model))
    return plan.with_delta(delta)


def _fixed_target(target: Any) -> bool:
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return True
    return isinstance(target, tuple) and all(isinstance(t, (int, np.integer)) for t in target)


def _check_arguments(name: str, parameters: Any, given: dict) -> None:
    """The error naming an argument ``name`` needs and was not given, or one it does not take."""
    required = [p for p, v in parameters.items() if v.default is inspect.Parameter.empty and p != "model"
                and v.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    for p in required:
        if p not in given:
            raise bad_value(p, f"passed (as {p}=...) because {name} requires it", f"no {p}")
    if not any(v.kind is inspect.Parameter.VAR_KEYWORD for v in parameters.values()):
        for p in given:
            if p not in parameters or p == "model":
                raise bad_value(p, f"an argument of {name} (one of {sorted(set(parameters) - {'model'})})",
                                "an argument it does not take")


def _model_device(model: Any) -> torch.device:
    """Where the model's parameters are (the CPU for a function or a module without parameters)."""
    if isinstance(model, torch.nn.Module):
        for t in list(model.parameters()) + list(model.buffers()):
            return t.device
    return torch.device("cpu")


def batch_generator(seed: int, first_row: int, device: torch.device) -> torch.Generator:
    """The generator of the batch starting at ``first_row``: seeded from the run's seed and that row only.

    Example:
        >>> a, b = batch_generator(7, 32, torch.device("cpu")), batch_generator(7, 32, torch.device("cpu"))
        >>> torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))
        True
    """
    low, high = np.random.SeedSequence([seed, first_row]).generate_state(2)
    return torch.Generator(device=device).manual_seed(int(low) | (int(high) << 32))


def attribute_batch(plan: Plan, batch: Batch, first_row: int) -> dict[str, np.ndarray]:
    """The rows of one batch, by array name: attributions, index, labels, targets, predictions, diagnostics."""
    xs = tuple(x.to(plan.device) for x in batch.inputs)
    n = batch.rows
    with torch.no_grad():
        outputs = call_model(plan.model, xs, format_args(plan.arguments.get("additional_forward_args")))
    predictions = _predictions(outputs, n)
    target = _batch_target(plan.target, outputs, batch.labels, predictions)
    arguments = dict(plan.arguments)
    if target is not None:
        arguments["target"] = target
    if plan.seed is not None:
        arguments["generator"] = batch_generator(plan.seed, first_row, plan.device)
    result = plan.method(plan.model, inputs=restore(xs, batch.was_tuple), **arguments)
    attributions, delta = result if plan.delta else (result, None)
    diagnostics = delta._asdict() if isinstance(delta, Convergence) else {"delta": delta} if plan.delta else {}
    parts = attributions if isinstance(attributions, (tuple, list)) else (attributions,)
    for p in parts:
        if not isinstance(p, Tensor) or p.dim() == 0 or p.shape[0] != n:
            raise bad_value("method", f"a method giving one attribution row per example ({n} in this batch)",
                            f"a result of shape {tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__}"
                            " (a list of selectors puts the examples in dim 1: attribute one selector per run)")
    values = {f"attributions/{i}": _numpy(p) for i, p in enumerate(parts)}
    values["index"] = np.arange(first_row, first_row + n, dtype=np.int64)
    extras = {"labels": batch.labels, "predictions": predictions,
              **{f"diagnostics/convergence_{name}": v for name, v in diagnostics.items()}}
    values.update({name: _numpy(v) for name, v in extras.items() if v is not None})
    rows = _target_rows(target, n)
    if rows is not None:
        values["targets"] = rows
    return values


def _predictions(outputs: Any, n: int) -> Optional[Tensor]:
    """The predicted class (argmax of ``[N, C]`` logits), the output itself for one value per example, or None."""
    if not isinstance(outputs, Tensor) or outputs.dim() == 0 or outputs.shape[0] != n:
        return None
    if outputs.dim() == 2 and outputs.shape[1] > 1:
        return outputs.argmax(1)
    return outputs.reshape(n) if outputs[0].numel() == 1 else None


def _batch_target(spec: Any, outputs: Any, labels: Optional[Tensor], predictions: Optional[Tensor]) -> Any:
    if spec == "labels":
        if labels is None:
            raise bad_value("target", "'labels' only for data with labels ((inputs, labels) batches)",
                            "a batch without labels")
        return labels.to(outputs.device if isinstance(outputs, Tensor) else labels.device)
    if spec == "predicted":
        if predictions is None or predictions.is_floating_point():
            raise bad_value("target", "'predicted' only for a model giving class scores [N, C]",
                            f"outputs of shape {tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__}")
        return predictions
    if callable(spec):
        return spec(outputs, labels)
    return spec


def _target_rows(target: Any, n: int) -> Optional[np.ndarray]:
    """The batch's target as integers per example ``[n]`` (or ``[n, k]`` for tuple targets); None if it has none."""
    if target is None:
        return None
    try:
        rows = np.asarray(target.cpu() if isinstance(target, Tensor) else target)
    except (TypeError, ValueError):
        return None
    if rows.ndim == 0 or isinstance(target, tuple):  # one target for every example
        rows = np.broadcast_to(rows, (n,) + rows.shape)
    if rows.dtype.kind not in "iu" or rows.shape[0] != n:
        return None
    rows = rows.reshape(n, -1)
    return rows[:, 0] if rows.shape[1] == 1 else rows


def _numpy(values: Tensor) -> np.ndarray:
    """``values`` on the CPU as numpy (half precision as float32, which numpy and zarr store)."""
    t = values.detach()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    return t.cpu().numpy()


def model_identity(model: Any) -> dict:
    """The model's type, and a SHA-256 of its parameters and buffers (a function: its qualified name)."""
    if not isinstance(model, torch.nn.Module):
        return {"callable": f"{getattr(model, '__module__', '?')}.{getattr(model, '__qualname__', type(model).__name__)}"}
    digest = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        digest.update(f"{name} {tuple(t.shape)} {t.dtype}".encode())
        digest.update(tensor_bytes(t))
    return {"type": type(model).__qualname__, "sha256": digest.hexdigest()}


def describe(value: Any) -> Any:
    """A JSON value standing for an argument: itself for JSON values, a digest for tensors and modules.

    Example:
        >>> describe({"n_steps": 20, "method": "gausslegendre", "selector": (1, slice(0, 2))})
        {'n_steps': 20, 'method': 'gausslegendre', 'selector': [1, {'slice': [0, 2, None]}]}
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, list)):
        return [describe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in value.items()}
    if isinstance(value, slice):
        return {"slice": [value.start, value.stop, value.step]}
    if isinstance(value, Tensor):
        return {"tensor": list(value.shape), "dtype": str(value.dtype),
                "sha256": hashlib.sha256(tensor_bytes(value)).hexdigest()}
    if isinstance(value, torch.nn.Module):
        return {"module": model_identity(value)}
    if isinstance(value, torch.Generator):
        return {"generator_seed": value.initial_seed()}
    if isinstance(value, functools.partial):
        return {"partial": describe(value.func), "args": describe(value.args), "keywords": describe(value.keywords)}
    if callable(value):
        return {"callable": f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__name__)}"}
    return {"object": type(value).__qualname__}


def settings_of(method: Callable, model: Any, arguments: dict, target: Any, source: Source, first: Batch,
                chunk_rows: int) -> dict:
    """What a run is made of, as JSON: a resumed run must match it exactly."""
    record = {"format": "attrfx-run/1", "method": describe(method),
              "arguments": describe(arguments), "target": describe(target), "model": model_identity(model),
              "data": {**source.identity, "first_batch_sha256": fingerprint(first)}, "chunk_rows": chunk_rows}
    return json.loads(json.dumps(record))


def layout_of(values: dict[str, np.ndarray], rows: int, chunk_rows: int, inputs_tuple: bool) -> store.Layout:
    """The arrays of a run, from the rows of one example."""
    columns = tuple(store.Column(name, tuple(v.shape[1:]), v.dtype.name) for name, v in values.items())
    keyed = [name for name in ("labels", "targets") if name in values]
    classes = keyed[0] if keyed and values[keyed[0]].ndim == 1 and values[keyed[0]].dtype.kind in "iu" else None
    return store.Layout(rows, chunk_rows, columns, inputs_tuple, classes)


def chunk_rows_of(chunk_size: Optional[int], batch_rows: int) -> int:
    """Rows per chunk: ``chunk_size`` (a multiple of the batch size), or the fewest whole batches ≥ 256 rows.

    Example:
        >>> chunk_rows_of(None, 32), chunk_rows_of(None, 100), chunk_rows_of(64, 32)
        (256, 300, 64)
    """
    if chunk_size is None:
        return batch_rows * -(-CHUNK_ROWS // batch_rows)
    rows = check_count("chunk_size", chunk_size)
    if rows % batch_rows:
        raise bad_value("chunk_size", f"a multiple of the batch size ({batch_rows}): chunks are whole batches", rows)
    return rows


def attribute_dataset(method: Callable, model: Any, data: Any, /, *, out: Any, target: Any = None, resume: bool = False,
                      batch_size: Optional[int] = None, chunk_size: Optional[int] = None, show_progress: bool = True,
                      **arguments: Any) -> store.Run:
    """Attribute every example of ``data`` with ``method``, writing each chunk of rows to ``out`` as it is made.

    Each batch is attributed by ``method(model, inputs=batch_inputs, target=batch_target, **arguments)``
    (``layer=``, ``selector=``, ``baselines=``, ``n_steps=``, ``method=`` (the quadrature), ... are the method's
    own arguments: ``method``, ``model`` and ``data`` are positional-only so these pass through). Under
    ``torchrun`` each process attributes a disjoint share of the chunks; the summaries are merged across
    processes. Statistics per feature (mean, mean |attribution|, variance, min, max; per class: mean and
    count, classes from the labels, else the targets) are gathered in the same pass.

    Args:
        method: an attrfx method (``attrfx.integrated_gradients``, ``attrfx.layer_conductance``, ...).
        model: the model, on the device the batches should go to (see :func:`attrfx.runs.rank_device`).
        data: a ``DataLoader`` (in dataset order), a list of batches, or a dataset of examples with
            ``batch_size``. A batch is ``inputs`` or ``(inputs, labels)``; tuple inputs are ``((x1, x2), labels)``.
        out: the run's directory: new or empty, or (``resume=True``) holding this same run.
        target: per batch: None or an int or tuple (fixed), ``"labels"``, ``"predicted"`` (the model's argmax),
            or a callable ``(outputs, labels) -> targets``.
        resume: continue the run in ``out`` from its last committed chunk (refused if its settings differ).
        batch_size: batch a dataset of examples (not for a DataLoader or a list of batches).
        chunk_size: rows per chunk on disk and per commit (whole batches); default: the fewest batches ≥ 256 rows.
        show_progress: a tqdm bar of examples with rate and ETA (on the first process only).
        **arguments: the method's arguments. A ``generator=`` is not advanced across batches: each batch draws
            from a generator seeded from its ``initial_seed()`` and the batch's first row.

    Returns:
        the complete run, as :func:`attrfx.load_run` reads it.

    Example:
        >>> import tempfile, attrfx
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 2))
        >>> batches = [torch.rand(4, 3) for _ in range(3)]
        >>> with tempfile.TemporaryDirectory() as out:
        ...     run = attrfx.attribute_dataset(attrfx.integrated_gradients, net, batches, out=out, target=1,
        ...                                    n_steps=8, show_progress=False)
        ...     run.attributions.shape, run.diagnostics["convergence_delta"].shape
        ((12, 3), (12,))
    """
    world = join()
    try:
        return _attribute_dataset(method, model, data, out, target, resume, batch_size, chunk_size, show_progress,
                                  arguments, world)
    except (AttrfxValueError, AttrfxTypeError) as err:
        raise type(err)(f"attribute_dataset: {err}") from None
    finally:
        leave(world)


def _attribute_dataset(method, model, data, out, target, resume, batch_size, chunk_size, show_progress, arguments,
                       world: World) -> store.Run:
    directory = store.as_directory(out)

    def setup() -> tuple[Plan, Source, Batch, dict, tuple[bool, bool]]:
        flags = as_flag("resume", resume), as_flag("show_progress", show_progress)
        plan = plan_of(method, model, target, arguments)
        source = as_source(data, batch_size)
        first = parse_batch(next(iter(source.fetch([0])))[1], 0)
        settings = settings_of(method, model, arguments, target, source, first,
                               chunk_rows_of(chunk_size, source.batch_rows))
        return plan, source, first, settings, flags

    plan, source, first, settings, (resume_, progress_) = world.together(setup)
    # the first process claims the directory and lays out the arrays; then the others check they run the same
    complete = world.together(lambda: _prepare(directory, settings, resume_, plan, first, source.rows,
                                               settings["chunk_rows"]) if world.rank == 0 else None)
    complete = world.together(lambda: complete if world.rank == 0 else _join(directory, settings))
    if complete is not None:
        return store.load_run(directory)

    layout = store.read_layout(directory)
    plan = plan.with_delta(any(c.name.startswith("diagnostics/") for c in layout.columns))
    stats, classes = world.together(lambda: _walk(plan, source, directory, layout, world, progress_))
    summaries = _merged_summaries(stats, classes, layout, world)
    world.together(lambda: store.write_summary(directory, summaries) if world.rank == 0 else None)
    return store.load_run(directory)


def _join(directory: pathlib.Path, settings: dict) -> Optional[dict]:
    """A process other than the first: check that it runs what the first one claimed ``directory`` for."""
    store.check_same_settings(store.read_json(directory / store.RUN), settings)
    return store.read_json(directory / store.COMPLETE)


def _prepare(directory: pathlib.Path, settings: dict, resume: bool, plan: Plan, first: Batch, rows: int,
             chunk_rows: int) -> Optional[dict]:
    """Claim ``directory`` and lay out the arrays (from the attribution of the first example) if not done yet."""
    complete = store.claim(directory, settings, resume)
    if complete is None and store.read_json(directory / store.LAYOUT) is None:
        one = Batch(tuple(x[:1] for x in first.inputs), first.was_tuple,
                    None if first.labels is None else first.labels[:1])
        store.create_arrays(directory, layout_of(_first_row(plan, one), rows, chunk_rows, first.was_tuple))
    return complete


def _first_row(plan: Plan, one: Batch) -> dict[str, np.ndarray]:
    """The rows of the first example, which set the run's arrays. Where the run (not the caller) asked for the
    convergence delta and the method gives none with these arguments (the neuron path methods report it only with
    ``n_steps="auto"``), the run goes without it."""
    try:
        return attribute_batch(plan, one, 0)
    except AttrfxValueError as err:
        if plan.chosen or not plan.delta or "`return_convergence_delta` must be False" not in str(err):
            raise
    return attribute_batch(plan.with_delta(False), one, 0)


def _walk(plan: Plan, source: Source, directory: pathlib.Path, layout: store.Layout, world: World,
          show_progress: bool) -> tuple[list[Optional[Moments]], list[Optional[ClassSums]]]:
    """Go through this process's chunks in order: compute, write and commit the uncommitted ones, read back the
    committed ones; fold each into the statistics."""
    done = store.committed(directory)
    mine = range(world.rank, layout.chunks, world.size)
    per_chunk = layout.chunk_rows // source.batch_rows
    pending = [b for j in mine if j not in done for b in range(j * per_chunk, min((j + 1) * per_chunk, source.batches))]
    batches = iter(source.fetch(pending))
    readable, writable = store.open_arrays(directory, layout), store.open_arrays(directory, layout, mode="r+")
    columns = layout.attribution_columns
    stats: list[Optional[Moments]] = [None] * len(columns)
    classes: list[Optional[ClassSums]] = [None] * len(columns)
    label = f"attribute_dataset {getattr(plan.method, '__name__', '')}".rstrip()
    total = sum(len(source.span(b)) for b in pending)
    writing: Optional[concurrent.futures.Future] = None
    with progress(label, total, enabled=show_progress and world.rank == 0, unit="example") as bar, \
            concurrent.futures.ThreadPoolExecutor(max_workers=1) as writer:
        for j in mine:
            if j in done:
                values = store.read_chunk(readable, layout, j)
            else:
                values = _compute_chunk(plan, source, layout, j, per_chunk, batches, bar)
                if writing is not None:
                    writing.result()  # one chunk written while the next is computed: memory holds two at most
                writing = writer.submit(store.write_chunk, directory, writable, layout, j, values, world.rank)
            stats = [merge(s, moments(values[c.name])) for s, c in zip(stats, columns)]
            if layout.classes is not None:
                classes = [add_class_sums(k, class_sums(values[c.name], values[layout.classes]))
                           for k, c in zip(classes, columns)]
        if writing is not None:
            writing.result()
    return stats, classes


def _compute_chunk(plan: Plan, source: Source, layout: store.Layout, chunk: int, per_chunk: int,
                   batches: Iterator[tuple[int, Any]], bar: Any) -> dict[str, np.ndarray]:
    """Attribute the batches of chunk ``chunk`` (the next ones ``batches`` yields) and join their rows."""
    parts = []
    for _ in range(min((chunk + 1) * per_chunk, source.batches) - chunk * per_chunk):
        number, item = next(batches)
        batch = parse_batch(item, number)
        span = source.span(number)
        if batch.rows != len(span):
            raise bad_value(f"data (batch {number})", f"{len(span)} examples (rows {span.start}-{span.stop - 1})",
                            f"{batch.rows} examples")
        parts.append(attribute_batch(plan, batch, span.start))
        bar.advance(batch.rows)
    values = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    expected = {c.name: c for c in layout.columns}
    if set(values) != set(expected) or any(values[n].shape[1:] != expected[n].row_shape for n in values):
        raise bad_value("target", "the same kind of targets for every batch (the first example's set the run's "
                        "arrays)", f"arrays {sorted(values)} in chunk {chunk}, not {sorted(expected)}")
    return values


def _merged_summaries(stats: list[Optional[Moments]], classes: list[Optional[ClassSums]], layout: store.Layout,
                      world: World) -> list:
    """Every process's statistics merged (in rank order), as one summary per attribution array."""
    columns = layout.attribution_columns
    stats = [s if s is not None else no_rows(c.row_shape) for s, c in zip(stats, columns)]
    if layout.classes is None:
        classes = [None] * len(columns)
    else:
        classes = [k if k is not None else ClassSums(np.zeros(0, np.int64), np.zeros((0,) + c.row_shape))
                   for k, c in zip(classes, columns)]
    if world.size > 1:
        stats = [reduce_moments(s, None, world.device) for s in stats]
        classes = [k if k is None else reduce_class_sums(k, None, world.device) for k in classes]
    return [summary(s, k) for s, k in zip(stats, classes)]
