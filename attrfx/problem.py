"""What is explained and where it lands, validated once per call: the problem a method solves.

- :func:`neuron_problem` — a hidden neuron (``selector``) explained at the model
  inputs: the layer's probe site, the selected neurons, and the rows of a Linear
  feeding the layer that the passes need (:mod:`attrfx.slicing`);
- :func:`layer_problem` — a model output (``target``) explained at one or more
  layers' activations;
- :func:`output_problem` — a model output explained at the model inputs;
- :func:`rule_problem` / :func:`gradient_under` — a neuron problem for the
  gradient-override methods, and its gradient while a :mod:`attrfx.rules` map is on.

Methods (:mod:`attrfx.methods`) are short compositions of these with the kernels
of :mod:`attrfx.gradients`, :mod:`attrfx.paths` and :mod:`attrfx.noise`.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import torch  # noqa: F401 (the examples)
from torch import Tensor, nn

from . import rules
from ._errors import bad_type, bad_value
from .gradients import (first_layer_grads_and_output, first_neuron_input_grads, inference_tensors_refused,
                        layer_grads, neuron_input_grads, output_input_grads)
from .inputs import Inputs, as_tuple, format_args, repeat_args, require_float, restore
from .probe import Activation, LayerInfo, call_model, first_pass_checks, inspect, resolve_layer, site_info
from .selectors import Neuron, Target, check_target, format_target, neuron_selectors, select_target
from .slicing import Guess, LinearRows, LinearTrace, likely_chain


class NeuronSite:
    """The layer's probe site and the selected neurons, learned once per call.

    From the inspection pass before any work, or — *deferred* — from the first
    forward pass that reaches the layer (:meth:`learn`), which also counts the
    layer's runs (:func:`~attrfx.probe.forward_counting_runs`) and so spares the
    inspection pass. ``only``: the rows of the Linear feeding the layer that the
    neurons read, when the passes to the layer need compute no others
    (:mod:`attrfx.slicing`), and ``path``: that Linear and the elementwise modules after it, as
    the inspection pass ran them; a deferred site may ``guess`` the rows for its first pass.
    """

    def __init__(self, info: Optional[LayerInfo] = None, neurons: Optional[list[Neuron]] = None,
                 selector: Any = None, batch_total_ok: bool = False, only: Optional[LinearRows] = None,
                 guess: Optional[Guess] = None, path: Optional[list] = None):
        self.info, self.neurons, self.only, self.guess, self.path = info, neurons, only, guess, path
        self.selector, self.batch_total_ok = selector, batch_total_ok

    def learn(self, p: "NeuronProblem", runs: list[Activation], counted: bool, n: int) -> tuple[list[Neuron], bool]:
        """The neurons, from the layer's outputs ``runs`` in one pass over ``n`` rows (``counted``: all its
        runs are there), and whether the site's guess held on that pass (then later passes narrow too)."""
        if counted:
            info = site_info(p.model, p.layer, runs, n)
        else:  # the model could not finish the pass on an empty batch: count with the inspection pass
            (info,) = inspect(p.model, [p.layer], p.xs, p.args, empty=True).sites
        self.info = info
        self.neurons = neuron_selectors(self.selector, info, batch_total_ok=self.batch_total_ok)[0]
        held = self.guess is not None and self.guess.held(runs[0][0], self.neurons)
        self.only = self.guess.rows if held else None
        return self.neurons, held


