"""Median filters and order statistics as Numba kernels.

All filters take a C-contiguous float32 ``(ny, nx)`` array and return a new
float32 array of the same shape. Values must be finite (callers mask and fill
NaN/inf first): the branch-free min/max networks below do not order NaN.

Edge behaviour (the same as astroscrappy, so results can be compared):

* full ``medfilt(data, size)``: the border of width ``size // 2`` is copied
  from the input, unfiltered;
* separable ``sepmedfilt(data, size)``: a 1-D median of ``size`` pixels along
  each row (x), then along each column (y) of the row-filtered image; the
  border of width ``size // 2`` on all four sides is copied from the input.

The separable filters use explicit min/max selection networks over registers
so that LLVM vectorises the loop over x; the full filters apply a pruned
Batcher sorting network lane-wise to blocks of pixels (same reason).
"""

import numpy as np
from numba import njit

# ---------------------------------------------------------------------------
# Small selection networks (medians of 3, 5, 7, 9 values), branch-free.
# ---------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _sort2(a, b):
    return min(a, b), max(a, b)


@njit(cache=True, inline="always")
def med3(a, b, c):
    """Median of three values."""
    a, b = _sort2(a, b)
    b, c = _sort2(b, c)
    a, b = _sort2(a, b)
    return b


@njit(cache=True, inline="always")
def med5(p0, p1, p2, p3, p4):
    """Median of five values (7 compare-exchanges)."""
    p0, p1 = _sort2(p0, p1)
    p3, p4 = _sort2(p3, p4)
    p0, p3 = _sort2(p0, p3)
    p1, p4 = _sort2(p1, p4)
    p1, p2 = _sort2(p1, p2)
    p2, p3 = _sort2(p2, p3)
    p1, p2 = _sort2(p1, p2)
    return p2


@njit(cache=True, inline="always")
def med7(p0, p1, p2, p3, p4, p5, p6):
    """Median of seven values (13 compare-exchanges)."""
    p0, p5 = _sort2(p0, p5)
    p0, p3 = _sort2(p0, p3)
    p1, p6 = _sort2(p1, p6)
    p2, p4 = _sort2(p2, p4)
    p0, p1 = _sort2(p0, p1)
    p3, p5 = _sort2(p3, p5)
    p2, p6 = _sort2(p2, p6)
    p2, p3 = _sort2(p2, p3)
    p3, p6 = _sort2(p3, p6)
    p4, p5 = _sort2(p4, p5)
    p1, p4 = _sort2(p1, p4)
    p1, p3 = _sort2(p1, p3)
    p3, p4 = _sort2(p3, p4)
    return p3


@njit(cache=True, inline="always")
def med9(p0, p1, p2, p3, p4, p5, p6, p7, p8):
    """Median of nine values (19 compare-exchanges)."""
    p1, p2 = _sort2(p1, p2)
    p4, p5 = _sort2(p4, p5)
    p7, p8 = _sort2(p7, p8)
    p0, p1 = _sort2(p0, p1)
    p3, p4 = _sort2(p3, p4)
    p6, p7 = _sort2(p6, p7)
    p1, p2 = _sort2(p1, p2)
    p4, p5 = _sort2(p4, p5)
    p7, p8 = _sort2(p7, p8)
    p0, p3 = _sort2(p0, p3)
    p5, p8 = _sort2(p5, p8)
    p4, p7 = _sort2(p4, p7)
    p3, p6 = _sort2(p3, p6)
    p1, p4 = _sort2(p1, p4)
    p2, p5 = _sort2(p2, p5)
    p4, p7 = _sort2(p4, p7)
    p4, p2 = _sort2(p4, p2)
    p6, p4 = _sort2(p6, p4)
    p4, p2 = _sort2(p4, p2)
    return p4


# ---------------------------------------------------------------------------
# Separable median filters.
# ---------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _row_median(r, o, size):
    # 1-D median of window ``size`` along one row ``r`` into ``o`` (columns
    # h .. nx-h-1); branch on size outside the vectorised loop.
    nx = r.shape[0]
    h = size // 2
    if size == 3:
        for i in range(h, nx - h):
            o[i] = med3(r[i - 1], r[i], r[i + 1])
    elif size == 5:
        for i in range(h, nx - h):
            o[i] = med5(r[i - 2], r[i - 1], r[i], r[i + 1], r[i + 2])
    elif size == 7:
        for i in range(h, nx - h):
            o[i] = med7(r[i - 3], r[i - 2], r[i - 1], r[i], r[i + 1], r[i + 2], r[i + 3])
    else:
        for i in range(h, nx - h):
            o[i] = med9(r[i - 4], r[i - 3], r[i - 2], r[i - 1], r[i], r[i + 1],
                        r[i + 2], r[i + 3], r[i + 4])


