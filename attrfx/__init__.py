"""attrfx: functional, stateless attribution for PyTorch.

Every method (:mod:`attrfx.methods`, one module per *how*) is a pure function
composed of public primitives: what is explained and where it lands
(:mod:`~attrfx.inputs`, :mod:`~attrfx.selectors`, :mod:`~attrfx.probe`,
:mod:`~attrfx.problem`), and how (:mod:`~attrfx.quadrature`,
:mod:`~attrfx.paths`, :mod:`~attrfx.noise`, :mod:`~attrfx.gradients`,
:mod:`~attrfx.rules`, :mod:`~attrfx.ablation`, :mod:`~attrfx.slicing`).
"""

from . import axioms, gradients, inputs, noise, paths, probe, quadrature, selectors, slicing, viz
from ._errors import AttrfxTypeError, AttrfxValueError
from . import adaptive
from .adaptive import Convergence, IntegrationBudgetWarning
from . import ablation, methods, problem, propagation, rules
from . import coalitions, surrogate  # coalition sampling and games; the surrogate fits of KernelSHAP and LIME
from .methods import *  # noqa: F403 (the methods: attrfx.methods.__all__)
from .rules import RuleCoverageWarning
from . import runs
from .runs import attribute_dataset, load_run  # the dataset runner (attrfx.runs); __all__ lists the matrix's methods

__version__ = "0.1.0"

__all__ = [
    "AttrfxTypeError",
    "AttrfxValueError",
    "Convergence",
    "IntegrationBudgetWarning",
    "RuleCoverageWarning",
    "ablation",
    "adaptive",
    "axioms",
    "coalitions",
    "gradients",
    "inputs",
    "methods",
    "noise",
    "paths",
    "probe",
    "problem",
    "propagation",
    "quadrature",
    "rules",
    "runs",
    "selectors",
    "slicing",
    "surrogate",
    "viz",
] + methods.__all__
