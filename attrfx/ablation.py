"""Feature ablation: replace a group of input features by the baseline, see how much the explained value drops.

Primitives:

- :func:`feature_masks` — one integer mask per input (feature ids, shared
  across inputs: an id present in several inputs ablates all of them at once);
  ``None`` gives every element of every input its own id;
- :func:`feature_groups`, :func:`coalition_keeps`, :func:`kept_points` — features
  renumbered ``0 .. G−1``; a batch of coalitions (which features keep the input,
  the rest take the baseline) as the points the model sees;
- :func:`perturbed_values` — the model at many perturbations, ``perturbations_per_eval``
  per forward pass (stacked along dim 0), with no gradients recorded; every
  perturbation method evaluates through it;
- :func:`spread` — a value per feature given to each of its elements;
- :func:`ablate` — attributions ``(f(x) − f(x with feature j ablated))``, spread
  over each feature's elements;
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


def feature_groups(masks: Sequence[Tensor]) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The feature ids present in ``masks`` (sorted) and each mask renumbered ``0 .. G−1`` in that order.

    Example:
        >>> ids, groups = feature_groups((torch.tensor([[5, 7]]), torch.tensor([[7]])))
        >>> ids.tolist(), [g.tolist() for g in groups]
        ([5, 7], [[[0, 1]], [[1]]])
    """
    ids, inverse = torch.unique(torch.cat([m.flatten() for m in masks]), return_inverse=True)
    return ids, tuple(g.reshape(m.shape) for g, m in zip(inverse.split([m.numel() for m in masks]), masks))


def coalition_keeps(groups: Sequence[Tensor], present: Tensor) -> tuple[Tensor, ...]:
    """Which elements keep their input value in each of ``P`` coalitions: ``[P, 1|N, ...]`` per input.

    ``present`` is ``[P, G]`` (the same coalitions for every example) or ``[P, N, G]`` (per example), True where
    feature ``g`` is in the coalition; ``groups`` are masks numbered ``0 .. G−1`` (:func:`feature_groups`).

    Example:
        >>> present = torch.tensor([[True, False], [False, True]])
        >>> [k.tolist() for k in coalition_keeps((torch.tensor([[0, 1, 1]]),), present)]
        [[[[True, False, False]], [[False, True, True]]]]
    """
    p = present.shape[0]
    if present.dim() == 2:
        return tuple(present[:, g.flatten()].reshape((p,) + tuple(g.shape)) for g in groups)
    n = present.shape[1]
    keeps = []
    for g in groups:
        index = g.expand((n,) + tuple(g.shape[1:])).reshape(1, n, -1).expand(p, -1, -1)
        keeps.append(present.gather(2, index).reshape((p, n) + tuple(g.shape[1:])))
    return tuple(keeps)