@njit(cache=True, nogil=True)
def _ring_median(ring, o, size):
    # Median across the ``size`` rows held in ``ring`` (their order does not
    # matter for a median), column by column, into ``o``.
    nx = ring.shape[1]
    h = size // 2
    if size == 3:
        a, b, c = ring[0], ring[1], ring[2]
        for i in range(h, nx - h):
            o[i] = med3(a[i], b[i], c[i])
    elif size == 5:
        a, b, c, d, e = ring[0], ring[1], ring[2], ring[3], ring[4]
        for i in range(h, nx - h):
            o[i] = med5(a[i], b[i], c[i], d[i], e[i])
    elif size == 7:
        a, b, c, d = ring[0], ring[1], ring[2], ring[3]
        e, f, g = ring[4], ring[5], ring[6]
        for i in range(h, nx - h):
            o[i] = med7(a[i], b[i], c[i], d[i], e[i], f[i], g[i])
    else:
        a, b, c, d = ring[0], ring[1], ring[2], ring[3]
        e, f, g, k, m = ring[4], ring[5], ring[6], ring[7], ring[8]
        for i in range(h, nx - h):
            o[i] = med9(a[i], b[i], c[i], d[i], e[i], f[i], g[i], k[i], m[i])


@njit(cache=True, nogil=True)
def _copy_border(src, dst, h):
    ny, nx = src.shape
    for j in range(ny):
        if j < h or j >= ny - h:
            for i in range(nx):
                dst[j, i] = src[j, i]
        else:
            for i in range(min(h, nx)):
                dst[j, i] = src[j, i]
                dst[j, nx - 1 - i] = src[j, nx - 1 - i]


@njit(cache=True, nogil=True)
def sepmedfilt(data, size):
    """Separable median filter of odd ``size`` in (3, 5, 7, 9).

    Parameters
    ----------
    data : float32 (ny, nx), C-contiguous, finite.
    size : window length along each axis.

    Returns
    -------
    float32 (ny, nx): median along x then along y; border of ``size // 2``
    copied from ``data``.
    """
    ny, nx = data.shape
    h = size // 2
    out = np.empty_like(data)
    if ny <= 2 * h or nx <= 2 * h:
        out[:, :] = data
        return out
    # Row medians of the ``size`` rows an output row needs live in a small
    # ring buffer (slot = row % size), so the row-filtered image is never
    # written out whole: both passes stay in cache.
    ring = np.empty((size, nx), dtype=data.dtype)
    for r in range(size - 1):
        _row_median(data[r], ring[r % size], size)
    for j in range(h, ny - h):
        r = j + h
        _row_median(data[r], ring[r % size], size)
        _ring_median(ring, out[j], size)
    _copy_border(data, out, h)
    return out


# ---------------------------------------------------------------------------
# Full (square-window) median filters via a pruned sorting network.
# ---------------------------------------------------------------------------


