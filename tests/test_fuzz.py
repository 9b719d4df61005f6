"""Argument fuzzing of every public method: it agrees with Captum 0.9.0, or raises a clear attrfx error.

Each example draws one method's whole argument space (model form, shapes, dtype,
batch size including 1, tuple inputs, layer, selector/target/baselines forms,
n_steps, method, masks, flags, ...). Then, with some probability, one argument
is replaced by a bad value. A valid example must equal Captum's answer (SPEC
tolerances; Captum × n/(n−1) for the trapezoid rule of neuron IG and neuron
conductance; GradientSHAP only where the sample cannot matter); an invalid one
must raise ``AttrfxValueError``/``AttrfxTypeError`` whose message starts with the
method's name and names the replaced argument. Anything else (an IndexError or
a shape error from deep inside torch, an answer to a bad argument) fails.
"""

from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple, Optional

import pytest
import torch
from captum.attr import (LayerAttribution, LayerConductance, LayerGradCam, LayerGradientXActivation,
                         NeuronConductance, NeuronDeconvolution, NeuronDeepLift, NeuronDeepLiftShap,
                         NeuronFeatureAblation, NeuronGradient, NeuronGradientShap, NeuronGuidedBackprop,
                         NeuronIntegratedGradients)
from hypothesis import given, strategies as st
from torch import nn

import attrfx
from _models_rules import Chain, ELEMENTWISE
from attrfx.testing import _flat_neuron
from models import ConvNet, MLP, MultiInput, seeded
from parity import TOLERANCE, flat, seeded_coalitions, trapezoid_scale

METHODS = ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre"]


# --- models -----------------------------------------------------------------------------------------------------

class Grid(nn.Module):
    """Outputs of shape (N, 2, 3): targets are tuples."""

    def __init__(self):
        super().__init__()
        self.fc, self.act, self.head, self.grid = nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 6), nn.Unflatten(1, (2, 3))

    def forward(self, x):
        return self.grid(self.head(self.act(self.fc(x))))


class Tokens(nn.Module):
    """Integer token ids (N, 4) → embedding → 2 logits."""

    def __init__(self):
        super().__init__()
        self.emb, self.act, self.fc = nn.Embedding(9, 3), nn.Tanh(), nn.Linear(12, 2)

    def forward(self, ids):
        return self.fc(self.act(self.emb(ids)).flatten(1))


def linear():
    return nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 2))


class Additive(nn.Module):
    """``F(x) = W tanh(x) + b``: a sum of one-feature terms, so every ordering of Shapley value sampling agrees."""

    def __init__(self):
        super().__init__()
        self.act, self.out = nn.Tanh(), nn.Linear(5, 3)

    def forward(self, x):
        return self.out(self.act(x))


class Spec(NamedTuple):
    """A model family: factory, per-example input shapes, layers, outputs (shape past N), extra args."""

    factory: Callable[[], nn.Module]
    inputs: tuple[tuple[int, ...], ...]
    layers: tuple[str, ...]
    outputs: tuple[int, ...]
    args: bool = False        # takes (scale, flag) additional forward args
    tokens: bool = False      # integer inputs
    neuron_layers: tuple[str, ...] = ()  # layers every input reaches (Captum raises for an unreachable input)


SPECS = {
    "mlp": Spec(MLP, ((5,),), ("fc1", "act1", "fc2", "act2", "fc3"), (3,)),
    "conv": Spec(ConvNet, ((2, 8, 8),), ("conv1", "relu1", "pool", "conv2", "act2", "fc"), (4,)),
    "multi": Spec(MultiInput, ((4,), (3,)), ("fc_a", "fc_b", "act", "out"), (2,), args=True,
                  neuron_layers=("act", "out")),
    "grid": Spec(Grid, ((5,),), ("fc", "act", "head"), (2, 3)),
    "linear": Spec(linear, ((5,),), ("0", "1"), (2,)),
    "additive": Spec(Additive, ((5,),), ("act", "out"), (3,)),
    "tokens": Spec(Tokens, ((4,),), ("emb", "act", "fc"), (2,), tokens=True),
    **{f"chain_{act.__name__}": Spec(lambda act=act: Chain(act), ((5,),), ("fc1", "act1", "fc2", "act2", "fc3"), (3,))
       for act in ELEMENTWISE},
}
CHAINS = tuple(k for k in SPECS if k.startswith("chain_"))


def gen(seed):
    return torch.Generator().manual_seed(seed)


class Case(NamedTuple):
    spec: Spec
    model: nn.Module
    layer: str
    xs: tuple[torch.Tensor, ...]
    inputs: Any           # what the user passes: a tensor or a tuple
    afa: Any
    dtype: torch.dtype
    at_input: bool
    site: tuple[int, ...]  # per-example shape of the layer activation (output, or input with at_input)


@st.composite
def cases(draw, families, *, neuron=False, afa=True):
    name = draw(st.sampled_from(families), label="model")
    spec = SPECS[name]
    if neuron and spec.neuron_layers:
        spec = spec._replace(layers=spec.neuron_layers)
    dtype = draw(st.sampled_from([torch.float64, torch.float32]), label="dtype")
    model = seeded(spec.factory, seed=draw(st.integers(0, 3)), dtype=dtype)
    batch = draw(st.integers(1, 4), label="batch")
    seed = draw(st.integers(0, 2**16))
    if spec.tokens:
        xs = (torch.randint(0, 9, (batch,) + spec.inputs[0], generator=gen(seed)),)
    else:
        xs = tuple(torch.randn((batch,) + s, generator=gen(seed + i), dtype=dtype) for i, s in enumerate(spec.inputs))
    single = len(xs) == 1 and draw(st.booleans(), label="tensor, not 1-tuple")
    inputs = xs[0] if single else xs
    afa = None
    if spec.args and afa:
        scale = torch.randn(batch, 1, generator=gen(seed + 7), dtype=dtype)
        afa = draw(st.sampled_from([None, "scale", "both"]), label="additional_forward_args")
        afa = {None: None, "scale": scale, "both": (scale, True)}[afa]
    layer = draw(st.sampled_from(spec.layers), label="layer")
    at_input = not (spec.tokens and layer == "emb") and draw(st.booleans(), label="at_input")
    site = activation_shape(model, layer, xs, afa, at_input)
    return Case(spec, model, layer, xs, inputs, afa, dtype, at_input, site)


def activation_shape(model, layer, xs, afa, at_input):
    seen = []
    module = model.get_submodule(layer)
    hook = (module.register_forward_pre_hook(lambda m, i: seen.append(i[0].shape[1:])) if at_input
            else module.register_forward_hook(lambda m, i, o: seen.append(o.shape[1:])))
    args = () if afa is None else afa if isinstance(afa, tuple) else (afa,)
    try:
        with torch.no_grad():
            model(*xs, *args)
    finally:
        hook.remove()
    return tuple(seen[0])


