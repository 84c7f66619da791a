"""Per-pixel combination of a stack of frames, with rejection (Numba kernel).

:func:`combine_block` reduces a float32 block ``(N, by, bx)`` (axis 0 =
frames; or a list of N ``(by, bx)`` blocks, used in place) to a float32
``(by, bx)`` combined image and a uint16 ``(by, bx)`` count of the frames
used at each pixel. For every pixel, in this order:

1. a frame's value is dropped if masked (``mask``), if the value times the
   frame's factor (``value * scale[k]``) is not finite, or if the *unscaled*
   value is below ``vmin`` / above ``vmax`` (ccdproc's ``minmax_clip``; IRAF
   applies its thresholds to unscaled values too);
2. extrema clipping: of the remaining scaled values the ``nlow`` lowest and
   ``nhigh`` highest are dropped (among equal values the lowest frame
   indices count as the lowest and the highest as the highest, as a stable
   sort orders them); if no more than ``nlow + nhigh`` remain, all go;
3. sigma clipping of the remaining values as
   ``astropy.stats.sigma_clip(..., axis=0, cenfunc='median'|'mean',
   stdfunc='std'|'mad_std', maxiters=...)`` does it on a masked array:
   centre and spread in float64 (std with ``ddof=0``; ``mad_std`` =
   1.482602218505602 x median absolute deviation; medians of even counts
   are the mean of the two middle values), bounds ``centre - lower * spread``
   and ``centre + upper * spread``, values strictly outside rejected, the
   next iteration on what is left, until an iteration rejects nothing, all
   are gone, or ``maxiters`` iterations ran. As in astropy, the final mask is
   "outside the *last* bounds" applied to the values the clipping started
   from (a value rejected early comes back if the final bounds include it).
   Medians and MADs are exactly astropy's; means and standard deviations are
   summed in another order, so bounds can differ in the last bits (masks
   differ only for a value within that distance of a bound). A threshold of
   None rejects nothing on its side;
4. the kept values are combined: ``average`` (``sum(w x) / sum(w)``, w = 1
   without weights), ``median`` (mean of the two middle values for an even
   count; weights ignored) or ``sum`` (``sum(w x)``). Accumulation is in
   float64 (in sorted order, or frame order with weights), the result is
   rounded once to float32. A pixel with no value left is NaN, count 0.

How: pixels are processed in tiles of ``lanes`` neighbours along x. A tile
is copied frame-major (``tile[k, lane]``, one contiguous copy per frame, no
per-pixel strided gathers), invalid values become +inf, and every lane's
values are sorted at once by a Batcher odd-even merge network applied
lane-wise (branch-free min/max that LLVM vectorises: about 130 ns per pixel
for 100 frames, against about 1.4 us for a quickselect median). In sorted
order every rejection step keeps a contiguous range ``[a, b)`` of each
lane, so medians are lookups, and sums, standard deviations and rejection
counts are masked passes over ``k`` with the lanes as the vector dimension.
Without a scale the tile stays float32 (exact: the values are float32);
with one the scaled values are kept in float64. A plain average or sum
without rejection skips the sort.
"""

import functools

import numpy as np
from numba import njit
from numba.typed import List

from .median import batcher_pairs, compare_exchange_lanes

#: Codes of the combination method (argument ``method`` of the kernel).
AVERAGE = 0
MEDIAN = 1
SUM = 2
METHODS = {"average": AVERAGE, "median": MEDIAN, "sum": SUM}

#: astropy's factor from the median absolute deviation to a Gaussian sigma
#: (``astropy.stats.mad_std``).
MAD_TO_STD = 1.482602218505602


@functools.lru_cache(maxsize=64)
def sorting_network(n):
    """Compare-exchange pairs sorting ``n`` values: int32 ``(m, 2)``."""
    return np.array(batcher_pairs(n), dtype=np.int32).reshape(-1, 2)


def lanes_for(nframes, itemsize):
    """Tile width: a tile of ``nframes`` x lanes values stays within ~32 KB
    (L1), 8 to 64 lanes, a multiple of 8."""
    lanes = 32768 // max(1, nframes * itemsize)
    return int(max(8, min(64, lanes - lanes % 8)))


