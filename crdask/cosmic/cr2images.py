"""``cr2images``: cosmic rays from the difference of two exposures (teareduce).

Same parameters, defaults and meaning as ``teareduce.cosmicrays.cr2images``
(teareduce 0.7.9), without its plotting arguments (``debug_level``,
``zoom_region_imshow``, ``aspect``):

1. the two exposures overlap after integer offsets: ``data1[y, x]`` lies
   on ``data2[y - ioffy, x - ioffx]``;
2. over the overlap, ``diff = data1 - data2``; its median and robust
   standard deviation ``std = 0.7413 * (q75 - q25)`` (numpy's linear
   percentiles) are taken over the whole overlap;
3. CRs of ``data1``: "tail" pixels ``diff > median + tsigma_tail * std``
   form 4-connected components (``scipy.ndimage.label``'s default); a
   component is a CR if it holds a "peak" pixel ``diff > median +
   tsigma_peak * std`` inside the useful region (everywhere, minus
   ``list_skipped_regions``, or only ``image_region``; a component seeded
   inside may extend outside) and, when ``maxsize`` is set, has at most
   ``maxsize`` pixels. CRs of ``data2`` likewise with ``diff <
   median - ...``;
4. CR pixels of ``data1`` become ``data2 + median`` (the pixel on top of
   them), those of ``data2`` become ``data1 - median``;
5. with ``data2=None`` the companion is ``data1`` median-filtered with a
   ``median_size`` window (mirrored edges, scipy's ``mode='reflect'``) and
   only ``data1`` is cleaned (``single_mode``; it can also be asked for with
   two exposures). The second image returned is then the companion itself.

Returns ``(data1c, data2c)``, or ``(data1c, data2c, mask1, mask2)`` with
``return_masks=True``, in teareduce's order. Regions are teareduce
``SliceRegion2D`` objects (anything with a ``.python`` pair of slices),
FITS sections ``'[x1:x2,y1:y2]'`` (1-based, inclusive, as
``SliceRegion2D(text, mode='fits')``) or 0-based ``(slice_y, slice_x)``
tuples; they refer to ``data1``'s pixels.

numpy in -> numpy out; a Dask array in -> lazy Dask arrays out, equal bit
for bit to the numpy result whatever the chunks (:mod:`.cr2images_core`);
``CCDData`` in -> ``CCDData`` out: data cleaned, CR pixels OR-ed into
``.mask``, and at CR pixels the uncertainty of the companion pixel (the
median-filtered uncertainty in single mode), as teareduce's
``apply_cr2images_ccddata`` does.

Differences from teareduce (deliberate):

* Arithmetic is float32: inputs are cast to float32 (teareduce keeps the
  input dtype; for float32 input both are identical, for integer input
  teareduce's difference wraps around).
* Masks are bool (teareduce: int 0/1; ``mask.astype(int)`` equals it).
* Non-finite pixels are bad: left out of the statistics, never flagged,
  returned unchanged (teareduce's ``np.median`` becomes NaN and nothing is
  found). The ``.mask`` of a ``CCDData`` marks bad pixels the same way, and
  the uncertainty is copied at the new CR pixels only, through the offsets
  (teareduce copies it at every masked pixel, without offsets).
* Offsets that leave no overlap, regions wholly outside the image and
  ``image_region`` together with ``list_skipped_regions`` raise
  :class:`~crdask.cosmic.params.ParamError` naming the parameter.
* The single-mode median filter ignores non-finite pixels in its window.
* A zero median is always ``+0.0`` (a ``-0.0`` would only change the sign
  of a zero replaced pixel).

Example
-------
>>> import numpy as np
>>> a = np.full((20, 20), 100, np.float32) + np.random.default_rng(1).normal(0, 1, (20, 20)).astype(np.float32)
>>> b = a[::-1].copy()
>>> a[5, 5] += 500
>>> c1, c2, m1, m2 = cr2images(a, b, return_masks=True)
>>> bool(m1[5, 5]), int(m1.sum()), int(m2.sum())
(True, 1, 0)
"""

