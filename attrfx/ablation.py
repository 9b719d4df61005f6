"""Perturbation: replace some input features, see how much the explained value drops.

A perturbation method is a set of :class:`Perturbations` — ``count`` perturbed copies of the batch and how a drop in
the explained value spreads back over the elements — evaluated by one kernel, :func:`perturbation_attributions`:
``(v(x) − v(x perturbed))``, many perturbations per forward pass. Three kinds:

- :func:`ablations` — each feature group in turn takes the baseline (feature ablation);
- :func:`~attrfx.windows.occlusions` — each window of a sliding grid takes the baseline; an element gets the mean
  drop of the windows that cover it (occlusion: :mod:`attrfx.windows`);
- :func:`permutations` — each feature group in turn is shuffled among the examples (permutation importance;
  shuffles from :func:`random_permutations`).

Primitives beneath them:

- :func:`feature_masks` — one integer mask per input (feature ids, shared
  across inputs: an id present in several inputs ablates all of them at once);
  ``None`` gives every element of every input its own id; any integers serve as ids;
- :func:`feature_groups`, :func:`coalition_keeps`, :func:`kept_points` — features
  renumbered ``0 .. G−1``; a batch of coalitions (which features keep the input,
  the rest take the baseline) as the points the model sees;
- :func:`perturbed_values` — the model at many perturbations, ``perturbations_per_eval``
  per forward pass (stacked along dim 0), with no gradients recorded; every
  perturbation method evaluates through it; :func:`perturbations_per_pass` chooses that number when the
  user leaves it to attrfx (None);
- :func:`spread` — a value per feature given to each of its elements;
- :func:`ablate` — attributions ``(f(x) − f(x with feature j ablated))``, spread
  over each feature's elements;
- :func:`linear_ablation` — the same without a pass per feature, for neurons
  ``φ(x W[rows]ᵀ + b[rows])`` of a Linear that reads an input as it is
  (``φ`` elementwise): ablating a group shifts the pre-activation by
  ``Σ_{i∈group} (bᵢ − xᵢ) W[rows, i]``;
- :func:`layer_activation_and_output`, :func:`replaced_values` — the layer forms: the layer's activation and the
  model output from one pass, then the model's value with the layer's activation replaced by perturbed copies, the
  part of the model before the layer run on no examples where the model allows it.

:func:`neuron_feature_ablation` explains a hidden neuron; the model stops at
its layer, and every neuron of a list of selectors comes from the same pass.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._errors import bad_type, bad_value, check_count
from .inputs import repeat_args, take_examples
from .probe import Activation, _as_tensors, _hooked, _packed, call_model, forward_to_layer, site_info, tensor_version
from .selectors import IndexNeuron, Neuron, Target, check_target, select_target
from .slicing import LinearRows, only_rows


def feature_masks(feature_mask: Any, xs: Sequence[Tensor], arg: str = "feature_mask",
                  of: str = "the input") -> tuple[Tensor, ...]:
    """One integer mask per input, shaped to broadcast against it (same number of dims); ``arg`` and ``of`` name
    the argument and what it masks in errors (``layer_mask`` of the layer's activation for the layer forms).

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
        raise bad_value(arg, f"one mask per input ({len(xs)})", f"{len(masks)} masks")
    out = []
    for i, (m, x) in enumerate(zip(masks, xs)):
        if not isinstance(m, Tensor):
            raise bad_type(f"{arg}[{i}]", "a torch.Tensor of integer feature ids", m)
        if m.is_floating_point() or m.is_complex():
            raise bad_value(f"{arg}[{i}]", "a tensor of integer feature ids", f"dtype {m.dtype}")
        fits = m.dim() <= x.dim() and all(a in (1, b) for a, b in zip(reversed(m.shape), reversed(x.shape)))
        if not fits:
            raise bad_value(f"{arg}[{i}]", f"a tensor that broadcasts to {of} shape {tuple(x.shape)} "
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


class Perturbations(NamedTuple):
    """``count`` perturbations of an ``N``-example batch and how a drop in the explained value spreads back.

    ``points(start, stop)``: perturbations ``start .. stop−1`` stacked along dim 0, ``[P·N, ...]`` per input;
    ``spread(drops)``: the drops ``[K, N, count]`` as attributions ``[K, N, ...]`` per input.
    """

    count: int
    points: Callable[[int, int], tuple[Tensor, ...]]
    spread: Callable[[Tensor], tuple[Tensor, ...]]


def perturbation_attributions(values: Callable[..., Tensor], xs: Sequence[Tensor], args: tuple,
                              perturbations: Perturbations, per_pass: int,
                              initial: Optional[Tensor] = None) -> tuple[Tensor, ...]:
    """The kernel of every perturbation method: drops ``v(x) − v(x perturbed)`` for each perturbation, spread back
    over the elements, ``[K, N, ...]`` per input, for ``values(*xs, *args) → [K, N]``.

    ``per_pass`` perturbations share a forward pass (:func:`perturbed_values`); ``initial`` is ``v(x)`` when the
    caller has it already (one pass fewer). No gradients.

    Example:
        >>> f = lambda x: (x ** 2).sum(1, keepdim=True).T
        >>> x, mask = torch.tensor([[1.0, 2.0]]), torch.tensor([[0, 1]])
        >>> perturbation_attributions(f, (x,), (), ablations((x,), (torch.zeros(()),), (mask,)), 2)[0].tolist()
        [[[1.0, 4.0]]]
    """
    n = xs[0].shape[0]
    with torch.no_grad():
        if initial is None:
            initial = values(*xs, *args)
        drops = initial[None] - perturbed_values(values, perturbations.points, perturbations.count, args, n, per_pass)
    return perturbations.spread(drops.permute(1, 2, 0))


def _all_but_one(groups: Sequence[Tensor], start: int, stop: int) -> tuple[Tensor, ...]:
    """The keep masks of the coalitions "every feature but ``j``", ``j`` in ``start .. stop−1``: ``[P, 1|N, ...]`` per
    input (:func:`coalition_keeps` of those coalitions, by one comparison)."""
    dropped = torch.arange(start, stop, device=groups[0].device)
    return tuple(g[None] != dropped.reshape((-1,) + (1,) * g.dim()) for g in groups)


def ablations(xs: Sequence[Tensor], bs: Sequence[Tensor], masks: Sequence[Tensor]) -> Perturbations:
    """Feature ablation: feature group ``j`` (from ``masks``) takes the baseline ``bs``; every element of the group
    gets the group's drop.

    Example:
        >>> x = torch.tensor([[1.0, 2.0, 3.0]])
        >>> ablated = ablations((x,), (torch.zeros(()),), (torch.tensor([[5, 5, 7]]),))
        >>> ablated.count, ablated.points(0, 2)[0].tolist()
        (2, [[0.0, 0.0, 3.0], [1.0, 2.0, 0.0]])
    """
    ids, groups = feature_groups(masks)
    count = ids.numel()
    return Perturbations(count, lambda start, stop: kept_points(xs, bs, _all_but_one(groups, start, stop)),
                         lambda drops: spread(drops, groups, xs))


def ablate(values: Callable[..., Tensor], xs: Sequence[Tensor], bs: Sequence[Tensor], masks: Sequence[Tensor],
           args: tuple, perturbations_per_eval: int = 1) -> tuple[Tensor, ...]:
    """Ablation attributions ``[K, N, ...]`` for ``values(*xs, *args) → [K, N]``.

    Element ``i`` of input ``t`` gets ``v(x) − v(x with feature mₜ[i] set to the baseline)``: the kernel
    :func:`perturbation_attributions` over :func:`ablations`, one forward pass for ``x`` and one per
    ``perturbations_per_eval`` features.

    Example:
        >>> f = lambda x: (x ** 2).sum(1, keepdim=True).T
        >>> ablate(f, (torch.tensor([[1.0, 2.0]]),), (torch.zeros(()),), (torch.tensor([[0, 1]]),), ())[0].tolist()
        [[[1.0, 4.0]]]
    """
    per_pass = check_count("perturbations_per_eval", perturbations_per_eval)
    return perturbation_attributions(values, xs, args, ablations(xs, bs, masks), per_pass)


# ---------------------------------------------------------------- permutation: a feature shuffled among the examples

def random_permutations(count: int, n: int, generator: torch.Generator) -> Tensor:
    """``count`` permutations of ``0 .. n−1`` drawn uniformly from all but the identity (``n ≥ 2``): ``[count, n]``.

    Example:
        >>> p = random_permutations(4, 3, torch.Generator().manual_seed(0))
        >>> p.shape, bool((p.sort(1).values == torch.arange(3)).all()), bool((p != torch.arange(3)).any(1).all())
        (torch.Size([4, 3]), True, True)
    """
    if n < 2:
        raise bad_value("inputs", "at least 2 examples, to permute a feature among them", f"{n} example")
    identity = torch.arange(n, device=generator.device)
    perms = torch.rand(count, n, generator=generator, device=generator.device).argsort(1)
    same = (perms == identity).all(1)
    while bool(same.any()):
        perms[same] = torch.rand(int(same.sum()), n, generator=generator, device=generator.device).argsort(1)
        same = (perms == identity).all(1)
    return perms


def permutations(xs: Sequence[Tensor], masks: Sequence[Tensor], generator: torch.Generator,
                 perm_func: Optional[Callable[[Tensor, Tensor], Tensor]] = None) -> Perturbations:
    """Permutation: feature group ``j`` (from ``masks``) takes the values of other examples, ``x[π]``, with ``π``
    from :func:`random_permutations` — one per feature and input, all drawn here, so how many share a pass never
    changes them — or from ``perm_func(x, mask) → x`` with the group's elements (``mask``, bool) shuffled.

    Example:
        >>> x = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        >>> permutations((x,), (torch.tensor([[0, 1]]),), torch.Generator()).points(0, 1)[0].tolist()
        [[3.0, 2.0], [1.0, 4.0]]
    """
    ids, groups = feature_groups(masks)
    count, n = ids.numel(), xs[0].shape[0]
    if perm_func is None:
        perms = [random_permutations(count, n, generator).to(x.device) for x in xs]

        def points(start: int, stop: int) -> tuple[Tensor, ...]:
            keeps = _all_but_one(groups, start, stop)
            return tuple(torch.where(k, x, x[p[start:stop]]).reshape((-1,) + tuple(x.shape[1:]))
                         for x, k, p in zip(xs, keeps, perms))
    else:
        def points(start: int, stop: int) -> tuple[Tensor, ...]:
            return tuple(torch.cat([_permuted(perm_func, x, g == j) for j in range(start, stop)])
                         for x, g in zip(xs, groups))

    return Perturbations(count, points, lambda drops: spread(drops, groups, xs))


def _permuted(perm_func: Callable[[Tensor, Tensor], Tensor], x: Tensor, mask: Tensor) -> Tensor:
    """``perm_func(x, mask)`` where the feature has elements in ``x``, checked; ``x`` itself elsewhere."""
    if not bool(mask.any()):
        return x
    out = perm_func(x, mask)
    if not isinstance(out, Tensor) or out.shape != x.shape:
        got = f"shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
        raise bad_value("perm_func", f"a function (x, mask) returning a tensor shaped like x {tuple(x.shape)}", got)
    return out


# ---------------------------------------------------------------- the layer forms: perturbing a layer's activation

def layer_activation_and_output(model: Callable, layer: nn.Module, xs: Sequence[Tensor], args: tuple,
                                at_input: bool = False) -> tuple[Activation, Any]:
    """The layer's activation (output, or input with ``at_input``: a copy, safe from later in-place changes) and the
    model output, from one pass; the layer must run exactly once, with the example dimension first.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(inplace=True), nn.Linear(3, 1))
        >>> (h,), out = layer_activation_and_output(net, net[0], (torch.ones(4, 2),), ())
        >>> h.shape, out.shape, bool((h < 0).any() == (net[0](torch.ones(4, 2)) < 0).any())
        (torch.Size([4, 3]), torch.Size([4, 1]), True)
    """
    runs: list[Activation] = []

    def note(value: Any) -> None:
        runs.append(tuple(h.clone() for h in _as_tensors(value, "input" if at_input else "output")[0]))

    with _hooked(layer, at_input, note):
        output = call_model(model, xs, args)
    site_info(model, layer, runs, xs[0].shape[0])
    return runs[0], output


def replaced_output(model: Callable, layer: nn.Module, xs: Sequence[Tensor], args: tuple, hs: Activation,
                    at_input: bool = False) -> Any:
    """The model output on ``xs`` with the layer's activation (output, or input) replaced by ``hs``, whatever rows
    the model computed before it.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> out = replaced_output(net, net[1], (torch.ones(0, 2),), (), (torch.zeros(5, 3),))
        >>> torch.equal(out, net[2](torch.zeros(5, 3)))
        True
    """
    def replace(value: Any) -> Any:
        return tuple(hs) if at_input else _packed(list(hs), _as_tensors(value, "output")[1])

    with _hooked(layer, at_input, replace):
        return call_model(model, xs, args)


def target_values(output: Any, target: Target, rows: int, n: int) -> Tensor:
    """The explained value ``[rows]`` of a model output for ``rows = P·N`` rows (``P`` copies of an ``N``-example
    batch; a per-example target follows them), with a clear error unless there is one value per row.

    Example:
        >>> from attrfx.selectors import format_target
        >>> target_values(torch.arange(12.).reshape(6, 2), format_target([1, 0, 1], 3), 6, 3).tolist()
        [1.0, 2.0, 5.0, 7.0, 8.0, 11.0]
    """
    times = rows // n
    check_target(output, target.repeat(times))
    value = select_target(output, target.repeat(times))
    if value.shape != (rows,):
        raise bad_value("model", f"a model whose output has one row per input row (perturbations of the batch "
                        f"share a forward pass; here {rows} rows)", f"{value.numel()} values")
    return value


def output_values(model: Callable, target: Target, n_inputs: int, n_examples: int) -> Callable[..., Tensor]:
    """``v(*points, *args) → [1, P·N]``: the explained output at ``P`` stacked perturbations of an ``N``-example batch
    (:func:`target_values`), the function every perturbation method at the inputs evaluates.

    Example:
        >>> from attrfx.selectors import format_target
        >>> v = output_values(lambda x: 2 * x, format_target(1, 2), 1, 2)
        >>> v(torch.arange(8.).reshape(4, 2)).tolist()
        [[2.0, 6.0, 10.0, 14.0]]
    """

    def values(*given: Tensor) -> Tensor:
        points, args = given[:n_inputs], given[n_inputs:]
        return target_values(call_model(model, points, args), target, points[0].shape[0], n_examples)[None]

    return values


def replaced_values(model: Callable, layer: nn.Module, xs: Sequence[Tensor], args: tuple, target: Target,
                    at_input: bool, hs: Activation, expected: Tensor) -> Callable[..., Tensor]:
    """``v(*points) → [1, R]``: the explained value with the layer's activation replaced by ``points`` (``R = P·N``
    rows: perturbed copies of the activation ``hs`` of the batch ``xs``).

    The model's part before the layer need not rerun for each copy: where the model allows, it runs on *no*
    examples (``xs[:0]``) and only the part after the layer sees the ``R`` rows. It allows it when, so run on
    ``hs`` itself, the model gives exactly ``expected`` (its output on ``xs``): the rest of the model then reads
    no per-example tensor from before the layer. Otherwise (an error, other rows, other values) every pass
    reruns the whole model on ``xs`` repeated ``P`` times.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> from attrfx.selectors import format_target
        >>> x, target = torch.ones(4, 2), format_target(None, 4)
        >>> hs, out = layer_activation_and_output(net, net[1], (x,), ())
        >>> v = replaced_values(net, net[1], (x,), (), target, False, hs, target_values(out, target, 4, 4))
        >>> v(torch.zeros(8, 3)).shape
        torch.Size([1, 8])
    """
    n = xs[0].shape[0]
    none, no_args = tuple(x[:0] for x in xs), take_examples(args, n, slice(0, 0))

    def cut(*points: Tensor) -> Tensor:
        output = replaced_output(model, layer, none, no_args, points, at_input)
        return target_values(output, target, points[0].shape[0], n)[None]

    def whole(*points: Tensor) -> Tensor:
        times = points[0].shape[0] // n
        repeated = tuple(x.repeat((times,) + (1,) * (x.dim() - 1)) for x in xs)
        output = replaced_output(model, layer, repeated, repeat_args(args, n, times), points, at_input)
        return target_values(output, target, points[0].shape[0], n)[None]

    try:
        same = torch.allclose(cut(*(h.clone() for h in hs))[0], expected, rtol=0, atol=0, equal_nan=True)
    except Exception:  # the part after the layer needs the examples of the part before it
        same = False
    return cut if same else whole


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
    """The input that ``only.linear`` reads as it is (:func:`input_read_by`) on a pass to the layer; None if none.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
        >>> linear_fed(net, net[1], LinearRows(net[0], torch.tensor([1])), (torch.ones(2, 3),), ())
        0
    """
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
