"""Cosmic-ray detection algorithms on numpy or Dask arrays (layer 2)."""

from .lacosmic import detect_cosmics, lacosmic
from .median_method import cosmicray_median
from .cr2images import cr2images
from .median_minimum import median_minimum

__all__ = ["lacosmic", "detect_cosmics", "cosmicray_median", "cr2images", "median_minimum"]
