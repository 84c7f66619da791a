"""Separable median filters (sizes 3, 5, 7, 9) as Numba kernels.

``sepmedfilt(data, size)`` is astroscrappy's separable median: a 1-D median
of ``size`` pixels along each row (x), then along each column (y) of the
row-filtered image; the border of width ``size // 2`` on all four sides is
copied from the input. Input: C-contiguous, finite float32 ``(ny, nx)``.

Why it is fast: the row medians of the ``size`` rows that an output row
needs live in a small ring buffer (the row-filtered image is never written
out whole, so both passes stay in cache), and the column pass makes output
rows two at a time. Two vertically adjacent windows share ``size - 1`` rows;
once the two middle values ``lo <= hi`` of those shared values are known,
each window's median is its one remaining value clamped to ``[lo, hi]``
(the rank-``size // 2`` value of the window). The shared middle pair comes
from a sorting network pruned to those two ranks, so a pair of outputs
costs about 55% of two separate median networks. Every step is a branch-free
min/max over registers, which LLVM vectorises along x.

Medians are order statistics, so the values equal any other median
algorithm's (up to the sign of a zero, which no L.A.Cosmic step can see).

Example
-------
>>> import numpy as np
>>> a = np.arange(25, dtype=np.float32).reshape(5, 5)
>>> float(sepmedfilt(a, 3)[2, 2])
12.0
"""

import numpy as np
from numba import njit

from .median import med3, med5, med7, med9, select_inplace, sort2

# ---------------------------------------------------------------------------
# The two middle values of 2, 4, 6, 8 values (networks pruned to ranks
# n/2 - 1 and n/2 from optimal sorting networks; checked exhaustively by the
# 0-1 principle in tests/test_kernels.py).
# ---------------------------------------------------------------------------


@njit(cache=True, inline="always")
def mid2_of4(p0, p1, p2, p3):
    """Second and third smallest of four values, in order."""
    p0, p1 = sort2(p0, p1)
    p2, p3 = sort2(p2, p3)
    p2 = max(p0, p2)
    p1 = min(p1, p3)
    return sort2(p1, p2)


@njit(cache=True, inline="always")
def mid2_of6(p0, p1, p2, p3, p4, p5):
    """Third and fourth smallest of six values, in order."""
    p0, p5 = sort2(p0, p5)
    p1, p3 = sort2(p1, p3)
    p2, p4 = sort2(p2, p4)
    p1, p2 = sort2(p1, p2)
    p3, p4 = sort2(p3, p4)
    p0, p3 = sort2(p0, p3)
    p2, p5 = sort2(p2, p5)
    p1 = max(p0, p1)
    p2, p3 = sort2(p2, p3)
    p4 = min(p4, p5)
    return max(p1, p2), min(p3, p4)


@njit(cache=True, inline="always")
def mid2_of8(p0, p1, p2, p3, p4, p5, p6, p7):
    """Fourth and fifth smallest of eight values, in order."""
    p0, p2 = sort2(p0, p2)
    p1, p3 = sort2(p1, p3)
    p4, p6 = sort2(p4, p6)
    p5, p7 = sort2(p5, p7)
    p0, p4 = sort2(p0, p4)
    p1, p5 = sort2(p1, p5)
    p2, p6 = sort2(p2, p6)
    p3, p7 = sort2(p3, p7)
    p1 = max(p0, p1)
    p2, p3 = sort2(p2, p3)
    p4, p5 = sort2(p4, p5)
    p6 = min(p6, p7)
    p4 = max(p2, p4)
    p3 = min(p3, p5)
    p4 = max(p1, p4)
    p3 = min(p3, p6)
    return sort2(p3, p4)


@njit(cache=True, inline="always")
def clamp(a, lo, hi):
    """``a`` clamped to ``[lo, hi]`` (``lo <= hi``): the median of the three."""
    return max(lo, min(a, hi))


# ---------------------------------------------------------------------------
# The two passes.
# ---------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _row_median_at(r, i, size):
    # One 1-D median (the ends of a row that the pairs below do not cover).
    if size == 3:
        return med3(r[i - 1], r[i], r[i + 1])
    if size == 5:
        return med5(r[i - 2], r[i - 1], r[i], r[i + 1], r[i + 2])
    if size == 7:
        return med7(r[i - 3], r[i - 2], r[i - 1], r[i], r[i + 1], r[i + 2], r[i + 3])
    return med9(r[i - 4], r[i - 3], r[i - 2], r[i - 1], r[i], r[i + 1],
                r[i + 2], r[i + 3], r[i + 4])