def batcher_pairs(n):
    """Compare-exchange pairs (i, j), i < j, of Batcher's odd-even merge sort
    for ``n`` elements (the power-of-two network with pairs touching indices
    ``>= n`` dropped, which stays a sorting network: the missing elements act
    as +inf at the end)."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


def selection_pairs(n, rank):
    """Pairs of a sorting network for ``n`` values pruned to those that can
    affect the value that ends at position ``rank`` (the median when
    ``rank == (n - 1) // 2``). Returned as an int32 ``(m, 2)`` array."""
    pairs = batcher_pairs(n)
    needed = {rank}
    kept = []
    for a, b in reversed(pairs):
        if a in needed or b in needed:
            kept.append((a, b))
            needed.add(a)
            needed.add(b)
    kept.reverse()
    return np.array(kept, dtype=np.int32).reshape(-1, 2)


_LANES = 64  # pixels processed together; 64 x 49 float32 stays in L1 cache


@njit(cache=True, nogil=True)
def compare_exchange_lanes(t, pairs, w):
    """Apply the compare-exchange ``pairs`` (an ``(m, 2)`` int array, i < j)
    to the first ``w`` columns (lanes) of ``t`` (``(n, lanes)``), each lane
    independently: the loop over lanes is what LLVM vectorises."""
    for q in range(pairs.shape[0]):
        a = t[pairs[q, 0]]
        b = t[pairs[q, 1]]
        for j in range(w):
            x = a[j]
            y = b[j]
            a[j] = min(x, y)
            b[j] = max(x, y)


@njit(cache=True, nogil=True)
def _medfilt_rows(data, out, size, pairs, rank, j0, j1):
    ny, nx = data.shape
    h = size // 2
    n = size * size
    buf = np.empty((n, _LANES), dtype=data.dtype)
    for j in range(j0, j1):
        i0 = h
        while i0 < nx - h:
            w = min(_LANES, nx - h - i0)
            e = 0
            for dy in range(-h, h + 1):
                row = data[j + dy]
                for dx in range(-h, h + 1):
                    b = buf[e]
                    for t in range(w):
                        b[t] = row[i0 + t + dx]
                    e += 1
            compare_exchange_lanes(buf, pairs, w)
            res = buf[rank]
            for t in range(w):
                out[j, i0 + t] = res[t]
            i0 += w


@njit(cache=True, nogil=True)
def _medfilt3(data, out):
    ny, nx = data.shape
    for j in range(1, ny - 1):
        a, b, c = data[j - 1], data[j], data[j + 1]
        o = out[j]
        for i in range(1, nx - 1):
            o[i] = med9(a[i - 1], a[i], a[i + 1], b[i - 1], b[i], b[i + 1],
                        c[i - 1], c[i], c[i + 1])


_PAIRS = {}


def _pairs_for(size):
    if size not in _PAIRS:
        n = size * size
        _PAIRS[size] = selection_pairs(n, (n - 1) // 2)
    return _PAIRS[size]


def medfilt(data, size):
    """Full ``size x size`` median filter (odd ``size`` >= 3).

    Parameters
    ----------
    data : float32 (ny, nx), C-contiguous, finite.
    size : odd window side.

    Returns
    -------
    float32 (ny, nx); border of ``size // 2`` copied from ``data``.
    """
    if size % 2 != 1 or size < 3:
        raise ValueError(f"median filter size must be odd and >= 3, got {size}")
    data = np.ascontiguousarray(data)
    out = np.empty_like(data)
    h = size // 2
    ny, nx = data.shape
    if ny <= 2 * h or nx <= 2 * h:
        out[:, :] = data
        return out
    if size == 3:
        _medfilt3(data, out)
    else:
        n = size * size
        _medfilt_rows(data, out, size, _pairs_for(size), (n - 1) // 2, h, ny - h)
    _copy_border(data, out, h)
    return out


# ---------------------------------------------------------------------------
# Order statistics of a 1-D buffer.
# ---------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def select_inplace(buf, n, k):
    """Return the ``k``-th smallest (0-based) of ``buf[:n]``, reordering it.

    Hoare quickselect with a median-of-three pivot; ``buf`` is scratch.
    """
    lo = 0
    hi = n - 1
    while hi > lo:
        mid = (lo + hi) // 2
        # median of three into buf[mid]
        if buf[mid] < buf[lo]:
            buf[mid], buf[lo] = buf[lo], buf[mid]
        if buf[hi] < buf[lo]:
            buf[hi], buf[lo] = buf[lo], buf[hi]
        if buf[hi] < buf[mid]:
            buf[hi], buf[mid] = buf[mid], buf[hi]
        pivot = buf[mid]
        i = lo
        j = hi
        while i <= j:
            while buf[i] < pivot:
                i += 1
            while buf[j] > pivot:
                j -= 1
            if i <= j:
                buf[i], buf[j] = buf[j], buf[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return buf[k]
    return buf[k]


@njit(cache=True, nogil=True)
def lower_median(buf, n):
    """Lower median of ``buf[:n]`` (the ``(n - 1) // 2``-th smallest), the
    convention astroscrappy and IRAF use for even counts. ``buf`` is scratch."""
    return select_inplace(buf, n, (n - 1) // 2)


# ---------------------------------------------------------------------------
# The median filters evaluated at a few pixels only.
# ---------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def sepmedfilt_at(data, ys, xs, size):
    """``sepmedfilt(data, size)[ys, xs]`` without filtering the whole image.

    Parameters
    ----------
    data : float32 (ny, nx), C-contiguous, finite.
    ys, xs : int (n,), pixel rows and columns.
    size : odd window length in (3, 5, 7, 9).

    Returns
    -------
    float32 (n,): the values the full filter has at those pixels (the
    median of the ``size`` row medians; on the border of ``size // 2`` the
    input). Medians are order statistics, so the values are the same
    whichever algorithm selects them (up to the sign of a zero).

    Example
    -------
    >>> sepmedfilt_at(img, np.array([10]), np.array([20]), 7)  # doctest: +SKIP
    """
    ny, nx = data.shape
    h = size // 2
    out = np.empty(ys.shape[0], dtype=np.float32)
    win = np.empty(size, dtype=np.float32)
    rowmeds = np.empty(size, dtype=np.float32)
    for k in range(ys.shape[0]):
        j = ys[k]
        i = xs[k]
        if ny <= 2 * h or nx <= 2 * h or j < h or j >= ny - h or i < h or i >= nx - h:
            out[k] = data[j, i]
            continue
        for r in range(size):
            row = data[j - h + r]
            for t in range(size):
                win[t] = row[i - h + t]
            rowmeds[r] = select_inplace(win, size, h)
        out[k] = select_inplace(rowmeds, size, h)
    return out


@njit(cache=True, nogil=True)
def medfilt_at(data, ys, xs, size):
    """``medfilt(data, size)[ys, xs]`` without filtering the whole image.

    Parameters
    ----------
    data : float32 (ny, nx), C-contiguous, finite.
    ys, xs : int (n,), pixel rows and columns.
    size : odd window side >= 3.

    Returns
    -------
    float32 (n,): the median of the ``size x size`` window at those pixels
    (on the border of ``size // 2``, the input), as :func:`medfilt` gives.

    Example
    -------
    >>> medfilt_at(img, np.array([10]), np.array([20]), 5)  # doctest: +SKIP
    """
    ny, nx = data.shape
    h = size // 2
    n = size * size
    out = np.empty(ys.shape[0], dtype=np.float32)
    buf = np.empty(n, dtype=np.float32)
    for k in range(ys.shape[0]):
        j = ys[k]
        i = xs[k]
        if ny <= 2 * h or nx <= 2 * h or j < h or j >= ny - h or i < h or i >= nx - h:
            out[k] = data[j, i]
            continue
        e = 0
        for dy in range(-h, h + 1):
            for dx in range(-h, h + 1):
                buf[e] = data[j + dy, i + dx]
                e += 1
        out[k] = select_inplace(buf, n, (n - 1) // 2)
    return out


@njit(cache=True, nogil=True)
def sepmedfilt_apply_inplace(a, size, noise, mode):
    """Combine ``a`` with its own separable median in place, without a
    second full-size image.

    ``mode == 0``: ``a - sepmedfilt(a, size)``; ``mode == 1``:
    ``max((a - sepmedfilt(a, size)) / noise, 0.01)`` (the L.A.Cosmic
    fine-structure contrast). The values are those of the two-step
    computation, bit for bit: row medians live in a ring buffer of ``size``
    rows, computed from each input row before that row is overwritten, and
    an output row is written only once no later row median needs it.

    Parameters
    ----------
    a : float32 (ny, nx), C-contiguous, finite; overwritten and returned.
    size : odd window length in (3, 5, 7, 9).
    noise : float32 (ny, nx) (read for ``mode == 1`` only).
    mode : 0 or 1.

    Example
    -------
    >>> sp = sepmedfilt_apply_inplace(s, 7, s, 0)  # doctest: +SKIP
    """
    ny, nx = a.shape
    h = size // 2
    floor = np.float32(0.01)
    med = np.empty(nx, dtype=a.dtype)
    if ny > 2 * h and nx > 2 * h:
        ring = np.empty((size, nx), dtype=a.dtype)
        for r in range(size - 1):
            _row_median(a[r], ring[r % size], size)
        for j in range(h, ny - h):
            r = j + h
            _row_median(a[r], ring[r % size], size)  # row r is still the input
            _ring_median(ring, med, size)
            for i in range(min(h, nx)):  # border columns: the median is a itself
                med[i] = a[j, i]
                med[nx - 1 - i] = a[j, nx - 1 - i]
            row = a[j]
            if mode == 0:
                for i in range(nx):
                    row[i] = row[i] - med[i]
            else:
                nrow = noise[j]
                for i in range(nx):
                    v = (row[i] - med[i]) / nrow[i]
                    row[i] = v if v >= floor else floor
    for j in range(ny):  # border rows (all rows of a frame too small to filter)
        if h <= j < ny - h and ny > 2 * h and nx > 2 * h:
            continue
        row = a[j]
        for i in range(nx):
            v = row[i] - row[i]
            if mode == 1:
                v = v / noise[j, i]
                v = v if v >= floor else floor
            row[i] = v
    return a
