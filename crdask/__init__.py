"""crdask: whole-night CCD reduction and cosmic-ray cleaning on Dask.

``from crdask import lacosmic as detect_cosmics`` is a drop-in for
``astroscrappy.detect_cosmics``.
"""

from ._version import __version__
from .cosmic import cosmicray_median, detect_cosmics, lacosmic

__all__ = ["__version__", "lacosmic", "detect_cosmics", "cosmicray_median"]