@njit(cache=True, nogil=True)
def _row_median(r, o, size, ev, od, oe, oo):
    # 1-D median of window ``size`` along row ``r`` into ``o`` (columns
    # h .. nx-h-1), outputs two at a time like the column pass: the windows
    # at x = 2k and 2k + 1 share 2h values. Reading every other pixel does
    # not vectorise, so the row is first split into its even (``ev``) and
    # odd (``od``) pixels; then x = 2k + c is ev[k + c/2] or od[k + (c-1)/2]
    # and every load is contiguous. ``oe``/``oo`` (scratch, >= nx // 2 + 1)
    # take the even/odd outputs, interleaved into ``o`` at the end.
    nx = r.shape[0]
    h = size // 2
    ne = (nx + 1) // 2
    no = nx // 2
    for k in range(no):
        ev[k] = r[2 * k]
        od[k] = r[2 * k + 1]
    if ne > no:
        ev[no] = r[nx - 1]
    # pairs (2k, 2k + 1) with h <= 2k and 2k + 1 <= nx - h - 1
    k0 = (h + 1) // 2
    k1 = (nx - h) // 2          # exclusive: 2(k1 - 1) + 1 <= nx - h - 1
    if size == 3:               # shared x[2k], x[2k+1]; ends x[2k-1], x[2k+2]
        for k in range(k0, k1):
            lo, hi = sort2(ev[k], od[k])
            oe[k] = clamp(od[k - 1], lo, hi)
            oo[k] = clamp(ev[k + 1], lo, hi)
    elif size == 5:             # shared x[2k-1 .. 2k+2]; ends x[2k-2], x[2k+3]
        for k in range(k0, k1):
            lo, hi = mid2_of4(od[k - 1], ev[k], od[k], ev[k + 1])
            oe[k] = clamp(ev[k - 1], lo, hi)
            oo[k] = clamp(od[k + 1], lo, hi)
    elif size == 7:             # shared x[2k-2 .. 2k+3]; ends x[2k-3], x[2k+4]
        for k in range(k0, k1):
            lo, hi = mid2_of6(ev[k - 1], od[k - 1], ev[k], od[k], ev[k + 1], od[k + 1])
            oe[k] = clamp(od[k - 2], lo, hi)
            oo[k] = clamp(ev[k + 2], lo, hi)
    else:                       # shared x[2k-3 .. 2k+4]; ends x[2k-4], x[2k+5]
        for k in range(k0, k1):
            lo, hi = mid2_of8(od[k - 2], ev[k - 1], od[k - 1], ev[k], od[k],
                              ev[k + 1], od[k + 1], ev[k + 2])
            oe[k] = clamp(ev[k - 2], lo, hi)
            oo[k] = clamp(od[k + 2], lo, hi)
    for k in range(k0, k1):
        o[2 * k] = oe[k]
        o[2 * k + 1] = oo[k]
    # the outputs the pairs leave out: at most one at each end
    for i in range(h, min(2 * k0, nx - h)):
        o[i] = _row_median_at(r, i, size)
    for i in range(max(2 * k1, h), nx - h):
        o[i] = _row_median_at(r, i, size)


@njit(cache=True, nogil=True)
def _column_median(ring, b, o, size):
    # Median across the ``size`` ring rows starting at slot ``b`` (slots taken
    # modulo the ring's length), column by column, into ``o``.
    n = ring.shape[0]
    nx = ring.shape[1]
    h = size // 2
    q0, q1, q2 = ring[b % n], ring[(b + 1) % n], ring[(b + 2) % n]
    if size == 3:
        for i in range(h, nx - h):
            o[i] = med3(q0[i], q1[i], q2[i])
        return
    q3, q4 = ring[(b + 3) % n], ring[(b + 4) % n]
    if size == 5:
        for i in range(h, nx - h):
            o[i] = med5(q0[i], q1[i], q2[i], q3[i], q4[i])
        return
    q5, q6 = ring[(b + 5) % n], ring[(b + 6) % n]
    if size == 7:
        for i in range(h, nx - h):
            o[i] = med7(q0[i], q1[i], q2[i], q3[i], q4[i], q5[i], q6[i])
        return
    q7, q8 = ring[(b + 7) % n], ring[(b + 8) % n]
    for i in range(h, nx - h):
        o[i] = med9(q0[i], q1[i], q2[i], q3[i], q4[i], q5[i], q6[i], q7[i], q8[i])


@njit(cache=True, nogil=True)
def _column_median_pair(ring, b, o0, o1, size):
    # Medians of the windows of ring slots b .. b+size-1 (into ``o0``) and
    # b+1 .. b+size (into ``o1``): the shared middle pair, then two clamps.
    n = ring.shape[0]
    nx = ring.shape[1]
    h = size // 2
    first = ring[b % n]
    last = ring[(b + size) % n]
    q1, q2 = ring[(b + 1) % n], ring[(b + 2) % n]
    if size == 3:
        for i in range(h, nx - h):
            lo, hi = sort2(q1[i], q2[i])
            o0[i] = clamp(first[i], lo, hi)
            o1[i] = clamp(last[i], lo, hi)
        return
    q3, q4 = ring[(b + 3) % n], ring[(b + 4) % n]
    if size == 5:
        for i in range(h, nx - h):
            lo, hi = mid2_of4(q1[i], q2[i], q3[i], q4[i])
            o0[i] = clamp(first[i], lo, hi)
            o1[i] = clamp(last[i], lo, hi)
        return
    q5, q6 = ring[(b + 5) % n], ring[(b + 6) % n]
    if size == 7:
        for i in range(h, nx - h):
            lo, hi = mid2_of6(q1[i], q2[i], q3[i], q4[i], q5[i], q6[i])
            o0[i] = clamp(first[i], lo, hi)
            o1[i] = clamp(last[i], lo, hi)
        return
    q7, q8 = ring[(b + 7) % n], ring[(b + 8) % n]
    for i in range(h, nx - h):
        lo, hi = mid2_of8(q1[i], q2[i], q3[i], q4[i], q5[i], q6[i], q7[i], q8[i])
        o0[i] = clamp(first[i], lo, hi)
        o1[i] = clamp(last[i], lo, hi)