class NeuronProblem(NamedTuple):
    """Everything a neuron method needs, validated once at the API boundary."""

    model: Callable
    layer: nn.Module
    xs: tuple[Tensor, ...]
    was_tuple: bool
    args: tuple
    site: NeuronSite
    is_list: bool
    at_input: bool
    probe_output: Any = None  # the model output of the inspection pass (maybe empty), to check targets' shape

    @property
    def n_examples(self) -> int:
        return self.xs[0].shape[0]

    @property
    def info(self) -> LayerInfo:
        return self.site.info

    @property
    def neurons(self) -> list[Neuron]:
        return self.site.neurons

    def input_grads(self, points: tuple[Tensor, ...], times: int = 1, each: Optional[Callable] = None, *,
                    through: Optional[Callable] = None, rows: Optional[int] = None) -> tuple[Tensor, ...]:
        """``∂n_k/∂x`` at ``points``, which stack ``times`` copies of the batch (the first call of a deferred
        site learns the neurons from its pass). ``each`` maps each block of neurons' gradients as it is
        pulled back (:func:`~attrfx.gradients.pull_neurons`). ``through``: a function of the points (and
        arguments) that runs the model on ``rows`` rows, in place of the model."""
        args, model = repeat_args(self.args, self.n_examples, times), through or self.model
        per_block = None if each is None else (lambda block, ks: each(block))
        if self.neurons is None:
            return first_neuron_input_grads(model, self.layer, functools.partial(self.site.learn, self), points,
                                            args, rows=rows, each=per_block, guess=self.site.guess)
        return neuron_input_grads(model, self.layer, self.neurons, points, args, at_input=self.at_input,
                                  each=per_block, only=self.site.only)

    def result(self, values: tuple[Tensor, ...]) -> Inputs:
        """``[K, B, ...]`` values in the user's structure (K dropped for a single selector)."""
        return restore(values if self.is_list else tuple(v[0] for v in values), self.was_tuple)


class OutputProblem(NamedTuple):
    """A model output (``target``) explained at the model inputs, validated once at the API boundary.

    Its :meth:`input_grads` has :meth:`NeuronProblem.input_grads`'s contract (a leading dimension of one
    "neuron", the output), so the kernels that integrate or average input gradients serve both.
    """

    model: Callable
    xs: tuple[Tensor, ...]
    was_tuple: bool
    args: tuple
    target: Target

    @property
    def n_examples(self) -> int:
        return self.xs[0].shape[0]

    def input_grads(self, points: tuple[Tensor, ...], times: int = 1, each: Optional[Callable] = None, *,
                    through: Optional[Callable] = None, rows: Optional[int] = None) -> tuple[Tensor, ...]:
        """``∂F/∂x`` at ``points`` (which stack ``times`` copies of the batch) as ``[1, rows, ...]`` per input;
        ``each`` maps the block as it is pulled back. ``through``: a function of the points (and arguments) that
        runs the model on ``rows`` rows in place of the model (the target follows the rows)."""
        copies = (rows or points[0].shape[0]) // self.n_examples
        args, target = repeat_args(self.args, self.n_examples, times), self.target.repeat(copies)
        check = functools.partial(check_target, target=target)
        grads = output_input_grads(through or self.model, points, args, target, check)
        block = tuple(g[None] for g in grads)
        return block if each is None else each(block)

    def output(self, xs: Sequence[Tensor]) -> Tensor:
        """``F`` per example at ``xs`` (no gradients)."""
        return select_target(call_model(self.model, xs, self.args), self.target)

    def result(self, values: tuple[Tensor, ...]) -> Inputs:
        """``[1, B, ...]`` values in the user's structure."""
        return restore(tuple(v[0] for v in values), self.was_tuple)


def output_problem(model: Callable, inputs: Inputs, target: Any, additional_forward_args: Any) -> OutputProblem:
    """Validate and set up an output attribution at the inputs (the target is checked on the first pass).

    Example:
        >>> net = nn.Linear(3, 2)
        >>> p = output_problem(net, torch.ones(4, 3), 1, None)
        >>> torch.equal(p.result(p.input_grads(p.xs)), net.weight[1].expand(4, 3))
        True
    """
    xs, was_tuple = as_tuple(inputs)
    require_float(xs)
    return OutputProblem(model, xs, was_tuple, format_args(additional_forward_args),
                         format_target(target, xs[0].shape[0]))