import contextlib
import warnings

import dask
import dask.array as da
import numpy as np

from .cr2images_core import (cr_mask, cr_mask_dask, diff_stats, diff_stats_dask,
                             medfilt_dask, overlap_slices, thresholds)
from ..kernels.components import medfilt_rect
from .params import Param, ParamError, ParamSet
from .registry import CRResult, Method, register
from .regions import check_median_size, check_region, check_regions, region_slices
from .validation import as_image, is_ccddata

__all__ = ["cr2images", "PARAMS", "validate", "cr2images_arrays", "useful_mask",
           "detect_group"]

#: Every parameter of :func:`cr2images`, written once (teareduce's names,
#: defaults and meanings). ``return_masks`` only shapes the return value.
PARAMS = ParamSet("cr2images", [
    Param("single_mode", False, "bool", "clean only the first exposure"),
    Param("ioffx", 0, "int", "x offset placing data2 on data1: data1[y, x] ~ "
          "data2[y - ioffy, x - ioffx]", unit="px"),
    Param("ioffy", 0, "int", "y offset placing data2 on data1", unit="px"),
    Param("tsigma_peak", 10, "float", "threshold of CR peaks in robust sigma of the "
          "difference", unit="sigma", minimum=0, strict=True),
    Param("tsigma_tail", 3, "float", "threshold of CR tails (pixels joined to a peak)",
          unit="sigma", minimum=0, strict=True),
    Param("maxsize", None, "int", "largest CR kept (pixels); null: no limit", unit="px",
          minimum=1, none_ok=True),
    Param("list_skipped_regions", None, "any", "regions where no CR may be seeded, FITS "
          "sections '[x1:x2,y1:y2]' (several: '[..];[..]')", none_ok=True,
          check=check_regions),
    Param("image_region", None, "any", "the one region where CRs are seeded, a FITS "
          "section '[x1:x2,y1:y2]'", none_ok=True, check=check_region),
    Param("median_size", None, "any", "median window (ny, nx) or n for the companion of a "
          "single exposure", unit="px", none_ok=True, check=check_median_size),
])


def cr2images(data1, data2=None, single_mode=False, ioffx=0, ioffy=0, tsigma_peak=10,
              tsigma_tail=3, maxsize=None, list_skipped_regions=None, image_region=None,
              median_size=None, return_masks=False):
    """Remove cosmic rays using the difference of two exposures.

    Parameters
    ----------
    data1 : numpy array, Dask array or ``CCDData``, shape (ny, nx)
        First exposure (any unit; e- in a night).
    data2 : same kind and shape as ``data1``, or None
        Second exposure. None: ``data1`` median-filtered with
        ``median_size`` (then ``single_mode`` is on and offsets must be 0).
    single_mode : bool
        Clean only ``data1`` (False).
    ioffx, ioffy : int
        Offsets in pixels placing ``data2`` on ``data1``:
        ``data1[y, x]`` corresponds to ``data2[y - ioffy, x - ioffx]``
        (0, 0); smaller in size than the image.
    tsigma_peak : float > 0
        Peak threshold in robust sigma of the difference (10).
    tsigma_tail : float > 0
        Tail threshold in robust sigma (3).
    maxsize : int >= 1 or None
        Largest CR (pixels) that is cleaned; None: any size.
    list_skipped_regions : list of regions or None
        Regions of ``data1`` where no CR may be seeded (see the module
        notes for the forms accepted). Not with ``image_region``.
    image_region : region or None
        The only region where CRs are seeded. Not with
        ``list_skipped_regions``.
    median_size : int or (int, int) or None
        Median window ``(ny, nx)`` in pixels for ``data2=None``.
    return_masks : bool
        Also return the bool CR masks.

    Returns
    -------
    data1c, data2c : float32 arrays (ny, nx)
        Cleaned exposures (``data2c`` is the companion in single mode), or
        ``CCDData`` for ``CCDData`` input; lazy for Dask input.
    mask1, mask2 : bool arrays (ny, nx), only with ``return_masks``
        Replaced pixels of ``data1`` and of ``data2`` (each in its own
        pixel grid; ``mask2`` is all False in single mode).

    Example
    -------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(100, 2, (64, 64)).astype(np.float32)
    >>> b = rng.normal(100, 2, (64, 64)).astype(np.float32)
    >>> a[10, 10:13] += 400                  # a short CR track in data1
    >>> b[40, 20] += 900                     # a hit in data2
    >>> a_clean, b_clean, m1, m2 = cr2images(a, b, return_masks=True)
    >>> np.argwhere(m1).tolist(), np.argwhere(m2).tolist()
    ([[10, 10], [10, 11], [10, 12]], [[40, 20]])
    >>> bool(abs(a_clean[10, 11] - 100) < 20)
    True
    """
    p = validate(dict(single_mode=single_mode, ioffx=ioffx, ioffy=ioffy,
                      tsigma_peak=tsigma_peak, tsigma_tail=tsigma_tail, maxsize=maxsize,
                      list_skipped_regions=list_skipped_regions,
                      image_region=image_region, median_size=median_size),
                 single=data2 is None)
    if is_ccddata(data1) or is_ccddata(data2):
        from .cr2images_ccd import cr2images_ccddata
        out = cr2images_ccddata(data1, data2, p, cr2images_arrays)
    else:
        out = cr2images_arrays(data1, data2, p)
    return out if return_masks else out[:2]


