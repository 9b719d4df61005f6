"""Shared test configuration: deterministic hypothesis profiles, tolerances and devices.

Profiles (select with HYPOTHESIS_PROFILE): ``ci`` (default; derandomised,
few examples, what `.ci/run` runs) and ``full`` (many examples, for sweeps).
Devices: the ``device`` fixture runs a test on the CPU, and on CUDA where a GPU
is present; such tests carry the ``device`` marker (``pytest -m device``).
"""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=12, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("full", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(min(2, torch.get_num_threads()))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    """Each device of :data:`DEVICES` in turn, as a string for ``.to(device)``."""
    return request.param
