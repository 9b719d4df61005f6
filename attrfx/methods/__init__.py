"""The attribution methods, one module per *how*, each holding its forms side by side.

A method is *what is explained* (an output via ``target``, or a neuron via
``selector``) × *where it lands* (the inputs, or a layer) × *how*:

- :mod:`~attrfx.methods.gradient` — plain gradients (saliency, input × gradient, gradient × activation,
  Grad-CAM, the activation itself);
- :mod:`~attrfx.methods.integrated` — integrated gradients and internal influence (path integrals of gradients);
- :mod:`~attrfx.methods.conductance` — conductance (path integrals through a layer);
- :mod:`~attrfx.methods.shap` — GradientSHAP (expected gradients over noise and baselines);
- :mod:`~attrfx.methods.rescale` — DeepLift and DeepLiftSHAP (the rescale rule);
- :mod:`~attrfx.methods.guided` — guided backpropagation, deconvolution, guided Grad-CAM (ReLU rules);
- :mod:`~attrfx.methods.relevance` — LRP (relevance rules, :mod:`attrfx.propagation`);
- :mod:`~attrfx.methods.ablation` — feature ablation, occlusion, feature permutation (perturbation, no gradients);
- :mod:`~attrfx.methods.shapley` — Shapley values of feature groups, exact and sampled (coalitions, no gradients);
- :mod:`~attrfx.methods.surrogate` — KernelSHAP and LIME (a weighted linear fit over sampled coalitions);
- :mod:`~attrfx.methods.tunnel` — the noise tunnel over any of them.

Every form of a *how* calls the same kernel; what differs is the problem it is given
(:mod:`attrfx.problem`). All methods are importable from the package root.
"""

from .ablation import (feature_ablation, feature_permutation, layer_feature_ablation, layer_feature_permutation,
                       neuron_feature_ablation, occlusion)
from .conductance import layer_conductance, neuron_conductance
from .gradient import (input_x_gradient, interpolate, layer_activation, layer_gradcam, layer_gradient_x_activation,
                       neuron_gradient, saliency)
from .guided import deconvolution, guided_backprop, guided_gradcam, neuron_deconvolution, neuron_guided_backprop
from .integrated import integrated_gradients, internal_influence, layer_integrated_gradients, neuron_integrated_gradients
from .relevance import layer_lrp, lrp
from .rescale import deeplift, deeplift_shap, layer_deeplift, layer_deeplift_shap, neuron_deeplift, neuron_deeplift_shap
from .shap import gradient_shap, layer_gradient_shap, neuron_gradient_shap
from .shapley import shapley_value_sampling, shapley_values
from .surrogate import kernel_shap, lime
from .tunnel import noise_tunnel

__all__ = sorted(name for name, value in list(globals().items())
                 if callable(value) and getattr(value, "__module__", "").startswith(__name__ + "."))
