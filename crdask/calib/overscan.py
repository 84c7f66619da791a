"""Overscan (bias-strip) model, overscan subtraction and trimming (layer 2).

A raw CCD frame ``data`` is a 2-D array ``(y, x)`` in ADU (numpy or Dask).
Its overscan or prescan *region* (FITS ``BIASSEC``) is a strip of pixels that
saw no light: usually a block of columns beside the image area, read out with
every row. The bias level in the strip is measured per row (or per column for a
strip of rows), optionally smoothed by a fit along the readout direction, and
subtracted from every pixel of that row (column)::

    strip = parse_section("[1030:1056,1:1024]")                   # BIASSEC (crdask.io)
    model = overscan_model(raw, strip, fit="chebyshev", order=3)
    corrected = subtract_overscan(raw, strip, fit="chebyshev")
    science = trim(corrected, parse_section("[1:1024,1:1024]"))   # DATASEC

Regions and sections may be given as

* a ``Section`` object from :func:`crdask.io.sections.parse_section` (FITS
  text such as ``"[x1:x2,y1:y2]"`` is parsed there, once, in the io layer),
* any object (anything with a ``.slices`` attribute holding
  ``(slice_y, slice_x)``), or
* a ``(slice_y, slice_x)`` tuple of Python slices (0-based, end exclusive).

Conventions, as in ccdproc's ``subtract_overscan``: ``axis`` is the axis of the
*strip* that the statistic collapses (ccdproc's ``overscan_axis``). ``axis=1``
(a block of columns) gives one value per row, ``axis=0`` (a block of rows) one
value per column. When ``axis`` is ``None`` it is guessed from the strip's
shape exactly as ccdproc does: ``0`` if the strip is wider than it is tall,
else ``1``.

Differences from ccdproc, on purpose:

* the fit (``fit=``) rejects outlying rows iteratively (``fit_sigma``,
  ``fit_iters``): a single hot row or a bright-column bleed into the strip no
  longer drags the model (ccdproc's ``model=`` fits all rows, ccdproc issue
  #722). ``fit_iters=0`` reproduces ccdproc's plain least-squares fit.
* NaN pixels in the strip are ignored by every statistic; a row with no finite
  strip pixel gets a NaN model value (no fit) or is left out of the fit.
* the corrected frame is float32 (computed in float64, then rounded once).

Dask: the statistic needs a whole row of the strip, but the strip is narrow, so
the strip is rechunked to one block across its short side and the statistic is
computed block by block (rows are independent). The fit needs the whole 1-D
statistic, which is small: it becomes a single-block Dask array. Subtraction is
a :func:`dask.array.blockwise` that broadcasts the 1-D model (a small Dask
array, never a ``Delayed``) over the blocks of the frame. Every step applies the
same numpy functions to the same numbers as the numpy path, so a chunked result
equals the numpy result bit for bit, whatever the chunking.
"""

import math
import numbers
import warnings

import numpy as np

from ..kernels.calibrate import NO_LEVEL, ROWS, SCALAR, adu_to_electrons
from .fitting import robust_fit

__all__ = [
    "STATISTICS",
    "FIT_METHODS",
    "as_slices",
    "overscan_model",
    "subtract_overscan",
    "correct_bias",
    "trim",
]

#: Allowed values of ``statistic``.
STATISTICS = ("median", "mean", "clipped_mean")
#: Allowed values of ``fit`` (besides ``None``).
FIT_METHODS = ("polynomial", "chebyshev", "spline")


def _is_dask(a):
    return type(a).__module__.split(".")[0] == "dask"


# --------------------------------------------------------------------------
# regions
# --------------------------------------------------------------------------

def _check_slice(s, n, what, where):
    if not isinstance(s, slice):
        raise TypeError(f"{where}{what} must be a slice, got {type(s).__name__}")
    if s.step not in (None, 1):
        raise ValueError(f"{where}{what} step must be 1, got {s.step}")
    start = 0 if s.start is None else int(s.start)
    stop = n if s.stop is None else int(s.stop)
    if start < 0:
        start += n
    if stop < 0:
        stop += n
    if not 0 <= start < stop <= n:
        raise ValueError(f"{where}{what} {s.start}:{s.stop} is empty or outside "
                         f"0:{n}")
    return slice(start, stop)


