"""Every public primitive shows its argument and result formats in a runnable ``Example:``.

The examples themselves run as doctests (``--doctest-modules``); this checks that
each public function of the primitive modules has one: a line ``Example:``
followed by at least one ``>>>`` line.
"""

import importlib
import inspect
import re
import types

import pytest

MODULES = [
    "attrfx.quadrature", "attrfx.paths", "attrfx.probe", "attrfx.selectors", "attrfx.noise", "attrfx.rules",
    "attrfx.axioms", "attrfx.gradients", "attrfx.problem", "attrfx.propagation", "attrfx.adaptive",
    "attrfx.slicing", "attrfx.inputs", "attrfx.ablation", "attrfx.windows", "attrfx.coalitions", "attrfx.surrogate",
]
"""The primitive modules held to the rule."""

_EXAMPLE = re.compile(r"^[ \t]*Example:[ \t]*\n(?:.*\n)*?[ \t]*>>> ", re.MULTILINE)


def public_functions(module: types.ModuleType) -> dict[str, types.FunctionType]:
    """The functions defined in ``module`` (not imported into it) whose names do not start with ``_``."""
    return {name: f for name, f in vars(module).items()
            if not name.startswith("_") and inspect.isfunction(f) and f.__module__ == module.__name__}


def without_example(module: types.ModuleType) -> list[str]:
    """The public functions of ``module`` whose docstring has no ``Example:`` section with a doctest."""
    return sorted(name for name, f in public_functions(module).items() if not _EXAMPLE.search(f.__doc__ or ""))


@pytest.mark.parametrize("name", MODULES)
def test_every_public_function_has_an_example(name):
    module = importlib.import_module(name)
    assert public_functions(module), f"{name} defines no public function: is the module list out of date?"
    missing = without_example(module)
    assert not missing, f"{name}: public functions without an `Example:` doctest: {', '.join(missing)}"


def test_the_check_names_what_lacks_an_example():
    module = types.ModuleType("fake")
    source = '''
from textwrap import dedent

def shown(x):
    """Doubles.

    Example:
        >>> shown(2)
        4
    """
    return 2 * x

def told(x):
    """Doubles; see the Example: section of shown."""
    return 2 * x

def heading_only(x):
    """Doubles.

    Example:
    """
    return 2 * x

def bare(x):
    return x

def _private(x):
    return x
'''
    exec(compile(source, "fake", "exec"), module.__dict__)
    assert sorted(public_functions(module)) == ["bare", "heading_only", "shown", "told"]
    assert without_example(module) == ["bare", "heading_only", "told"]
