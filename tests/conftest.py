"""Shared pytest configuration: hypothesis profiles (dev by default, ci, deep)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=100, deadline=None)
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    print_blob=True,
    derandomize=True,  # CI is reproducible; run the "deep" profile to explore further
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("deep", max_examples=20_000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