def neuron_problem(model: Callable, layer: Any, inputs: Inputs, selector: Any, additional_forward_args: Any,
                   at_input: bool, *, need_float: bool = True, batch_total_ok: bool = False,
                   deferrable: bool = False, narrows: bool = False) -> NeuronProblem:
    """Validate and set up a neuron attribution (one small inspection pass of the model, or none).

    ``need_float=False`` accepts integer inputs (methods that take no gradients, e.g. ablation);
    ``batch_total_ok`` lets a callable selector return one value for the whole batch
    (methods that need only the neuron's gradient, as in Captum). The inspection pass runs on an
    empty batch where it can (layer shape, run count, and the output's shape for a target check cost next
    to nothing). A callable selector is never called on it: it is called, and its result checked, on the
    rows of each real pass (see :mod:`attrfx.selectors`), so one that reads the examples' labels works.
    ``deferrable`` (methods whose work is :meth:`NeuronProblem.input_grads` and nothing else stateful
    before it) skips the inspection pass where the first real pass can do its checks: plain autograd,
    an ``nn.Module`` in eval mode, the layer's output. Methods whose passes need
    only the selected neurons' rows of a Linear feeding the layer (all rows but no other's gradients, for
    conductance) say so with ``narrows``: under the same conditions, where such a Linear is likely, those
    rows are found (:mod:`attrfx.slicing`) — by tracing the inspection pass, or, for a deferrable method,
    guessed for its first pass and confirmed by a trace of it.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        >>> p = neuron_problem(net, "1", torch.ones(4, 2), [0, 2], None, False)   # a list of K = 2 selectors
        >>> p.info.shapes, len(p.neurons), [g.shape for g in p.input_grads(p.xs)]   # [K, N, ...] per input
        (((3,),), 2, [torch.Size([2, 4, 2])])
        >>> p.result(p.input_grads(p.xs)).shape   # the user's structure: K kept for a list
        torch.Size([2, 4, 2])
    """
    xs, was_tuple = as_tuple(inputs)
    if need_float:
        require_float(xs)
    args = format_args(additional_forward_args)
    module = resolve_layer(model, layer)
    selectors = selector if isinstance(selector, list) else [selector]
    early = not at_input and selectors and first_pass_checks(model)
    if early and deferrable:
        guess = Guess.of(model, module, selectors) if narrows else None
        site = NeuronSite(selector=selector, batch_total_ok=batch_total_ok, guess=guess)
        return NeuronProblem(model, module, xs, was_tuple, args, site, isinstance(selector, list), False)
    chain = likely_chain(model, module) if early and narrows else None
    traced = chain is not None
    with LinearTrace(chain) if traced else contextlib.nullcontext() as trace:
        seen = inspect(model, [module], xs, args, at_input=at_input, empty=True)
    (info,) = seen.sites
    neurons, is_list = neuron_selectors(selector, info, batch_total_ok=batch_total_ok)
    only = trace.rows_for(seen.activations[0][0], neurons) if traced else None
    path = trace.path_to(seen.activations[0][0]) if only is not None else None
    return NeuronProblem(model, module, xs, was_tuple, args, NeuronSite(info, neurons, only=only, path=path),
                         is_list, bool(at_input), seen.output)


def times_inputs(values: tuple[Tensor, ...], xs, bs, multiply_by_inputs: bool) -> tuple[Tensor, ...]:
    """``values·(x − b)`` per input with ``multiply_by_inputs`` (``[K, N, ...]`` values broadcast), else ``values``.

    Example:
        >>> values, xs, bs = (torch.tensor([[[2.0, 3.0]]]),), (torch.tensor([[1.0, 2.0]]),), (torch.zeros(()),)
        >>> times_inputs(values, xs, bs, True)[0].tolist(), times_inputs(values, xs, bs, False)[0].tolist()
        ([[[2.0, 6.0]]], [[[2.0, 3.0]]])
    """
    if not multiply_by_inputs:
        return values
    return tuple(v * (x - b) for v, x, b in zip(values, xs, bs))


