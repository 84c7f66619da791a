"""Median filters and order statistics as Numba kernels.

All filters take a C-contiguous float32 ``(ny, nx)`` array and return a new
float32 array of the same shape. Values must be finite (callers mask and fill
NaN/inf first): the branch-free min/max networks below do not order NaN.

Edge behaviour (the same as astroscrappy, so results can be compared): the
full ``medfilt(data, size)`` copies the border of width ``size // 2`` from
the input, unfiltered. The separable filters built on the same networks are
in :mod:`crdask.kernels.sepmedian`.

The small medians below are explicit min/max selection networks over
registers so that LLVM vectorises the loops that call them. The full 5x5 and
7x7 filters (L.A.Cosmic with ``sepmed=False``) sort each column of the band
of an output row once, shared by the windows that contain it, then apply a
generated straight-line network to the window of sorted columns
(:mod:`crdask.kernels.median_nets`, written by
:mod:`crdask.kernels.median_netgen`, which proves each network exact); other
sizes apply a pruned Batcher sorting network lane-wise to blocks of pixels.
All of them select an input value of the window, so the result is the same
as any exact median (a value equal to it: of zeros of both signs, which one is
returned may differ).

Example
-------
>>> img = np.arange(49, dtype=np.float32).reshape(7, 7)
>>> float(medfilt(img, 5)[3, 3])
24.0
"""

import numpy as np
from numba import njit

from . import median_nets

# ---------------------------------------------------------------------------
# Small selection networks (medians of 3, 5, 7, 9 values), branch-free.
# ---------------------------------------------------------------------------


@njit(cache=True, inline="always")
def sort2(a, b):
    """``(min(a, b), max(a, b))``: one compare-exchange."""
    return min(a, b), max(a, b)


@njit(cache=True, inline="always")
def med3(a, b, c):
    """Median of three values."""
    a, b = sort2(a, b)
    b, c = sort2(b, c)
    a, b = sort2(a, b)
    return b


@njit(cache=True, inline="always")
def med5(p0, p1, p2, p3, p4):
    """Median of five values (7 compare-exchanges)."""
    p0, p1 = sort2(p0, p1)
    p3, p4 = sort2(p3, p4)
    p0, p3 = sort2(p0, p3)
    p1, p4 = sort2(p1, p4)
    p1, p2 = sort2(p1, p2)
    p2, p3 = sort2(p2, p3)
    p1, p2 = sort2(p1, p2)
    return p2


@njit(cache=True, inline="always")
def med7(p0, p1, p2, p3, p4, p5, p6):
    """Median of seven values (13 compare-exchanges)."""
    p0, p5 = sort2(p0, p5)
    p0, p3 = sort2(p0, p3)
    p1, p6 = sort2(p1, p6)
    p2, p4 = sort2(p2, p4)
    p0, p1 = sort2(p0, p1)
    p3, p5 = sort2(p3, p5)
    p2, p6 = sort2(p2, p6)
    p2, p3 = sort2(p2, p3)
    p3, p6 = sort2(p3, p6)
    p4, p5 = sort2(p4, p5)
    p1, p4 = sort2(p1, p4)
    p1, p3 = sort2(p1, p3)
    p3, p4 = sort2(p3, p4)
    return p3


@njit(cache=True, inline="always")
def med9(p0, p1, p2, p3, p4, p5, p6, p7, p8):
    """Median of nine values (19 compare-exchanges)."""
    p1, p2 = sort2(p1, p2)
    p4, p5 = sort2(p4, p5)
    p7, p8 = sort2(p7, p8)
    p0, p1 = sort2(p0, p1)
    p3, p4 = sort2(p3, p4)
    p6, p7 = sort2(p6, p7)
    p1, p2 = sort2(p1, p2)
    p4, p5 = sort2(p4, p5)
    p7, p8 = sort2(p7, p8)
    p0, p3 = sort2(p0, p3)
    p5, p8 = sort2(p5, p8)
    p4, p7 = sort2(p4, p7)
    p3, p6 = sort2(p3, p6)
    p1, p4 = sort2(p1, p4)
    p2, p5 = sort2(p2, p5)
    p4, p7 = sort2(p4, p7)
    p4, p2 = sort2(p4, p2)
    p6, p4 = sort2(p6, p4)
    p4, p2 = sort2(p4, p2)
    return p4


# ---------------------------------------------------------------------------
# Shared by the full and the separable filters.
# ---------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def copy_border(src, dst, h):
    """Copy the border of width ``h`` of ``src`` into ``dst`` (both (ny, nx))."""
    ny, nx = src.shape
    for j in range(ny):
        if j < h or j >= ny - h:
            for i in range(nx):
                dst[j, i] = src[j, i]
        else:
            for i in range(min(h, nx)):
                dst[j, i] = src[j, i]
                dst[j, nx - 1 - i] = src[j, nx - 1 - i]



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


@njit(cache=True, nogil=True)
def _medfilt5(data, out):
    # The sorted 5-value columns of the band of row j, each shared by the 5
    # windows that contain it, then the window networks (see median_netgen).
    ny, nx = data.shape
    s = np.empty((5, nx), dtype=data.dtype)
    for j in range(2, ny - 2):
        median_nets.sort_columns5(data, s, j)
        median_nets.window_median5(s, out[j], nx)


@njit(cache=True, nogil=True)
def _medfilt7(data, out):
    # As _medfilt5, by blocks of up to STRIDE - 6 output columns.
    ny, nx = data.shape
    a = np.empty(7 * median_nets.STRIDE, dtype=data.dtype)
    for j in range(3, ny - 3):
        o = out[j]
        i0 = 3
        while i0 < nx - 3:
            w = min(median_nets.STRIDE - 6, nx - 3 - i0)
            median_nets.sort_columns7(data, j, i0 - 3, w + 6, a)
            median_nets.window_median7(a, o, i0, w)
            i0 += w


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
    elif size == 5:
        _medfilt5(data, out)
    elif size == 7:
        _medfilt7(data, out)
    else:
        n = size * size
        _medfilt_rows(data, out, size, _pairs_for(size), (n - 1) // 2, h, ny - h)
    copy_border(data, out, h)
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
