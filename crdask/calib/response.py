"""Spectroscopic flats: normalise a lamp flat by its response along the dispersion.

An imaging flat is normalised by one number (its median), because the lamp or
sky illuminates the detector with the same colour everywhere. A long-slit lamp
flat is a *spectrum*: the lamp's colour times the grating efficiency times
the detector's QE changes the level along the dispersion axis by factors of
10 or more (the blue end of a tungsten lamp through a low-resolution grism is
often 20x fainter than the red). Dividing such a flat by its median would
imprint the lamp spectrum on every science frame and flag the whole faint end
as "low-response bad pixels". Instead (IRAF ``noao.twodspec.longslit.
response``, PypeIt's flat field):

1. **collapse**: the spatial profile (median of each spatial line along the
   dispersion) says which spatial lines the slit illuminates (above
   ``illum_fraction`` of the brightest; or an explicit ``slit`` range); the
   lamp spectrum is the median over those lines at each dispersion pixel;
2. **fit** the spectrum with a smooth function along the dispersion (a cubic
   spline with ``order`` pieces, or a Legendre-like Chebyshev / power-series
   polynomial of degree ``order``) with iterative sigma rejection
   (``fit_sigma_lower``/``fit_sigma_upper``, ``fit_iters``), so lamp lines,
   bad columns and CRs do not pull the fit -- :func:`crdask.calib.fitting.
   robust_fit`, shared with the overscan model;
3. **divide** every spatial line by the fitted response. The normalised flat
   keeps only the pixel-to-pixel sensitivity and the slit-illumination
   profile (median ~1 along the whole spectrum).

Pixels outside the illuminated slit, or where the collapsed spectrum or the
fitted response is below ``threshold`` (default 1% of the spectrum's
maximum; IRAF's ``threshold``), are set
to exactly 1 and flagged (``valid`` is False): dividing a science frame by 1
leaves them uncorrected instead of amplifying noise. A bad-pixel mask is then
taken from the normalised flat: valid pixels below ``low`` or above ``high``
(or not finite).

Dispersion axis: ``dispaxis`` in the FITS ``DISPAXIS`` convention: ``1`` =
the dispersion runs along ``NAXIS1`` (x, columns: each row is a spectrum),
``2`` = along ``NAXIS2`` (y, rows). The pipeline takes it from the workflow
(``dispersion_axis``) or the ``DISPAXIS`` header keyword of the flats.

Dask: the spatial profile and the spectrum are reductions to 1-D arrays (each
chunk band is rechunked to whole lines, then an exact median per line); the
fit is a single-block step on the 1-D spectrum; the division is per chunk.
Medians depend only on the values, never on their order or on the chunking,
so the Dask result equals the numpy result bit for bit.

Arcs (for the pipeline)
-----------------------
Arc-lamp frames (frame type ``arc``: ``WAVE``, ``ARC``, ``COMP``, ``LAMP``)
are wavelength calibrators, not science: reduce them with
:func:`calibrate_arc` -- overscan-subtracted per amplifier, trimmed,
converted to electrons, minus the master bias (dark current only if a dark
master exists and the arc is long; arcs are seconds), **not** flat-fielded
by default (the lines are what is measured, and a response-normalised flat
would only add noise), and **no cosmic-ray cleaning by default** (arc lines
are sharp and L.A.Cosmic at science settings clips their cores; a workflow
may enable it with a high ``objlim``). Write them as calibrated products
(``<stem>_cal.fits`` with ``UNCERT`` and ``MASK``) next to the science
frames, grouped by setup (grism, slit, binning), and list them in the run
report under "arcs", so a wavelength-calibration step can find the arc of
each science setup.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass

import numpy as np

from .calibrate import calibrate_frame
from .fitting import FIT_FAMILIES, robust_fit

__all__ = ["ResponseResult", "normalise_response", "calibrate_arc"]


def _is_dask(a):
    return type(a).__module__.split(".")[0] == "dask"


@dataclass
class ResponseResult:
    """Result of :func:`normalise_response` (numpy or Dask, as the input).

    flat : float32 (ny, nx), dimensionless -- the normalised flat; exactly 1
        where ``valid`` is False.
    response : float64 (n_disp,) -- the fitted lamp response along the
        dispersion, in the units of the input (ADU or e-).
    spectrum : float64 (n_disp,) -- the collapsed spectrum that was fitted.
    illuminated : bool (n_spatial,) -- spatial lines inside the slit.
    valid : bool (ny, nx) -- illuminated and response >= threshold.
    bad : bool (ny, nx) -- bad pixels of the normalised flat (valid pixels
        below ``low``, above ``high`` or not finite).
    fitted : bool (n_disp,) -- dispersion pixels kept by the last fit.
    """

    flat: object
    response: object
    spectrum: object
    illuminated: object
    valid: object
    bad: object
    fitted: object


def _line_median(block):
    """Median of each line (axis 1) of a block; NaN ignored, all-NaN -> NaN."""
    a = np.asarray(block, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(a, axis=1) if np.isnan(a).any() else np.median(a, axis=1)


def _illuminated(profile, illum_fraction, slit, n):
    """Spatial lines in the slit: an explicit ``(start, stop)`` range, else
    those whose median is >= illum_fraction of the brightest line."""
    profile = np.asarray(profile, dtype=np.float64)
    if slit is not None:
        out = np.zeros(n, bool)
        out[slit[0]:slit[1]] = True
        return out
    top = np.nanmax(profile) if np.isfinite(profile).any() else np.nan
    if not top > 0:
        raise ValueError("flat: no spatial line has a positive level (is it a lamp "
                         "flat, bias-subtracted?)")
    return np.isfinite(profile) & (profile >= illum_fraction * top)


def _spectrum(block_t, illum):
    """Median over the illuminated spatial lines at each dispersion pixel.
    ``block_t`` is (n_spatial, n_disp_chunk) with whole spatial lines."""
    a = np.asarray(block_t, dtype=np.float64)[np.asarray(illum), :]
    return _line_median(a.T)


def _fit(spectrum, *, fit, order, lo, hi, iters, threshold):
    """Fit the collapsed spectrum where it is >= threshold; rows of the
    result: model, kept by the last fit, usable (spectrum and model >= threshold)."""
    spectrum = np.asarray(spectrum, dtype=np.float64)
    n = spectrum.size
    thr = 0.01 * np.nanmax(spectrum) if threshold is None else threshold
    above = spectrum >= thr
    x = (np.arange(n, dtype=np.float64) - (n - 1) / 2.0) / max((n - 1) / 2.0, 0.5)
    model, kept = robust_fit(np.where(above, spectrum, np.nan), x, x, fit=fit,
                             order=order, sigma_lower=lo, sigma_upper=hi, iters=iters,
                             what="flat response fit")
    ok = above & (model >= thr)
    return np.stack([model, kept.astype(np.float64), ok.astype(np.float64)])


def _divide(block, resp, ok, illum, low, high):
    """Normalised flat, valid and bad for one chunk; dispersion along axis 1,
    ``resp`` the chunk's response, ``ok`` where it is above the threshold,
    ``illum`` the chunk's spatial lines inside the slit."""
    resp = np.asarray(resp, dtype=np.float64)
    illum = np.asarray(illum, dtype=bool)
    valid = illum[:, None] & np.asarray(ok, dtype=bool)[None, :]
    safe = np.where(resp > 0, resp, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = (np.asarray(block, dtype=np.float64) / safe[None, :]).astype(np.float32)
    norm = np.where(valid, norm, np.float32(1.0)).astype(np.float32)
    bad = valid & ~np.isfinite(norm)
    if low is not None:
        bad |= valid & (norm < low)
    if high is not None:
        bad |= valid & (norm > high)
    return np.stack([norm, valid.astype(np.float32), bad.astype(np.float32)])


def _check(dispaxis, fit, order, fit_sigma_lower, fit_sigma_upper, fit_iters,
           illum_fraction, threshold, low, high):
    if dispaxis not in (1, 2):
        raise ValueError(f"dispaxis must be 1 (dispersion along NAXIS1, x) or 2 (along "
                         f"NAXIS2, y); got {dispaxis!r}")
    if fit not in FIT_FAMILIES:
        raise ValueError(f"fit must be one of {', '.join(FIT_FAMILIES)}; got {fit!r}")
    if not isinstance(order, numbers.Integral) or order < (1 if fit == "spline" else 0):
        raise ValueError(f"order must be an integer >= {1 if fit == 'spline' else 0} for "
                         f"fit={fit!r}; got {order!r}")
    for name, v in (("fit_sigma_lower", fit_sigma_lower), ("fit_sigma_upper", fit_sigma_upper)):
        if not (isinstance(v, numbers.Real) and v > 0 and math.isfinite(v)):
            raise ValueError(f"{name} must be a positive number; got {v!r}")
    if not (isinstance(fit_iters, numbers.Integral) and fit_iters >= 0):
        raise ValueError(f"fit_iters must be an integer >= 0; got {fit_iters!r}")
    if not (isinstance(illum_fraction, numbers.Real) and 0 < illum_fraction < 1):
        raise ValueError(f"illum_fraction must be in (0, 1); got {illum_fraction!r}")
    if threshold is not None and not (isinstance(threshold, numbers.Real)
                                      and math.isfinite(threshold)):
        raise ValueError(f"threshold must be a number or None; got {threshold!r}")
    for name, v in (("low", low), ("high", high)):
        if v is not None and not (isinstance(v, numbers.Real) and math.isfinite(v)):
            raise ValueError(f"{name} must be a number or None; got {v!r}")


def normalise_response(flat, *, dispaxis=1, fit="spline", order=20,
                       fit_sigma_lower=3.0, fit_sigma_upper=3.0, fit_iters=5,
                       illum_fraction=0.1, slit=None, threshold=None,
                       low=0.5, high=1.5):
    """Normalise a master lamp flat by its response along the dispersion axis.

    Parameters
    ----------
    flat : numpy.ndarray or dask.array.Array, shape (ny, nx)
        Master lamp flat, bias- (and dark-) subtracted, any units (e- or ADU).
    dispaxis : {1, 2}
        FITS ``DISPAXIS``: 1 = dispersion along x (NAXIS1), 2 = along y.
    fit : {'spline', 'chebyshev', 'polynomial'}
        Function fitted to the collapsed spectrum.
    order : int
        Spline pieces (``order + 1`` knots) or polynomial degree. Enough to
        follow the lamp's shape, too few to follow pixel-to-pixel noise
        (default 20 pieces).
    fit_sigma_lower, fit_sigma_upper : float
        Rejection thresholds below/above the fit, in rms of the residuals.
    fit_iters : int
        Maximum rejection passes (0 = plain least squares).
    illum_fraction : float in (0, 1)
        Spatial lines whose median level is at least this fraction of the
        brightest line are inside the slit (ignored when ``slit`` is given).
    slit : (start, stop) or None
        Explicit 0-based, end-exclusive range of illuminated spatial lines.
    threshold : float or None
        Dispersion pixels whose collapsed spectrum is below this (input
        units) are left out of the fit; there, and where the fitted response
        is below it, the flat is "not illuminated": set to 1 and flagged.
        ``None``: 1% of the maximum of the collapsed spectrum (IRAF
        ``response``'s ``threshold``, relative).
    low, high : float or None
        Valid pixels of the normalised flat below ``low`` / above ``high``
        go into ``bad`` (``None`` = no such limit).

    Returns
    -------
    ResponseResult
        See :class:`ResponseResult`. Dask in, Dask out (lazy; equal bit for
        bit to the numpy result).

    Example
    -------
    >>> import numpy as np
    >>> x = np.linspace(1, 20, 300)
    >>> lamp = np.outer(np.ones(80), x * 1000.0)         # spectrum along x
    >>> r = normalise_response(lamp, dispaxis=1, order=4)
    >>> bool(abs(np.median(r.flat) - 1) < 1e-6), int(r.bad.sum())
    (True, 0)
    """
    _check(dispaxis, fit, order, fit_sigma_lower, fit_sigma_upper, fit_iters,
           illum_fraction, threshold, low, high)
    lazy = _is_dask(flat)
    if not lazy:
        flat = np.asarray(flat)
    if flat.ndim != 2:
        raise ValueError(f"flat must be a 2-D (y, x) image, got shape {flat.shape}")
    # work with the dispersion along axis 1 (each line a spectrum)
    a = flat if dispaxis == 1 else flat.T
    n_sp, n_disp = a.shape
    if slit is not None:
        s0, s1 = (int(v) for v in slit)
        if not 0 <= s0 < s1 <= n_sp:
            raise ValueError(f"slit {slit!r} is empty or outside 0:{n_sp} spatial lines")
        slit = (s0, s1)
    fit_kw = dict(fit=fit, order=order, lo=float(fit_sigma_lower),
                  hi=float(fit_sigma_upper), iters=int(fit_iters),
                  threshold=None if threshold is None else float(threshold))
    low = None if low is None else float(low)
    high = None if high is None else float(high)

    if not lazy:
        profile = _line_median(a)
        illum = _illuminated(profile, illum_fraction, slit, n_sp)
        spectrum = _spectrum(a, illum)
        model, kept, ok = _fit(spectrum, **fit_kw)
        norm, valid, bad = _divide(a, model, ok > 0.5, illum, low, high)
        valid, bad = valid.astype(bool), bad.astype(bool)
        if dispaxis == 2:
            norm, valid, bad = norm.T.copy(), valid.T.copy(), bad.T.copy()
        return ResponseResult(flat=norm, response=model, spectrum=spectrum,
                              illuminated=illum, valid=valid, bad=bad,
                              fitted=kept.astype(bool))

    import dask.array as da
    f64 = np.array((), dtype=np.float64)
    profile = a.rechunk({1: -1}).map_blocks(_line_median, drop_axis=1, dtype=np.float64,
                                            meta=f64)
    illum = profile.rechunk(-1).map_blocks(
        _illuminated, illum_fraction, slit, n_sp, dtype=bool, meta=np.array((), bool))
    spectrum = da.blockwise(_spectrum, "j", a.rechunk({0: -1}), "ij", illum, "i",
                            concatenate=True, dtype=np.float64, meta=f64)
    fitted = spectrum.rechunk(-1).map_blocks(
        _fit, new_axis=0, chunks=((3,), (n_disp,)), dtype=np.float64,
        meta=np.empty((0, 0)), **fit_kw)
    model, kept, ok = fitted[0], fitted[1] > 0.5, fitted[2] > 0.5
    resp_c = model.rechunk((a.chunks[1],))
    ok_c = ok.rechunk((a.chunks[1],))
    illum_c = illum.rechunk((a.chunks[0],))
    stacked = da.blockwise(_divide, "kij", a, "ij", resp_c, "j", ok_c, "j", illum_c, "i",
                           low, None, high, None, new_axes={"k": 3}, dtype=np.float32,
                           meta=np.empty((0, 0, 0), np.float32))
    norm, valid, bad = stacked[0], stacked[1] > 0.5, stacked[2] > 0.5
    if dispaxis == 2:
        norm, valid, bad = norm.T, valid.T, bad.T
    return ResponseResult(flat=norm, response=model, spectrum=spectrum,
                          illuminated=illum, valid=valid, bad=bad, fitted=kept)


def calibrate_arc(data_e, *, readnoise, bias=None, bias_var=None, dark=None,
                  dark_var=None, exptime=None, flat=None, flat_var=None, bad=None,
                  saturated=None):
    """Calibrate an arc-lamp frame: bias (and optional dark) subtraction only.

    Parameters are those of :func:`crdask.calib.calibrate.calibrate_frame`
    (``data_e`` overscan-subtracted, trimmed, in e-; ``readnoise`` in e-, a
    number or a map). ``flat`` defaults to ``None`` on purpose: arcs are not
    flat-fielded unless the workflow asks (see the module docstring). No
    cosmic-ray step happens here; the pipeline runs one only when the
    workflow enables it for arcs.

    Returns
    -------
    CalibratedFrame
        ``sci`` (e-), ``var`` (e-^2), ``mask`` (uint8 bits), shape of ``data_e``.

    Example
    -------
    >>> import numpy as np
    >>> arc = calibrate_arc(np.full((4, 4), 110.0, np.float32), readnoise=3.0,
    ...                     bias=np.full((4, 4), 10.0, np.float32))
    >>> float(arc.sci[0, 0]), float(arc.var[0, 0])
    (100.0, 109.0)
    """
    return calibrate_frame(data_e, readnoise=readnoise, exptime=exptime, bias=bias,
                           bias_var=bias_var, dark=dark, dark_var=dark_var, flat=flat,
                           flat_var=flat_var, bad=bad, saturated=saturated)