def as_slices(region, shape, where="region"):
    """Normalise a region to ``(slice_y, slice_x)`` with explicit bounds.

    Parameters
    ----------
    region : Section or tuple of two slices
        An object with a ``.slices`` attribute (``crdask.io.sections.Section``), or a
        ``(slice_y, slice_x)`` tuple (0-based, end exclusive).
    shape : tuple of int
        ``(ny, nx)`` of the frame the region refers to.
    where : str
        Name used in error messages (e.g. ``"BIASSEC"``).

    Returns
    -------
    tuple of slice
        ``(slice(y0, y1), slice(x0, x1))``, 0-based, end exclusive, non-empty
        and inside ``shape``.
    """
    if isinstance(region, str):
        # FITS text is converted once, in the io layer (DESIGN.md: calib may
        # not import io).
        raise TypeError(f"{where}: parse FITS section text with "
                        f"crdask.io.sections.parse_section first, got {region!r}")
    if hasattr(region, "slices"):
        region = region.slices
    if not (isinstance(region, tuple) and len(region) == 2):
        raise TypeError(f"{where}: expected a Section or a (slice_y, slice_x) tuple, "
                        f"got {region!r}")
    prefix = f"{where}: " if where else ""
    return (_check_slice(region[0], shape[0], "y slice", prefix),
            _check_slice(region[1], shape[1], "x slice", prefix))


def _check_data(data):
    if not _is_dask(data):
        data = np.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"data must be a 2-D (y, x) image, got shape {data.shape}")
    return data


# --------------------------------------------------------------------------
# statistic of the strip (numpy, used by both paths)
# --------------------------------------------------------------------------

def _rows_first(block, axis):
    """Strip as a C-contiguous float64 array with the collapsed axis last."""
    a = block if axis == 1 else block.T
    return np.ascontiguousarray(a, dtype=np.float64)


def _strip_statistic(block, axis, statistic, clip_sigma, clip_iters):
    """1-D statistic of ``block`` over ``axis`` (float64, NaN pixels ignored)."""
    a = _rows_first(block, axis)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows -> NaN
        if statistic == "median":
            return np.nanmedian(a, axis=1) if np.isnan(a).any() else np.median(a, axis=1)
        if statistic == "mean":
            return np.nanmean(a, axis=1) if np.isnan(a).any() else np.mean(a, axis=1)
        # clipped_mean: astropy sigma_clip semantics (centre median, scale std,
        # ddof=0; a clipped pixel stays clipped; stop when nothing changes).
        good = np.isfinite(a)
        for _ in range(int(clip_iters)):
            v = np.where(good, a, np.nan)
            centre = np.nanmedian(v, axis=1)[:, None]
            scale = np.nanstd(v, axis=1)[:, None]
            new = good & (np.abs(a - centre) <= clip_sigma * scale)
            if np.array_equal(new, good):
                break
            good = new
        return np.nanmean(np.where(good, a, np.nan), axis=1)


# --------------------------------------------------------------------------
# fit along the readout direction (numpy, used by both paths)
# --------------------------------------------------------------------------

def _fit_model(stat, *, offset, n_full, fit, order, fit_sigma, fit_iters):
    """Fit ``stat`` (one value per row ``offset..offset+len-1``) and evaluate
    it at rows ``0..n_full-1``, rejecting outlying rows iteratively."""
    stat = np.asarray(stat, dtype=np.float64)
    n = stat.size
    rows = np.arange(offset, offset + n, dtype=np.float64)
    # normalise the region's rows to [-1, 1] (conditioning; a fit is a fit)
    half = max((n - 1) / 2.0, 0.5)
    centre = offset + (n - 1) / 2.0
    x = (rows - centre) / half
    x_full = (np.arange(n_full, dtype=np.float64) - centre) / half
    model, _ = robust_fit(stat, x, x_full, fit=fit, order=order, sigma_lower=fit_sigma,
                          sigma_upper=fit_sigma, iters=fit_iters, what="overscan fit")
    return model