class LayerSites:
    """The layers' probe sites, learned once per call: from the inspection pass, or — *deferred* — from the
    first pass (:func:`~attrfx.gradients.first_layer_grads_and_output`), which runs the whole model and so
    sees every run of each layer."""

    def __init__(self, infos: Optional[list[LayerInfo]] = None):
        self.infos = infos

    def learn(self, p: "LayerProblem", runs: list[list[Activation]], output: Any, n: int) -> None:
        """Check the layers' runs and dtypes and the target on the first pass (over ``n`` rows)."""
        infos = [site_info(p.model, layer, r, n) for layer, r in zip(p.layers, runs)]
        _check_sites(infos, at_input=False)
        check_target(output, p.target)
        self.infos = infos


class LayerProblem(NamedTuple):
    """Everything a layer method needs, validated once at the API boundary."""

    model: Callable
    layers: list[nn.Module]
    sites: LayerSites
    xs: tuple[Tensor, ...]
    args: tuple
    target: Target

    @property
    def n_examples(self) -> int:
        return self.xs[0].shape[0]

    @property
    def infos(self) -> list[LayerInfo]:
        return self.sites.infos

    def grads(self, points: Sequence[Tensor], times: int = 1) -> tuple[list[Activation], list[Activation]]:
        """``(h, ∂F/∂h)`` per layer at ``points``, which stack ``times`` copies of the batch (the first call
        of a deferred problem learns the layers from its pass)."""
        args, target = repeat_args(self.args, self.n_examples, times), self.target.repeat(times)
        if self.infos is None:
            try:
                acts, grads, _ = first_layer_grads_and_output(self.model, self.layers, points, args, target,
                                                              functools.partial(self.sites.learn, self))
                return acts, grads
            except RuntimeError as err:  # an inference tensor: inspect, then differentiate through torch.func
                if not inference_tensors_refused(err):
                    raise
                self.sites.infos = inspected_sites(self.model, self.layers, self.xs, self.args, False, self.target)
        return layer_grads(self.model, self.infos, points, args, target)

    def output(self, xs: Sequence[Tensor]) -> Tensor:
        """``F`` per example at ``xs`` (no gradients)."""
        return select_target(call_model(self.model, xs, self.args), self.target)


def layer_problem(model: Callable, layers: Sequence[Any], inputs: Inputs, target: Any, additional_forward_args: Any,
                  at_input: bool, *, deferrable: bool = False) -> LayerProblem:
    """Validate and set up a layer attribution (one small inspection pass of the model, or none).

    The pass runs on an empty batch where it can (:func:`~attrfx.probe.inspect`): the layers'
    shapes, their run counts and the output's shape (all that :func:`check_target` reads) need no
    real rows (models in training mode and plain functions take ``min(2, N)`` real rows).
    ``deferrable`` (methods whose work is :meth:`LayerProblem.grads`) skips it where the first real
    pass can do its checks: plain autograd, an ``nn.Module`` in eval mode, the layers' outputs.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> p = layer_problem(net, ["1"], torch.ones(4, 2), 0, None, False)
        >>> acts, grads = p.grads(p.xs)   # per layer, a tuple of tensors [N, ...]
        >>> [site.shapes for site in p.infos], acts[0][0].shape, grads[0][0].shape
        ([((3,),)], torch.Size([4, 3]), torch.Size([4, 3]))
    """
    xs, _ = as_tuple(inputs)
    args = format_args(additional_forward_args)
    if not layers:
        raise bad_value("layer", "a layer or a non-empty list of layers", "an empty list")
    modules = [resolve_layer(model, layer) for layer in layers]
    target = format_target(target, xs[0].shape[0])
    if deferrable and not at_input and first_pass_checks(model):
        return LayerProblem(model, modules, LayerSites(), xs, args, target)
    return LayerProblem(model, modules, LayerSites(inspected_sites(model, modules, xs, args, at_input, target)), xs,
                        args, target)


