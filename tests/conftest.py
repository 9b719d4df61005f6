"""Shared test configuration: deterministic hypothesis profiles and tolerances.

Profiles (select with HYPOTHESIS_PROFILE): ``ci`` (default; derandomised,
few examples, what `.ci/run` runs) and ``full`` (many examples, for sweeps).
"""

import os

import torch
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=12, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("full", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(min(2, torch.get_num_threads()))
