"""Hypothesis strategies for property-testing attribution pipelines (needs ``hypothesis``).

Models are built from a drawn seed, so a failing example shrinks to a small
architecture and replays exactly. Tensors come from ``torch.randn`` with a
drawn seed (fast) rather than element-wise drawing. :func:`inplace_mlps` draws
models that change tensors in place (in-place activations, ``out += h``
residuals, in-place centring, pre-norm residuals); ``cases(..., at_input=True)``
picks a layer whose *input* to attribute to.

Example:
    >>> from hypothesis import given, settings
    >>> import attrfx
    >>> @settings(max_examples=5, deadline=None)
    ... @given(case=mlp_cases())
    ... def test_completeness(case):
    ...     attr = attrfx.neuron_integrated_gradients(case.model, case.layer, case.inputs, 0)
    ...     diff = attrfx.axioms.neuron_difference(case.model, case.layer, case.inputs, 0)
    ...     assert attrfx.axioms.completeness_gap(attr, diff).abs().max() < 1e-4
    >>> test_completeness()
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple, Optional, Sequence

import torch
from hypothesis import strategies as st
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "softplus": nn.Softplus,
               "elu": nn.ELU}
SMOOTH = ("tanh", "sigmoid", "gelu", "softplus")
INPLACE_ACTIVATIONS = {"relu_": partial(nn.ReLU, inplace=True), "leaky_relu_": partial(nn.LeakyReLU, 0.1, inplace=True),
                       "hardtanh_": partial(nn.Hardtanh, inplace=True), "elu_": partial(nn.ELU, inplace=True),
                       "relu6_": partial(nn.ReLU6, inplace=True)}
"""Activation modules that overwrite their input (named after torch's in-place functions)."""
INPLACE_MIX = tuple(INPLACE_ACTIVATIONS) + ("tanh",)
"""The in-place activations and one that is not (a layer whose input an in-place op made, and nothing overwrites)."""


class Case(NamedTuple):
    """A model to attribute, a layer in it (dotted name), and inputs for it."""

    model: nn.Module
    layer: str
    inputs: torch.Tensor
    n_outputs: int
    layer_shape: tuple[int, ...]


def tensors(shape: Sequence[int], *, dtype: torch.dtype = torch.float64, scale: float = 1.0) -> st.SearchStrategy:
    """Gaussian tensors of ``shape`` (scaled), from a drawn seed."""
    return st.integers(0, 2**31 - 1).map(
        lambda seed: scale * torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed), dtype=dtype))


@st.composite
def mlps(draw, *, n_inputs: int = 4, n_outputs: int = 3, depth: tuple[int, int] = (1, 3),
         width: tuple[int, int] = (2, 6), activations: Sequence[str] = tuple(ACTIVATIONS),
         dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """Multilayer perceptrons ``Linear → activation → ... → Linear`` with random weights."""
    sizes = [n_inputs] + [draw(st.integers(*width)) for _ in range(draw(st.integers(*depth)))] + [n_outputs]
    torch_seed = draw(st.integers(0, 2**31 - 1))
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[draw(st.sampled_from(list(activations)))]())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed)
        model = nn.Sequential(*layers).to(dtype)
    return model.eval()