# --- argument forms ------------------------------------------------------------------------------------------------

def one_selector(draw, shape):
    index = tuple(draw(st.one_of(st.integers(-n, n - 1), st.integers(0, n - 1).flatmap(
        lambda a, n=n: st.tuples(st.integers(a + 1, n), st.sampled_from([None, 1, 2])).map(
            lambda t, a=a: slice(a, t[0], t[1]))))) for n in shape)
    forms = [index, _flat_neuron(draw(st.integers(0, max(1, int(torch.tensor(shape).prod())) - 1)))]
    if len(shape) == 1:
        forms.append(index[0] if isinstance(index[0], int) else draw(st.integers(0, shape[0] - 1)))
    return draw(st.sampled_from(forms), label="selector form")


def selector(draw, shape):
    if draw(st.booleans(), label="list of selectors"):
        return [one_selector(draw, shape) for _ in range(draw(st.integers(1, 3)))]
    return one_selector(draw, shape)


def target(draw, case):
    outs, batch = case.spec.outputs, case.xs[0].shape[0]
    if len(outs) == 2:
        pair = st.tuples(st.integers(0, outs[0] - 1), st.integers(0, outs[1] - 1))
        return draw(st.one_of(pair, st.lists(pair, min_size=batch, max_size=batch)), label="target")
    label = st.integers(0, outs[0] - 1)
    per_example = st.lists(label, min_size=batch, max_size=batch)
    return draw(st.one_of(label, st.integers(-outs[0], -1), label.map(lambda t: (t,)), label.map(torch.tensor),
                          per_example, per_example.map(torch.tensor)), label="target")


def baselines(draw, case):
    def one(x):
        form = draw(st.sampled_from(["zero-int", "float", "full", "row"]), label="baseline form")
        seed = draw(st.integers(0, 99))
        if form == "zero-int":
            return 0
        if form == "float":
            return draw(st.floats(-1, 1, width=32))
        shape = x.shape if form == "full" else (1,) + tuple(x.shape[1:])
        return 0.5 * torch.randn(shape, generator=gen(seed), dtype=x.dtype)

    if draw(st.booleans(), label="baselines=None"):
        return None
    bs = tuple(one(x) for x in case.xs)
    return bs[0] if isinstance(case.inputs, torch.Tensor) and draw(st.booleans()) else bs


def distribution(draw, case, rows=(1, 3), same_rows=False):
    m = draw(st.integers(*rows), label="baseline samples")
    seed = draw(st.integers(0, 99))
    out = []
    for x in case.xs:
        d = 0.5 * torch.randn((1 if same_rows else m,) + tuple(x.shape[1:]), generator=gen(seed), dtype=x.dtype)
        out.append(d.expand((m,) + tuple(x.shape[1:])).clone())
    return out[0] if isinstance(case.inputs, torch.Tensor) else tuple(out)


def common(case):
    return dict(model=case.model, layer=case.layer, inputs=case.inputs, additional_forward_args=case.afa)


# --- one plan per public method: valid arguments, how Captum answers, which bad values apply ----------------------

class Plan(NamedTuple):
    kwargs: dict
    captum: Optional[Callable[[dict], Any]]  # kwargs → Captum's answer (None: no oracle for this example)
    dtype: torch.dtype
    scale: float = 1.0
    bad: tuple = ()                          # argument names a bad value can replace


def captum_neuron(cls, attribute_kwargs, ctor=()):
    """Captum's answer for a neuron method, one call per selector for a list (stacked)."""

    def run(kw):
        sel = kw["selector"]
        instance = cls(kw["model"], kw["model"].get_submodule(kw["layer"]), **{k: kw[k] for k in ctor})
        call = lambda s: instance.attribute(kw["inputs"], s, **{k: kw[k] for k in attribute_kwargs if k in kw})
        if not isinstance(sel, list):
            return call(sel)
        each = [call(s) for s in sel]
        if isinstance(each[0], torch.Tensor):
            return torch.stack(each)
        return tuple(torch.stack(parts) for parts in zip(*each))

    return run


NEURON_BAD = ("layer", "inputs", "selector")


def plan_neuron_gradient(draw):
    case = draw(cases(("mlp", "conv", "multi", "grid"), neuron=True))
    kw = dict(common(case), selector=selector(draw, case.site), attribute_to_neuron_input=case.at_input)
    return Plan(kw, captum_neuron(NeuronGradient, ["additional_forward_args", "attribute_to_neuron_input"]),
                case.dtype, bad=NEURON_BAD)


def path_args(draw, n_least=1):
    method = draw(st.sampled_from(METHODS), label="method")
    n_steps = draw(st.integers(n_least if method == "gausslegendre" else 2, 6), label="n_steps")
    ibs = draw(st.one_of(st.none(), st.integers(1, 12)), label="internal_batch_size")
    return dict(method=method, n_steps=n_steps, internal_batch_size=ibs)


PATH_ATTRS = ["baselines", "additional_forward_args", "n_steps", "method", "internal_batch_size",
              "attribute_to_neuron_input"]


def plan_neuron_integrated_gradients(draw):
    case = draw(cases(("mlp", "conv", "multi", "grid"), neuron=True))
    kw = dict(common(case), selector=selector(draw, case.site), baselines=baselines(draw, case),
              attribute_to_neuron_input=case.at_input, multiply_by_inputs=draw(st.booleans()), **path_args(draw))
    return Plan(kw, captum_neuron(NeuronIntegratedGradients, PATH_ATTRS, ctor=["multiply_by_inputs"]), case.dtype,
                trapezoid_scale(kw["method"], kw["n_steps"]),
                bad=NEURON_BAD + ("baselines", "n_steps", "method", "internal_batch_size"))


def plan_neuron_conductance(draw):
    case = draw(cases(("mlp", "conv", "multi", "grid"), neuron=True))
    kw = dict(common(case), selector=selector(draw, case.site), baselines=baselines(draw, case),
              target=target(draw, case), attribute_to_neuron_input=case.at_input,
              multiply_by_inputs=draw(st.booleans()), **path_args(draw))
    return Plan(kw, captum_neuron(NeuronConductance, PATH_ATTRS + ["target"], ctor=["multiply_by_inputs"]),
                case.dtype, trapezoid_scale(kw["method"], kw["n_steps"]),
                bad=NEURON_BAD + ("baselines", "target", "n_steps", "method", "internal_batch_size"))