def validate(values, *, single):
    """Complete parameters from ``values`` with the rules between them;
    ``single``: there is no second exposure. Raises ``ParamError``."""
    p = PARAMS.validate(values)
    if p["list_skipped_regions"] is not None and p["image_region"] is not None:
        raise ParamError("image_region", "cannot be used together with "
                         "list_skipped_regions", "one of image_region, list_skipped_regions")
    if single:
        for name in ("ioffx", "ioffy"):
            if p[name] != 0:
                raise ParamError(name, f"{p[name]} with a single exposure (data2 is "
                                 "None)", "0")
        if p["median_size"] is None:
            raise ParamError("median_size", "must be set when data2 is None",
                             PARAMS["median_size"].doc)
        p["single_mode"] = True
    return p


def useful_mask(shape, p):
    """Bool mask (ny, nx) of the pixels where a CR may be seeded."""
    if p["image_region"] is not None:
        m = np.zeros(shape, bool)
        m[region_slices(p["image_region"])] = True
        return m
    m = np.ones(shape, bool)
    for r in p["list_skipped_regions"] or ():
        m[region_slices(r)] = False
    return m


def _check_pair(data1, data2, p):
    data1 = as_image("data1", data1)
    if data2 is not None:
        data2 = as_image("data2", data2)
        if tuple(data2.shape) != tuple(data1.shape):
            raise ValueError(f"data2 has shape {tuple(data2.shape)} but data1 has shape "
                             f"{tuple(data1.shape)}; the two exposures must have one shape")
    ny, nx = data1.shape
    for name, off, n, axis in (("ioffx", p["ioffx"], nx, "x"), ("ioffy", p["ioffy"], ny, "y")):
        if abs(off) >= n:
            raise ParamError(name, f"{off} leaves no overlap between the exposures "
                             f"({n} px along {axis})", f"|{name}| < {n}")
    # A region wholly outside the image is a mistake (one partly outside is
    # clipped, as numpy slicing and teareduce do).
    regions = [("image_region", p["image_region"])] if p["image_region"] else []
    regions += [("list_skipped_regions", r) for r in p["list_skipped_regions"] or ()]
    for name, r in regions:
        sy, sx = region_slices(r)
        if sy.start >= ny or sx.start >= nx:
            raise ParamError(name, f"{r} lies outside the image ({nx} x {ny} px, "
                             "x by y)", "FITS sections inside [1:NAXIS1,1:NAXIS2]")
    return data1, data2


