"""Checks of :func:`crdask.calib.combine.combine`'s parameters (layer 2).

One line per problem, naming the parameter (ccdproc.combine's names), before
any pixel is read; the workflow schema (``steps.masters.combine``) checks a
night's settings with the same :func:`check_params`.

Example
-------
>>> p = check_params("average", False, None, None, False, 1, 1, True, 3, 3, "median",
...                  "std", 1)
>>> (p["sigma"], p["slo"], p["cen_median"])      # kernel-ready values
(True, 3.0, True)
>>> check_params("mean", False, None, None, False, 1, 1, True, 3, 3, "median", "std", 1)
Traceback (most recent call last):
...
ValueError: method must be one of 'average', 'median', 'sum'; got 'mean'
"""

import numbers

import numpy as np

from ..kernels.combine import METHODS

__all__ = ["check_params", "per_frame"]


_CEN_NAMES = {"median": "median", "mean": "mean"}
_DEV_NAMES = {"std": "std", "mad_std": "mad_std"}


def _known_callables():
    """Functions users pass to ccdproc for the sigma-clip centre/deviation."""
    cen, dev = {}, {}
    for f in (np.mean, np.nanmean, np.ma.mean):
        cen[f] = "mean"
    for f in (np.median, np.nanmedian, np.ma.median):
        cen[f] = "median"
    for f in (np.std, np.nanstd, np.ma.std):
        dev[f] = "std"
    try:
        from astropy.stats import mad_std
        dev[mad_std] = "mad_std"
    except ImportError:  # pragma: no cover - astropy is a dependency
        pass
    return cen, dev


def _stat_name(name, value, names, callables):
    if isinstance(value, str):
        if value in names:
            return names[value]
    elif callable(value):
        try:
            if value in callables:
                return callables[value]
        except TypeError:  # unhashable callable
            pass
    allowed = ", ".join(map(repr, names))
    raise ValueError(f"{name} must be one of {allowed} (or the numpy/numpy.ma "
                     f"function of that name); got {value!r}")


def _number(name, value, *, allow_none=False, positive=False, integer=False,
            minimum=None):
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        kind = "an integer" if integer else "a number"
        extra = " or None" if allow_none else ""
        raise TypeError(f"{name} must be {kind}{extra}, got {value!r}")
    if integer and int(value) != value:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and not v > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value) if integer else v


def _flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def per_frame(name, value, n):
    """A 1-D float64 vector of ``n`` finite positive numbers."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be one number per frame (length {n}), "
                        f"got {type(value).__name__}") from None
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be one number per frame: shape ({n},), got "
                         f"shape {arr.shape}")
    bad = np.flatnonzero(~(np.isfinite(arr) & (arr > 0)))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] must be finite and > 0, got {arr[bad[0]]!r}")
    return arr


def check_params(method, minmax_clip, minmax_clip_min, minmax_clip_max, clip_extrema,
                 nlow, nhigh, sigma_clip, sigma_clip_low_thresh, sigma_clip_high_thresh,
                 sigma_clip_func, sigma_clip_dev_func, maxiters):
    """Check :func:`combine`'s scalar parameters (one-line ``ValueError``
    naming the parameter); returns them normalised. The workflow schema
    (``steps.masters.combine``) checks a night's settings with it."""
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; "
                         f"got {method!r}")
    p = {"method": METHODS[method], "vmin": None, "vmax": None, "nlow": 0, "nhigh": 0,
         "sigma": False, "slo": None, "shi": None, "cen_median": True, "dev_mad": False,
         "maxiters": 1}
    if _flag("minmax_clip", minmax_clip):
        lo = _number("minmax_clip_min", minmax_clip_min, allow_none=True)
        hi = _number("minmax_clip_max", minmax_clip_max, allow_none=True)
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"minmax_clip_min ({minmax_clip_min!r}) must be <= "
                             f"minmax_clip_max ({minmax_clip_max!r})")
        p["vmin"], p["vmax"] = lo, hi
    if _flag("clip_extrema", clip_extrema):
        p["nlow"] = 0 if nlow is None else _number("nlow", nlow, integer=True, minimum=0)
        p["nhigh"] = 0 if nhigh is None else _number("nhigh", nhigh, integer=True,
                                                     minimum=0)
    if _flag("sigma_clip", sigma_clip):
        cen, dev = _known_callables()
        p["sigma"] = True
        p["slo"] = _number("sigma_clip_low_thresh", sigma_clip_low_thresh,
                           allow_none=True, positive=True)
        p["shi"] = _number("sigma_clip_high_thresh", sigma_clip_high_thresh,
                           allow_none=True, positive=True)
        p["cen_median"] = _stat_name("sigma_clip_func", sigma_clip_func, _CEN_NAMES,
                                     cen) == "median"
        p["dev_mad"] = _stat_name("sigma_clip_dev_func", sigma_clip_dev_func, _DEV_NAMES,
                                  dev) == "mad_std"
        if maxiters is None:
            p["maxiters"] = -1
        else:
            p["maxiters"] = _number("maxiters", maxiters, integer=True, minimum=1)
    return p


# ---------------------------------------------------------------------------
# Inputs.
