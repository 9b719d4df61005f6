"""A run on disk: zarr v3 arrays, one row per example, plus JSON records committed atomically.

::

    DIR/
      run.json          the run's settings (method, arguments, model and data identity); written first
      results.zarr/     a zarr v3 group; rows are examples in dataset order, chunks of ``chunk_rows`` rows
        attributions/0  [N, ...] one array per attributed input (or layer output)
        index           [N] the example's position in the dataset (-1: not written yet)
        labels, targets, predictions, diagnostics/convergence_delta   where the run has them
        summary/0/...   mean, mean_abs, variance, minimum, maximum, class_counts, class_means (at the end)
      layout.json       the arrays' names, row shapes and dtypes; written once the arrays exist
      commits/000012.json   chunk 12 is written and durable (one file per chunk, any process)
      complete.json     every chunk and the summary are written: the run is complete

A chunk is written (each chunk of each array is its own file, so processes
writing different chunks never touch the same file), its files are flushed to
disk (``fsync``), and only then is its commit record written: to a temporary
file, flushed, and moved into place with ``os.replace``, which either happens
entirely or not at all. A process killed at any moment leaves every chunk
either committed and whole, or uncommitted (recomputed on resume). Nothing is
pickled; the arrays read with ``zarr.open(DIR + "/results.zarr")`` into numpy.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import pathlib
from typing import Any, NamedTuple, Optional

import numpy as np

from .._errors import AttrfxTypeError, AttrfxValueError, bad_type, bad_value
from .summary import Summary

ARRAYS, RUN, LAYOUT, COMMITS, COMPLETE = "results.zarr", "run.json", "layout.json", "commits", "complete.json"
WRITE_EVERY_CHUNK = {"write_empty_chunks": True}  # a chunk equal to the fill value is a file too: every commit has its files
SUMMARY_FIELDS = ("mean", "mean_abs", "variance", "minimum", "maximum", "class_counts", "class_means")


def _zarr():
    try:
        import zarr
    except ImportError:
        raise ImportError("attrfx.attribute_dataset stores runs with zarr v3: pip install 'attrfx[runs]'") from None
    return zarr


def as_directory(out: Any) -> pathlib.Path:
    """``out`` as a path; the error naming ``out`` if it is not a path."""
    if not isinstance(out, (str, os.PathLike)):
        raise bad_type("out", "a directory path (str or os.PathLike)", out)
    return pathlib.Path(out)


def write_json(path: pathlib.Path, record: dict) -> None:
    """Write ``record`` to ``path`` atomically and durably: a temporary file, fsync, ``os.replace``, fsync of the
    directory. A reader sees the old file or the whole new one, never a part."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    fsync(path.parent)


def read_json(path: pathlib.Path) -> Optional[dict]:
    """The record at ``path``, or None if there is none."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def fsync(path: Any) -> None:
    """Flush the file or directory (its entries: new and renamed files) at ``path`` to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_all(paths: list) -> None:
    """:func:`fsync` each of ``paths``, concurrently (the disk serves many flushes in about the time of one)."""
    if len(paths) <= 1:
        for path in paths:
            fsync(path)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(paths))) as pool:
        list(pool.map(fsync, paths))


class Column(NamedTuple):
    """One array of a run: its name in the group, the shape of one row, its dtype (a numpy name)."""

    name: str
    row_shape: tuple[int, ...]
    dtype: str

    @property
    def fill(self) -> Any:
        """What an unwritten row reads as: NaN for floats, -1 for integers, False for booleans."""
        kind = np.dtype(self.dtype).kind
        return np.nan if kind in "fc" else False if kind == "b" else -1


class Layout(NamedTuple):
    """The arrays of a run and how they are cut into chunks."""

    rows: int
    chunk_rows: int
    columns: tuple[Column, ...]
    inputs_tuple: bool
    classes: Optional[str]  # the column the per-class summaries are keyed by ("labels", "targets"), or None

    @property
    def chunks(self) -> int:
        return -(-self.rows // self.chunk_rows)

    def span(self, chunk: int) -> range:
        return range(chunk * self.chunk_rows, min((chunk + 1) * self.chunk_rows, self.rows))

    @property
    def attribution_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.name.startswith("attributions/"))

    def to_record(self) -> dict:
        return {"rows": self.rows, "chunk_rows": self.chunk_rows, "inputs_tuple": self.inputs_tuple,
                "classes": self.classes, "columns": [[c.name, list(c.row_shape), c.dtype] for c in self.columns]}

    @staticmethod
    def from_record(record: dict) -> "Layout":
        columns = tuple(Column(name, tuple(shape), dtype) for name, shape, dtype in record["columns"])
        return Layout(record["rows"], record["chunk_rows"], columns, record["inputs_tuple"], record["classes"])