# --------------------------------------------------------------------------
# subtraction (one Numba pass per block, used by both paths)
# --------------------------------------------------------------------------

def _apply(block, model, along, level, gain):
    """The block's bias model (see :func:`correct_bias`), level and gain in
    one pass of :func:`~crdask.kernels.calibrate.adu_to_electrons`."""
    block = np.ascontiguousarray(block)
    if along == NO_LEVEL:
        model = np.zeros(1)
        block = block.astype(np.float32, copy=False)
    return adu_to_electrons(block, np.ascontiguousarray(model, dtype=np.float64), along,
                            level, gain)


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------

def _validate(statistic, fit, order, clip_sigma, clip_iters, fit_sigma, fit_iters, axis):
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {', '.join(STATISTICS)}; "
                         f"got {statistic!r}")
    if fit is not None and fit not in FIT_METHODS:
        raise ValueError(f"fit must be None or one of {', '.join(FIT_METHODS)}; got {fit!r}")
    if axis not in (None, 0, 1):
        raise ValueError(f"axis must be None, 0 or 1; got {axis!r}")
    if fit is not None:
        if not isinstance(order, numbers.Integral) or order < (1 if fit == "spline" else 0):
            raise ValueError(f"order must be an integer >= {1 if fit == 'spline' else 0} "
                             f"for fit={fit!r}; got {order!r}")
        if not (fit_sigma > 0 and math.isfinite(fit_sigma)):
            raise ValueError(f"fit_sigma must be a positive number; got {fit_sigma!r}")
        if not (isinstance(fit_iters, numbers.Integral) and fit_iters >= 0):
            raise ValueError(f"fit_iters must be an integer >= 0; got {fit_iters!r}")
    if statistic == "clipped_mean":
        if not (clip_sigma > 0 and math.isfinite(clip_sigma)):
            raise ValueError(f"clip_sigma must be a positive number; got {clip_sigma!r}")
        if not (isinstance(clip_iters, numbers.Integral) and clip_iters >= 0):
            raise ValueError(f"clip_iters must be an integer >= 0; got {clip_iters!r}")


def _model(data, region, axis, statistic, clip_sigma, clip_iters, fit, order,
           fit_sigma, fit_iters):
    """Return (data, model_axis_of_frame, model); model covers the full frame."""
    data = _check_data(data)
    _validate(statistic, fit, order, clip_sigma, clip_iters, fit_sigma, fit_iters, axis)
    sy, sx = as_slices(region, data.shape, where="overscan region")
    strip_shape = (sy.stop - sy.start, sx.stop - sx.start)
    if axis is None:  # ccdproc's guess
        axis = 0 if strip_shape[1] > strip_shape[0] else 1
    # The model runs along the frame axis the statistic does not collapse.
    along = 1 - axis
    span = (sy, sx)[along]
    n_full = data.shape[along]
    covers_all = span.start == 0 and span.stop == n_full
    if fit is None and not covers_all:
        raise ValueError(
            f"overscan region spans {'rows' if along == 0 else 'columns'} "
            f"{span.start}:{span.stop} of 0:{n_full}; without a fit the model is "
            f"only defined there: give a region spanning the whole frame or a fit= "
            f"to extrapolate")
    stat_kw = dict(axis=axis, statistic=statistic, clip_sigma=float(clip_sigma),
                   clip_iters=int(clip_iters))
    fit_kw = dict(offset=span.start, n_full=n_full, fit=fit, order=order,
                  fit_sigma=float(fit_sigma), fit_iters=fit_iters)
    strip = data[sy, sx]
    if not _is_dask(data):
        model = _strip_statistic(strip, **stat_kw)
        if fit is not None:
            model = _fit_model(model, **fit_kw)
        return data, along, model

    strip = strip.rechunk({axis: -1})
    model = strip.map_blocks(_strip_statistic, drop_axis=axis, dtype=np.float64,
                             meta=np.array((), dtype=np.float64), **stat_kw)
    if fit is not None:
        model = model.rechunk(-1).map_blocks(
            _fit_model, chunks=((n_full,),), dtype=np.float64,
            meta=np.array((), dtype=np.float64), **fit_kw)
    model = model.rechunk((data.chunks[along],))
    return data, along, model


