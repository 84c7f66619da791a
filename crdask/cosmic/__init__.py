"""Cosmic-ray detection algorithms on numpy or Dask arrays (layer 2)."""

from .lacosmic import detect_cosmics, lacosmic

__all__ = ["lacosmic", "detect_cosmics"]
