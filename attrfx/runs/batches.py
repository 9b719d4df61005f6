"""The dataset a run walks through: batches with known positions, fetched by batch number.

A run needs to know, before it starts, how many examples there are and which
rows each batch covers, so that any process can compute any batch (resume,
sharding) and write it where it belongs. Three forms of ``data`` give that:

- a ``DataLoader`` over a map-style dataset in its own order (no shuffling):
  batch ``b`` is rows ``[b·B, (b+1)·B)`` of ``loader.dataset``, fetched with the
  loader's own ``collate_fn`` and workers;
- a dataset of examples (anything with ``len`` and indexing: a ``TensorDataset``,
  a tensor, a list of ``(x, y)`` pairs) together with ``batch_size``: batched by
  a ``DataLoader`` as above;
- a list of batches (``batch_size=None``): all of equal size except the last.

A batch is ``inputs`` or ``(inputs, labels)`` (a list or tuple of two, as a
``DataLoader`` collates ``(x, y)`` examples); ``inputs`` is a tensor or a tuple
of tensors (so tuple inputs with labels are ``((x1, x2), labels)``).
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Iterator, NamedTuple, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, IterableDataset, SequentialSampler

from .._errors import bad_type, bad_value, check_count

BATCH_FORMS = "a tensor (inputs), a tuple of tensors ((x1, x2)), or a pair (inputs, labels) with 1-d labels"


class Batch(NamedTuple):
    """One batch: the inputs as a tuple of tensors, whether they were given as a tuple, and the labels (or None)."""

    inputs: tuple[Tensor, ...]
    was_tuple: bool
    labels: Optional[Tensor]

    @property
    def rows(self) -> int:
        return self.inputs[0].shape[0]


class Source(NamedTuple):
    """Where the batches come from: ``rows`` examples in batches of ``batch_rows`` (the last may be shorter);
    ``fetch(numbers)`` yields ``(number, raw batch)`` for those batch numbers, in that order."""

    rows: int
    batch_rows: int
    fetch: Callable[[Sequence[int]], Iterator[tuple[int, Any]]]
    identity: dict

    @property
    def batches(self) -> int:
        return -(-self.rows // self.batch_rows)

    def span(self, number: int) -> range:
        """The dataset rows of batch ``number``."""
        return range(number * self.batch_rows, min((number + 1) * self.batch_rows, self.rows))


def parse_batch(item: Any, number: int) -> Batch:
    """A raw batch as :class:`Batch`; the error names the batch and the forms accepted otherwise.

    Example:
        >>> b = parse_batch((torch.zeros(4, 3), torch.tensor([0, 1, 1, 0])), 0)
        >>> b.rows, b.was_tuple, b.labels.tolist()
        (4, False, [0, 1, 1, 0])
        >>> parse_batch(((torch.zeros(4, 3), torch.ones(4, 2)),), 0).was_tuple
        True
    """
    where = f"data (batch {number})"
    if isinstance(item, Tensor):
        inputs, labels = item, None
    elif isinstance(item, (tuple, list)) and len(item) in (1, 2):
        inputs, labels = item[0], (item[1] if len(item) == 2 else None)
    else:
        raise bad_value(where, BATCH_FORMS, _structure(item))
    was_tuple = isinstance(inputs, (tuple, list))
    xs = tuple(inputs) if was_tuple else (inputs,)
    if not xs or not all(isinstance(x, Tensor) and x.dim() > 0 for x in xs):
        raise bad_value(where, BATCH_FORMS, _structure(item))
    rows = {x.shape[0] for x in xs}
    if labels is not None and (not isinstance(labels, Tensor) or labels.dim() != 1):
        raise bad_value(where, BATCH_FORMS, _structure(item))
    if len(rows) > 1 or (labels is not None and labels.shape[0] not in rows):
        raise bad_value(where, "tensors with the same number of examples (dim 0)", _structure(item))
    return Batch(xs, was_tuple, labels)


def _structure(item: Any) -> str:
    """A short description of a raw batch's structure: ``(tensor (4, 3), tensor (4, 2, 2))``."""
    if isinstance(item, Tensor):
        return f"tensor {tuple(item.shape)}"
    if isinstance(item, (tuple, list)):
        return "(" + ", ".join(_structure(i) for i in item) + ")"
    return type(item).__name__


