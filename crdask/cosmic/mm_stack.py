"""Per-pixel parts of Median-Minimum on numpy or Dask arrays (layer 2).

Every function here works pixel by pixel (or, for the dilations, within a
known depth), so a Dask wrapper over y/x chunks gives exactly the
whole-frame result: the stack statistics, the diagram test against the
boundary and numina's seven combinations.

Example
-------
>>> import numpy as np
>>> s = np.stack([np.full((2, 2), v, np.float32) for v in (1, 9, 2)])
>>> st = stack_statistics(s, 2)
>>> float(st["median2d"][0, 0]), float(st["min2d"][0, 0])
(2.0, 1.0)
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from ..kernels.mm_stack import base_stats_kernel, dilate8, masked_mean_var_kernel, stack_stats

__all__ = ["stack_statistics", "diagram_flags", "dilate", "combine", "base_statistics",
           "masked_mean_var", "COMBINATIONS", "STAT_NAMES"]

STAT_NAMES = ("min2d", "median2d", "mean2d", "max2d", "minimum", "var2d")
#: numina's combinations, in its order.
COMBINATIONS = ("mean", "median", "min", "mediancr", "meancrt", "meancr", "meancr2")


def _is_dask(a):
    return isinstance(a, da.Array)


def stack_statistics(stack, ncoinc):
    """Per-pixel statistics of a float32 stack ``(n, ny, nx)`` (ADU or e-):
    dict of ``min2d``, ``median2d``, ``mean2d``, ``max2d``, ``minimum``,
    ``var2d`` (float32 ``(ny, nx)``; see
    :func:`crdask.kernels.mm_stack.stack_stats`). A Dask stack chunked in
    y/x only gives Dask arrays equal to the numpy result."""
    if _is_dask(stack):
        st = stack.rechunk({0: -1})

        def block(b):
            return np.stack(stack_stats(np.ascontiguousarray(b, dtype=np.float32), ncoinc))
        out = st.map_blocks(block, dtype=np.float32,
                            chunks=((6,),) + st.chunks[1:])
        return {n: out[i] for i, n in enumerate(STAT_NAMES)}
    res = stack_stats(np.ascontiguousarray(stack, dtype=np.float32), ncoinc)
    return dict(zip(STAT_NAMES, res))


def diagram_flags(x, y, max2d, boundary, threshold, max_threshold, cleanable):
    """Pixels above the boundary: ``y > boundary(x)``, ``y > threshold``,
    ``max2d > max_threshold`` and ``cleanable`` (bool, same shape).
    ``boundary`` maps float arrays to float arrays, pixel by pixel, or is
    the array of its values at ``x`` already (evaluated once when several
    tests share ``x``)."""
    def block(xb, yb, mb, cb, bb=None):
        bb = boundary(xb) if bb is None else bb
        return ((yb > bb) & (yb > threshold) & (mb > max_threshold) & cb)
    given = not callable(boundary)
    if _is_dask(x):
        extra = (da.asarray(boundary).rechunk(x.chunks),) if given else ()
        return da.map_blocks(block, x, y, max2d, cleanable, *extra, dtype=bool)
    return block(x, y, max2d, cleanable, boundary if given else None)


def dilate(mask, iterations):
    """Binary dilation by the 3x3 square ``iterations`` times (outside the
    frame False); Dask input runs with an overlap of ``iterations``."""
    if iterations <= 0:
        return mask
    if _is_dask(mask):
        return mask.map_overlap(lambda b: dilate8(np.ascontiguousarray(b), iterations),
                                depth=iterations, boundary=False, dtype=bool)
    return dilate8(np.ascontiguousarray(mask), iterations)


def base_statistics(stack):
    """numpy's min, median, mean and variance (ddof=1) along axis 0 of a
    float32 stack, as numina's ``apply_crmasks`` computes them (computed
    once and shared by the combinations): float32 ``(ny, nx)`` each, the
    input's units (squared for ``var``). Finite float32 stacks go through one
    Numba pass (:func:`crdask.kernels.mm_stack.base_stats_kernel`, equal to
    numpy's), the others (NaN and infinity propagate as numpy says) through
    numpy itself, as do one-pixel frames (which numpy sums pairwise)."""
    if (stack.dtype != np.float32 or stack.shape[0] < 2 or stack[0].size < 2
            or not np.isfinite(stack).all()):
        return {"minimum": np.min(stack, axis=0), "median": np.median(stack, axis=0),
                "mean": np.mean(stack, axis=0), "var": np.var(stack, axis=0, ddof=1)}
    mn, med, mean, var = base_stats_kernel(np.ascontiguousarray(stack))
    return {"minimum": mn, "median": med, "mean": mean, "var": var}


def masked_mean_var(stack, mask):
    """``np.ma.mean`` and ``np.ma.var(ddof=1)`` along axis 0 of a float32
    stack ``(n, ...)`` with a bool ``mask`` (True = left out), as float32
    ``.data`` (numina's MEANCR arithmetic), bit for bit, in one Numba pass
    (:func:`crdask.kernels.mm_stack.masked_mean_var_kernel`) instead of
    ``numpy.ma``'s temporaries. Non-finite stacks, and one-pixel frames
    (which numpy sums in another order), go through ``numpy.ma`` itself."""
    f32 = np.float32
    if stack[0].size < 2 or not np.isfinite(stack).all():
        ma = np.ma.array(stack, mask=mask)
        return (np.ma.mean(ma, axis=0).data.astype(f32),
                np.ma.var(ma, axis=0, ddof=1).data.astype(f32))
    return masked_mean_var_kernel(np.ascontiguousarray(stack, dtype=np.float32),
                                  np.ascontiguousarray(mask))


def _combine_block(stack, masks, aux, combination, use_aux, base=None):
    # stack: (n, ...) float32 bias-subtracted and flux-scaled exposures;
    # masks: dict name -> bool block. Arithmetic as numina's apply_crmasks.
    n = stack.shape[0]
    f32 = np.float32
    base = base_statistics(stack) if base is None else base
    minimum, median = base["minimum"], base["median"]
    full = np.full(stack.shape[1:], n, dtype=np.int16)
    if combination in ("mean", "median", "min"):
        var = base["var"].copy()
        data = {"mean": base["mean"], "median": median, "min": minimum}[combination]
        return data.astype(f32), var.astype(f32), full
    if combination in ("mediancr", "meancrt", "meancr2"):
        m = masks["MEDIANCR"]
        medcr = median.copy()
        medcr[m] = aux[m] if use_aux else minimum[m]
    if combination == "mediancr":
        var = base["var"].copy()
        var[m] = 0.0
        mp = full.copy()
        mp[m] = 1
        return medcr.astype(f32), var.astype(f32), mp
    if combination == "meancrt":
        mt = masks["MEANCRT"]
        out = base["mean"].copy()
        out[mt] = medcr[mt]
        var = base["var"].copy()
        var[mt] = 0.0
        mp = full.copy()
        mp[mt] = 1
        return out.astype(f32), var.astype(f32), mp
    single = np.stack([masks[f"CRMASK{i + 1}"] for i in range(n)])
    out, var = masked_mean_var(stack, single)
    total = single.sum(axis=0)
    nodata = total == n
    out[nodata] = aux[nodata] if use_aux else minimum[nodata]
    mp = (n - total).astype(np.int16)
    if combination == "meancr2":
        mc = masks["MEANCR"]
        out[mc] = aux[mc] if use_aux else minimum[mc]
        mp[mc] = 1
    return out, var, mp


def combine(stack, masks, combination, *, aux=None, use_aux=False, base=None):
    """One of numina's combinations (:data:`COMBINATIONS`) of a float32
    stack ``(n, ny, nx)`` (bias-subtracted, flux-scaled) with the masks
    (dict ``MEDIANCR``, ``MEANCRT``, ``CRMASK1..n``, ``MEANCR`` -> bool
    ``(ny, nx)``) and the auxiliary-cleaned median ``aux``.

    Returns ``(data float32, variance float32 (ddof=1), map int16)``: the
    map counts the exposures behind each pixel (1 where a replacement
    value was used). Dask input (chunked in y/x) gives Dask output."""
    names = sorted(masks)
    if aux is None:
        aux = np.zeros(stack.shape[1:], np.float32) if not _is_dask(stack) else \
            da.zeros(stack.shape[1:], dtype=np.float32, chunks=stack.chunks[1:])
    if not _is_dask(stack):
        return _combine_block(stack, masks, aux, combination, use_aux, base)
    st = stack.rechunk({0: -1})
    chunks2 = st.chunks[1:]
    mlist = [da.asarray(masks[k]).rechunk(chunks2) for k in names]
    aux = da.asarray(aux).rechunk(chunks2)

    def block(sb, ab, *mb):
        d, v, m = _combine_block(sb, dict(zip(names, mb)), ab, combination, use_aux)
        return np.stack([d, v, m.astype(np.float32)])
    out = da.map_blocks(block, st, aux, *mlist, dtype=np.float32,
                        chunks=((3,),) + chunks2, new_axis=None)
    return out[0], out[1], out[2].astype(np.int16)