def plan_neuron_gradient_shap(draw):
    """The neuron is linear in the inputs; with input noise or differing baselines only the local form is exact."""
    case = draw(cases(("linear",), neuron=True))
    multiply = draw(st.booleans(), label="multiply_by_inputs")
    stdevs = draw(st.sampled_from([0.0, 0.3]), label="stdevs") if not multiply else 0.0
    dist = distribution(draw, case, same_rows=multiply)
    if draw(st.booleans(), label="callable baselines"):
        dist = (lambda d: lambda *inputs: d)(dist)
    kw = dict(common(case), selector=selector(draw, case.site), baselines=dist, n_samples=draw(st.integers(1, 4)),
              stdevs=stdevs, attribute_to_neuron_input=case.at_input, multiply_by_inputs=multiply,
              generator=gen(draw(st.integers(0, 99))))
    return Plan(kw, captum_neuron(NeuronGradientShap, ["baselines", "n_samples", "stdevs", "additional_forward_args",
                                                       "attribute_to_neuron_input"], ctor=["multiply_by_inputs"]),
                case.dtype, bad=NEURON_BAD + ("baselines", "n_samples", "stdevs", "generator"))


def custom_func(draw):
    arity = draw(st.integers(0, 3), label="custom_attribution_func arity")
    return [None,
            lambda m: tuple(2 * t for t in m),
            lambda m, x: tuple(t * v for t, v in zip(m, x)),
            lambda m, x, b: tuple(t * (v - c) for t, v, c in zip(m, x, b))][arity]


RULE_FAMILIES = ("mlp", "multi") + CHAINS


def plan_neuron_deeplift(draw):
    case = draw(cases(RULE_FAMILIES, neuron=True))
    kw = dict(common(case), selector=selector(draw, case.site), baselines=baselines(draw, case),
              attribute_to_neuron_input=case.at_input, custom_attribution_func=custom_func(draw),
              multiply_by_inputs=draw(st.booleans()))
    attrs = ["baselines", "additional_forward_args", "attribute_to_neuron_input", "custom_attribution_func"]
    return Plan(kw, captum_neuron(NeuronDeepLift, attrs, ctor=["multiply_by_inputs"]), case.dtype,
                bad=NEURON_BAD + ("baselines", "model", "custom_attribution_func"))


def plan_neuron_deeplift_shap(draw):
    case = draw(cases(RULE_FAMILIES, neuron=True, afa=False))  # Captum's DeepLiftShap mis-expands extra args
    kw = dict(common(case), selector=selector(draw, case.site), baselines=distribution(draw, case, rows=(2, 3)),
              attribute_to_neuron_input=case.at_input, custom_attribution_func=custom_func(draw),
              multiply_by_inputs=draw(st.booleans()))
    attrs = ["baselines", "additional_forward_args", "attribute_to_neuron_input", "custom_attribution_func"]
    return Plan(kw, captum_neuron(NeuronDeepLiftShap, attrs, ctor=["multiply_by_inputs"]), case.dtype,
                bad=NEURON_BAD + ("baselines", "model", "custom_attribution_func"))


def plan_rule(cls):
    def plan(draw):
        case = draw(cases(("mlp", "conv", "multi"), neuron=True))
        kw = dict(common(case), selector=selector(draw, case.site), attribute_to_neuron_input=case.at_input)
        return Plan(kw, captum_neuron(cls, ["additional_forward_args", "attribute_to_neuron_input"]), case.dtype,
                    bad=NEURON_BAD + ("model",))
    return plan


def feature_mask(draw, xs, single, label="feature_mask"):
    """A mask per tensor of ``xs`` (ids shared across them, not from 0), in the user's structure, or None."""
    masks = []
    for x in xs:
        form = draw(st.sampled_from(["none", "shared", "per-example", "scalar"]), label=f"{label} form")
        width = x[0].numel()
        ids = torch.randint(0, 4, (width,), generator=gen(draw(st.integers(0, 99))))
        masks.append({"none": None, "shared": ids.reshape((1,) + tuple(x.shape[1:])),
                      "per-example": torch.stack([ids.roll(i) for i in range(x.shape[0])]).reshape(x.shape),
                      "scalar": torch.tensor(draw(st.integers(0, 3)))}[form])
    mask = None if all(m is None for m in masks) else tuple(
        m if m is not None else torch.arange(x[0].numel()).reshape((1,) + tuple(x.shape[1:])) + 10 * (i + 1)
        for i, (m, x) in enumerate(zip(masks, xs)))
    return mask[0] if mask is not None and single else mask


def perturbation_baselines(draw, case):
    return baselines(draw, case) if not case.spec.tokens else draw(st.sampled_from([None, 0, 3]), label="baselines")


def plan_neuron_feature_ablation(draw):
    case = draw(cases(("mlp", "conv", "multi", "tokens"), neuron=True))
    mask = feature_mask(draw, case.xs, isinstance(case.inputs, torch.Tensor))
    base = perturbation_baselines(draw, case)
    kw = dict(common(case), selector=selector(draw, case.site), baselines=base, feature_mask=mask,
              attribute_to_neuron_input=case.at_input, perturbations_per_eval=draw(st.integers(1, 5)))
    attrs = ["baselines", "additional_forward_args", "feature_mask", "attribute_to_neuron_input",
             "perturbations_per_eval"]
    return Plan(kw, captum_neuron(NeuronFeatureAblation, attrs), case.dtype,
                bad=NEURON_BAD + ("baselines", "feature_mask", "perturbations_per_eval"))


def captum_layer(cls, attribute_kwargs, ctor=()):
    def run(kw):
        layers = kw["layer"] if isinstance(kw["layer"], list) else [kw["layer"]]
        modules = [kw["model"].get_submodule(name) for name in layers]
        instance = cls(kw["model"], modules if isinstance(kw["layer"], list) else modules[0],
                       **{k: kw[k] for k in ctor})
        return instance.attribute(kw["inputs"], **{k: kw[k] for k in attribute_kwargs if k in kw})

    return run


LAYER_FAMILIES = ("mlp", "conv", "multi", "grid", "tokens")


def plan_layer_gradient_x_activation(draw):
    case = draw(cases(LAYER_FAMILIES))
    layer = case.layer
    if draw(st.booleans(), label="list of layers"):
        others = [n for n in case.spec.layers if n != case.layer and not (case.at_input and n == "emb")]
        layer = [layer, draw(st.sampled_from(others))]
    kw = dict(common(case), layer=layer, target=target(draw, case), attribute_to_layer_input=case.at_input,
              multiply_by_inputs=draw(st.booleans()))
    return Plan(kw, captum_layer(LayerGradientXActivation, ["target", "additional_forward_args",
                                                            "attribute_to_layer_input"], ctor=["multiply_by_inputs"]),
                case.dtype, bad=("layer", "inputs", "target"))


def plan_layer_gradcam(draw):
    case = draw(cases(LAYER_FAMILIES))
    kw = dict(common(case), target=target(draw, case), attribute_to_layer_input=case.at_input,
              relu_attributions=draw(st.booleans()), attr_dim_summation=draw(st.booleans()))
    return Plan(kw, captum_layer(LayerGradCam, ["target", "additional_forward_args", "attribute_to_layer_input",
                                                "relu_attributions", "attr_dim_summation"]),
                case.dtype, bad=("layer", "inputs", "target"))


