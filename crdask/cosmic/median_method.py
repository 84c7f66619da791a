"""``cosmicray_median``: the median-filter CR method of ccdproc (IRAF crmedian).

Same parameters, defaults and meaning as ``ccdproc.cosmicray_median`` 2.5:

1. ``residual = (data - median_filter(data, mbox)) / error``, the median
   taken over an ``mbox x mbox`` box with the frame mirrored at its edges
   (scipy's ``'reflect'`` mode = numpy's ``'symmetric'`` padding);
2. ``error`` is ``error_image`` (a number or an image), or, when it is None,
   the standard deviation of the whole frame (``data.std()``, not a robust
   estimate: that is what ccdproc uses);
3. CR pixels: ``residual > thresh``; grown by a ``gbox x gbox`` box when
   ``gbox > 1`` (``gbox`` 0 or 1: no growing);
4. when ``rbox > 0`` flagged pixels are replaced by the ``rbox x rbox`` median
   of the input, CR pixels included (ccdproc passes a masked array to
   ``scipy.ndimage.median_filter``, which ignores the mask); ``rbox == 0``
   leaves the data unchanged (the mask is still returned).

Even ``gbox``/``rbox`` use scipy's window placement (one pixel further back
than forward) and, for medians of an even count, the upper median.

Numpy in -> ``(cleaned float32, crmask bool)``, ccdproc's order; Dask array in
-> the same pair as lazy Dask arrays; ``CCDData`` in -> ``CCDData`` (data
cleaned, CRs OR-ed into ``.mask``, unit, uncertainty and metadata kept).
Chunked and whole-frame results are identical bit for bit: blocks overlap by
:func:`overlap_depth` pixels, the frame edges are mirrored inside the blocks
that touch them, and the frame's standard deviation is summed exactly
(:func:`crdask.kernels.box.sum_partials` + ``math.fsum``) so it does not
depend on the chunking either.

Differences from ccdproc (all deliberate):

* Arithmetic is float32 (data and ``error_image`` are cast to float32), as
  ccdproc does for float32 input; float64 input is therefore not bit-equal.
* The frame's standard deviation is the exactly summed float64 value rounded
  to float32; ccdproc's float32 ``data.std()`` may differ in the last bits,
  so pixels lying exactly on the threshold can differ.
* Bad pixels -- non-finite values (NaN, inf), the mask of a
  ``numpy.ma.MaskedArray`` and the ``.mask`` of a ``CCDData`` -- are never
  flagged, are returned unchanged, are left out of the standard deviation and
  of the replacement medians, and enter the ``mbox`` median as alternating
  +inf/-inf (a checkerboard in frame coordinates, so a bad region pulls the
  median neither up nor down). A pixel whose ``mbox`` median is not finite,
  or whose error is not finite and positive, is not flagged. (ccdproc
  propagates NaN into ``data.std()`` and then flags nothing.)
* ``mbox`` must be odd and >= 3 (ccdproc also accepts even boxes).
* ``CCDData`` without uncertainty and ``error_image=None`` uses the frame's
  standard deviation (ccdproc 2.5 raises ``AttributeError``); an uncertainty
  of any astropy class is converted to a standard deviation first (ccdproc
  uses ``uncertainty.array`` as is, i.e. a variance as if it were a sigma).
"""

import math
import os

import dask
import dask.array as da
import numpy as np
from dask.array.overlap import ensure_minimum_chunksize

from ..kernels.box import box_max, box_median_at, sum_partials
from ..kernels.median import medfilt
from .params import Param, ParamSet
from .registry import CRResult, Method, register
from .validation import as_image, check_number, check_same_shape, is_ccddata

__all__ = ["cosmicray_median", "overlap_depth", "PARAMS", "detect_frame"]


