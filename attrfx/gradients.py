"""Gradients of an explained value, by a vjp (:func:`vjp`) through the probe.

Four kernels cover every gradient method:

- :func:`output_input_grads` — ``∂F/∂x`` of the target-selected output;
- :func:`neuron_input_grads` — ``∂n_k/∂x`` for K neurons: the model runs only
  to the layer, once; each neuron's backward pass starts from its own
  cotangent at the layer (:func:`pull_neurons`);
- :func:`layer_grads` — ``∂F/∂h`` at one or more layers, with ``h``;
- :func:`conductance_grads` — both ``∂n_k/∂x`` and ``∂F/∂h`` from one forward
  pass: the graph is cut at the layer, so the backward from ``F`` stops at
  ``h`` and the backward from ``n_k`` covers only the model up to ``h``.

On plain autograd the first call of a method need not know the layer yet:
:func:`first_neuron_input_grads` and :func:`first_layer_grads_and_output` are
the first two kernels on a pass that also checks the layer (its shape, and
that it runs once), so no separate inspection pass runs.

Unreachable inputs or layers get zero gradients. Every kernel differentiates
through :func:`vjp`: ``torch.func.vjp`` inside a ``torch.func`` transform (so
the kernels compose with ``vmap``/``grad``), plain autograd otherwise (faster).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from .probe import (Activation, LayerInfo, call_model, forward_counting_runs, forward_to_layer,
                    forward_with_output_probe, forward_with_probe, submodules, transformed, zero_deltas)
from .selectors import IndexNeuron, Neuron, Target, select_target
from .slicing import Guess, LinearRows, only_rows


Pull = Callable[..., tuple[Any, ...]]


def vjp(fn: Callable, *primals: Any, has_aux: bool = False) -> tuple:
    """``(fn(*primals), pull)`` (``+ (aux,)`` with ``has_aux``), where ``pull(v) = vᵀ·∂fn/∂primals``.

    The contract of ``torch.func.vjp``: primals and cotangents are pytrees of
    tensors, ``pull(cotangents, retain_graph=True)`` returns one gradient per
    primal (zeros where ``fn`` does not reach it); ``batched=True`` pulls back
    cotangents with a leading batch dimension in one go. Inside a ``torch.func``
    transform it *is* ``torch.func.vjp`` (``vmap`` over ``pull`` for
    ``batched``), so kernels compose. Otherwise ``fn`` runs once under
    ``torch.enable_grad`` on fresh leaves that require grad, and ``pull`` is
    ``torch.autograd.grad`` (``is_grads_batched`` for ``batched``): the same
    numbers without ``torch.func``'s wrapping of every operation (0.1–0.4 ms per
    call on small models, more with ``autograd.Function`` rules). Parameters are
    never differentiated and no ``.grad`` is written; the outputs keep their
    graph, so an enclosing :func:`vjp` can differentiate through them.

    Example:
        >>> x = torch.tensor([1.0, 2.0])
        >>> out, pull = vjp(lambda t: (t * t, t.sum()), x)
        >>> pull((torch.ones(2), torch.tensor(0.0)))[0].tolist()
        [2.0, 4.0]
        >>> pull((torch.eye(2), torch.zeros(2)), batched=True)[0].tolist()
        [[2.0, 0.0], [0.0, 4.0]]
        >>> plain = vjp(lambda t: t.exp(), x)[1](torch.ones(2))[0]
        >>> torch.equal(plain, torch.func.vmap(lambda t: vjp(lambda u: u.exp(), t)[1](torch.ones(()))[0])(x))
        True
    """
    if transformed():
        return _func_vjp(fn, primals, has_aux)
    flat, spec = _flatten(primals)
    leaves = [p.detach().requires_grad_() for p in flat]
    try:
        with torch.enable_grad():
            result = fn(*_unflatten(leaves, spec))
    except RuntimeError as err:
        if not inference_tensors_refused(err):
            raise
        return _func_vjp(fn, primals, has_aux)
    out, aux = result if has_aux else (result, None)

    def pull(cotangents: Any, retain_graph: bool = True, batched: bool = False) -> tuple[Any, ...]:
        return _unflatten(grads_or_zeros(_flatten(out)[0], leaves, _flatten(cotangents)[0],
                                         retain_graph=retain_graph, batched=batched), spec)

    return (out, pull, aux) if has_aux else (out, pull)


def _flatten(tree: Any) -> tuple[list, Any]:
    """``tree_flatten``, without the pytree walk for a tensor or a tuple of tensors (spec ``None``: a tuple)."""
    if isinstance(tree, Tensor):
        return [tree], _ONE_TENSOR
    if type(tree) is tuple and all(isinstance(t, Tensor) for t in tree):
        return list(tree), None
    return tree_flatten(tree)


_ONE_TENSOR = tree_flatten(torch.empty(0))[1]


def _unflatten(leaves: list, spec: Any) -> Any:
    return tuple(leaves) if spec is None else tree_unflatten(leaves, spec)


def inference_tensors_refused(err: RuntimeError) -> bool:
    """Whether plain autograd refused to save tensors made under ``torch.inference_mode`` (``torch.func`` can).

    Example:
        >>> with torch.inference_mode():
        ...     w = torch.ones(2)
        >>> try:
        ...     (torch.ones(2, requires_grad=True) * w).sum().backward()
        ... except RuntimeError as err:
        ...     inference_tensors_refused(err)
        True
    """
    return "Inference tensors" in str(err)


def grads_or_zeros(outputs: Sequence[Tensor], leaves: Sequence[Tensor], cotangents: Sequence[Tensor], *,
                   retain_graph: bool = False, batched: bool = False) -> list[Tensor]:
    """``Σ cotangentᵀ·∂output/∂leaf`` for each leaf by plain autograd; zeros where no output reaches it.

    Example:
        >>> a, b = torch.ones(2, requires_grad=True), torch.ones(3, requires_grad=True)
        >>> [g.tolist() for g in grads_or_zeros([2 * a], [a, b], [torch.ones(2)])]
        [[2.0, 2.0], [0.0, 0.0, 0.0]]
    """
    pairs = [(o, c) for o, c in zip(outputs, cotangents) if o.requires_grad]
    grads = torch.autograd.grad([o for o, _ in pairs], leaves, [c for _, c in pairs], retain_graph=retain_graph,
                                allow_unused=True, is_grads_batched=batched) if pairs else [None] * len(leaves)
    lead = tuple(cotangents[0].shape[:1]) if batched else ()
    return [g if g is not None else p.new_zeros(lead + tuple(p.shape)) for g, p in zip(grads, leaves)]


def _func_vjp(fn: Callable, primals: tuple, has_aux: bool) -> tuple:
    """``torch.func.vjp`` with :func:`vjp`'s ``pull`` signature (``batched`` through ``vmap``)."""
    out, func_pull, *aux = torch.func.vjp(fn, *primals, has_aux=has_aux)

    def pull(cotangents: Any, retain_graph: bool = True, batched: bool = False) -> tuple[Any, ...]:
        one = functools.partial(func_pull, retain_graph=retain_graph)
        return torch.func.vmap(one)(cotangents) if batched else one(cotangents)

    return (out, pull, *aux)