def plan_layer_conductance(draw):
    case = draw(cases(("mlp", "conv", "multi", "grid")))
    kw = dict(common(case), baselines=baselines(draw, case), target=target(draw, case),
              attribute_to_layer_input=case.at_input, return_convergence_delta=draw(st.booleans()),
              **path_args(draw))
    attrs = ["baselines", "target", "additional_forward_args", "n_steps", "method", "internal_batch_size",
             "return_convergence_delta", "attribute_to_layer_input"]
    return Plan(kw, captum_layer(LayerConductance, attrs), case.dtype,
                bad=("layer", "inputs", "target", "baselines", "n_steps", "method", "internal_batch_size"))


def captum_output(name, attribute_kwargs, ctor=()):
    """Captum's answer for an output method (class ``name`` of captum.attr), attributed at the inputs."""
    import captum.attr

    def run(kw):
        instance = getattr(captum.attr, name)(kw["model"], **{k: kw[k] for k in ctor})
        return instance.attribute(kw["inputs"], **{k: kw[k] for k in attribute_kwargs if k in kw})

    return run


def plan_output_gradient(name, flags=()):
    def plan(draw):
        case = draw(cases(("mlp", "conv", "multi", "grid")))
        kw = dict(model=case.model, inputs=case.inputs, additional_forward_args=case.afa, target=target(draw, case),
                  **{flag: draw(st.booleans(), label=flag) for flag in flags})
        return Plan(kw, captum_output(name, ["target", "additional_forward_args", *flags]), case.dtype,
                    bad=("inputs", "target"))
    return plan


def shap_sampling(draw, case):
    """GradientSHAP's arguments where the sample cannot matter on a linear model: the local form, or one baseline
    row without input noise (the convergence delta then too)."""
    multiply = draw(st.booleans(), label="multiply_by_inputs")
    stdevs = draw(st.sampled_from([0.0, 0.3]), label="stdevs") if not multiply else 0.0
    same = multiply or draw(st.booleans(), label="one baseline row")
    dist = distribution(draw, case, same_rows=same)
    if draw(st.booleans(), label="callable baselines"):
        dist = (lambda d: lambda *inputs: d)(dist)
    delta = same and stdevs == 0.0 and draw(st.booleans(), label="return_convergence_delta")
    return dict(baselines=dist, n_samples=draw(st.integers(1, 4)), stdevs=stdevs, multiply_by_inputs=multiply,
                return_convergence_delta=delta, generator=gen(draw(st.integers(0, 99))))


SHAP_ATTRS = ["baselines", "n_samples", "stdevs", "target", "additional_forward_args", "return_convergence_delta"]
SHAP_BAD = ("inputs", "target", "baselines", "n_samples", "stdevs", "generator")


def plan_gradient_shap(draw):
    case = draw(cases(("linear",)))
    kw = dict(model=case.model, inputs=case.inputs, target=target(draw, case), **shap_sampling(draw, case))
    return Plan(kw, captum_output("GradientShap", SHAP_ATTRS, ctor=["multiply_by_inputs"]), case.dtype, bad=SHAP_BAD)


def plan_layer_gradient_shap(draw):
    case = draw(cases(("linear",)))
    kw = dict(common(case), target=target(draw, case), attribute_to_layer_input=case.at_input,
              **shap_sampling(draw, case))
    from captum.attr import LayerGradientShap
    return Plan(kw, captum_layer(LayerGradientShap, SHAP_ATTRS + ["attribute_to_layer_input"],
                                 ctor=["multiply_by_inputs"]), case.dtype, bad=("layer",) + SHAP_BAD)


def plan_layer_activation(draw):
    case = draw(cases(LAYER_FAMILIES))
    layer = case.layer
    if draw(st.booleans(), label="list of layers"):
        others = [n for n in case.spec.layers if not (case.at_input and n == "emb")]
        layer = [layer, draw(st.sampled_from(others))]
    kw = dict(common(case), layer=layer, attribute_to_layer_input=case.at_input)
    from captum.attr import LayerActivation
    return Plan(kw, captum_layer(LayerActivation, ["additional_forward_args", "attribute_to_layer_input"]),
                case.dtype, bad=("layer", "inputs"))


def plan_interpolate(draw):
    dims = draw(st.integers(1, 3), label="spatial dims")
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 3))) + tuple(draw(st.integers(1, 5)) for _ in range(dims))
    mode = draw(st.sampled_from([m for m, ds in {"nearest": (1, 2, 3), "nearest-exact": (1, 2, 3), "area": (1, 2, 3),
                                                 "linear": (1,), "bilinear": (2,), "bicubic": (2,),
                                                 "trilinear": (3,)}.items() if dims in ds]), label="mode")
    size = tuple(draw(st.integers(1, 7)) for _ in range(dims))
    size = size[0] if dims == 1 and draw(st.booleans()) else size
    dtype = draw(st.sampled_from([torch.float64, torch.float32]))
    kw = dict(layer_attribution=torch.randn(shape, generator=gen(draw(st.integers(0, 99))), dtype=dtype),
              interpolate_dims=size, interpolate_mode=mode)
    return Plan(kw, lambda k: LayerAttribution.interpolate(k["layer_attribution"], k["interpolate_dims"],
                                                           k["interpolate_mode"]),
                dtype, bad=("layer_attribution", "interpolate_dims", "interpolate_mode"))


def plan_integrated_gradients(draw):
    case = draw(cases(("mlp", "conv", "multi", "grid")))
    kw = dict(model=case.model, inputs=case.inputs, additional_forward_args=case.afa, baselines=baselines(draw, case),
              target=target(draw, case), multiply_by_inputs=draw(st.booleans()), **path_args(draw))
    attrs = ["baselines", "target", "additional_forward_args", "n_steps", "method", "internal_batch_size"]
    return Plan(kw, captum_output("IntegratedGradients", attrs, ctor=["multiply_by_inputs"]), case.dtype,
                trapezoid_scale(kw["method"], kw["n_steps"]),
                bad=("inputs", "target", "baselines", "n_steps", "method", "internal_batch_size"))


def plan_layer_path(cls_name, families, multiplies):
    """A plan for a layer path integral (Captum class ``cls_name``); token ids take id baselines."""

    def plan(draw):
        import captum.attr
        case = draw(cases(families))
        base = draw(st.sampled_from([None, 0, 1]), label="baselines") if case.spec.tokens else baselines(draw, case)
        kw = dict(common(case), baselines=base, target=target(draw, case), attribute_to_layer_input=case.at_input,
                  **path_args(draw))
        ctor = ["multiply_by_inputs"] if multiplies else []
        if multiplies:
            kw["multiply_by_inputs"] = draw(st.booleans())
        attrs = ["baselines", "target", "additional_forward_args", "n_steps", "method", "internal_batch_size",
                 "attribute_to_layer_input"]
        return Plan(kw, captum_layer(getattr(captum.attr, cls_name), attrs, ctor=ctor), case.dtype,
                    trapezoid_scale(kw["method"], kw["n_steps"]),
                    bad=("layer", "inputs", "target", "baselines", "n_steps", "method", "internal_batch_size"))

    return plan