def cr2images_arrays(data1, data2, p):
    """``(data1c, data2c, mask1, mask2)`` for numpy or Dask input, with
    complete parameters ``p`` from :func:`validate` (no CCDData)."""
    data1, data2 = _check_pair(data1, data2, p)
    lazy = isinstance(data1, da.Array) or isinstance(data2, da.Array)
    if lazy:
        a = da.asarray(data1).astype(np.float32)
        if data2 is None:
            b = medfilt_dask(a, p["median_size"])
        else:
            b = da.asarray(data2).astype(np.float32)
        return _pair_dask(a, b, p)
    a = np.asarray(data1, dtype=np.float32)
    b = medfilt_rect(np.ascontiguousarray(a), *p["median_size"]) if data2 is None \
        else np.asarray(data2, dtype=np.float32)
    return _pair_numpy(a, b, p)


def _pair_numpy(a, b, p):
    s1, s2 = overlap_slices(a.shape, p["ioffx"], p["ioffy"])
    o1, o2 = a[s1], b[s2]
    diff = np.ascontiguousarray(o1 - o2)
    useful = np.ascontiguousarray(useful_mask(a.shape, p)[s1])
    median, std = diff_stats(diff)
    median += 0.0                                  # -0.0 -> +0.0
    thr = thresholds((median, std), p["tsigma_peak"], p["tsigma_tail"])
    m1 = cr_mask(diff, useful, thr, True, p["maxsize"])
    c1 = a.copy()
    c1[s1][m1] = o2[m1] + np.float32(median)
    mask1 = np.zeros(a.shape, bool)
    mask1[s1] = m1
    c2 = b.copy()
    mask2 = np.zeros(b.shape, bool)
    if not p["single_mode"]:
        m2 = cr_mask(diff, useful, thr, False, p["maxsize"])
        c2[s2][m2] = o1[m2] - np.float32(median)
        mask2[s2] = m2
    return c1, c2, mask1, mask2


def _stats_plus_zero(stats):
    median, std = stats
    return median + 0.0, std


def _replace(x, y, m, median=0.0, sign=1):
    # x where not m, else y +/- median, in float32 as numpy does it.
    out = np.array(x, dtype=np.float32, copy=True)
    sel = np.asarray(m, bool)
    out[sel] = (y[sel] + np.float32(median)) if sign > 0 else (y[sel] - np.float32(median))
    return out


def _pair_dask(a, b, p):
    ny, nx = a.shape
    s1, s2 = overlap_slices(a.shape, p["ioffx"], p["ioffy"])
    o1 = a[s1]
    o2 = b[s2].rechunk(o1.chunks)
    diff = o1 - o2
    useful = da.from_array(np.ascontiguousarray(useful_mask(a.shape, p)[s1]),
                           chunks=diff.chunks)
    stats = dask.delayed(_stats_plus_zero, pure=True)(diff_stats_dask(diff))
    median = stats[0]
    thr = dask.delayed(thresholds, pure=True)(stats, p["tsigma_peak"], p["tsigma_tail"])

    def embed(x, s, like, fill):
        pad = ((s[0].start, ny - s[0].stop), (s[1].start, nx - s[1].stop))
        return da.pad(x, pad, mode="constant", constant_values=fill).rechunk(like.chunks)

    m1 = cr_mask_dask(diff, useful, thr, True, p["maxsize"])
    mask1 = embed(m1, s1, a, False)
    c1 = da.map_blocks(_replace, a, embed(o2, s1, a, 0), mask1, median=median, sign=1,
                       dtype=np.float32, meta=np.empty((0, 0), np.float32))
    if p["single_mode"]:
        return c1, b, mask1, da.zeros(b.shape, dtype=bool, chunks=b.chunks)
    m2 = cr_mask_dask(diff, useful, thr, False, p["maxsize"])
    mask2 = embed(m2, s2, b, False)
    c2 = da.map_blocks(_replace, b, embed(o1, s2, b, 0),
                       mask2, median=median, sign=-1, dtype=np.float32,
                       meta=np.empty((0, 0), np.float32))
    return c1, c2, mask1, mask2