def kept_points(xs: Sequence[Tensor], bs: Sequence[Tensor], keeps: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """``x`` where kept, the baseline elsewhere, for ``P`` perturbations stacked along dim 0: ``[P·N, ...]``.

    Example:
        >>> kept_points((torch.ones(1, 3),), (torch.zeros(()),), (torch.tensor([[[True, False, True]]]),))
        (tensor([[1., 0., 1.]]),)
    """
    n = xs[0].shape[0]
    return tuple(torch.where(k, x, b).reshape((k.shape[0] * n,) + tuple(x.shape[1:]))
                 for k, b, x in zip(keeps, bs, xs))


def perturbed_values(values: Callable[..., Tensor], points_of: Callable[[int, int], tuple[Tensor, ...]],
                     count: int, args: tuple, n_examples: int, perturbations_per_eval: int = 1) -> Tensor:
    """``values`` at ``count`` perturbations of an ``N``-example batch, ``perturbations_per_eval`` per call: ``[count,
    K, N]``.

    ``points_of(start, stop)`` gives perturbations ``start .. stop−1`` stacked along dim 0 (``[P·N, ...]`` per
    input); ``values(*points, *args) → [K, P·N]``, with per-example ``args`` repeated to match. No gradients.

    Example:
        >>> x = torch.tensor([[1.0, 2.0]])
        >>> points = lambda start, stop: (torch.cat([x * k for k in range(start, stop)]),)
        >>> perturbed_values(lambda v: v.sum(1)[None], points, 3, (), 1, perturbations_per_eval=2).flatten().tolist()
        [0.0, 3.0, 6.0]
    """
    out = []
    with torch.no_grad():
        for start in range(0, count, perturbations_per_eval):
            stop = min(start + perturbations_per_eval, count)
            p = stop - start
            v = values(*points_of(start, stop), *repeat_args(args, n_examples, p))
            out.append(v.reshape(v.shape[0], p, n_examples).transpose(0, 1))
    return torch.cat(out)


PERTURBED_ELEMENTS = 1 << 22
"""When attrfx chooses how many perturbations share a forward pass, at most this many input elements go in one."""


def perturbations_per_pass(perturbations_per_eval: Optional[int], xs: Sequence[Tensor], count: int) -> int:
    """How many of ``count`` perturbations share one forward pass: the user's ``perturbations_per_eval``, or for
    None as many as fit in :data:`PERTURBED_ELEMENTS` input elements (at least one).

    Example:
        >>> perturbations_per_pass(None, (torch.zeros(8, 3, 32, 32),), 64), perturbations_per_pass(2, (), 64)
        (64, 2)
    """
    if perturbations_per_eval is not None:
        return check_count("perturbations_per_eval", perturbations_per_eval)
    per_example_copy = max(1, sum(x.numel() for x in xs))
    return max(1, min(count, PERTURBED_ELEMENTS // per_example_copy))


def spread(per_group: Tensor, groups: Sequence[Tensor], xs: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """Every element of each input gets its group's value: ``[K, N, G]`` → ``[K, N, ...]`` per input.

    Example:
        >>> spread(torch.tensor([[[10.0, 20.0]]]), (torch.tensor([[1, 0, 1]]),), (torch.zeros(1, 3),))
        (tensor([[[20., 10., 20.]]]),)
    """
    k, n = per_group.shape[:2]
    out = []
    for g, x in zip(groups, xs):
        index = torch.broadcast_to(g, (n,) + tuple(x.shape[1:])).reshape(1, n, -1).expand(k, -1, -1)
        out.append(per_group.gather(2, index).reshape((k,) + tuple(x.shape)))
    return tuple(out)


def ablate(values: Callable[..., Tensor], xs: Sequence[Tensor], bs: Sequence[Tensor], masks: Sequence[Tensor],
           args: tuple, perturbations_per_eval: int = 1) -> tuple[Tensor, ...]:
    """Ablation attributions ``[K, N, ...]`` for ``values(*xs, *args) → [K, N]``.

    Element ``i`` of input ``t`` gets ``v(x) − v(x with feature mₜ[i] set to the baseline)``:
    :func:`perturbed_values` over the coalitions "every feature but one", one forward pass for ``x`` and one
    per ``perturbations_per_eval`` features.

    Example:
        >>> f = lambda x: (x ** 2).sum(1, keepdim=True).T
        >>> ablate(f, (torch.tensor([[1.0, 2.0]]),), (torch.zeros(()),), (torch.tensor([[0, 1]]),), ())[0].tolist()
        [[[1.0, 4.0]]]
    """
    check_count("perturbations_per_eval", perturbations_per_eval)
    n = xs[0].shape[0]
    ids, groups = feature_groups(masks)
    every = torch.arange(ids.numel(), device=ids.device)

    def all_but(start: int, stop: int) -> tuple[Tensor, ...]:
        present = every[start:stop, None] != every[None, :]
        return kept_points(xs, bs, coalition_keeps(groups, present))

    with torch.no_grad():
        initial = values(*xs, *args)
    drops = initial[None] - perturbed_values(values, all_but, ids.numel(), args, n, perturbations_per_eval)
    return spread(drops.permute(1, 2, 0), groups, xs)


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
    ids, groups = feature_groups(masks)
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
    return spread(drops, groups, xs)


def _narrowed(neurons: Sequence[Neuron], rows: Tensor, size: int) -> list[IndexNeuron]:
    """Each index neuron of an ``[N, size]`` activation, reading the ``[N, R]`` activation of ``rows`` instead."""
    at = {j: i for i, j in enumerate(rows.tolist())}
    out = []
    for neuron in neurons:
        last = neuron.index[-1]
        picked = [at[j] for j in range(size)[last]] if isinstance(last, slice) else at[last % size]
        out.append(IndexNeuron((slice(None), picked), neuron.sums))
    return out