def cosmicray_median(ccd, error_image=None, thresh=5, mbox=11, gbox=0, rbox=0):
    """Find (and with ``rbox > 0`` replace) cosmic rays with a median filter.

    Parameters
    ----------
    ccd : numpy array, ``numpy.ma.MaskedArray``, Dask array or ``CCDData``
        2-D image ``(y, x)``.
    error_image : None, number > 0, or array of ``ccd``'s shape
        The noise (one sigma) of each pixel. None: the ``CCDData``
        uncertainty (as a standard deviation) if there is one, else the
        standard deviation of the whole frame.
    thresh : number > 0
        Threshold in units of ``error_image`` (5).
    mbox : odd int >= 3
        Side of the median box used for detection (11).
    gbox : int >= 0
        Side of the box the CR mask is grown by; 0 or 1: no growing (0).
    rbox : int >= 0
        Side of the median box for replacement values; 0: no replacement (0).

    Returns
    -------
    ``(cleaned, crmask)`` -- float32 and bool arrays of ``ccd``'s shape (lazy
    Dask arrays for Dask input) -- or, for ``CCDData`` input, a new
    ``CCDData`` with cleaned data and ``mask = old mask | crmask``.

    See the module docstring for the algorithm and for where this differs
    from ``ccdproc.cosmicray_median``.
    """
    p = _check_params(thresh, mbox, gbox, rbox)
    if is_ccddata(ccd):
        return _median_ccddata(ccd, error_image, p)
    if isinstance(ccd, np.ma.MaskedArray):
        bad = np.ma.getmaskarray(ccd)
        data = as_image("ccd", np.ma.getdata(ccd))
        bad = bad if bad.any() else None
    else:
        data = as_image("ccd", ccd)
        bad = None
    err = _check_error(error_image, data)
    if isinstance(data, da.Array):
        return _median_graph(data, err, bad, p)
    return _median_numpy(data, err, bad, p)