@st.composite
def convnets(draw, *, channels: int = 2, size: int = 6, n_outputs: int = 3,
             activations: Sequence[str] = tuple(ACTIVATIONS), dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """Small conv nets ``Conv2d → activation → [pool] → Conv2d → activation → Flatten → Linear``."""
    c1, c2 = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    act = lambda: ACTIVATIONS[draw(st.sampled_from(list(activations)))]()
    pool = draw(st.booleans())
    side = (size - 2) // 2 if pool else size - 2
    layers = [nn.Conv2d(channels, c1, 3), act()] + ([nn.MaxPool2d(2)] if pool else [])
    layers += [nn.Conv2d(c1, c2, 3, padding=1), act(), nn.Flatten(), nn.Linear(c2 * side * side, n_outputs)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(draw(st.integers(0, 2**31 - 1)))
        model = nn.Sequential(*layers).to(dtype)
    return model.eval()


class InplaceBlock(nn.Module):
    """``act(fc(h))`` on ``width`` features, with in-place changes of ``fc``'s output before ``act``.

    ``centre``: ``out -= out.mean(-1); out.mul_(2)`` (every feature then reads every
    row of ``fc``); ``residual="post"``: ``out += h`` (torchvision's BasicBlock);
    ``residual="pre"``: ``act(fc(norm(h)))``, which :class:`InplaceMLP` adds to ``h``
    outside any module (a pre-norm residual: the norm's input is read again after
    the norm, and the next layer's input is made by an op). In-place ops come
    before ``act``, so none overwrites a tensor autograd saved.
    """

    def __init__(self, width: int, residual: Optional[str], centre: bool, act: nn.Module):
        super().__init__()
        self.residual, self.centre = residual, centre
        if residual == "pre":
            self.norm = nn.LayerNorm(width)
        self.fc, self.act = nn.Linear(width, width), act

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.fc(self.norm(h) if self.residual == "pre" else h)
        if self.centre:
            out -= out.mean(-1, keepdim=True)
            out.mul_(2.0)
        if self.residual == "post":
            out += h
        return self.act(out)

    def extra_repr(self) -> str:
        return f"residual={self.residual!r}, centre={self.centre}"


class InplaceMLP(nn.Module):
    """``Linear``, :class:`InplaceBlock` s, ``Linear``; layers ``inp``, ``blocks.0.fc``, ..., ``out``.

    Example:
        >>> net = InplaceMLP(4, 3, 2, [("pre", True, "relu_"), (None, False, "tanh")])
        >>> hidden_layers(net)
        ['inp', 'blocks.0.norm', 'blocks.0.fc', 'blocks.0.act', 'blocks.1.fc', 'blocks.1.act']
        >>> input_layers(net)
        ['inp', 'blocks.0.norm', 'blocks.0.fc', 'blocks.1.fc', 'blocks.1.act', 'out']
    """

    def __init__(self, n_inputs: int, width: int, n_outputs: int, blocks: Sequence[tuple[Optional[str], bool, str]]):
        super().__init__()
        self.inp = nn.Linear(n_inputs, width)
        self.blocks = nn.ModuleList(InplaceBlock(width, residual, centre, _activation(act))
                                    for residual, centre, act in blocks)
        self.out = nn.Linear(width, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h) if block.residual == "pre" else block(h)
        return self.out(h)


def _activation(name: str) -> nn.Module:
    return (INPLACE_ACTIVATIONS.get(name) or ACTIVATIONS[name])()


@st.composite
def inplace_mlps(draw, *, n_inputs: int = 4, n_outputs: int = 3, depth: tuple[int, int] = (1, 3),
                 width: tuple[int, int] = (2, 6), activations: Sequence[str] = INPLACE_MIX,
                 residuals: Sequence[Optional[str]] = (None, "post", "pre"),
                 dtype: torch.dtype = torch.float64) -> InplaceMLP:
    """MLPs whose forward changes tensors in place (:class:`InplaceMLP`): each block draws a residual from
    ``residuals``, whether to centre in place, and an activation from ``activations`` (names in
    :data:`INPLACE_ACTIVATIONS` or :data:`ACTIVATIONS`)."""
    size = draw(st.integers(*width))
    block = st.tuples(st.sampled_from(list(residuals)), st.booleans(), st.sampled_from(list(activations)))
    blocks = draw(st.lists(block, min_size=depth[0], max_size=depth[1]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(draw(st.integers(0, 2**31 - 1)))
        return InplaceMLP(n_inputs, size, n_outputs, blocks).to(dtype).eval()


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if name and not next(m.children(), None)]


def hidden_layers(model: nn.Module) -> list[str]:
    """Names of every leaf module but the last registered (attributing at the output layer is plain attribution)."""
    return [name for name, _ in _leaves(model)][:-1]


def input_layers(model: nn.Module) -> list[str]:
    """Names of the leaf modules whose input nothing overwrites after they read it: all but in-place activations
    (in the models drawn here, in-place ops change only a Linear's output before an activation reads it). So a
    forward pre-hook captures the input as the layer receives it, and autograd gives the gradient there.
    """
    return [name for name, m in _leaves(model) if not getattr(m, "inplace", False)]


@st.composite
def cases(draw, models: st.SearchStrategy, input_shape: Sequence[int], *, batch: tuple[int, int] = (1, 4),
          dtype: torch.dtype = torch.float64, n_outputs: int = 3, at_input: bool = False) -> Case:
    """A model from ``models``, one of its hidden layers (``at_input``: one of its :func:`input_layers`, and
    ``layer_shape`` is its input's), and a batch of inputs."""
    model = draw(models)
    layer = draw(st.sampled_from(input_layers(model) if at_input else hidden_layers(model)))
    inputs = draw(tensors((draw(st.integers(*batch)),) + tuple(input_shape), dtype=dtype))
    with torch.no_grad():
        shape = _layer_shape(model, layer, inputs, at_input)
    return Case(model, layer, inputs, n_outputs, shape)


def mlp_cases(*, n_inputs: int = 4, n_outputs: int = 3, activations: Sequence[str] = SMOOTH, **kwargs) -> st.SearchStrategy:
    """Cases on MLPs (smooth activations by default, so path integrals converge fast)."""
    return cases(mlps(n_inputs=n_inputs, n_outputs=n_outputs, activations=activations), (n_inputs,),
                 n_outputs=n_outputs, **kwargs)


def convnet_cases(*, channels: int = 2, size: int = 6, n_outputs: int = 3, activations: Sequence[str] = SMOOTH,
                  **kwargs) -> st.SearchStrategy:
    """Cases on small conv nets."""
    return cases(convnets(channels=channels, size=size, n_outputs=n_outputs, activations=activations),
                 (channels, size, size), n_outputs=n_outputs, **kwargs)


def inplace_mlp_cases(*, n_inputs: int = 4, n_outputs: int = 3, activations: Sequence[str] = INPLACE_MIX,
                      residuals: Sequence[Optional[str]] = (None, "post", "pre"), **kwargs) -> st.SearchStrategy:
    """Cases on :func:`inplace_mlps` (``at_input=True``: at a layer's input). Pre-norm blocks can be steep
    (a LayerNorm of nearly equal features): leave ``"pre"`` out of ``residuals`` where a path integral must converge."""
    return cases(inplace_mlps(n_inputs=n_inputs, n_outputs=n_outputs, activations=activations, residuals=residuals),
                 (n_inputs,), n_outputs=n_outputs, **kwargs)


def _layer_shape(model: nn.Module, layer: str, inputs: torch.Tensor, at_input: bool = False) -> tuple[int, ...]:
    seen = []
    module = model.get_submodule(layer)
    handle = (module.register_forward_pre_hook(lambda m, i: seen.append(i[0].shape[1:])) if at_input
              else module.register_forward_hook(lambda m, i, o: seen.append(o.shape[1:])))
    try:
        model(inputs[:1])
    finally:
        handle.remove()
    return tuple(seen[0])


def selectors(layer_shape: Sequence[int], *, callables: bool = True, lists: bool = True) -> st.SearchStrategy:
    """Neuron selectors valid for a layer of per-example shape ``layer_shape``.

    Ints (2-D layers), tuples of ints and slices, callables, and lists of these.
    """
    index = st.tuples(*[st.one_of(st.integers(0, n - 1), _slices(n)) for n in layer_shape])
    single = [index]
    if len(layer_shape) == 1:
        single.append(st.integers(0, layer_shape[0] - 1))
    if callables:
        flat = int(torch.tensor(layer_shape).prod())
        single.append(st.integers(0, flat - 1).map(_flat_neuron))
    one = st.one_of(*single)
    return st.one_of(one, st.lists(one, min_size=2, max_size=3)) if lists else one


def _slices(n: int) -> st.SearchStrategy:
    return st.integers(0, n - 1).flatmap(lambda start: st.integers(start + 1, n).map(lambda stop: slice(start, stop)))


class _flat_neuron:
    """A callable selector: the ``i``-th neuron of the flattened activation (prints readably)."""

    def __init__(self, i: int):
        self.i = i

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        return h.reshape(h.shape[0], -1)[:, self.i]

    def __repr__(self) -> str:
        return f"flat_neuron({self.i})"


def targets(n_outputs: int, batch: int) -> st.SearchStrategy:
    """Targets for a model with ``n_outputs`` logits: int, 0-d tensor, per-example tensor or list."""
    label = st.integers(0, n_outputs - 1)
    per_example = st.lists(label, min_size=batch, max_size=batch)
    return st.one_of(label, label.map(torch.tensor), per_example, per_example.map(torch.tensor))


def baselines_for(inputs: torch.Tensor) -> st.SearchStrategy:
    """Every baseline form: None, a number, a tensor like the inputs, or one broadcast over the batch."""
    shape, dtype = tuple(inputs.shape), inputs.dtype
    return st.one_of(st.none(), st.floats(-1, 1, allow_nan=False, width=32), tensors(shape, dtype=dtype),
                     tensors((1,) + shape[1:], dtype=dtype))


def rules() -> st.SearchStrategy:
    """The names of the quadrature rules."""
    return st.sampled_from(["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre"])


def linear_models(*, n_inputs: int = 4, n_outputs: int = 3, dtype: torch.dtype = torch.float64) -> st.SearchStrategy:
    """Linear maps ``Sequential(Linear, Linear)`` (a hidden layer with no activation)."""
    return _linear(n_inputs, n_outputs, dtype)


@st.composite
def _linear(draw, n_inputs: int, n_outputs: int, dtype: torch.dtype) -> nn.Sequential:
    hidden = draw(st.integers(1, 5))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(draw(st.integers(0, 2**31 - 1)))
        return nn.Sequential(nn.Linear(n_inputs, hidden), nn.Linear(hidden, n_outputs)).to(dtype).eval()
