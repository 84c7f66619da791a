"""Shared fixtures: the real frames in ../shared/data and hypothesis profiles."""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

from shared_data import REAL_FRAMES, SHARED, read_real  # noqa: F401,E402


@pytest.fixture(scope="session")
def real_frames():
    return {name: read_real(name) for name in REAL_FRAMES}