def claim(directory: pathlib.Path, settings: dict, resume: bool) -> Optional[dict]:
    """Make ``directory`` this run's: write its settings into a new or empty directory, or check them against
    the run it holds (``resume=True``). Returns the complete record if that run is already complete."""
    held = read_json(directory / RUN)
    if held is None:
        if directory.exists() and any(directory.iterdir()):
            example = sorted(p.name for p in directory.iterdir())[0]
            raise bad_value("out", "a new or empty directory, or one holding an attrfx run",
                            f"'{directory}', which holds other files (e.g. '{example}')")
        (directory / COMMITS).mkdir(parents=True, exist_ok=True)
        write_json(directory / RUN, settings)
        return None
    if not resume:
        raise bad_value("out", "a new or empty directory (pass resume=True to continue the run it holds, whose "
                        "settings must then match)", f"'{directory}', which holds a run of {_method(held)}")
    check_same_settings(held, settings)
    return read_json(directory / COMPLETE)


def _method(settings: dict) -> str:
    method = settings.get("method")
    return method["callable"] if isinstance(method, dict) and "callable" in method else _short(method)


def check_same_settings(held: dict, settings: dict) -> None:
    """The error listing what differs between the settings of the run on disk and of this call, if anything."""
    differences = _differences(held, settings, "")
    if differences:
        raise bad_value("resume", "a call with the settings of the run in `out` (its method, arguments, model, "
                        "data and chunking)", "differences: " + "; ".join(differences))


def _differences(held: Any, now: Any, where: str) -> list[str]:
    if isinstance(held, dict) and isinstance(now, dict):
        return [d for key in sorted(set(held) | set(now))
                for d in _differences(held.get(key), now.get(key), f"{where}.{key}" if where else key)]
    return [] if held == now else [f"{where} is {_short(held)} in the run, {_short(now)} now"]


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def create_arrays(directory: pathlib.Path, layout: Layout) -> None:
    """Create the run's (empty) arrays, then record the layout: a run killed in between creates them again."""
    zarr = _zarr()
    group = zarr.open_group(directory / ARRAYS, mode="a")
    for c in layout.columns:
        group.create_array(c.name, shape=(layout.rows,) + c.row_shape, chunks=(layout.chunk_rows,) + c.row_shape,
                           dtype=c.dtype, fill_value=c.fill, overwrite=True,
                           chunk_key_encoding={"name": "default", "separator": "."},
                           config=WRITE_EVERY_CHUNK)
    sync_tree(directory / ARRAYS)
    write_json(directory / LAYOUT, layout.to_record())


def read_layout(directory: pathlib.Path) -> Layout:
    return Layout.from_record(read_json(directory / LAYOUT))


def committed(directory: pathlib.Path) -> set[int]:
    """The chunks whose commit record exists."""
    return {int(p.stem) for p in (directory / COMMITS).glob("*.json") if p.stem.isdigit()}


def open_arrays(directory: pathlib.Path, layout: Layout, mode: str = "r") -> dict[str, Any]:
    """The run's zarr arrays by name (opened once: reading and writing chunks then touches only chunk files)."""
    zarr = _zarr()
    return {c.name: zarr.open_array(directory / ARRAYS / c.name, mode=mode, config=WRITE_EVERY_CHUNK)
            for c in layout.columns}


def write_chunk(directory: pathlib.Path, arrays: dict[str, Any], layout: Layout, chunk: int,
                values: dict[str, np.ndarray], rank: int) -> None:
    """Write chunk ``chunk`` of every array (:func:`open_arrays`), make its files durable, then commit it (the
    record names the process, ``rank``, that wrote it)."""
    rows = layout.span(chunk)
    for c in layout.columns:
        arrays[c.name][rows.start:rows.stop] = values[c.name]
    folders = [directory / ARRAYS / c.name for c in layout.columns]
    fsync_all([f / ".".join(["c", str(chunk)] + ["0"] * len(c.row_shape)) for f, c in zip(folders, layout.columns)])
    fsync_all(folders)
    write_json(directory / COMMITS / f"{chunk:06d}.json",
               {"chunk": chunk, "rows": [rows.start, rows.stop], "rank": rank})


def read_chunk(arrays: dict[str, Any], layout: Layout, chunk: int) -> dict[str, np.ndarray]:
    """Chunk ``chunk`` of every array (:func:`open_arrays`), as numpy."""
    rows = layout.span(chunk)
    return {c.name: arrays[c.name][rows.start:rows.stop] for c in layout.columns}


