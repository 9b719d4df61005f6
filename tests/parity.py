"""Helpers for differential tests against Captum 0.9.0 (the oracle; tests only)."""

import torch

# Tolerances from the SPEC: float64 1e-6 relative; float32 1e-4 relative + 1e-5 absolute.
# In float64 the differences are Captum's, not attrfx's: Captum rounds its quadrature step sizes (and its Riemann
# nodes) to float32, 2^-24 ≈ 6e-8 relative per term of the sum, where attrfx's rules are float64 to the last digits
# (tests/test_primitives.py). Where terms of opposite sign cancel, the difference relative to an element grows
# (seen up to ~2e-9 absolute on elements of ~1e-3, about 0.8 of this tolerance): 1e-6 relative + 1e-9 absolute
# covers that with little to spare, and is no looser than that reason needs.
TOLERANCE = {torch.float64: dict(rtol=1e-6, atol=1e-9), torch.float32: dict(rtol=1e-4, atol=1e-5)}


def flat(result):
    """A result (tensor, tuple, list, or (attributions, delta)) as a flat list of tensors."""
    if isinstance(result, torch.Tensor):
        return [result]
    return [t for part in result for t in flat(part)]


def assert_parity(ours, theirs, dtype=torch.float64, scale=1.0):
    """``ours`` equals Captum's ``theirs`` (times ``scale``) within the SPEC tolerance, same structure."""
    assert type(ours) is type(theirs) or (isinstance(ours, tuple) and isinstance(theirs, tuple)), \
        f"structure differs: {type(ours).__name__} vs {type(theirs).__name__}"
    a, b = flat(ours), flat(theirs)
    assert len(a) == len(b), f"{len(a)} tensors vs {len(b)}"
    for x, y in zip(a, b):
        assert x.shape == y.shape, f"shape {tuple(x.shape)} vs {tuple(y.shape)}"
        assert x.dtype == y.dtype, f"dtype {x.dtype} vs {y.dtype}"
        torch.testing.assert_close(x, (y * scale).to(x.dtype), **TOLERANCE[dtype])


def trapezoid_scale(method, n_steps):
    """Captum's trapezoid weights sum to (n-1)/n; attrfx's to 1 (SPEC, "Parity")."""
    return n_steps / (n_steps - 1) if method == "riemann_trapezoid" else 1.0


def gen(seed=0):
    """A fresh ``torch.Generator`` at ``seed``."""
    return torch.Generator().manual_seed(seed)


def close(ours, theirs, **tol):
    """Tensors (or tuples of them) of equal shapes and equal values, Captum's cast to ours' dtype (float32
    tolerance unless given)."""
    ours, theirs = ((ours,) if isinstance(ours, torch.Tensor) else ours,
                    (theirs,) if isinstance(theirs, torch.Tensor) else theirs)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape, f"{tuple(a.shape)} vs {tuple(b.shape)}"
        torch.testing.assert_close(a, b.to(a.dtype), **(tol or TOLERANCE[torch.float32]))


def seeded_coalitions(seed):
    """A Captum-form perturb_func giving the same coalitions to both libraries (a seeded generator function)."""
    def perturb(inputs, **kwargs):
        g = torch.Generator().manual_seed(seed)
        while True:
            yield (torch.rand(1, kwargs["num_interp_features"], generator=g) < 0.5).long()
    return perturb