@njit(cache=True, nogil=True)
def _sepmed_rows(src, dst, size, noise, mode):
    # The interior rows of the separable median of ``src`` (or of ``src``
    # minus it, see ``sepmedfilt_apply_inplace``) into ``dst``. The ring has
    # size + 1 slots (row r in slot r % (size + 1)): a pair of output rows
    # j, j + 1 needs rows j - h .. j + h + 1. Row medians of row r are taken
    # before any output row >= r - h is written, so ``dst`` may be ``src``.
    ny, nx = src.shape
    h = size // 2
    n = size + 1
    ring = np.empty((n, nx), dtype=src.dtype)
    med0 = np.empty(nx, dtype=src.dtype)
    med1 = np.empty(nx, dtype=src.dtype)
    half = (nx + 1) // 2 + 1
    ev = np.empty(half, dtype=src.dtype)
    od = np.empty(half, dtype=src.dtype)
    oe = np.empty(half, dtype=src.dtype)
    oo = np.empty(half, dtype=src.dtype)
    for r in range(size - 1):
        _row_median(src[r], ring[r % n], size, ev, od, oe, oo)
    loaded = size - 2                      # last row whose median is in the ring
    j = h
    while j < ny - h:
        two = j + 1 < ny - h
        top = j + h + 1 if two else j + h  # the last row these outputs need
        while loaded < top:
            loaded += 1
            _row_median(src[loaded], ring[loaded % n], size, ev, od, oe, oo)
        if two:
            _column_median_pair(ring, (j - h) % n, med0, med1, size)
        else:
            _column_median(ring, (j - h) % n, med0, size)
        for k in range(2 if two else 1):
            row = j + k
            med = med0 if k == 0 else med1
            for i in range(min(h, nx)):  # border columns: the median is the input
                med[i] = src[row, i]
                med[nx - 1 - i] = src[row, nx - 1 - i]
            _combine_row(src[row], med, dst[row], noise[row], mode)
        j += 2 if two else 1


@njit(cache=True, nogil=True)
def _combine_row(a, med, out, nrow, mode):
    # mode 0: out = a - med; mode 1: out = max((a - med) / noise, 0.01);
    # mode 2: out = med (the filter itself).
    nx = a.shape[0]
    if mode == 2:
        for i in range(nx):
            out[i] = med[i]
    elif mode == 0:
        for i in range(nx):
            out[i] = a[i] - med[i]
    else:
        floor = np.float32(0.01)
        for i in range(nx):
            v = (a[i] - med[i]) / nrow[i]
            out[i] = v if v >= floor else floor


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

    Example
    -------
    >>> sepmedfilt(np.ones((9, 9), np.float32), 5).sum()  # doctest: +SKIP
    81.0
    """
    ny, nx = data.shape
    h = size // 2
    out = np.empty_like(data)
    if ny <= 2 * h or nx <= 2 * h:
        out[:, :] = data
        return out
    _sepmed_rows(data, out, size, data, 2)  # every column of the interior rows
    for j in range(h):
        out[j] = data[j]
        out[ny - 1 - j] = data[ny - 1 - j]
    return out


@njit(cache=True, nogil=True)
def sepmedfilt_apply_inplace(a, size, noise, mode):
    """Combine ``a`` with its own separable median in place, without a
    second full-size image.

    ``mode == 0``: ``a - sepmedfilt(a, size)``; ``mode == 1``:
    ``max((a - sepmedfilt(a, size)) / noise, 0.01)`` (the L.A.Cosmic
    fine-structure contrast). The values are those of the two-step
    computation, bit for bit: row medians are computed from each input row
    before that row is overwritten.

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
    interior = ny > 2 * h and nx > 2 * h
    if interior:
        _sepmed_rows(a, a, size, noise, mode)
    floor = np.float32(0.01)
    for j in range(ny):  # border rows (all rows of a frame too small to filter)
        if interior and h <= j < ny - h:
            continue
        row = a[j]
        for i in range(nx):
            v = row[i] - row[i]
            if mode == 1:
                v = v / noise[j, i]
                v = v if v >= floor else floor
            row[i] = v
    return a


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
    input).

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
