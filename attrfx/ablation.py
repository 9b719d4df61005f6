"""Feature ablation: replace a group of input features by the baseline, see how much the explained value drops.

Primitives:

- :func:`feature_masks` — one integer mask per input (feature ids, shared
  across inputs: an id present in several inputs ablates all of them at once);
  ``None`` gives every element of every input its own id;
- :func:`ablate` — attributions ``(f(x) − f(x with feature j ablated))`` spread
  over each feature's elements, evaluating ``perturbations_per_eval`` ablations
  per forward pass (stacked along dim 0), with no gradients recorded;
- :func:`linear_ablation` — the same without a pass per feature, for neurons
  ``φ(x W[rows]ᵀ + b[rows])`` of a Linear that reads an input as it is
  (``φ`` elementwise): ablating a group shifts the pre-activation by
  ``Σ_{i∈group} (bᵢ − xᵢ) W[rows, i]``.

:func:`neuron_feature_ablation` explains a hidden neuron; the model stops at
its layer, and every neuron of a list of selectors comes from the same pass.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._errors import bad_type, bad_value, check_count
from .inputs import repeat_args
from .probe import _hooked, forward_to_layer, tensor_version
from .selectors import IndexNeuron, Neuron
from .slicing import LinearRows, only_rows


def feature_masks(feature_mask: Any, xs: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """One integer mask per input, shaped to broadcast against it (same number of dims).

    Example:
        >>> [m.tolist() for m in feature_masks(None, (torch.zeros(2, 2), torch.zeros(2, 1)))]
        [[[0, 1]], [[2]]]
    """
    if feature_mask is None:
        out, start = [], 0
        for x in xs:
            count = x[:1].numel()
            out.append(start + torch.arange(count, device=x.device).reshape(x[:1].shape))
            start += count
        return tuple(out)
    masks = feature_mask if isinstance(feature_mask, tuple) else (feature_mask,)
    if len(masks) != len(xs):
        raise bad_value("feature_mask", f"one mask per input ({len(xs)})", f"{len(masks)} masks")
    out = []
    for i, (m, x) in enumerate(zip(masks, xs)):
        if not isinstance(m, Tensor):
            raise bad_type(f"feature_mask[{i}]", "a torch.Tensor of integer feature ids", m)
        if m.is_floating_point() or m.is_complex():
            raise bad_value(f"feature_mask[{i}]", "a tensor of integer feature ids", f"dtype {m.dtype}")
        try:
            fits = m.dim() <= x.dim() and torch.broadcast_shapes(m.shape, x.shape) == x.shape
        except RuntimeError:
            fits = False
        if not fits:
            raise bad_value(f"feature_mask[{i}]", f"a tensor that broadcasts to the input shape {tuple(x.shape)} "
                            f"(dim 0 of size 1 or {x.shape[0]})", f"shape {tuple(m.shape)}")
        out.append(m.to(device=x.device, dtype=torch.long).reshape((1,) * (x.dim() - m.dim()) + tuple(m.shape)))
    return tuple(out)


def ablate(values: Callable[..., Tensor], xs: Sequence[Tensor], bs: Sequence[Tensor], masks: Sequence[Tensor],
           args: tuple, perturbations_per_eval: int = 1) -> tuple[Tensor, ...]:
    """Ablation attributions ``[K, N, ...]`` for ``values(*xs, *args) → [K, N]``.

    Element ``i`` of input ``t`` gets ``v(x) − v(x with feature mₜ[i] set to the baseline)``.
    ``perturbations_per_eval`` features are ablated per call of ``values``, on
    ``P`` stacked copies of the batch (per-example ``args`` repeated to match).

    Example:
        >>> f = lambda x: (x ** 2).sum(1, keepdim=True).T
        >>> ablate(f, (torch.tensor([[1.0, 2.0]]),), (torch.zeros(()),), (torch.tensor([[0, 1]]),), ())[0].tolist()
        [[[1.0, 4.0]]]
    """
    check_count("perturbations_per_eval", perturbations_per_eval)
    n = xs[0].shape[0]
    initial = values(*xs, *args)
    totals = [torch.zeros(initial.shape + tuple(x.shape[1:]), dtype=initial.dtype, device=x.device) for x in xs]
    ids = torch.unique(torch.cat([m.flatten() for m in masks]))
    for chunk in ids.split(perturbations_per_eval):
        p = chunk.shape[0]
        hits = [m.unsqueeze(0) == chunk.reshape((p,) + (1,) * m.dim()) for m in masks]   # [P, 1|N, ...]
        points = tuple(torch.where(h, b, x).reshape((p * n,) + tuple(x.shape[1:]))
                       for h, b, x in zip(hits, bs, xs))
        drop = initial.unsqueeze(1) - values(*points, *repeat_args(args, n, p)).reshape(initial.shape[0], p, n)
        for total, h, x in zip(totals, hits, xs):
            weight = h.to(initial.dtype).expand((p, n) + tuple(x.shape[1:]))
            total += torch.einsum("kpn,pn...->kn...", drop, weight)
    return tuple(totals)


LINEAR_ABLATION_ELEMENTS = 1 << 24
"""At most this many elements (examples × input features × rows) in one :func:`linear_ablation`; more ablate by
passes."""


def input_read_by(given: Tensor, xs: Sequence[Tensor], versions: Optional[Sequence[Any]] = None) -> Optional[int]:
    """Which input a Linear's input ``given`` is, read as it is: the input itself, or a view of it whose ``[N, D]``
    rows are the input's memory in order (a ``reshape``/``flatten`` view), not changed in place since input ``t``
    had version ``versions[t]`` (when given); None if none.

    Example:
        >>> x = torch.zeros(4, 2, 3)
        >>> input_read_by(x.flatten(1), (torch.zeros(4, 1), x)), input_read_by(x.transpose(1, 2).flatten(1), (x,))
        (1, None)
    """
    if given.dim() != 2 or not given.is_contiguous():
        return None
    for t, x in enumerate(xs):
        if ((given is x or given._base is x) and x.is_contiguous() and given.storage_offset() == x.storage_offset()
                and tuple(given.shape) == (x.shape[0], math.prod(x.shape[1:]))
                and (versions is None or tensor_version(given) == versions[t])):
            return t
    return None


def linear_fed(model: nn.Module, layer: nn.Module, only: LinearRows, xs: Sequence[Tensor],
               args: tuple) -> Optional[int]:
    """The input that ``only.linear`` reads as it is (:func:`input_read_by`) on a pass to the layer; None if none."""
    received: list[tuple[tuple[Tensor, ...], list]] = []

    def note(inputs: tuple) -> None:  # the tensors the model received, and their versions then
        received.append((inputs[:len(xs)], [tensor_version(x) for x in inputs[:len(xs)]]))

    with torch.no_grad(), _hooked(model, True, note), only_rows(only) as narrowing:
        forward_to_layer(model, layer, xs, args)
    if narrowing.given is None or not received:
        return None
    return input_read_by(narrowing.given, *received[0])


def linear_ablation(path: Sequence[nn.Module], only: LinearRows, neurons: Sequence[Neuron],
                    xs: Sequence[Tensor], bs: Sequence[Tensor], masks: Sequence[Tensor],
                    fed: int) -> tuple[Tensor, ...]:
    """:func:`ablate` for neurons of ``φ(a W[rows]ᵀ + b[rows])``, ``a = xs[fed]`` as ``[N, D]``, with no pass per
    group: ablating group g adds ``Σ_{i∈g} (bᵢ − xᵢ) W[rows, i]`` to the pre-activation. ``path``: the Linear,
    then the elementwise modules ``φ`` (:meth:`~attrfx.slicing.LinearTrace.path_to`); ``neurons`` read the
    layer's ``[N, F]`` activation at ``only.index``.

    Example:
        >>> lin, relu = nn.Linear(3, 4), nn.ReLU()
        >>> x, mask = torch.randn(2, 3), torch.tensor([[0, 0, 1]])
        >>> picks = [IndexNeuron((slice(None), 2), False)]
        >>> (ours,) = linear_ablation([lin, relu], LinearRows(lin, torch.tensor([2])), picks, (x,),
        ...                           (torch.zeros(()),), (mask,), 0)
        >>> (passes,) = ablate(lambda v: relu(lin(v))[None, :, 2], (x,), (torch.zeros(()),), (mask,), ())
        >>> torch.allclose(ours, passes)
        True
    """
    linear, rows = only
    x, k = xs[fed], len(neurons)
    n = x.shape[0]
    ids, groups = torch.unique(torch.cat([m.flatten() for m in masks]), return_inverse=True)
    groups = [g.reshape(m.shape) for g, m in zip(groups.split([m.numel() for m in masks]), masks)]
    with torch.no_grad():
        weight = linear.weight[rows]  # [R, D]
        bias = None if linear.bias is None else linear.bias[rows]
        change = (torch.broadcast_to(bs[fed], x.shape) - x).reshape(n, -1, 1) * weight.T  # [N, D, R]
        slot = torch.broadcast_to(groups[fed], x.shape).reshape(n, -1, 1).expand_as(change) + 1
        shifts = change.new_zeros(n, ids.numel() + 1, rows.numel()).scatter_add_(1, slot, change)  # slot 0: none
        h = F.linear(x.reshape(n, -1), weight, bias)[:, None, :] + shifts  # [N, 1 + G, R]
        for module in path[1:]:
            h = module(h)
        flat = (h.reshape(-1, rows.numel()),)
        values = torch.stack([neuron(flat) for neuron in _narrowed(neurons, rows, linear.out_features)])
        drops = values.reshape(k, n, -1)[:, :, :1] - values.reshape(k, n, -1)[:, :, 1:]  # [K, N, G]

    def spread(group: Tensor, xt: Tensor) -> Tensor:  # every element gets its group's drop
        index = torch.broadcast_to(group, (n,) + tuple(xt.shape[1:])).reshape(1, n, -1).expand(k, -1, -1)
        return drops.gather(2, index).reshape((k,) + tuple(xt.shape))

    return tuple(spread(g, xt) for g, xt in zip(groups, xs))


def _narrowed(neurons: Sequence[Neuron], rows: Tensor, size: int) -> list[IndexNeuron]:
    """Each index neuron of an ``[N, size]`` activation, reading the ``[N, R]`` activation of ``rows`` instead."""
    at = {j: i for i, j in enumerate(rows.tolist())}
    out = []
    for neuron in neurons:
        last = neuron.index[-1]
        picked = [at[j] for j in range(size)[last]] if isinstance(last, slice) else at[last % size]
        out.append(IndexNeuron((slice(None), picked), neuron.sums))
    return out