def as_source(data: Any, batch_size: Optional[int]) -> Source:
    """The :class:`Source` for ``data`` (see the module's docstring for the forms), which must hold an example."""
    source = _source(data, batch_size)
    if source.rows == 0 or source.batch_rows == 0:
        raise bad_value("data", "at least one example, in batches of at least one",
                        f"{source.rows} examples in batches of {source.batch_rows}")
    return source


def _source(data: Any, batch_size: Optional[int]) -> Source:
    if isinstance(data, DataLoader):
        if batch_size is not None:
            raise bad_value("batch_size", "None for a DataLoader (its own batch_size is used)", batch_size)
        return _loader_source(data)
    if batch_size is not None:
        batch_size = check_count("batch_size", batch_size)
        if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
            raise bad_type("data", "a dataset with len() and indexing when batch_size is given", data)
        return _loader_source(DataLoader(data, batch_size=batch_size))
    if isinstance(data, list):
        return _list_source(data)
    raise bad_type("data", "a DataLoader, a list of batches, or a dataset of examples with batch_size=", data)


def _loader_source(loader: DataLoader) -> Source:
    dataset = loader.dataset
    if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
        raise bad_value("data", "a DataLoader over a map-style dataset (with len(); each batch's rows must be known "
                        "to resume and shard the run)", f"a DataLoader over {type(dataset).__name__}")
    sampler_ok = isinstance(loader.batch_sampler, BatchSampler) and isinstance(loader.sampler, SequentialSampler)
    if loader.batch_size is None or not sampler_ok:
        raise bad_value("data", "a DataLoader that reads the dataset in order in batches of batch_size (no "
                        "shuffle, sampler or batch_sampler: results are stored in dataset order)",
                        f"a DataLoader with sampler {type(loader.sampler).__name__}")
    rows, size = len(dataset), loader.batch_size

    def fetch(numbers: Sequence[int]) -> Iterator[tuple[int, Any]]:
        numbers = list(numbers)
        spans = [list(range(b * size, min((b + 1) * size, rows))) for b in numbers]
        reader = DataLoader(dataset, batch_sampler=spans, collate_fn=loader.collate_fn,
                            num_workers=loader.num_workers if numbers else 0, pin_memory=loader.pin_memory,
                            worker_init_fn=loader.worker_init_fn, timeout=loader.timeout,
                            multiprocessing_context=loader.multiprocessing_context)
        return zip(numbers, reader)

    return Source(rows, size, fetch, {"type": type(dataset).__name__, "examples": rows, "batch_size": size})


def _list_source(batches: list) -> Source:
    if not batches:
        raise bad_value("data", "a non-empty list of batches", "an empty list")
    sizes = [parse_batch(item, i).rows for i, item in enumerate(batches)]
    uneven = [i for i, n in enumerate(sizes[:-1]) if n != sizes[0]] + ([len(sizes) - 1] if sizes[-1] > sizes[0] else [])
    if uneven:
        raise bad_value("data", f"batches of one size except a shorter last one (batch 0 has {sizes[0]} examples)",
                        f"batch {uneven[0]} with {sizes[uneven[0]]} examples")

    def fetch(numbers: Sequence[int]) -> Iterator[tuple[int, Any]]:
        return ((b, batches[b]) for b in numbers)

    return Source(sum(sizes), sizes[0], fetch, {"type": "list", "examples": sum(sizes), "batch_size": sizes[0]})


def fingerprint(batch: Batch) -> str:
    """SHA-256 of a batch's tensors (shapes, dtypes and values): the identity of the data in a run's settings.

    Example:
        >>> b = parse_batch(torch.arange(6.0).reshape(2, 3), 0)
        >>> fingerprint(b) == fingerprint(parse_batch(torch.arange(6.0).reshape(2, 3), 0))
        True
    """
    digest = hashlib.sha256()
    for t in batch.inputs + ((batch.labels,) if batch.labels is not None else ()):
        digest.update(f"{tuple(t.shape)} {t.dtype}".encode())
        digest.update(tensor_bytes(t))
    return digest.hexdigest()


def tensor_bytes(t: Tensor) -> bytes:
    """The raw bytes of ``t``'s values (any dtype, any device)."""
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