def inspected_sites(model: Callable, modules: Sequence[nn.Module], xs: Sequence[Tensor], args: tuple,
                    at_input: bool, target: Target) -> list[LayerInfo]:
    """The layers' probe sites from the inspection pass, with the layers and the target checked.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> [s.shapes for s in inspected_sites(net, [net[1]], (torch.ones(4, 2),), (), False, Target((0,), None))]
        [((3,),)]
        >>> inspected_sites(net, [net[1]], (torch.ones(4, 2),), (), False, Target((1,), None))
        Traceback (most recent call last):
        ...
        attrfx._errors.AttrfxValueError: `target` must be in range for the model output of shape (N, 1); got 1 for dimension 1 of size 1.
    """
    seen = inspect(model, modules, xs, args, at_input=at_input, empty=True)
    _check_sites(seen.sites, at_input)
    check_target(seen.output, target)
    return seen.sites


def _check_sites(sites: Sequence[LayerInfo], at_input: bool) -> None:
    for site in sites:
        if not all(d.is_floating_point for d in site.dtypes):
            raise bad_value("layer", "a layer whose activation is floating-point, to take gradients at it",
                            f"layer {site.name} whose {'input' if at_input else 'output'} has dtype "
                            f"{', '.join(map(str, site.dtypes))}")


def as_layer_result(values: Sequence[Tensor]) -> Union[Tensor, tuple[Tensor, ...]]:
    """A tensor for a one-tensor activation, a tuple otherwise.

    Example:
        >>> t = torch.zeros(2, 3)
        >>> as_layer_result([t]) is t, len(as_layer_result([t, t]))
        (True, 2)
    """
    return values[0] if len(values) == 1 else tuple(values)


def require_module(model: Any) -> None:
    """The error for a rule-based method given a plain function: its rules hook the model's modules.

    Example:
        >>> require_module(nn.ReLU())
        >>> require_module(torch.relu)
        Traceback (most recent call last):
        ...
        attrfx._errors.AttrfxTypeError: `model` must be an nn.Module (rule-based methods hook its nonlinearity modules; wrap a plain function in an nn.Module whose nonlinearities are submodules); got builtin_function_or_method.
    """
    if not isinstance(model, nn.Module):
        raise bad_type("model", "an nn.Module (rule-based methods hook its nonlinearity modules; "
                       "wrap a plain function in an nn.Module whose nonlinearities are submodules)", model)


def rule_problem(model: Any, layer: Any, inputs: Any, selector: Any, additional_forward_args: Any,
                  at_input: bool) -> NeuronProblem:
    """Set up a rule-based attribution: an ``nn.Module`` model; only the neuron's gradient is needed (no target),
    so the layer is learned from the first pass where it can be (``deferrable``), which runs only to the layer.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU()).eval()
        >>> p = rule_problem(net, "1", torch.ones(4, 2), 1, None, False)
        >>> p.neurons is None, p.result(p.input_grads(p.xs)).shape, p.info.shapes   # learned on the first pass
        (True, torch.Size([4, 2]), ((3,),))
    """
    require_module(model)
    return neuron_problem(model, layer, inputs, selector, additional_forward_args, at_input, batch_total_ok=True,
                          deferrable=True, narrows=True)


def gradient_under(rule_map: rules.RuleMap, p: Union[NeuronProblem, OutputProblem]) -> Any:
    """``∂n/∂x`` (or ``∂F/∂x``) in the inputs' structure while ``rule_map`` overrides the model's nonlinearities.

    Example:
        >>> p = output_problem(nn.Sequential(nn.ReLU()), torch.tensor([[-1.0, 2.0]]), 0, None)
        >>> gradient_under(rules.DECONVOLUTION, p).tolist(), gradient_under(rules.GUIDED_BACKPROP, p).tolist()
        ([[1.0, 0.0]], [[0.0, 0.0]])
    """
    with rules.applied(p.model, rule_map):
        return p.result(p.input_grads(p.xs))