# the rule-based output and layer forms
RULE_TYPES = (nn.ReLU, nn.ELU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softmax, nn.MaxPool2d)
DEEPLIFT_OUT_ATTRS = ["baselines", "target", "additional_forward_args", "return_convergence_delta",
                      "custom_attribution_func"]
DEEPLIFT_BAD = ("inputs", "baselines", "target", "model", "custom_attribution_func")


def tupled_args(run):
    """Captum's SHAP forms expand a bare tensor of extra arguments wrongly: give them a tuple."""
    def tupled(kw):
        args = kw.get("additional_forward_args")
        return run(dict(kw, additional_forward_args=args if args is None or isinstance(args, tuple) else (args,)))
    return tupled


def deeplift_args(draw, case):
    return dict(target=target(draw, case), custom_attribution_func=custom_func(draw),
                multiply_by_inputs=draw(st.booleans(), label="multiply_by_inputs"),
                return_convergence_delta=draw(st.booleans(), label="return_convergence_delta"))


def rule_site(case):
    """The case's ``attribute_to_layer_input``, False at a rule module (whose input attrfx attributes under the
    module's own rule, unlike Captum: README, "Deliberate differences")."""
    return case.at_input and not isinstance(case.model.get_submodule(case.layer), RULE_TYPES)


def plan_deeplift(draw):
    case = draw(cases(("mlp", "multi", "grid") + CHAINS))
    eps = draw(st.sampled_from([1e-10, 1e-3]), label="eps")
    kw = dict(model=case.model, inputs=case.inputs, additional_forward_args=case.afa, baselines=baselines(draw, case),
              eps=eps, **deeplift_args(draw, case))
    return Plan(kw, captum_output("DeepLift", DEEPLIFT_OUT_ATTRS, ctor=["multiply_by_inputs", "eps"]), case.dtype,
                bad=DEEPLIFT_BAD)


def plan_deeplift_shap(draw):
    case = draw(cases(("mlp", "multi", "grid") + CHAINS))
    kw = dict(model=case.model, inputs=case.inputs, additional_forward_args=case.afa,
              baselines=distribution(draw, case, rows=(2, 3)), **deeplift_args(draw, case))
    return Plan(kw, tupled_args(captum_output("DeepLiftShap", DEEPLIFT_OUT_ATTRS, ctor=["multiply_by_inputs"])),
                case.dtype, bad=DEEPLIFT_BAD)


def plan_layer_deeplift(draw):
    case = draw(cases(("mlp", "multi", "grid") + CHAINS))
    kw = dict(common(case), baselines=baselines(draw, case), attribute_to_layer_input=rule_site(case),
              **deeplift_args(draw, case))
    from captum.attr import LayerDeepLift
    return Plan(kw, captum_layer(LayerDeepLift, DEEPLIFT_OUT_ATTRS + ["attribute_to_layer_input"],
                                 ctor=["multiply_by_inputs"]), case.dtype, bad=("layer",) + DEEPLIFT_BAD)


def plan_layer_deeplift_shap(draw):
    case = draw(cases(("mlp", "multi", "grid") + CHAINS))
    kw = dict(common(case), baselines=distribution(draw, case, rows=(2, 3)), attribute_to_layer_input=rule_site(case),
              **deeplift_args(draw, case))
    from captum.attr import LayerDeepLiftShap
    return Plan(kw, tupled_args(captum_layer(LayerDeepLiftShap, DEEPLIFT_OUT_ATTRS + ["attribute_to_layer_input"],
                                             ctor=["multiply_by_inputs"])), case.dtype, bad=("layer",) + DEEPLIFT_BAD)


def plan_output_rule(name):
    def plan(draw):
        case = draw(cases(("mlp", "conv", "multi", "grid")))
        kw = dict(model=case.model, inputs=case.inputs, additional_forward_args=case.afa, target=target(draw, case))
        return Plan(kw, captum_output(name, ["target", "additional_forward_args"]), case.dtype,
                    bad=("inputs", "target", "model"))
    return plan


def plan_guided_gradcam(draw):
    case = draw(cases(("conv",)))
    layer = draw(st.sampled_from(["conv1", "relu1", "pool", "conv2", "act2"]), label="layer")
    kw = dict(common(case), layer=layer, target=target(draw, case), attribute_to_layer_input=case.at_input,
              interpolate_mode=draw(st.sampled_from(["nearest", "nearest-exact", "area", "bilinear", "bicubic"]),
                                    label="interpolate_mode"))
    from captum.attr import GuidedGradCam
    return Plan(kw, captum_layer(GuidedGradCam, ["target", "additional_forward_args", "interpolate_mode",
                                                 "attribute_to_layer_input"]),
                case.dtype, bad=("layer", "inputs", "target", "model"))


LRP_LAYERS = {"mlp": ("fc1", "fc2", "fc3"), "conv": ("conv1", "pool", "conv2", "fc")}  # Captum's ruled layers


def lrp_rules(draw, case):
    """Rules as attrfx takes them: ConvNet's Softplus passes relevance through; maybe one layer gets another rule."""
    rules = {"act2": ("identity", {})} if case.spec.factory is ConvNet else {}
    kind = draw(st.sampled_from([None, "epsilon", "gamma", "alpha1_beta0"]), label="rule")
    if kind is not None:
        params = {"epsilon": {"epsilon": 0.01}, "gamma": {"gamma": 0.5, "set_bias_to_zero": True},
                  "alpha1_beta0": {}}[kind]
        rules[draw(st.sampled_from(LRP_LAYERS["conv" if case.spec.factory is ConvNet else "mlp"]))] = (kind, params)
    return rules


def captum_lrp(layered):
    from captum.attr import LRP, LayerLRP
    from captum.attr._utils import lrp_rules as captum_rules

    made = {"epsilon": lambda p: captum_rules.EpsilonRule(p["epsilon"]), "identity": lambda p: captum_rules.IdentityRule(),
            "gamma": lambda p: captum_rules.GammaRule(p["gamma"], p["set_bias_to_zero"]),
            "alpha1_beta0": lambda p: captum_rules.Alpha1_Beta0_Rule()}

    def run(kw):
        for name, (kind, params) in kw["rules"].items():
            kw["model"].get_submodule(name).rule = made[kind](params)
        args = {k: kw[k] for k in ("target", "additional_forward_args", "return_convergence_delta",
                                   "attribute_to_layer_input") if k in kw}
        if layered:
            return LayerLRP(kw["model"], kw["model"].get_submodule(kw["layer"])).attribute(kw["inputs"], **args)
        return LRP(kw["model"]).attribute(kw["inputs"], **args)

    return run


