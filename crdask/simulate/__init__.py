"""Seeded synthetic CCD data with known truth, for tests, benchmarks and demos.

``frame``: one calibrated-looking frame with the true cosmic-ray mask.
``detector``: the simulated CCD (geometry, one or two amplifiers, fixed
patterns). ``raw``: raw instrument frames (bias, dark, flat, science; uint16 with
overscan and header sections) with their truth kept apart.
``night``: a whole night of raw frames on disk plus a separate truth
directory (:func:`write_night`), and damaged copies for error tests.
``longslit``: a long-slit spectroscopic night (:func:`simulate_longslit_night`).
``writers``: single-HDU, MEF, gzip and fpack files (:func:`write_raw`).
"""

from .frame import SimulatedFrame, label_components, score, simulate_frame
from .night import NightManifest, damage, drop_keyword, truncate, write_night, wrong_shape
from .detector import Detector
from .raw import RawSimulation, StarField, make_star_field, simulate_raw
from .longslit import simulate_longslit_night
from .writers import FORMATS, write_raw

__all__ = [
    "SimulatedFrame", "simulate_frame", "score", "label_components",
    "Detector", "RawSimulation", "StarField", "simulate_raw", "make_star_field",
    "NightManifest", "write_night", "damage", "truncate", "drop_keyword", "wrong_shape",
    "simulate_longslit_night", "FORMATS", "write_raw",
]
