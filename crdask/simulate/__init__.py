"""Seeded synthetic CCD data with known truth, for tests, benchmarks and demos.

``frame``: one calibrated-looking frame with the true cosmic-ray mask.
"""

from .frame import SimulatedFrame, label_components, score, simulate_frame

__all__ = ["SimulatedFrame", "simulate_frame", "score", "label_components"]