def plan_lrp(draw):
    case = draw(cases(("mlp", "conv")))
    kw = dict(model=case.model, inputs=case.inputs, additional_forward_args=case.afa, target=target(draw, case),
              rules=lrp_rules(draw, case), return_convergence_delta=draw(st.booleans()))
    return Plan(kw, captum_lrp(False), case.dtype, bad=("inputs", "target"))


def plan_layer_lrp(draw):
    case = draw(cases(("mlp", "conv")))
    kw = dict(common(case), layer=draw(st.sampled_from(LRP_LAYERS["conv" if case.spec.factory is ConvNet else "mlp"])),
              target=target(draw, case), rules=lrp_rules(draw, case), attribute_to_layer_input=case.at_input,
              return_convergence_delta=draw(st.booleans()))
    return Plan(kw, captum_lrp(True), case.dtype, bad=("layer", "inputs", "target"))


def captum_ppe(run):
    """Captum with ``perturbations_per_eval`` as given (its default, 1, for attrfx's None); the layer forms always at 1
    (Captum's LayerFeatureAblation does not expand a per-example target for more)."""
    def with_ppe(kw, layer=False):
        return run(dict(kw, perturbations_per_eval=1 if layer else (kw["perturbations_per_eval"] or 1)))
    return with_ppe


def ppe(draw):
    return draw(st.one_of(st.none(), st.integers(1, 5)), label="perturbations_per_eval")


def rolled(x, mask):
    """A deterministic shuffle among the examples (each takes the previous one's values where ``mask``)."""
    return torch.where(mask, x.roll(1, 0), x)


PERTURBATION_FAMILIES = ("mlp", "conv", "multi", "grid", "tokens")


def plan_feature_ablation(draw):
    case = draw(cases(PERTURBATION_FAMILIES))
    kw = dict(model=case.model, inputs=case.inputs, additional_forward_args=case.afa, target=target(draw, case),
              baselines=perturbation_baselines(draw, case),
              feature_mask=feature_mask(draw, case.xs, isinstance(case.inputs, torch.Tensor)),
              perturbations_per_eval=ppe(draw))
    return Plan(kw, captum_ppe(captum_output("FeatureAblation", ["target", "baselines", "additional_forward_args",
                                                                 "feature_mask", "perturbations_per_eval"])),
                case.dtype, bad=("inputs", "target", "baselines", "feature_mask", "perturbations_per_eval"))


def plan_occlusion(draw):
    case = draw(cases(PERTURBATION_FAMILIES))
    windows, strides = [], []
    for x in case.xs:
        window = tuple(draw(st.integers(1, s), label="window") for s in x.shape[1:])
        windows.append(window)
        strides.append(draw(st.sampled_from([tuple(draw(st.integers(1, w)) for w in window), min(window)]),
                            label="strides"))
    single = isinstance(case.inputs, torch.Tensor)
    kw = dict(model=case.model, inputs=case.inputs, additional_forward_args=case.afa, target=target(draw, case),
              sliding_window_shapes=windows[0] if single else tuple(windows),
              strides=draw(st.sampled_from([None, strides[0] if single else tuple(strides)]), label="strides form"),
              baselines=perturbation_baselines(draw, case), perturbations_per_eval=ppe(draw))
    return Plan(kw, captum_ppe(captum_output("Occlusion", ["sliding_window_shapes", "strides", "target", "baselines",
                                                           "additional_forward_args", "perturbations_per_eval"])),
                case.dtype, bad=("inputs", "target", "baselines", "sliding_window_shapes", "strides",
                                 "perturbations_per_eval"))


def plan_feature_permutation(draw):
    """Exact: two examples (the only permutation but the identity is the swap), or a deterministic ``perm_func``."""
    case = draw(cases(PERTURBATION_FAMILIES))
    two = case.xs[0].shape[0] == 2 and draw(st.booleans(), label="drawn permutation")
    kw = dict(model=case.model, inputs=case.inputs, additional_forward_args=case.afa, target=target(draw, case),
              feature_mask=feature_mask(draw, case.xs, isinstance(case.inputs, torch.Tensor)),
              perturbations_per_eval=ppe(draw), perm_func=None if two else rolled,
              generator=gen(draw(st.integers(0, 99))))
    ctor = [] if two else ["perm_func"]
    return Plan(kw, captum_ppe(captum_output("FeaturePermutation", ["target", "additional_forward_args",
                                                                    "feature_mask", "perturbations_per_eval"],
                                             ctor=ctor)),
                case.dtype, bad=("inputs", "target", "feature_mask", "perturbations_per_eval", "generator")
                + (() if two else ("perm_func",)))


def layer_mask_and_baselines(draw, case):
    site = torch.zeros((case.xs[0].shape[0],) + case.site)
    mask = feature_mask(draw, (site,), True, "layer_mask")
    form = draw(st.sampled_from(["none", "number", "row", "full"]), label="layer_baselines form")
    shape = site.shape if form == "full" else (1,) + case.site
    base = {"none": None, "number": 0.5, "row": 0.5 * torch.randn(shape, generator=gen(3), dtype=case.dtype),
            "full": 0.5 * torch.randn(shape, generator=gen(4), dtype=case.dtype)}[form]
    return mask, base


def layer_case(draw):
    """A case whose layer activation is floating-point and one tensor (the token model's ids only at "emb")."""
    return draw(cases(PERTURBATION_FAMILIES))


def plan_layer_feature_ablation(draw):
    case = layer_case(draw)
    mask, base = layer_mask_and_baselines(draw, case)
    kw = dict(common(case), target=target(draw, case), layer_mask=mask, layer_baselines=base,
              attribute_to_layer_input=case.at_input, perturbations_per_eval=ppe(draw))
    from captum.attr import LayerFeatureAblation
    run = captum_layer(LayerFeatureAblation, ["target", "additional_forward_args", "layer_mask", "layer_baselines",
                                              "attribute_to_layer_input", "perturbations_per_eval"])
    return Plan(kw, lambda kw: captum_ppe(run)(kw, layer=True), case.dtype,
                bad=("layer", "inputs", "target", "layer_mask", "layer_baselines", "perturbations_per_eval"))


def captum_layer_permutation(kw):
    """Captum's LayerFeaturePermutation applies ``target`` twice: give it the target's values as the model; with a
    ``perm_func``, its permutation is that function."""
    from captum._utils.common import _select_targets
    from captum.attr import FeaturePermutation, LayerFeaturePermutation

    class Rolled(LayerFeaturePermutation):
        @property
        def attributor(self):
            return lambda forward_func: FeaturePermutation(forward_func, perm_func=kw["perm_func"])

    model, tgt = kw["model"], kw["target"]
    one = lambda *args: _select_targets(model(*args), tgt)  # noqa: E731
    cls = LayerFeaturePermutation if kw["perm_func"] is None else Rolled
    return cls(one, model.get_submodule(kw["layer"])).attribute(
        kw["inputs"], additional_forward_args=kw["additional_forward_args"], layer_mask=kw["layer_mask"])