@njit(cache=True, nogil=True, inline="always")
def _median_of_range(t, j, a, m):
    """Median of the sorted ``t[a:a + m, j]`` (m >= 1), as astropy/numpy."""
    if m % 2 == 1:
        return np.float64(t[a + (m - 1) // 2, j])
    return 0.5 * (np.float64(t[a + m // 2, j]) + np.float64(t[a + m // 2 - 1, j]))


@njit(cache=True, nogil=True)
def _range_sum(t, a, b, s):
    """``s[j] = sum(t[a[j]:b[j], j])`` in float64, k ascending."""
    nk, nl = t.shape
    for j in range(nl):
        s[j] = 0.0
    for k in range(nk):
        row = t[k]
        for j in range(nl):
            inr = (k >= a[j]) & (k < b[j])
            s[j] += np.float64(row[j]) if inr else 0.0


@njit(cache=True, nogil=True)
def _range_sumsq(t, a, b, mean, s):
    """``s[j] = sum((t[a[j]:b[j], j] - mean[j]) ** 2)``."""
    nk, nl = t.shape
    for j in range(nl):
        s[j] = 0.0
    for k in range(nk):
        row = t[k]
        for j in range(nl):
            d = np.float64(row[j]) - mean[j]
            inr = (k >= a[j]) & (k < b[j])
            s[j] += d * d if inr else 0.0


@njit(cache=True, nogil=True)
def _range_outside(t, a, b, lo, hi, nlo, nhi, ks):
    """Per lane, how many of ``t[a:b]`` are ``< lo`` and ``> hi``, and the
    sum ``ks`` of the others (k ascending)."""
    nk, nl = t.shape
    for j in range(nl):
        nlo[j] = 0
        nhi[j] = 0
        ks[j] = 0.0
    for k in range(nk):
        row = t[k]
        for j in range(nl):
            inr = (k >= a[j]) & (k < b[j])
            v = np.float64(row[j])
            below = v < lo[j]
            above = v > hi[j]
            nlo[j] += 1 if (inr & below) else 0
            nhi[j] += 1 if (inr & above) else 0
            ks[j] += v if (inr & ~below & ~above) else 0.0


@njit(cache=True, nogil=True)
def _sigma_clip_lanes(t, a, b, cen_median, dev_mad, maxiters, slo, shi, use_slo, use_shi,
                      pairs, dev, lo, hi, first_sum, has_first_sum, ksum, fwork, iwork):
    """Iterated clipping of each lane's sorted range ``t[a:b]``; on return
    ``[a, b)`` is the final kept range (astropy's final-mask rule), ``lo``/
    ``hi`` the last bounds and ``ksum`` the sum of the kept values.
    ``first_sum`` (if ``has_first_sum``) is the sum of the starting values
    (saves a pass). ``dev`` is a float64 tile for MADs; ``fwork`` float64
    ``(5, lanes)`` and ``iwork`` int64 ``(5, lanes)`` are scratch."""
    nk, nl = t.shape
    med = fwork[0]
    mean = fwork[1]
    std = fwork[2]
    s = fwork[3]
    ks = fwork[4]
    a0 = iwork[0]
    b0 = iwork[1]
    active = iwork[2]
    nlo = iwork[3]
    nhi = iwork[4]
    for j in range(nl):
        a0[j] = a[j]
        b0[j] = b[j]
        active[j] = 1 if b[j] > a[j] else 0
        lo[j] = -np.inf
        hi[j] = np.inf
        ksum[j] = 0.0
    iteration = 0
    again = False
    while True:
        any_active = False
        for j in range(nl):
            if active[j] == 1:
                any_active = True
        if not any_active:
            break
        iteration += 1
        if cen_median or dev_mad:
            for j in range(nl):
                m = int(b[j] - a[j])
                med[j] = _median_of_range(t, j, int(a[j]), m) if m > 0 else 0.0
        if not cen_median or not dev_mad:
            if iteration == 1 and has_first_sum:
                for j in range(nl):
                    s[j] = first_sum[j]
            else:
                _range_sum(t, a, b, s)
            for j in range(nl):
                m = b[j] - a[j]
                mean[j] = s[j] / m if m > 0 else 0.0
        if dev_mad:
            for k in range(nk):
                row = t[k]
                drow = dev[k]
                for j in range(nl):
                    inr = (k >= a[j]) & (k < b[j])
                    drow[j] = abs(np.float64(row[j]) - med[j]) if inr else np.inf
            compare_exchange_lanes(dev, pairs, dev.shape[1])
            for j in range(nl):
                m = int(b[j] - a[j])
                std[j] = _median_of_range(dev, j, 0, m) * MAD_TO_STD if m > 0 else 0.0
        else:
            _range_sumsq(t, a, b, mean, s)
            for j in range(nl):
                m = b[j] - a[j]
                std[j] = np.sqrt(s[j] / m) if m > 0 else 0.0
        for j in range(nl):
            if active[j] == 1:
                c = med[j] if cen_median else mean[j]
                if use_slo:
                    lo[j] = c - slo * std[j]
                if use_shi:
                    hi[j] = c + shi * std[j]
        _range_outside(t, a, b, lo, hi, nlo, nhi, ks)
        for j in range(nl):
            if active[j] == 1:
                m = b[j] - a[j]
                new_m = m - nlo[j] - nhi[j]
                if new_m == m or new_m <= 0 or (maxiters >= 0 and iteration >= maxiters):
                    # stopped: the final mask is the starting values outside
                    # the last bounds; if nothing was rejected before, that
                    # is what this pass just counted
                    if a[j] == a0[j] and b[j] == b0[j]:
                        a[j] += nlo[j]
                        b[j] -= nhi[j]
                        ksum[j] = ks[j]
                        active[j] = 0
                    else:
                        active[j] = -1
                        again = True
                else:
                    a[j] += nlo[j]
                    b[j] -= nhi[j]
    if again:
        _range_outside(t, a0, b0, lo, hi, nlo, nhi, ks)
        for j in range(nl):
            if active[j] == -1:
                a[j] = a0[j] + nlo[j]
                b[j] = b0[j] - nhi[j]
                ksum[j] = ks[j]


@njit(cache=True, nogil=True)
def _weighted_tile(orig, t, n, a, b, lo, hi, weights, nlow, nhigh, do_sigma, drop,
                   s, sw, cnt):
    """Weighted sums over the kept values in frame order: ``s = sum(w x)``,
    ``sw = sum(w)``, ``cnt`` = how many. ``orig[k, j]`` holds frame k's value
    (+inf if invalid); ``t`` the sorted values, ``n`` valid counts, and the
    extrema are t[:nlow] and t[n - nhigh:n]; ``[lo, hi]`` sigma bounds."""
    nk, nl = orig.shape
    for j in range(nl):
        s[j] = 0.0
        sw[j] = 0.0
        cnt[j] = 0
        if b[j] <= a[j]:
            continue
        nj = int(n[j])
        for k in range(nk):
            drop[k] = False
        if nlow > 0:
            lowv = t[nlow - 1, j]
            budget = 0
            for i in range(nlow):
                if t[i, j] == lowv:
                    budget += 1
            for k in range(nk):
                v = orig[k, j]
                if v < lowv:
                    drop[k] = True
                elif v == lowv and budget > 0:
                    drop[k] = True
                    budget -= 1
        if nhigh > 0:
            highv = t[nj - nhigh, j]
            budget = 0
            for i in range(nj - nhigh, nj):
                if t[i, j] == highv:
                    budget += 1
            for k in range(nk - 1, -1, -1):
                v = orig[k, j]
                if v == np.inf:
                    continue
                if v > highv:
                    drop[k] = True
                elif v == highv and budget > 0 and not drop[k]:
                    drop[k] = True
                    budget -= 1
        for k in range(nk):
            v = np.float64(orig[k, j])
            if v == np.inf or drop[k]:
                continue
            if do_sigma and not (v >= lo[j] and v <= hi[j]):
                continue
            s[j] += v * weights[k]
            sw[j] += weights[k]
            cnt[j] += 1


@njit(cache=True, nogil=True)
def _combine_tiles(data, mask, has_mask, scale, weights, has_weights, method,
                   use_min, vmin, use_max, vmax, nlow, nhigh,
                   do_sigma, use_slo, slo, use_shi, shi, cen_median, dev_mad, maxiters,
                   pairs, t, orig, dev, out, count):
    nf = len(data)
    by, bx = data[0].shape
    nl = t.shape[1]
    n = np.zeros(nl, np.int64)
    a = np.zeros(nl, np.int64)
    b = np.zeros(nl, np.int64)
    lo = np.full(nl, -np.inf)
    hi = np.full(nl, np.inf)
    s = np.zeros(nl)
    sw = np.zeros(nl)
    cnt = np.zeros(nl, np.int64)
    fwork = np.zeros((5, nl))
    fsum = np.zeros(nl)
    ksum = np.zeros(nl)
    iwork = np.zeros((5, nl), np.int64)
    drop = np.zeros(nf, np.bool_)
    inf = np.inf
    # order statistics are needed for medians, extrema and clipping; a plain
    # average or sum of the valid values is a sum in any order
    need_sort = method == MEDIAN or nlow > 0 or nhigh > 0 or do_sigma
    for y in range(by):
        for x0 in range(0, bx, nl):
            w = min(nl, bx - x0)
            # -- fill: scaled values, +inf where invalid; count the valid
            for j in range(nl):
                n[j] = 0
                fsum[j] = 0.0
            plain = not (use_min or use_max or has_mask)
            for k in range(nf):
                row = data[k][y, x0:x0 + w]
                trow = t[k]
                sk = scale[k]
                if plain:   # the common case, kept simple so that it vectorises
                    for j in range(w):
                        v = np.float64(row[j]) * sk
                        ok = abs(v) < inf
                        trow[j] = v if ok else inf
                        n[j] += ok
                        fsum[j] += v if ok else 0.0
                else:
                    for j in range(w):
                        r = row[j]
                        v = np.float64(r) * sk
                        ok = ((abs(v) < inf) & ((not use_min) | (r >= vmin))
                              & ((not use_max) | (r <= vmax)))
                        if has_mask:
                            ok &= not mask[k][y, x0 + j]
                        trow[j] = v if ok else inf
                        n[j] += ok
                        fsum[j] += v if ok else 0.0
                for j in range(w, nl):
                    trow[j] = inf
            if has_weights:
                for k in range(nf):
                    for j in range(nl):
                        orig[k, j] = t[k, j]
            if need_sort:
                compare_exchange_lanes(t, pairs, t.shape[1])
            # -- extrema: a contiguous range of the sorted values
            for j in range(nl):
                if nlow + nhigh > 0 and n[j] <= nlow + nhigh:
                    a[j] = 0
                    b[j] = 0
                else:
                    a[j] = nlow
                    b[j] = n[j] - nhigh
            if do_sigma:
                _sigma_clip_lanes(t, a, b, cen_median, dev_mad, maxiters, slo, shi,
                                  use_slo, use_shi, pairs, dev, lo, hi, fsum,
                                  nlow == 0 and nhigh == 0, ksum, fwork, iwork)
            # -- combine
            if method == MEDIAN:
                for j in range(w):
                    m = int(b[j] - a[j])
                    count[y, x0 + j] = m
                    out[y, x0 + j] = _median_of_range(t, j, int(a[j]), m) if m > 0 else np.nan
            elif has_weights:
                _weighted_tile(orig, t, n, a, b, lo, hi, weights, nlow, nhigh, do_sigma,
                               drop, s, sw, cnt)
                for j in range(w):
                    count[y, x0 + j] = cnt[j]
                    if cnt[j] == 0:
                        out[y, x0 + j] = np.nan
                    elif method == AVERAGE:
                        out[y, x0 + j] = s[j] / sw[j]
                    else:
                        out[y, x0 + j] = s[j]
            else:
                if do_sigma:
                    sums = ksum
                elif need_sort:
                    _range_sum(t, a, b, s)
                    sums = s
                else:
                    sums = fsum
                for j in range(w):
                    m = b[j] - a[j]
                    count[y, x0 + j] = m
                    if m == 0:
                        out[y, x0 + j] = np.nan
                    elif method == AVERAGE:
                        out[y, x0 + j] = sums[j] / m
                    else:
                        out[y, x0 + j] = sums[j]


def combine_block(data, mask=None, *, method=AVERAGE, scale=None, weights=None,
                  vmin=None, vmax=None, nlow=0, nhigh=0, sigma_clip=False,
                  sigma_lower=3.0, sigma_upper=3.0, cen_median=True, dev_mad=False,
                  maxiters=1, out=None, count=None):
    """Combine a ``(N, by, bx)`` block; see the module docstring.

    data : float32 ``(N, by, bx)``, or a list of N ``(by, bx)`` arrays (the
        frames' blocks, used in place: no stacked copy); other dtypes and
        layouts are converted.
    mask : bool ``(N, by, bx)`` or a list of N ``(by, bx)`` masks (None
        entries: nothing masked) -- True = do not use -- or None.
    method : AVERAGE, MEDIAN or SUM (or their names).
    scale, weights : float64 ``(N,)`` or None.
    vmin, vmax : min/max clipping of unscaled values (None: no limit).
    nlow, nhigh : extrema clipping (0, 0 for none).
    sigma_clip, sigma_lower, sigma_upper, cen_median, dev_mad, maxiters :
        sigma clipping; a threshold of None rejects nothing on its side;
        ``maxiters`` None (or < 0) iterates until nothing more is rejected.
    out, count : optional float32 / uint16 ``(by, bx)`` outputs.

    Returns ``(out, count)``. No parameter validation: callers
    (``crdask.calib.combine``) check.
    """
    if isinstance(method, str):
        method = METHODS[method]
    if isinstance(data, (list, tuple)):
        frames = [np.ascontiguousarray(f, dtype=np.float32) for f in data]
        nf = len(frames)
        by, bx = frames[0].shape
        for f in frames:
            if f.shape != (by, bx):
                raise ValueError(f"frame blocks differ in shape: {f.shape} vs {(by, bx)}")
        data = List(frames)
    else:
        data = np.ascontiguousarray(data, dtype=np.float32)
        nf, by, bx = data.shape
    if mask is None or (isinstance(mask, (list, tuple))
                        and all(x is None for x in mask)):
        m = np.zeros((1, 1, 1), np.bool_)
        mask = None
    elif isinstance(mask, (list, tuple)):
        if len(mask) != nf:
            raise ValueError(f"{len(mask)} masks for {nf} frames")
        zeros = np.zeros((by, bx), np.bool_)
        m = List([zeros if x is None else np.ascontiguousarray(x, dtype=np.bool_)
                  for x in mask])
        for x in m:
            if x.shape != (by, bx):
                raise ValueError(f"mask block has shape {x.shape}, data {(by, bx)}")
    else:
        m = np.ascontiguousarray(mask, dtype=np.bool_)
        if m.shape != (nf, by, bx):
            raise ValueError(f"mask has shape {m.shape} but data has shape "
                             f"{(nf, by, bx)}")
    sc = np.ones(nf) if scale is None else np.ascontiguousarray(scale, np.float64)
    w = np.ones(nf) if weights is None else np.ascontiguousarray(weights, np.float64)
    if out is None:
        out = np.empty((by, bx), np.float32)
    if count is None:
        count = np.empty((by, bx), np.uint16)
    tdtype = np.float32 if scale is None else np.float64
    nl = lanes_for(nf, np.dtype(tdtype).itemsize)
    t = np.empty((nf, nl), tdtype)
    orig = np.empty((nf, nl) if weights is not None else (1, nl), tdtype)
    dev = np.empty((nf, nl) if (sigma_clip and dev_mad) else (1, nl), np.float64)
    _combine_tiles(data, m, mask is not None, sc, w, weights is not None, int(method),
                   vmin is not None, 0.0 if vmin is None else float(vmin),
                   vmax is not None, 0.0 if vmax is None else float(vmax),
                   int(nlow), int(nhigh), bool(sigma_clip),
                   sigma_lower is not None, 0.0 if sigma_lower is None else float(sigma_lower),
                   sigma_upper is not None, 0.0 if sigma_upper is None else float(sigma_upper),
                   bool(cen_median), bool(dev_mad),
                   -1 if maxiters is None else int(maxiters),
                   sorting_network(nf), t, orig, dev, out, count)
    return out, count


def combine_stack(data, mask=None, *, method="average", scale=None, weights=None,
                  vmin=None, vmax=None, nlow=0, nhigh=0, sigma_clip=False,
                  sigma_lower=3.0, sigma_upper=3.0, cenfunc="median", stdfunc="std",
                  maxiters=1):
    """:func:`combine_block` with astropy's names for the clipping statistics
    (``cenfunc`` 'median'|'mean', ``stdfunc`` 'std'|'mad_std')."""
    return combine_block(data, mask, method=method, scale=scale, weights=weights,
                         vmin=vmin, vmax=vmax, nlow=nlow, nhigh=nhigh,
                         sigma_clip=sigma_clip, sigma_lower=sigma_lower,
                         sigma_upper=sigma_upper, cen_median=cenfunc == "median",
                         dev_mad=stdfunc == "mad_std", maxiters=maxiters)
