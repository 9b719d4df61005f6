"""Benchmark rows of layer-wise relevance propagation: ``lrp`` (at the inputs) and ``layer_lrp`` (at a layer).

On the MLP (Linear and ReLU modules: Captum's default rules, epsilon with ε = 1e-9 and ReLU passing relevance
through), where Captum's result is attrfx's. The ResNet is left out: its residual sums and Identity shortcuts
have no Captum rule (Captum multiplies the summed gradient at a block's input by the input, attrfx each
branch's relevance), so the two do not compute the same thing there.

The floor is LRP by hand: one forward pass keeping each Linear's input and output, then the relevance carried
back layer by layer with matrix products, ``R_in = a ⊙ ((R / (z + ε·sign z)) Wᵀ)``, no autograd at all (for
``layer_lrp``, only down to the layer).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

import attrfx

from .methods import Calls, Spec, _captum

EPS = 1e-9

NEXT_LINEAR = {"relu1": "fc2", "relu2": "fc3"}
"""The benchmark MLP's layers (ReLU modules, which have no relevance of their own in Captum's LayerLRP) and the
Linear that reads each: the relevance at a ReLU's output is the relevance at that Linear's input."""


def floor_lrp(model, x: Tensor, target: int, down_to: str = "fc1") -> Callable[[], Tensor]:
    """Epsilon-LRP of the benchmark MLP by hand, from the output down to the input of Linear ``down_to``."""
    linears = [model.fc1, model.fc2, model.fc3]
    stop = [model.fc1, model.fc2, model.fc3].index(model.get_submodule(down_to))

    def run():
        with torch.no_grad():
            acts, h = [], x
            for i, fc in enumerate(linears):
                z = fc(h)
                acts.append((h, z))
                h = z.relu() if i < len(linears) - 1 else z
            out = h[:, target]
            relevance = torch.zeros_like(h)
            relevance[:, target] = 1
            for fc, (a, z) in reversed(list(zip(linears, acts))[stop:]):
                relevance = a * ((relevance / (z + torch.where(z >= 0, EPS, -EPS))) @ fc.weight)
            return relevance * out[:, None]
    return run


def _lrp(case, name, module, sel, s, fz):
    m, x, t = case.model, case.inputs, case.target
    return Calls(lambda: attrfx.lrp(m, x, target=t),
                 lambda: _captum().LRP(m).attribute(x, target=t),
                 floor_lrp(fz, x, t))


def _layer_lrp(case, name, module, sel, s, fz):
    m, x, t = case.model, case.inputs, case.target
    reader = NEXT_LINEAR[name]
    return Calls(lambda: attrfx.layer_lrp(m, name, x, target=t),
                 lambda: _captum().LayerLRP(m, m.get_submodule(reader)).attribute(x, target=t,
                                                                                 attribute_to_layer_input=True),
                 floor_lrp(fz, x, t, reader))


SPECS: dict[str, Spec] = {
    "lrp": Spec("output", ("mlp",), "exact", _lrp),
    "layer_lrp": Spec("layer", ("mlp",), "exact", _layer_lrp),
}