# ---------------------------------------------------------------------------
# The registry's group convention.
# ---------------------------------------------------------------------------

def detect_group(data, params, *, bad=None, var=None, readnoise=None, num_threads=None):
    """Clean a group of equivalent exposures by pair differencing.

    The registry's ``group`` convention (``data``: N >= 2 float32 images in
    e-, ``bad``: N bool masks or None; ``var``, ``readnoise`` and
    ``num_threads`` are not used -- the method's noise scale is the robust
    spread of the difference itself).

    * N == 2: the two exposures are differenced (both directions, with
      ``ioffx``/``ioffy``), exactly :func:`cr2images`.
    * N > 2: each member is differenced against the pixel-wise median of
      the others (bad pixels left out; for an even count the mean of the
      two middle values) in single mode -- only the member's own positive
      CRs count, since the median of the others holds (almost) none. The
      median is robust where a second exposure would bring its own CRs,
      and every member is cleaned by the same rule. Offsets must be 0.

    ``single_mode`` must be False and ``median_size`` null (a group has
    companions). Bad pixels enter as NaN: they are never flagged, break
    CR components, are left out of the statistics and are returned
    unchanged. Returns a :class:`~crdask.cosmic.registry.CRResult` with one
    clean image and one mask per member and ``CRNFIX`` (all members) in
    ``header``.
    """
    n = len(data)
    if n < 2:
        raise ParamError("group", f"{n} exposure(s); cr2images needs at least 2", ">= 2")
    p = validate(params, single=False)
    if p["single_mode"]:
        raise ParamError("single_mode", "true in a group (every member is cleaned)",
                         "false")
    if p["median_size"] is not None:
        raise ParamError("median_size", "set in a group (members are each other's "
                         "companions)", "null")
    if n > 2 and (p["ioffx"] or p["ioffy"]):
        raise ParamError("ioffx" if p["ioffx"] else "ioffy", "non-zero for a group of "
                         f"{n} (offsets apply to a pair only)", "0")
    data = [np.asarray(d, np.float32) for d in data]
    bad = [None] * n if bad is None else [None if b is None else np.asarray(b, bool)
                                           for b in bad]
    work = [d if b is None else np.where(b, np.float32(np.nan), d)
            for d, b in zip(data, bad)]
    if n == 2:
        c1, c2, m1, m2 = cr2images_arrays(work[0], work[1], p)
        clean, masks = [c1, c2], [m1, m2]
    else:
        q = dict(p, single_mode=True)
        clean, masks = [], []
        for k in range(n):
            others = np.stack([w for j, w in enumerate(work) if j != k])
            with np.errstate(all="ignore"), _quiet():
                companion = np.nanmedian(others, axis=0).astype(np.float32)
            c, _, m, _ = cr2images_arrays(work[k], companion, q)
            clean.append(c)
            masks.append(m)
    for k in range(n):
        if bad[k] is not None:
            clean[k] = np.where(bad[k], data[k], clean[k])
            masks[k] = masks[k] & ~bad[k]
    ncr = int(sum(int(m.sum()) for m in masks))
    return CRResult(clean=clean, crmask=masks,
                    header={"CRNFIX": (ncr, "cosmic-ray pixels cleaned in the group")})


@contextlib.contextmanager
def _quiet():
    # All-NaN pixels (bad in every other member) give NaN, which is wanted.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


register(Method("cr2images", "group", PARAMS, detect_group, min_members=2,
                summary="pair differencing of equivalent exposures (teareduce cr2images)"))
