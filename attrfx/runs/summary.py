"""Streaming statistics of attributions: per feature, over examples, mergeable in any grouping.

A :class:`Moments` holds, per feature, the count, mean, ``M2 = Σ (x − mean)²``,
mean ``|x|``, min and max of the rows seen, in float64. Two of them merge
exactly as if their rows had been seen together (Chan et al.'s pairwise
update of Welford's algorithm):

    n = n_a + n_b,   δ = mean_b − mean_a,   mean = mean_a + δ·n_b/n,   M2 = M2_a + M2_b + δ²·n_a·n_b/n

so a chunk's statistics, a process's and the whole run's are the same kind of
value. Per class (a label per row), :class:`ClassSums` keeps counts and sums,
which merge by addition. Variances are ``M2 / n`` (population, Captum's
``Var()``) or ``M2 / (n − 1)`` (``Var(order=1)``).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import numpy as np
import torch


class Moments(NamedTuple):
    """Per-feature statistics of ``count`` rows (arrays shaped like one row)."""

    count: int
    mean: np.ndarray
    m2: np.ndarray
    mean_abs: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray


class ClassSums(NamedTuple):
    """Per-class row counts ``[K]`` and sums ``[K, *row]`` for classes ``0 .. K−1``."""

    counts: np.ndarray
    sums: np.ndarray


def moments(rows: np.ndarray) -> Moments:
    """The :class:`Moments` of ``rows`` (dim 0: examples), computed directly in float64.

    Example:
        >>> m = moments(np.array([[1.0], [2.0], [6.0]]))
        >>> m.count, m.mean.tolist(), m.m2.tolist()
        (3, [3.0], [14.0])
    """
    x = np.asarray(rows, dtype=np.float64)
    mean = x.mean(0)
    return Moments(x.shape[0], mean, ((x - mean) ** 2).sum(0), np.abs(x).mean(0), x.min(0), x.max(0))


def no_rows(shape: tuple[int, ...]) -> Moments:
    """The :class:`Moments` of no rows (what a process without examples contributes)."""
    zeros = np.zeros(shape)
    return Moments(0, zeros, zeros, zeros, np.full(shape, np.inf), np.full(shape, -np.inf))


def merge(a: Optional[Moments], b: Moments) -> Moments:
    """The :class:`Moments` of the rows of ``a`` and ``b`` together (``a=None``: none yet).

    Example:
        >>> x = np.array([[1.0], [2.0], [6.0], [-3.0]])
        >>> merged, whole = merge(moments(x[:1]), moments(x[1:])), moments(x)
        >>> bool(np.allclose(merged.m2, whole.m2) and np.allclose(merged.mean, whole.mean))
        True
    """
    if a is None or a.count == 0:
        return b
    if b.count == 0:
        return a
    n = a.count + b.count
    delta = b.mean - a.mean
    return Moments(n, a.mean + delta * (b.count / n), a.m2 + b.m2 + delta ** 2 * (a.count * b.count / n),
                   a.mean_abs + (b.mean_abs - a.mean_abs) * (b.count / n),
                   np.minimum(a.minimum, b.minimum), np.maximum(a.maximum, b.maximum))


def class_sums(rows: np.ndarray, classes: np.ndarray) -> ClassSums:
    """Counts and sums of ``rows`` per class (``classes``: one int per row; a negative one, such as -1 for "no
    label", leaves its row out).

    Example:
        >>> s = class_sums(np.array([[1.0], [2.0], [5.0], [7.0]]), np.array([1, 0, 1, -1]))
        >>> s.counts.tolist(), s.sums[:, 0].tolist()
        ([1, 2], [2.0, 6.0])
    """
    kept = classes >= 0
    x, classes = np.asarray(rows, dtype=np.float64)[kept], classes[kept]
    k = int(classes.max()) + 1 if classes.size else 0
    sums = np.zeros((k,) + x.shape[1:])
    np.add.at(sums, classes, x)
    return ClassSums(np.bincount(classes, minlength=k).astype(np.int64), sums)


def add_class_sums(a: Optional[ClassSums], b: ClassSums) -> ClassSums:
    """``a + b``, class by class (the shorter padded with empty classes)."""
    if a is None:
        return b
    k = max(len(a.counts), len(b.counts))
    return ClassSums(_pad(a.counts, k) + _pad(b.counts, k), _pad(a.sums, k) + _pad(b.sums, k))


def _pad(values: np.ndarray, k: int) -> np.ndarray:
    return np.concatenate([values, np.zeros((k - len(values),) + values.shape[1:], values.dtype)])


@dataclasses.dataclass(frozen=True)
class Summary:
    """A run's statistics for one attribution tensor (one per input for tuple inputs), per feature.

    ``variance`` is the population variance ``M2 / n`` (Captum's ``Var()``);
    ``class_means[k]`` is the mean attribution of the ``class_counts[k]`` rows
    of class ``k`` (NaN for a class with no rows; rows of a negative class, such as -1 for "no label", are in
    the other statistics only).
    """

    count: int
    mean: np.ndarray
    mean_abs: np.ndarray
    variance: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    class_counts: Optional[np.ndarray]
    class_means: Optional[np.ndarray]

    @property
    def std(self) -> np.ndarray:
        """The population standard deviation, ``sqrt(variance)`` (Captum's ``StdDev()``)."""
        return np.sqrt(self.variance)

    @property
    def sample_variance(self) -> np.ndarray:
        """``M2 / (n − 1)``, the unbiased variance (Captum's ``Var(order=1)``)."""
        return self.variance * self.count / max(self.count - 1, 1)


def summary(stats: Moments, classes: Optional[ClassSums]) -> Summary:
    """The :class:`Summary` of merged statistics.

    Example:
        >>> x = np.array([[1.0], [3.0], [5.0]])
        >>> s = summary(moments(x), class_sums(x, np.array([0, 0, 2])))
        >>> s.mean.tolist(), s.variance.tolist(), s.class_counts.tolist(), s.class_means[:, 0].tolist()
        ([3.0], [2.6666666666666665], [2, 0, 1], [2.0, nan, 5.0])
    """
    counts = means = None
    if classes is not None:
        counts = classes.counts
        shape = (-1,) + (1,) * (classes.sums.ndim - 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(counts.reshape(shape) > 0, classes.sums / counts.reshape(shape), np.nan)
    return Summary(stats.count, stats.mean, stats.mean_abs, stats.m2 / stats.count, stats.minimum, stats.maximum,
                   counts, means)


def reduce_moments(stats: Moments, group: object, device: torch.device) -> Moments:
    """Every process's :class:`Moments` merged in rank order (``torch.distributed.all_gather``).

    ``device`` is where the collective's tensors live (the CPU for gloo, the
    rank's GPU for nccl). Every process gets the same result.
    """
    import torch.distributed as dist

    fields = np.stack([np.full(stats.mean.shape, float(stats.count)), stats.mean, stats.m2, stats.mean_abs,
                       stats.minimum, stats.maximum])
    local = torch.from_numpy(fields).to(device)
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, local, group=group)
    merged = None
    for g in gathered:
        count, mean, m2, mean_abs, minimum, maximum = g.cpu().numpy()
        merged = merge(merged, Moments(int(count.flat[0]) if count.size else 0, mean, m2, mean_abs, minimum, maximum))
    return merged


def reduce_class_sums(classes: ClassSums, group: object, device: torch.device) -> ClassSums:
    """Every process's :class:`ClassSums` added (``all_reduce`` of the class count, then of counts and sums)."""
    import torch.distributed as dist

    k = torch.tensor([len(classes.counts)], device=device)
    dist.all_reduce(k, op=dist.ReduceOp.MAX, group=group)
    padded = ClassSums(_pad(classes.counts, int(k)), _pad(classes.sums, int(k)))
    counts, sums = torch.from_numpy(padded.counts).to(device), torch.from_numpy(padded.sums).to(device)
    dist.all_reduce(counts, group=group)
    dist.all_reduce(sums, group=group)
    return ClassSums(counts.cpu().numpy(), sums.cpu().numpy())