def plan_layer_feature_permutation(draw):
    """Exact as for feature_permutation; Captum's layer form has no ``attribute_to_layer_input``: at the output."""
    case = layer_case(draw)
    two = case.xs[0].shape[0] == 2 and draw(st.booleans(), label="drawn permutation")
    mask, _ = layer_mask_and_baselines(draw, case._replace(site=activation_shape(
        case.model, case.layer, case.xs, case.afa, False)))
    kw = dict(common(case), target=target(draw, case), layer_mask=mask, perturbations_per_eval=ppe(draw),
              perm_func=None if two else rolled, generator=gen(draw(st.integers(0, 99))))
    return Plan(kw, captum_layer_permutation, case.dtype,
                bad=("layer", "inputs", "target", "layer_mask", "perturbations_per_eval", "generator")
                + (() if two else ("perm_func",)))



def few_groups(draw, case):
    """A mask of at most 4 groups (ids 0..3) per input (Captum's exact Shapley values walk all G! orderings), or
    None where the inputs have at most 5 elements per example."""
    small = sum(x[0].numel() for x in case.xs) <= 5
    if small and draw(st.booleans(), label="feature_mask=None"):
        return None
    from attrfx.ablation import feature_groups
    masks = []
    for x in case.xs:
        form = draw(st.sampled_from(["shared", "per-example", "one id"]), label="feature_mask form")
        ids = torch.randint(0, 4, (x.shape[0],) + tuple(x.shape[1:]), generator=gen(draw(st.integers(0, 99))))
        masks.append({"shared": ids[:1], "per-example": ids,
                      "one id": torch.full((1,) * x.dim(), draw(st.integers(0, 3)))}[form])
    ids, masks = feature_groups(masks)                       # numbered 0 .. G−1, as the surrogates need
    if ids.numel() < 2 and small:
        return None                                          # Captum's KernelShap needs two features
    return masks[0] if isinstance(case.inputs, torch.Tensor) else tuple(masks)


COALITION_BAD = ("inputs", "target", "baselines", "feature_mask", "perturbations_per_eval")


def coalition_kwargs(draw, case, mask):
    return dict(model=case.model, inputs=case.inputs, additional_forward_args=case.afa, target=target(draw, case),
                baselines=perturbation_baselines(draw, case), feature_mask=mask, perturbations_per_eval=ppe(draw))


def plan_shapley_values(draw):
    """Exact: Captum's ShapleyValues (float32 sums, so the float32 tolerance) on any model."""
    case = draw(cases(("mlp", "multi", "grid", "tokens")))
    kw = coalition_kwargs(draw, case, few_groups(draw, case))
    return Plan(kw, captum_ppe(captum_output("ShapleyValues", ["target", "baselines", "additional_forward_args",
                                                               "feature_mask", "perturbations_per_eval"])),
                torch.float32, bad=COALITION_BAD)


def plan_shapley_value_sampling(draw):
    """Exact where the sample cannot matter: an additive model, any ids."""
    case = draw(cases(("additive",)))
    kw = dict(coalition_kwargs(draw, case, feature_mask(draw, case.xs, isinstance(case.inputs, torch.Tensor))),
              n_samples=draw(st.integers(1, 4), label="n_samples"), generator=gen(draw(st.integers(0, 99))))
    return Plan(kw, captum_ppe(captum_output("ShapleyValueSampling", ["target", "baselines", "additional_forward_args",
                                                                      "feature_mask", "n_samples",
                                                                      "perturbations_per_eval"])),
                torch.float32, bad=COALITION_BAD + ("n_samples", "generator"))


def per_example_target(run):
    """Captum's Lime and KernelShap slice a tensor target per example, which fails for a 0-d one: give its int."""
    def run_(kw):
        t = kw["target"]
        return run(dict(kw, target=t.item() if isinstance(t, torch.Tensor) and t.dim() == 0 else t))
    return run_


def plan_kernel_shap(draw):
    """Exact where the sample cannot matter: a linear model, with enough coalitions for a full-rank fit."""
    case = draw(cases(("linear",)))
    kw = dict(coalition_kwargs(draw, case, few_groups(draw, case)), n_samples=draw(st.integers(60, 80)),
              return_input_shape=draw(st.booleans(), label="return_input_shape"),
              generator=gen(draw(st.integers(0, 99))))
    return Plan(kw, per_example_target(captum_ppe(captum_output("KernelShap", [
                    "target", "baselines", "additional_forward_args", "feature_mask", "n_samples",
                    "perturbations_per_eval", "return_input_shape"]))),
                torch.float32, bad=COALITION_BAD + ("n_samples", "generator"))



def plan_lime(draw):
    """The same coalitions from a ``perturb_func`` and a least-squares fit on both sides (attrfx's
    weighted_least_squares, Captum's SkLearnLinearRegression): the default cosine kernel, the interpretable
    representation and the shapes are then compared exactly (the lasso itself: tests/test_surrogate.py)."""
    from attrfx.surrogate import weighted_least_squares
    case = draw(cases(("mlp", "multi", "grid", "tokens")))
    kw = dict(coalition_kwargs(draw, case, few_groups(draw, case)), n_samples=draw(st.integers(30, 40)),
              return_input_shape=draw(st.booleans(), label="return_input_shape"),
              perturb_func=seeded_coalitions(draw(st.integers(0, 99))), interpretable_model=weighted_least_squares,
              generator=gen(0))

    def captum(kw):
        from captum._utils.models.linear_model import SkLearnLinearRegression
        from captum.attr import Lime
        lime = Lime(kw["model"], interpretable_model=SkLearnLinearRegression(), perturb_func=kw["perturb_func"])
        args = ["target", "baselines", "additional_forward_args", "feature_mask", "n_samples", "return_input_shape"]
        return lime.attribute(kw["inputs"], perturbations_per_eval=kw["perturbations_per_eval"] or 1,
                              **{k: kw[k] for k in args})

    return Plan(kw, per_example_target(captum), torch.float32, bad=COALITION_BAD + ("n_samples", "generator"))


