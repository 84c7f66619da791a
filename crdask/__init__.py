"""crdask: whole-night CCD reduction and cosmic-ray cleaning on Dask.

``from crdask import lacosmic as detect_cosmics`` is a drop-in for
``astroscrappy.detect_cosmics``; ``crdask.run_night(config, client=None)``
reduces a night as a workflow file says.
"""

from ._version import __version__
from .cosmic import cosmicray_median, cr2images, detect_cosmics, lacosmic, median_minimum


def run_night(config, client=None, **kwargs):
    """Reduce a night from a workflow (YAML path, mapping or ``Workflow``);
    see :func:`crdask.pipeline.night.run_night`. Imported on first use so that
    ``import crdask`` stays light."""
    from .pipeline.night import run_night as _run_night

    return _run_night(config, client=client, **kwargs)


__all__ = ["__version__", "lacosmic", "detect_cosmics", "cosmicray_median", "cr2images",
           "median_minimum",
           "run_night"]