def overscan_model(data, region, *, axis=None, statistic="median", clip_sigma=3.0,
                   clip_iters=5, fit=None, order=3, fit_sigma=3.0, fit_iters=3):
    """1-D bias model of a frame measured in its overscan region.

    Parameters
    ----------
    data : numpy.ndarray or dask.array.Array, shape (ny, nx)
        Raw frame in ADU (any real dtype).
    region : str, Section or (slice_y, slice_x)
        The overscan/prescan strip (``BIASSEC``); see the module docstring.
    axis : {None, 0, 1}
        Axis of the strip collapsed by the statistic (ccdproc's
        ``overscan_axis``): ``1`` = one value per row (strip of columns),
        ``0`` = one value per column (strip of rows). ``None``: ``0`` if the
        strip is wider than tall, else ``1`` (ccdproc's guess).
    statistic : {'median', 'mean', 'clipped_mean'}
        Per-row (column) statistic of the strip. ``'clipped_mean'`` is the
        mean after iterative sigma clipping about the median (``clip_sigma``
        times the standard deviation, at most ``clip_iters`` passes), as
        ``astropy.stats.sigma_clipped_stats``.
    clip_sigma : float
        Clipping threshold in standard deviations (``'clipped_mean'`` only).
    clip_iters : int
        Maximum clipping passes (``'clipped_mean'`` only).
    fit : {None, 'polynomial', 'chebyshev', 'spline'}
        Smooth the statistic along the readout direction with a least-squares
        fit: a power-series polynomial or a Chebyshev series of degree
        ``order``, or a cubic spline with ``order`` equal pieces (IRAF's
        ``spline3`` convention). ``None``: use the statistic itself.
    order : int
        Polynomial degree (``'polynomial'``, ``'chebyshev'``) or number of
        spline pieces (``'spline'``). ``fit='polynomial', order=2`` is
        ccdproc's ``model=Polynomial1D(2)``.
    fit_sigma : float
        Rows whose statistic is more than ``fit_sigma`` times the rms of the
        residuals away from the fit are rejected and the fit is redone.
    fit_iters : int
        Maximum rejection passes; ``0`` = a plain least-squares fit (ccdproc).

    Returns
    -------
    numpy.ndarray or dask.array.Array, shape (ny,) or (nx,), float64
        The bias level in ADU for every row (``axis=1``) or column
        (``axis=0``) of the *frame*. Without a fit the region must span the
        whole frame in that direction; with a fit, rows outside the region get
        the fit's (extrapolated) value. A Dask input gives a lazy Dask array.
    """
    _, _, model = _model(data, region, axis, statistic, clip_sigma, clip_iters, fit,
                         order, fit_sigma, fit_iters)
    return model


def subtract_overscan(data, region, *, axis=None, statistic="median", clip_sigma=3.0,
                      clip_iters=5, fit=None, order=3, fit_sigma=3.0, fit_iters=3,
                      level=0.0, gain=1.0):
    """Subtract the overscan model from every row (or column) of a frame.

    The other parameters are those of :func:`overscan_model`; these two
    make it the whole ADU -> e- pass of a single-amplifier frame, in the
    same pass over the pixels (:func:`crdask.kernels.calibrate.adu_to_electrons`):

    region : as for :func:`overscan_model`, or None: no overscan model (the
        frame is converted to float32 first).
    level : float, ADU: a constant bias level subtracted after the model
        (float32 arithmetic; 0 subtracts nothing).
    gain : float, e-/ADU (> 0), multiplied last (float32; 1 leaves ADU).

    Returns
    -------
    numpy.ndarray or dask.array.Array, shape (ny, nx), float32
        ``data - model`` in ADU, broadcast along rows (``axis=1``) or columns
        (``axis=0``); same shape as ``data``, overscan strip included (trim
        afterwards with :func:`trim`). Dask input gives a lazy Dask array with
        the chunks of ``data``, equal bit for bit to the numpy result. With
        ``level`` and ``gain``: ``(data - model - level) * gain`` in e-,
        rounded as those three steps one after another would be.

    Example
    -------
    >>> raw = np.array([[103.0, 105.0, 100.0], [98.0, 99.0, 97.0]], np.float32)
    >>> subtract_overscan(raw, (slice(None), slice(2, 3)), gain=2.0).tolist()
    [[6.0, 10.0, 0.0], [2.0, 4.0, 0.0]]
    """
    if region is None:
        return correct_bias(_check_data(data), None, NO_LEVEL, level=level, gain=gain)
    data, along, model = _model(data, region, axis, statistic, clip_sigma, clip_iters,
                                fit, order, fit_sigma, fit_iters)
    return correct_bias(data, model, along, level=level, gain=gain)


