"""The attribution methods, one module per *how*, each holding its forms side by side.

A method is *what is explained* (an output via ``target``, or a neuron via
``selector``) × *where it lands* (the inputs, or a layer) × *how*:

- :mod:`~attrfx.methods.gradient` — plain gradients;
- :mod:`~attrfx.methods.integrated` — integrated gradients (path integrals of gradients);
- :mod:`~attrfx.methods.conductance` — conductance (path integrals through a layer);
- :mod:`~attrfx.methods.shap` — GradientSHAP (expected gradients over noise and baselines);
- :mod:`~attrfx.methods.deeplift` — DeepLift and DeepLiftSHAP (the rescale rule);
- :mod:`~attrfx.methods.guided` — guided backpropagation and deconvolution (ReLU rules);
- :mod:`~attrfx.methods.ablation` — feature ablation (perturbation, no gradients).

Every form of a *how* calls the same kernel; what differs is the problem it is given
(:mod:`attrfx.problem`). All methods are importable from the package root.
"""

from .ablation import neuron_feature_ablation
from .conductance import layer_conductance, neuron_conductance
from .deeplift import neuron_deeplift, neuron_deeplift_shap
from .gradient import interpolate, layer_gradcam, layer_gradient_x_activation, neuron_gradient
from .guided import neuron_deconvolution, neuron_guided_backprop
from .integrated import neuron_integrated_gradients
from .shap import neuron_gradient_shap

__all__ = sorted(name for name, value in list(globals().items())
                 if callable(value) and getattr(value, "__module__", "").startswith(__name__ + "."))
