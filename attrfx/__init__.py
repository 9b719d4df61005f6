"""attrfx: functional, stateless attribution for PyTorch.

Every method is a pure function composed of public primitives:
:mod:`~attrfx.quadrature`, :mod:`~attrfx.paths`, :mod:`~attrfx.probe`,
:mod:`~attrfx.selectors`, :mod:`~attrfx.noise`, :mod:`~attrfx.gradients` and
:mod:`~attrfx.slicing`.
"""

from . import axioms, gradients, inputs, noise, paths, probe, quadrature, selectors, slicing, viz
from ._errors import AttrfxTypeError, AttrfxValueError
from . import adaptive
from .adaptive import Convergence, IntegrationBudgetWarning
from .layer import interpolate, layer_conductance, layer_gradcam, layer_gradient_x_activation
from .neuron import neuron_conductance, neuron_gradient, neuron_gradient_shap, neuron_integrated_gradients
from . import ablation, rules
from .ablation import neuron_feature_ablation
from .neuron_rules import neuron_deconvolution, neuron_deeplift, neuron_deeplift_shap, neuron_guided_backprop
from .rules import RuleCoverageWarning

__version__ = "0.1.0"

__all__ = [
    "AttrfxTypeError",
    "AttrfxValueError",
    "Convergence",
    "IntegrationBudgetWarning",
    "RuleCoverageWarning",
    "adaptive",
    "axioms",
    "gradients",
    "inputs",
    "interpolate",
    "layer_conductance",
    "layer_gradcam",
    "layer_gradient_x_activation",
    "neuron_conductance",
    "neuron_gradient",
    "neuron_gradient_shap",
    "neuron_integrated_gradients",
    "noise",
    "paths",
    "probe",
    "quadrature",
    "selectors",
    "slicing",
    "viz",
    "ablation",
    "rules",
    "neuron_feature_ablation",
    "neuron_deconvolution",
    "neuron_deeplift",
    "neuron_deeplift_shap",
    "neuron_guided_backprop",
]