VMAP_ELEMENTS = 1 << 21
"""At most this many cotangent elements (neurons × the layer's activation) are pulled back in one batched pass."""


def neurons_per_pass(model: Callable, k: int, hs: Activation) -> int:
    """How many of K neurons' backward passes run together as one batched (``vmap``) pass; 1: one by one.

    ``min(K, ⌊VMAP_ELEMENTS / numel(h)⌋)`` neurons (:data:`VMAP_ELEMENTS`) when
    every module holding parameters is an ``nn.Linear``: on the MLP's 8 rows one
    batched pass of 64 neurons was 3× faster than one by one, on its 400 path
    rows blocks of 10 were 7–18% faster; torch's batched backward passes of
    convolution, BatchNorm and LayerNorm gained nothing or ran up to 4× slower
    (``benchmarks/kernels.py``). Results are equal either way.

    Example:
        >>> neurons_per_pass(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), 16, (torch.zeros(8, 4),))
        16
        >>> neurons_per_pass(nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU()), 16, (torch.zeros(8, 4, 6),))
        1
    """
    per_pass = min(k, VMAP_ELEMENTS // max(1, sum(h.numel() for h in hs)))
    if per_pass < 2 or not isinstance(model, nn.Module):  # (checked first: one neuron is the common call)
        return 1
    held = (m for m in submodules(model) if next(m.parameters(False), None) is not None)
    return per_pass if all(isinstance(m, nn.Linear) for m in held) else 1


def pull_neurons(pull: Pull, neurons: Sequence[Neuron], hs: Activation, per_pass: int,
                 each: Optional[Callable[[tuple[Tensor, ...], slice], tuple[Tensor, ...]]] = None
                 ) -> tuple[Tensor, ...]:
    """``∂n_k/∂x = pull(∂(Σ_rows n_k)/∂h)`` for each neuron: ``[K, N, ...]`` per input.

    ``pull`` is the :func:`vjp` of ``x ↦ h`` (one forward pass, shared by all K
    neurons); each neuron's cotangent is built at the layer
    (:func:`neuron_cotangent`), so its backward pass carries that neuron alone.
    The neurons are pulled back in blocks of ``per_pass`` (:func:`neurons_per_pass`):
    a block of several runs as one batched pass, a block of one as a plain pass,
    so intermediates are one block's. The last pass frees the graph. ``each(block, ks)``
    maps every block of gradients (``[k, N, ...]`` per input, of the neurons
    ``ks``) as soon as it is pulled back, e.g. integrates it, so the K gradients
    are never held together.

    Example:
        >>> hs, pull = vjp(lambda x: (2 * x,), torch.randn(3, 2))
        >>> pull_neurons(pull, [IndexNeuron((slice(None), 1), False)], hs, 1)[0][0].tolist()
        [[0.0, 2.0], [0.0, 2.0], [0.0, 2.0]]
    """
    k, each = len(neurons), each or (lambda block, ks: block)
    blocks = [each(_pull_block(pull, neurons[ks], hs, retain_graph=ks.stop < k), ks)
              for ks in (slice(i, min(i + per_pass, k)) for i in range(0, k, per_pass))]
    return blocks[0] if len(blocks) == 1 else tuple(torch.cat(b) for b in zip(*blocks))


def _pull_block(pull: Pull, neurons: Sequence[Neuron], hs: Activation, retain_graph: bool) -> tuple[Tensor, ...]:
    """The input gradients ``[k, N, ...]`` of a block of neurons: one plain pass for one, one batched for more."""
    if len(neurons) == 1:
        return tuple(g[None] for g in pull(neuron_cotangent(neurons[0], hs), retain_graph=retain_graph))
    cotangents = zip(*(neuron_cotangent(n, hs) for n in neurons))
    return pull(tuple(torch.stack(c) for c in cotangents), retain_graph=retain_graph, batched=True)


def neuron_cotangent(neuron: Neuron, hs: Activation) -> Activation:
    """``∂(Σ_rows n)/∂h``: the cotangent at the layer whose pull-back is ``∂n/∂x`` for every row at once.

    Rows are independent, so one backward pass from the layer gives each example
    its own gradient. An :class:`~attrfx.selectors.IndexNeuron`'s cotangent is
    built directly (ones at its index); a callable's comes from :func:`vjp`.

    Example:
        >>> neuron_cotangent(IndexNeuron((slice(None), 1), False), (torch.zeros(2, 3),))[0].tolist()
        [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]
    """
    if isinstance(neuron, IndexNeuron):
        cotangent = torch.zeros_like(hs[0])
        cotangent[neuron.index] = 1
        return (cotangent,)
    value, pull = vjp(neuron, hs)
    return pull(torch.ones_like(value), retain_graph=False)[0]


def neuron_values(model: Callable, layer: nn.Module, neurons: Sequence[Neuron], args: tuple,
                  at_input: bool, only: Optional[LinearRows] = None) -> Callable[..., Tensor]:
    """``x ↦ [n_k(x)]``, shape ``[K, N]``; the forward pass stops at the layer (``only``: :func:`prefix`).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> picks = [IndexNeuron((slice(None), 0), False), IndexNeuron((slice(None), 2), False)]   # K = 2
        >>> values = neuron_values(net, net[1], picks, (), False)(torch.ones(4, 2))
        >>> values.shape, torch.equal(values, net[:2](torch.ones(4, 2))[:, [0, 2]].T)
        (torch.Size([2, 4]), True)
    """

    def values(*xs: Tensor) -> Tensor:
        return stack_values(neurons, prefix(model, layer, xs, args, at_input, only))

    return values


def stack_values(neurons: Sequence[Neuron], hs: Activation) -> Tensor:
    """The neurons' values ``[K, N]`` at the layer's activation ``hs`` (a tuple of tensors ``[N, ...]``).

    Example:
        >>> h = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        >>> stack_values([IndexNeuron((slice(None), 1), False), lambda hs: hs[0].sum(1)], (h,)).tolist()
        [[2.0, 4.0], [3.0, 7.0]]
    """
    return torch.stack([n(hs) for n in neurons])


def prefix(model: Callable, layer: nn.Module, xs: Sequence[Tensor], args: tuple, at_input: bool,
           only: Optional[LinearRows]) -> Activation:
    """:func:`~attrfx.probe.forward_to_layer`, computing only the rows ``only`` of the Linear that feeds the
    layer (:func:`~attrfx.slicing.only_rows`; all of it for None): the selected neurons are the same.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> (h,) = prefix(net, net[1], (torch.ones(4, 2),), (), False, None)   # the activation: a tuple
        >>> torch.equal(h, net[:2](torch.ones(4, 2)))
        True
    """
    with only_rows(only):
        return forward_to_layer(model, layer, xs, args, at_input=at_input)


def neuron_input_grads(model: Callable, layer: nn.Module, neurons: Sequence[Neuron], xs: Sequence[Tensor],
                       args: tuple, *, at_input: bool = False, each: Optional[Callable] = None,
                       only: Optional[LinearRows] = None) -> tuple[Tensor, ...]:
    """``∂n_k/∂x`` for each neuron k and input x: tensors ``[K, N, ...]`` (``each``: see :func:`pull_neurons`;
    ``only``: :func:`prefix`).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        >>> (g,) = neuron_input_grads(net, net[0], [lambda hs: hs[0][:, 1]], (torch.ones(4, 2),), ())
        >>> torch.equal(g[0, 0], net[0].weight[1])
        True
    """
    return neuron_input_grads_and_values(model, layer, neurons, xs, args, at_input=at_input, each=each,
                                         only=only)[0]


def neuron_input_grads_and_values(model: Callable, layer: nn.Module, neurons: Sequence[Neuron], xs: Sequence[Tensor],
                                  args: tuple, *, at_input: bool = False, each: Optional[Callable] = None,
                                  only: Optional[LinearRows] = None) -> tuple[tuple[Tensor, ...], Tensor]:
    """:func:`neuron_input_grads` together with the neuron values ``[K, N]`` of the same forward pass.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> picks = [IndexNeuron((slice(None), 0), False), IndexNeuron((slice(None), 2), False)]   # K = 2
        >>> (g,), values = neuron_input_grads_and_values(net, net[0], picks, (torch.ones(4, 2),), ())
        >>> g.shape, values.shape, torch.equal(g[1, 0], net[0].weight[2])   # [K, N, ...] per input; [K, N]
        (torch.Size([2, 4, 2]), torch.Size([2, 4]), True)
    """
    hs, pull = vjp(lambda *points: prefix(model, layer, points, args, at_input, only), *xs)
    return pull_neurons(pull, neurons, hs, neurons_per_pass(model, len(neurons), hs), each), stack_values(neurons, hs)


def first_neuron_input_grads(model: Callable, layer: nn.Module,
                             learn: Callable[[list[Activation], bool, int], tuple[Sequence[Neuron], bool]],
                             xs: Sequence[Tensor], args: tuple, rows: Optional[int] = None,
                             each: Optional[Callable] = None, guess: Optional[Guess] = None) -> tuple[Tensor, ...]:
    """:func:`neuron_input_grads` for neurons not yet known: ``learn(runs, counted, n)`` gives them from this
    pass over ``n`` rows (``rows``, when ``model`` runs on other rows than the ``xs`` it is given), and whether
    ``guess`` held.

    The pass is :func:`~attrfx.probe.forward_counting_runs` (the layer's runs are
    counted on an empty batch after it), so the layer's checks need no pass of their own.
    With a :class:`~attrfx.slicing.Guess` the pass computes only the guessed rows of a Linear;
    where the guess did not hold, or the pass failed after the narrowed Linear ran (code before the
    layer may have read the rows left out), it runs again with the whole Linear.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> picks = [IndexNeuron((slice(None), 0), False), IndexNeuron((slice(None), 2), False)]   # K = 2
        >>> learn = lambda runs, counted, n: (print(len(runs), tuple(runs[0][0].shape), counted, n) or picks, False)
        >>> (g,) = first_neuron_input_grads(net, net[0], learn, (torch.ones(4, 2),), ())
        1 (4, 3) True 4
        >>> g.shape, torch.equal(g[1, 0], net[0].weight[2])
        (torch.Size([2, 4, 2]), True)
    """
    counted = [False]  # not in the aux output: torch.func.vjp (inference tensors) takes only tensors there

    def forward(*points):
        with guess if guess is not None else contextlib.nullcontext():
            runs, counted[0] = forward_counting_runs(model, layer, points, args)
        return (runs[0] if runs else ()), runs

    try:
        hs, pull, runs = vjp(forward, *xs, has_aux=True)
    except Exception:
        if guess is None or not guess.narrowed:  # the model's own error, before any row was left out
            raise
        return first_neuron_input_grads(model, layer, learn, xs, args, rows, each)
    neurons, held = learn(runs, counted[0], rows or xs[0].shape[0])
    if guess is not None and not held:
        return neuron_input_grads(model, layer, neurons, xs, args, each=each)
    return pull_neurons(pull, neurons, hs, neurons_per_pass(model, len(neurons), hs), each)


def output_input_grads(model: Callable, xs: Sequence[Tensor], args: tuple, target: Target,
                       check: Optional[Callable[[Any], None]] = None) -> tuple[Tensor, ...]:
    """``∂F/∂x`` for ``F`` the target-selected output, one gradient per input (each example's own row).

    ``check(output)`` sees the model output before the backward pass (e.g. to check the target's shape).

    Example:
        >>> net = nn.Linear(3, 2)
        >>> (g,) = output_input_grads(net, (torch.ones(4, 3),), (), Target((1,), None))
        >>> torch.equal(g, net.weight[1].expand(4, 3))
        True
    """
    return output_input_grads_and_value(model, xs, args, target, check)[0]


def output_input_grads_and_value(model: Callable, xs: Sequence[Tensor], args: tuple, target: Target,
                                 check: Optional[Callable[[Any], None]] = None) -> tuple[tuple[Tensor, ...], Tensor]:
    """:func:`output_input_grads` with the explained output ``F`` ``[N]`` of the same forward pass (detached).

    Example:
        >>> net = nn.Linear(3, 2)
        >>> (g,), value = output_input_grads_and_value(net, (torch.ones(4, 3),), (), Target((1,), None))
        >>> g.shape, torch.equal(value, net(torch.ones(4, 3))[:, 1].detach()), value.requires_grad
        (torch.Size([4, 3]), True, False)
    """

    def explained(*points):
        output = call_model(model, points, args)
        if check is not None:
            check(output)
        return select_target(output, target)

    value, pull = vjp(explained, *xs)
    return tuple(pull(torch.ones_like(value), retain_graph=False)), value.detach()


def layer_grads(model: Callable, sites: Sequence[LayerInfo], xs: Sequence[Tensor], args: tuple,
                target: Target) -> tuple[list[Activation], list[Activation]]:
    """``(h, ∂F/∂h)`` at each probe site, for ``F`` the target-selected output: per site, tensors ``[N, ...]``.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> from attrfx.probe import inspect_layers
        >>> sites = inspect_layers(net, [net[0], net[1]], (torch.ones(4, 2),), ())
        >>> acts, grads = layer_grads(net, sites, (torch.ones(4, 2),), (), Target((0,), None))
        >>> len(grads), acts[1][0].shape, grads[1][0].shape, torch.equal(grads[1][0][0], net[2].weight[0])
        (2, torch.Size([4, 3]), torch.Size([4, 3]), True)
    """
    acts, grads, _ = layer_grads_and_output(model, sites, xs, args, target)
    return acts, grads


def layer_grads_and_output(model: Callable, sites: Sequence[LayerInfo], xs: Sequence[Tensor], args: tuple,
                           target: Target) -> tuple[list[Activation], list[Activation], Tensor]:
    """``(h, ∂F/∂h, F)``: :func:`layer_grads` with the explained output ``[N]`` of the same pass.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> from attrfx.probe import inspect_layers
        >>> sites = inspect_layers(net, [net[1]], (torch.ones(4, 2),), ())
        >>> acts, grads, value = layer_grads_and_output(net, sites, (torch.ones(4, 2),), (), Target((0,), None))
        >>> grads[0][0].shape, torch.equal(value, net(torch.ones(4, 2))[:, 0])
        (torch.Size([4, 3]), True)
    """
    n, device = xs[0].shape[0], xs[0].device

    def explained(deltas):
        acts, output = forward_with_probe(model, sites, xs, args, deltas)
        return select_target(output, target), acts

    deltas = [zero_deltas(site, n, device) for site in sites]
    value, pull, acts = vjp(explained, deltas, has_aux=True)
    (grads,) = pull(torch.ones_like(value), retain_graph=False)
    return acts, list(grads), value


def first_layer_grads_and_output(model: Callable, layers: Sequence[nn.Module], xs: Sequence[Tensor], args: tuple,
                                 target: Target, learn: Callable[[list[list[Activation]], Any, int], Any]
                                 ) -> tuple[list[Activation], list[Activation], Tensor]:
    """:func:`layer_grads_and_output` for layers not inspected yet (plain autograd).

    One pass with :func:`~attrfx.probe.forward_with_output_probe`, which runs the
    whole model and so sees every run of each layer; ``learn(runs, output, n)`` checks
    the layers and the target before the backward pass (``n`` the rows of the pass).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> learn = lambda runs, output, n: print(len(runs[0]), tuple(output.shape), n)   # runs per layer
        >>> acts, grads, value = first_layer_grads_and_output(net, [net[1]], (torch.ones(4, 2),), (),
        ...                                                   Target((0,), None), learn)
        1 (4, 1) 4
        >>> acts[0][0].shape, grads[0][0].shape, value.shape
        (torch.Size([4, 3]), torch.Size([4, 3]), torch.Size([4]))
    """
    with torch.enable_grad():
        runs, deltas, output = forward_with_output_probe(model, layers, xs, args)
        learn(runs, output, xs[0].shape[0])
        value = select_target(output, target)
    flat = iter(grads_or_zeros([value], [d for ds in deltas for d in ds], [torch.ones_like(value)]))
    return [r[0] for r in runs], [tuple(next(flat) for _ in ds) for ds in deltas], value.detach()


def conductance_grads(model: Callable, site: LayerInfo, neurons: Sequence[Neuron], xs: Sequence[Tensor], args: tuple,
                      target: Target, each: Optional[Callable] = None,
                      only: Optional[LinearRows] = None) -> tuple[tuple[Tensor, ...], Tensor]:
    """``(∂n_k/∂x, ∂F/∂n_k)`` from one forward pass: ``[K, N, ...]`` per input, and ``[K, N]``.

    ``∂F/∂n_k`` is the selector applied to ``∂F/∂h`` (exact for one neuron; the
    sum of the neurons' gradients for a slice). ``each(block, rates)`` maps each
    block of ``∂n_k/∂x`` with its neurons' ``∂F/∂n_k`` as it is pulled back
    (:func:`pull_neurons`). ``only``: the rows of the Linear feeding the layer that
    the neurons read; the pass computes all of it, but the neurons' backward passes
    go through those rows alone (:func:`~attrfx.slicing.rows_with_gradients`).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> picks = [IndexNeuron((slice(None), 0), False), IndexNeuron((slice(None), 2), False)]   # K = 2
        >>> from attrfx.probe import inspect_layers
        >>> (site,) = inspect_layers(net, [net[0]], (torch.ones(4, 2),), ())
        >>> (dn_dx,), dF_dn = conductance_grads(net, site, picks, (torch.ones(4, 2),), (), Target((0,), None))
        >>> dn_dx.shape, dF_dn.shape
        (torch.Size([2, 4, 2]), torch.Size([2, 4]))
    """
    input_grads, rates, _ = conductance_grads_and_values(model, site, neurons, xs, args, target, each, only)
    return input_grads, rates


def conductance_grads_and_values(model: Callable, site: LayerInfo, neurons: Sequence[Neuron], xs: Sequence[Tensor],
                                 args: tuple, target: Target, each: Optional[Callable] = None,
                                 only: Optional[LinearRows] = None) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
    """:func:`conductance_grads` with the neuron values ``n_k`` ``[K, N]`` of the same forward pass.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> picks = [IndexNeuron((slice(None), 0), False), IndexNeuron((slice(None), 2), False)]   # K = 2
        >>> from attrfx.probe import inspect_layers
        >>> (site,) = inspect_layers(net, [net[0]], (torch.ones(4, 2),), ())
        >>> _, _, values = conductance_grads_and_values(net, site, picks, (torch.ones(4, 2),), (), Target((0,), None))
        >>> values.shape, torch.equal(values, net[0](torch.ones(4, 2))[:, [0, 2]].T)
        (torch.Size([2, 4]), True)
    """
    n = xs[0].shape[0]

    def activation(*points):
        def explained(deltas):
            with only_rows(only, gradients_only=True):
                acts, output = forward_with_probe(model, [site], points, args, [deltas], cut=True)
            return select_target(output, target), acts[0]

        output, pull_layer, hs = vjp(explained, zero_deltas(site, n, xs[0].device), has_aux=True)
        (layer_grad,) = pull_layer(torch.ones_like(output), retain_graph=False)
        return hs, layer_grad

    # ∂F/∂h first: that pass frees what the model after the layer saved before the K passes
    # through the prefix run, so peak memory is the larger of the two, not their sum
    hs, pull, layer_grad = vjp(activation, *xs, has_aux=True)
    values, rates = stack_values(neurons, hs), stack_values(neurons, layer_grad)
    per_block = None if each is None else (lambda block, ks: each(block, rates[ks]))
    input_grads = pull_neurons(pull, neurons, hs, neurons_per_pass(model, len(neurons), hs), per_block)
    return input_grads, rates, values