def correct_bias(data, model, along, *, level=0.0, gain=1.0):
    """``(data - model - level) * gain`` as float32, in one pass over the pixels.

    The subtraction of :func:`subtract_overscan`, for any bias model: also
    each amplifier's (:func:`crdask.calib.amplifiers.assemble_amplifiers`).

    Parameters
    ----------
    data : numpy.ndarray or dask.array.Array, shape (ny, nx), ADU.
    model : the bias level in ADU (float64): 1-D, one per row (``along`` =
        ``ROWS``) or per column (``COLUMNS``), numpy or Dask; a number
        (``SCALAR``); or None (``NO_LEVEL``: ``data`` converted to float32).
    along : ``ROWS``, ``COLUMNS``, ``SCALAR`` or ``NO_LEVEL``
        (:mod:`crdask.kernels.calibrate`).
    level : float, ADU, a constant subtracted after the model.
    gain : float, e-/ADU (> 0), multiplied last.

    Returns
    -------
    The same kind of array as ``data``, float32, each step rounded as done
    one after another (:func:`crdask.kernels.calibrate.adu_to_electrons`);
    Dask: the chunks of ``data``, the same bits as numpy.

    Example
    -------
    >>> correct_bias(np.array([[3.0, 5.0]], np.float32), 1.0, SCALAR, gain=2.0).tolist()
    [[4.0, 8.0]]
    """
    if not gain > 0:
        raise ValueError(f"gain must be > 0 e-/ADU, got {gain!r}")
    level, gain = np.float32(level), np.float32(gain)
    if model is None:
        along = NO_LEVEL
    elif along == SCALAR:
        model = np.array([model], np.float64)
    if not _is_dask(data):
        return _apply(data, model, along, level, gain)
    meta = np.empty((0, 0), dtype=np.float32)
    if along in (NO_LEVEL, SCALAR):
        return data.map_blocks(_apply, model, along, level, gain, dtype=np.float32, meta=meta)
    import dask.array as da
    return da.blockwise(_apply, "ij", data, "ij", model, "i" if along == ROWS else "j",
                        along, None, level, None, gain, None,
                        dtype=np.float32, meta=meta)
    import dask.array as da
    return da.blockwise(_apply, "ij", data, "ij", model, "i" if along == ROWS else "j",
                        along, None, level, None, gain, None,
                        dtype=np.float32, meta=meta)


def trim(data, section):
    """Cut a frame down to a section (e.g. ``DATASEC``/``TRIMSEC``).

    Parameters
    ----------
    data : numpy.ndarray or dask.array.Array, shape (ny, nx)
        Any frame.
    section : Section or (slice_y, slice_x)
        Part to keep; see the module docstring.

    Returns
    -------
    numpy.ndarray or dask.array.Array, shape (y1 - y0, x1 - x0)
        The section, same dtype and units as ``data``, in the section's own
        orientation (a reversed FITS range such as ``[100:1,*]`` is flipped,
        as :func:`crdask.io.sections.apply_section`). For numpy input a
        copy (so the raw frame can never be modified through it); for Dask a
        lazy slice.
    """
    data = _check_data(data)
    sy, sx = as_slices(section, data.shape, where="trim section")
    out = data[sy, sx]
    # a reversed FITS range (x1 > x2) reads the pixels backwards
    if getattr(section, "flip_y", False):
        out = out[::-1, :]
    if getattr(section, "flip_x", False):
        out = out[:, ::-1]
    return out if _is_dask(data) else out.copy()