def overlap_depth(mbox, gbox, rbox):
    """Pixels a block needs beyond its edges so that its output equals the
    whole-frame output: the detection median reaches ``mbox // 2``, growing
    looks ``gbox // 2`` further, replacement medians reach ``rbox // 2``."""
    return max(mbox // 2 + gbox // 2, rbox // 2)


# ---------------------------------------------------------------------------
# Validation.
# ---------------------------------------------------------------------------

#: Every parameter of :func:`cosmicray_median` but the error image, written
#: once (ccdproc's names and defaults).
PARAMS = ParamSet("median", [
    Param("thresh", 5, "float", "threshold in units of the noise", unit="sigma",
          minimum=0, strict=True),
    Param("mbox", 11, "int", "side of the detection median box", unit="px", minimum=3,
          odd=True),
    Param("gbox", 0, "int", "side of the box the mask is grown by (0, 1: none)",
          unit="px", minimum=0),
    Param("rbox", 0, "int", "side of the replacement median box (0: no replacement)",
          unit="px", minimum=0),
])


def _check_params(thresh, mbox, gbox, rbox):
    v = PARAMS.validate(dict(thresh=thresh, mbox=mbox, gbox=gbox, rbox=rbox))
    return {"thresh": np.float32(v["thresh"]), "mbox": v["mbox"], "gbox": v["gbox"],
            "rbox": v["rbox"], "depth": overlap_depth(v["mbox"], v["gbox"], v["rbox"])}


def detect_frame(data, params, *, bad=None, var=None, readnoise=0.0, num_threads=None):
    """The registry's ``frame`` convention: bad pixels enter as NaN (never
    flagged, never used, returned unchanged), the error image is the square
    root of ``var``. Returns a :class:`~crdask.cosmic.registry.CRResult`."""
    data = np.asarray(data, np.float32)
    err = None if var is None else np.sqrt(np.maximum(var, 0)).astype(np.float32)
    work = data if bad is None else np.where(bad, np.float32(np.nan), data)
    clean, crmask = cosmicray_median(work, error_image=err, **params)
    if bad is not None:
        clean = np.where(bad, data, clean)
        crmask = crmask & ~bad
    return CRResult(clean=np.asarray(clean, np.float32), crmask=np.asarray(crmask, bool))


register(Method("median", "frame", PARAMS, detect_frame,
                summary="median-filter method of ccdproc (IRAF crmedian)"))


def _check_error(error_image, data):
    """None, a float32 scalar, or a float32 image (numpy or Dask)."""
    if error_image is None:
        return None
    if np.ndim(error_image) == 0 and not isinstance(error_image, da.Array):
        v = check_number("error_image", error_image if not isinstance(error_image, np.ndarray)
                         else error_image.item(), minimum=0, strict=True)
        return np.float32(v)
    err = as_image("error_image", error_image)
    check_same_shape("error_image", err, data)
    return err.astype(np.float32)


# ---------------------------------------------------------------------------
# Image-wide standard deviation, exact and chunking-independent.
# ---------------------------------------------------------------------------

def _good(block, bad):
    g = np.isfinite(block)
    if bad is not None:
        g &= ~np.asarray(bad, dtype=bool)
    return g


def _sum_block(block, bad=None, center=np.nan):
    block = np.ascontiguousarray(block)
    return sum_partials(block, np.ascontiguousarray(_good(block, bad)), float(center))


def _mean_of(parts):
    n = sum(c for _, c in parts)
    if n == 0:
        return np.nan
    return math.fsum(np.concatenate([p for p, _ in parts])) / n


def _std_of(parts):
    n = sum(c for _, c in parts)
    if n == 0:
        return np.float32(np.nan)
    return np.float32(math.sqrt(math.fsum(np.concatenate([p for p, _ in parts])) / n))


def frame_std(data, bad=None):
    """Population standard deviation (ddof=0) of the good pixels of a numpy or
    Dask image, as float32 (delayed for Dask): the mean and the sum of squared
    deviations are summed exactly, so the value does not depend on chunking.
    NaN when no pixel is good."""
    if not isinstance(data, da.Array):
        mean = _mean_of([_sum_block(data, bad)])
        return _std_of([_sum_block(data, bad, mean)])
    blocks = data.to_delayed().ravel()
    bads = [None] * len(blocks) if bad is None else \
        da.asarray(bad).rechunk(data.chunks).to_delayed().ravel()
    first = [dask.delayed(_sum_block, pure=True)(b, m) for b, m in zip(blocks, bads)]
    mean = dask.delayed(_mean_of, pure=True)(first)
    second = [dask.delayed(_sum_block, pure=True)(b, m, mean) for b, m in zip(blocks, bads)]
    return dask.delayed(_std_of, pure=True)(second)


# ---------------------------------------------------------------------------
# The block function (whole frame = one block whose four sides are edges).
# ---------------------------------------------------------------------------

def _median_block(x, err, bad, p, std, origin, edges):
    """CR detection and replacement on one block.

    ``x`` covers the block plus ``depth`` pixels of neighbouring data on each
    side that is not a frame edge (``edges`` = (top, bottom, left, right)
    booleans); ``origin`` is the frame position of ``x[0, 0]``. ``err`` is a
    float32 scalar, an array like ``x``, or None (use ``std``). Returns
    ``(cleaned, crmask)`` for the block without its halo.
    """
    d = p["depth"]
    x = np.ascontiguousarray(x, dtype=np.float32)
    ny, nx = x.shape
    badpix = ~np.isfinite(x)
    if bad is not None:
        badpix |= np.asarray(bad, dtype=bool)
    anybad = bool(badpix.any())
    xf = x
    if anybad:
        # Bad pixels enter the detection median as a +inf/-inf checkerboard
        # in frame coordinates (neutral on average, chunk-independent).
        yy, xx = np.nonzero(badpix)
        even = (yy + xx + origin[0] + origin[1]) % 2 == 0
        xf = x.copy()
        xf[yy, xx] = np.where(even, np.float32(np.inf), np.float32(-np.inf))
    # Mirror the frame edges so every side carries ``depth`` pixels of halo.
    top, bottom, left, right = (d if e else 0 for e in edges)
    xp = np.pad(xf, ((top, bottom), (left, right)), mode="symmetric") \
        if (top or bottom or left or right) else xf
    med = medfilt(np.ascontiguousarray(xp), p["mbox"])[top:top + ny, left:left + nx]

    if err is None:
        err = std
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = (x - med) / err
        flags = (ratio > p["thresh"]) & (err > 0) & np.isfinite(med)
    if anybad:
        flags &= ~badpix
    if p["gbox"] > 1:
        flags = box_max(flags, p["gbox"])
        if anybad:
            flags &= ~badpix

    # Drop the halo: the output starts ``depth`` pixels into ``xp`` on all sides.
    iy0, ix0 = d - top, d - left
    iy1, ix1 = ny - (d - bottom), nx - (d - right)
    crmask = np.ascontiguousarray(flags[iy0:iy1, ix0:ix1])
    clean = x[iy0:iy1, ix0:ix1].copy()
    if p["rbox"] > 0 and crmask.any():
        # xp holds the bad pixels as +-inf, which the kernel skips.
        box_median_at(clean, np.ascontiguousarray(xp), crmask, p["rbox"], d, d)
    return clean, crmask


# ---------------------------------------------------------------------------
# Drivers.
# ---------------------------------------------------------------------------

def _median_numpy(data, err, bad, p):
    """Numpy input: row strips of at least ``depth`` rows run on all cores
    through the Dask graph (identical to processing the frame whole)."""
    threads = os.cpu_count() or 1
    if isinstance(err, da.Array):
        err = err.compute()
    d = p["depth"]
    ny = data.shape[0]
    nstrips = max(1, min(threads, ny // max(4 * d, 64)))
    rows = -(-ny // nstrips)
    darr = da.from_array(data, chunks=(rows, -1))
    derr = err if (err is None or np.ndim(err) == 0) else da.from_array(err, chunks=(rows, -1))
    dbad = None if bad is None else da.from_array(bad, chunks=(rows, -1))
    std = frame_std(data, bad) if err is None else None
    clean, crmask = _median_graph(darr, derr, dbad, p, std=std)
    with dask.config.set(scheduler="threads", num_workers=threads):
        clean, crmask = dask.compute(clean, crmask)
    return np.ascontiguousarray(clean), np.ascontiguousarray(crmask)


def _median_graph(data, err, bad, p, std=None):
    """Lazy ``(cleaned, crmask)`` of a Dask image through ``map_overlap``."""
    d = p["depth"]
    chunks = []
    for c in data.chunks:
        try:
            chunks.append(ensure_minimum_chunksize(d, c))
        except ValueError:  # axis shorter than the depth: one block
            chunks.append((sum(c),))
    chunks = tuple(chunks)
    data = data.rechunk(chunks)
    if err is None and std is None:
        std = frame_std(data, bad)
    arrays = [data]
    has_err = err is not None and np.ndim(err) != 0
    if has_err:
        arrays.append(da.asarray(err).rechunk(chunks))
    if bad is not None:
        arrays.append(da.asarray(bad).astype(bool).rechunk(chunks))
    starts = [np.concatenate([[0], np.cumsum(c)[:-1]]) for c in chunks]
    nblocks = [len(c) for c in chunks]
    scalar_err = None if (err is None or has_err) else err

    def block(*blocks, std=None, block_info=None):
        by, bx = block_info[0]["chunk-location"]
        it = iter(blocks[1:])
        e = next(it) if has_err else scalar_err
        b = next(it) if bad is not None else None
        edges = (by == 0, by == nblocks[0] - 1, bx == 0, bx == nblocks[1] - 1)
        origin = (starts[0][by] - (0 if edges[0] else d),
                  starts[1][bx] - (0 if edges[2] else d))
        clean, crmask = _median_block(blocks[0], e, b, p, std, origin, edges)
        return np.stack([clean, crmask.astype(np.float32)])

    # An axis held in one block needs no halo (and dask refuses one deeper
    # than the block); both its ends are frame edges, mirrored in the block.
    depth = {ax: (d if len(c) > 1 else 0) for ax, c in enumerate(chunks)}
    out = da.map_overlap(block, *arrays, depth=depth, boundary="none",
                         trim=False, allow_rechunk=False, dtype=np.float32,
                         chunks=((2,),) + chunks, new_axis=[0], std=std,
                         meta=np.empty((0, 0, 0), dtype=np.float32))
    return out[0], out[1] != 0


def _median_ccddata(ccd, error_image, p):
    from astropy.nddata import StdDevUncertainty
    data = as_image("ccd.data", np.asarray(ccd.data))
    if error_image is None and ccd.uncertainty is not None:
        unc = ccd.uncertainty
        if not isinstance(unc, StdDevUncertainty):
            unc = unc.represent_as(StdDevUncertainty)
        error_image = np.asarray(unc.array)
    err = _check_error(error_image, data)
    bad = None if ccd.mask is None else np.asarray(ccd.mask, dtype=bool)
    if bad is not None:
        check_same_shape("ccd.mask", bad, data)
    clean, crmask = _median_numpy(data, err, bad, p)
    out = ccd.copy()
    out.data = clean
    out.mask = crmask if bad is None else (bad | crmask)
    return out