PLANS = {
    "neuron_gradient": plan_neuron_gradient,
    "neuron_integrated_gradients": plan_neuron_integrated_gradients,
    "neuron_conductance": plan_neuron_conductance,
    "neuron_gradient_shap": plan_neuron_gradient_shap,
    "neuron_deeplift": plan_neuron_deeplift,
    "neuron_deeplift_shap": plan_neuron_deeplift_shap,
    "neuron_guided_backprop": plan_rule(NeuronGuidedBackprop),
    "neuron_deconvolution": plan_rule(NeuronDeconvolution),
    "deeplift": plan_deeplift,
    "deeplift_shap": plan_deeplift_shap,
    "layer_deeplift": plan_layer_deeplift,
    "layer_deeplift_shap": plan_layer_deeplift_shap,
    "guided_backprop": plan_output_rule("GuidedBackprop"),
    "deconvolution": plan_output_rule("Deconvolution"),
    "guided_gradcam": plan_guided_gradcam,
    "neuron_feature_ablation": plan_neuron_feature_ablation,
    "layer_gradient_x_activation": plan_layer_gradient_x_activation,
    "layer_gradcam": plan_layer_gradcam,
    "layer_conductance": plan_layer_conductance,
    "integrated_gradients": plan_integrated_gradients,
    "layer_integrated_gradients": plan_layer_path("LayerIntegratedGradients", LAYER_FAMILIES, True),
    "internal_influence": plan_layer_path("InternalInfluence", ("mlp", "conv", "multi", "grid"), False),
    "interpolate": plan_interpolate,
    "saliency": plan_output_gradient("Saliency", ["abs"]),
    "input_x_gradient": plan_output_gradient("InputXGradient"),
    "gradient_shap": plan_gradient_shap,
    "layer_gradient_shap": plan_layer_gradient_shap,
    "layer_activation": plan_layer_activation,
    "lrp": plan_lrp,
    "layer_lrp": plan_layer_lrp,
    "feature_ablation": plan_feature_ablation,
    "occlusion": plan_occlusion,
    "feature_permutation": plan_feature_permutation,
    "layer_feature_ablation": plan_layer_feature_ablation,
    "layer_feature_permutation": plan_layer_feature_permutation,
    "shapley_values": plan_shapley_values,
    "shapley_value_sampling": plan_shapley_value_sampling,
    "kernel_shap": plan_kernel_shap,
    "lime": plan_lime,
}


# --- bad values: each must be refused with an error naming the argument ----------------------------------------------

def bad_value(draw, name, kw):
    """A value for argument ``name`` that no method may accept."""
    x = kw.get("inputs")
    xs = x if isinstance(x, tuple) else (x,)
    n = xs[0].shape[0] if isinstance(xs[0], torch.Tensor) else 0
    options = {
        "layer": lambda: ["no_such_layer", 3, nn.Linear(2, 2), []],
        "inputs": lambda: [xs[0].tolist(), (), torch.tensor(1.0), (xs[0], xs[0][:0]) + xs[1:], 2.0],
        "selector": lambda: [1.5, True, None, [], (0,) * 5, 10**6, (slice(0, 2, 0),), "0"],
        "target": lambda: [10**3, [0] * (n + 1), torch.zeros(n, dtype=torch.float64) + 0.5, "a", (0,) * 4, None],
        "baselines": lambda: ["zeros", torch.zeros(n + 1, 1, 1, 7), (0.0,) * (len(xs) + 1), [0.0]],
        "n_steps": lambda: [0, -1, 2.5, True, None],
        "method": lambda: ["simpson", None, 3],
        "internal_batch_size": lambda: [0, -3, 1.5, True],
        "feature_mask": lambda: [torch.zeros(1, 99, dtype=torch.long), torch.zeros(xs[0].shape, dtype=torch.float64),
                                 tuple(torch.zeros(1, dtype=torch.long) for _ in range(len(xs) + 1)), "mask"],
        "perturbations_per_eval": lambda: [0, -1, 1.5, True],
        "sliding_window_shapes": lambda: ["window", 3.5, ((99,) * (xs[0].dim() - 1),) * len(xs)],
        "strides": lambda: [0, -1, 2.5, "a"],
        "layer_mask": lambda: [torch.zeros(1, 99, dtype=torch.long), torch.zeros(1), "mask"],
        "layer_baselines": lambda: ["zeros", torch.zeros(n + 1, 1, 1, 7), [0.0]],
        "perm_func": lambda: [lambda x, mask: x.flatten(), lambda x, mask: None],
        "n_samples": lambda: [0, 2.0, True],
        "stdevs": lambda: [-1.0, (0.1,) * (len(xs) + 1), "a"],
        "generator": lambda: [0, "seed"],
        "custom_attribution_func": lambda: ["f", lambda: (), lambda a, b, c, d: ()],
        "model": lambda: [lambda *a: kw["model"](*a)],
        "layer_attribution": lambda: [torch.zeros(2, 3), [1.0], torch.zeros(2)],
        "interpolate_dims": lambda: ["a", (0,) * 3, (2,) * 4, -1, 2.5],
        "interpolate_mode": lambda: ["cubic", None, {3: "bilinear", 4: "trilinear", 5: "linear"}[
            kw["layer_attribution"].dim()]],
    }[name]()
    return draw(st.sampled_from(options), label=f"bad {name}")


def names_argument(err, method, name):
    message = str(err)
    return message.startswith(f"{method}: ") and re.search(rf"`{re.escape(name)}(\[\d+\])?`", message)


def check(method, data):
    plan = PLANS[method](data.draw)
    fn = getattr(attrfx, method)
    bad = data.draw(st.sampled_from((None,) * max(2, len(plan.bad)) + plan.bad), label="bad argument")
    if bad is not None:
        kw = dict(plan.kwargs, **{bad: bad_value(data.draw, bad, plan.kwargs)})
        with pytest.raises((attrfx.AttrfxValueError, attrfx.AttrfxTypeError)) as info:
            fn(**kw)
        assert names_argument(info.value, method, bad), f"message does not name `{bad}`: {info.value}"
        return
    ours = fn(**plan.kwargs)
    theirs = plan.captum(plan.kwargs)
    assert_same(ours, theirs, plan.dtype, plan.scale)


def assert_same(ours, theirs, dtype, scale):
    assert isinstance(ours, torch.Tensor) == isinstance(theirs, torch.Tensor), "structure differs from Captum's"
    a, b = flat(ours), flat(theirs)
    assert len(a) == len(b), f"{len(a)} tensors vs Captum's {len(b)}"
    for x, y in zip(a, b):
        y = y.detach()
        assert x.shape == y.shape, f"shape {tuple(x.shape)} vs Captum's {tuple(y.shape)}"
        tol = TOLERANCE.get(dtype, TOLERANCE[torch.float32])
        torch.testing.assert_close(x, (y * scale).to(x.dtype), **tol)


@pytest.mark.parametrize("method", sorted(PLANS))
@given(data=st.data())
def test_every_argument_either_agrees_with_captum_or_is_named(method, data):
    check(method, data)


def test_every_public_method_is_fuzzed():
    public = {name for name in attrfx.__all__
              if callable(getattr(attrfx, name)) and not isinstance(getattr(attrfx, name), type)}
    assert public - {"noise_tunnel"} == set(PLANS)  # noise_tunnel: over the methods, in tests/test_noise_tunnel.py