def sync_tree(path: pathlib.Path) -> None:
    """fsync every file under ``path``, then every directory (for the few metadata files of a group)."""
    walked = list(os.walk(path))
    fsync_all([os.path.join(root, name) for root, _, files in walked for name in files])
    fsync_all([root for root, _, _ in walked])


def write_summary(directory: pathlib.Path, summaries: list[Summary]) -> None:
    """Store each attribution's :class:`Summary` under ``summary/<i>/``, durably, then mark the run complete."""
    zarr = _zarr()
    group = zarr.open_group(directory / ARRAYS, mode="a")
    for i, s in enumerate(summaries):
        for field in SUMMARY_FIELDS:
            value = getattr(s, field)
            if value is not None:
                group.create_array(f"summary/{i}/{field}", data=np.asarray(value), overwrite=True)
    sync_tree(directory / ARRAYS / "summary")
    write_json(directory / COMPLETE, {"counts": [s.count for s in summaries]})


def read_summary(directory: pathlib.Path, i: int, count: int) -> Summary:
    zarr = _zarr()
    group = zarr.open_group(directory / ARRAYS / "summary" / str(i), mode="r")
    fields = {f: group[f][...] if f in group else None for f in SUMMARY_FIELDS}
    return Summary(count=count, **fields)


class Run(NamedTuple):
    """A complete run, read lazily: each array is a zarr array (index it, or ``np.asarray`` it, for numpy).

    ``attributions`` has one row per example in dataset order (a tuple of such
    arrays for tuple inputs); ``index`` is each row's position in the dataset;
    ``labels``, ``targets`` and ``predictions`` are None where the run has none;
    ``diagnostics`` maps a name (``"convergence_delta"``) to one value per
    example; ``summary`` is a :class:`~attrfx.runs.summary.Summary` (a tuple
    of them for tuple inputs); ``settings`` is what the run was made with.
    """

    path: pathlib.Path
    settings: dict
    attributions: Any
    index: Any
    labels: Any
    targets: Any
    predictions: Any
    diagnostics: dict
    summary: Any

    def __len__(self) -> int:
        return self.index.shape[0]


def _check_complete(directory: pathlib.Path, settings: Optional[dict], complete: Optional[dict]) -> None:
    if settings is None:
        raise bad_value("out", "a directory holding an attrfx run (with run.json)", f"'{directory}'")
    if complete is None:
        layout = read_json(directory / LAYOUT)
        chunks = Layout.from_record(layout).chunks if layout else "?"
        raise bad_value("out", "a complete run (continue an interrupted one with attribute_dataset(..., "
                        "resume=True))", f"'{directory}', an incomplete run with {len(committed(directory))} of "
                        f"{chunks} chunks committed")


def load_run(out: Any) -> Run:
    """The complete run in directory ``out`` (written by :func:`attrfx.attribute_dataset`), read lazily.

    An incomplete run (interrupted, or still running) is refused with the number
    of chunks committed so far: continue it with ``resume=True``.

    Example:
        >>> import tempfile, torch, attrfx
        >>> net = torch.nn.Linear(3, 2)
        >>> batches = [(torch.rand(4, 3), torch.tensor([0, 1, 1, 0]))] * 2
        >>> with tempfile.TemporaryDirectory() as out:
        ...     _ = attrfx.attribute_dataset(attrfx.saliency, net, batches, out=out, target="labels",
        ...                                  show_progress=False)
        ...     run = attrfx.load_run(out)
        ...     run.attributions.shape, run.index[:].tolist(), run.summary.class_counts.tolist()
        ((8, 3), [0, 1, 2, 3, 4, 5, 6, 7], [4, 4])
    """
    try:
        directory = as_directory(out)
        settings, complete = read_json(directory / RUN), read_json(directory / COMPLETE)
        _check_complete(directory, settings, complete)
    except (AttrfxValueError, AttrfxTypeError) as err:
        raise type(err)(f"load_run: {err}") from None
    layout = read_layout(directory)
    arrays = open_arrays(directory, layout)
    attributions = tuple(arrays[c.name] for c in layout.attribution_columns)
    summaries = tuple(read_summary(directory, i, n) for i, n in enumerate(complete["counts"]))
    prefix = "diagnostics/"
    return Run(directory, settings, attributions if layout.inputs_tuple else attributions[0], arrays["index"],
               arrays.get("labels"), arrays.get("targets"), arrays.get("predictions"),
               {name[len(prefix):]: a for name, a in arrays.items() if name.startswith(prefix)},
               summaries if layout.inputs_tuple else summaries[0])
