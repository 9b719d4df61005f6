"""Hypothesis strategies for property-testing attribution pipelines (needs ``hypothesis``).

Models are built from a drawn seed, so a failing example shrinks to a small
architecture and replays exactly. Tensors come from ``torch.randn`` with a
drawn seed (fast) rather than element-wise drawing.

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

from typing import NamedTuple, Sequence

import torch
from hypothesis import strategies as st
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU, "softplus": nn.Softplus,
               "elu": nn.ELU}
SMOOTH = ("tanh", "sigmoid", "gelu", "softplus")


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


def hidden_layers(model: nn.Sequential) -> list[str]:
    """Names of every layer but the last (attributing at the output layer is plain attribution)."""
    return [name for name, _ in model.named_children()][:-1]


@st.composite
def cases(draw, models: st.SearchStrategy, input_shape: Sequence[int], *, batch: tuple[int, int] = (1, 4),
          dtype: torch.dtype = torch.float64, n_outputs: int = 3) -> Case:
    """A model from ``models``, one of its hidden layers, and a batch of inputs."""
    model = draw(models)
    layer = draw(st.sampled_from(hidden_layers(model)))
    inputs = draw(tensors((draw(st.integers(*batch)),) + tuple(input_shape), dtype=dtype))
    with torch.no_grad():
        shape = _layer_shape(model, layer, inputs)
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


def _layer_shape(model: nn.Module, layer: str, inputs: torch.Tensor) -> tuple[int, ...]:
    seen = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.append(o.shape[1:]))
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
