"""Box-window kernels of any size (even or odd) and an exact summation.

Windows follow ``scipy.ndimage`` with ``origin=0``: a box of side ``size``
centred on pixel ``j`` covers ``j - size // 2 ... j + size - 1 - size // 2``
(so an even box reaches one pixel further back than forward).

* :func:`box_max` -- binary dilation by a ``size x size`` box, the window
  clipped at the array edges. For boolean input this equals
  ``scipy.ndimage.maximum_filter(mask, size)`` with its default ``'reflect'``
  mode (reflected pixels are always inside the clipped window).
* :func:`box_median_at` -- the median of a ``size x size`` window of an image,
  evaluated only at flagged pixels, over the finite values of the window;
  the ``k = n // 2``-th smallest of ``n`` values (the upper median for even
  ``n``), which is ``scipy.ndimage.median_filter``'s rank when all values are
  finite.
* :func:`sum_partials` -- the exact sum of selected float64 terms as
  non-overlapping float64 partials (Shewchuk's algorithm, as ``math.fsum``);
  ``math.fsum`` of the partials of several blocks is the correctly rounded sum
  of all terms, whatever the blocking, so image-wide statistics built on it
  do not depend on the chunking.
"""

import numpy as np
from numba import njit

from .median import select_inplace


@njit(cache=True, nogil=True)
def _max_rows(mask, size):
    # Along x: out[j, i] = any(mask[j, i - size//2 : i + size - size//2]),
    # clipped; a running count of True values keeps it O(nx) per row.
    ny, nx = mask.shape
    back = size // 2
    fwd = size - 1 - back
    out = np.zeros((ny, nx), dtype=np.bool_)
    for j in range(ny):
        cnt = 0
        # window of pixel i is [i - back, i + fwd]; start with i = 0
        for k in range(0, min(fwd, nx - 1) + 1):
            cnt += mask[j, k]
        for i in range(nx):
            out[j, i] = cnt > 0
            add = i + fwd + 1
            if add < nx:
                cnt += mask[j, add]
            rem = i - back
            if rem >= 0:
                cnt -= mask[j, rem]
    return out


@njit(cache=True, nogil=True)
def box_max(mask, size):
    """Dilate a boolean ``(ny, nx)`` mask by a ``size x size`` box (``size``
    >= 1; scipy window placement, clipped at the edges). Returns a new bool
    array; ``size == 1`` returns a copy."""
    rows = _max_rows(mask, size)
    return _max_rows(rows.T.copy(), size).T.copy()


@njit(cache=True, nogil=True)
def box_median_at(dst, src, flags, size, oy, ox):
    """Write into ``dst[j, i]``, for every True ``flags[j, i]``, the median of
    the finite values of the ``size x size`` window of ``src`` centred on
    ``src[oy + j, ox + i]`` (scipy window placement).

    ``src`` must extend at least ``size // 2`` beyond the flagged region on
    every side (callers pad it); pixels whose window holds no finite value
    are left unchanged. The median is the ``n // 2``-th smallest of the ``n``
    finite values. ``dst`` and ``flags`` have the same shape; ``dst`` is not
    read, so the result does not depend on the scan order.
    """
    ny, nx = flags.shape
    back = size // 2
    buf = np.empty(size * size, dtype=src.dtype)
    for j in range(ny):
        for i in range(nx):
            if flags[j, i]:
                n = 0
                y0 = oy + j - back
                x0 = ox + i - back
                for l in range(size):
                    row = src[y0 + l]
                    for k in range(size):
                        v = row[x0 + k]
                        if np.isfinite(v):
                            buf[n] = v
                            n += 1
                if n > 0:
                    dst[j, i] = select_inplace(buf, n, n // 2)


@njit(cache=True)
def _add_partial(partials, n, x):
    # Shewchuk's grow-expansion: add x to the non-overlapping partials[:n].
    i = 0
    for k in range(n):
        y = partials[k]
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        lo = y - (hi - x)
        if lo != 0.0:
            partials[i] = lo
            i += 1
        x = hi
    partials[i] = x
    return i + 1


@njit(cache=True, nogil=True)
def sum_partials(values, good, center):
    """Exact sums over the pixels where ``good`` is True of ``v`` (if
    ``center`` is NaN) or of ``(v - center) ** 2`` (float64 arithmetic).

    ``values``: float32 or float64 ``(ny, nx)``; ``good``: bool, same shape.
    Returns ``(partials, count)``: float64 non-overlapping partials whose exact
    sum is the sum of the terms (feed them to ``math.fsum``), and the number
    of terms. Terms must be finite.
    """
    ny, nx = values.shape
    partials = np.zeros(64, dtype=np.float64)  # ample: float64 spans < 40
    n = 0
    count = 0
    square = not np.isnan(center)
    for j in range(ny):
        for i in range(nx):
            if good[j, i]:
                v = np.float64(values[j, i])
                if square:
                    d = v - center
                    v = d * d
                if v != 0.0:
                    n = _add_partial(partials, n, v)
                count += 1
    return partials[:n].copy(), count
