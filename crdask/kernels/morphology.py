"""Binary dilation kernels on uint8/bool ``(ny, nx)`` masks.

Edge behaviour (as astroscrappy): the outer ring of width 1 (``dilate3``) or 2
(``dilate5``) is copied from the input, not dilated.
"""

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def dilate3(mask):
    """Dilate with a 3x3 square. bool (ny, nx) -> new bool (ny, nx)."""
    ny, nx = mask.shape
    out = mask.copy()
    for j in range(1, ny - 1):
        for i in range(1, nx - 1):
            v = False
            for dj in range(-1, 2):
                for di in range(-1, 2):
                    v = v | mask[j + dj, i + di]
            out[j, i] = v
    return out


@njit(cache=True, nogil=True)
def _dilate5_once(mask):
    ny, nx = mask.shape
    out = mask.copy()
    for j in range(2, ny - 2):
        for i in range(2, nx - 2):
            v = False
            for dj in range(-2, 3):
                for di in range(-2, 3):
                    # 5x5 square without its four corners
                    if abs(dj) + abs(di) < 4:
                        v = v | mask[j + dj, i + di]
            out[j, i] = v
    return out


@njit(cache=True, nogil=True)
def dilate5(mask, niter):
    """Dilate ``niter`` times with a 5x5 square minus its corners.

    bool (ny, nx) -> new bool (ny, nx).
    """
    out = mask.copy()
    for _ in range(niter):
        out = _dilate5_once(out)
    return out


@njit(cache=True, nogil=True)
def dilate5_points(ys, xs, ny, nx, niter):
    """``dilate5(mask, niter)`` for a mask given by its True pixels.

    The same result (outer ring of 2 copied, not dilated) at a cost that
    grows with the number of True pixels rather than the image size: each
    pass sets the neighbours of the pixels set before it.

    Parameters
    ----------
    ys, xs : int (n,), rows and columns of the True pixels.
    ny, nx : shape of the mask, pixels.  niter : passes (>= 0).

    Returns
    -------
    bool (ny, nx).

    Example
    -------
    >>> dilate5_points(np.array([5]), np.array([5]), 11, 11, 1).sum()
    21
    """
    out = np.zeros((ny, nx), dtype=np.bool_)
    n = ys.shape[0]
    py = np.empty(max(n, 1), dtype=np.int64)
    px = np.empty(max(n, 1), dtype=np.int64)
    m = 0
    for k in range(n):
        if not out[ys[k], xs[k]]:
            out[ys[k], xs[k]] = True
            py[m] = ys[k]
            px[m] = xs[k]
            m += 1
    for _ in range(niter):
        sources = m
        if m * 22 > py.shape[0]:  # room for every neighbour of every source
            ny_ = np.empty(m * 22, dtype=np.int64)
            nx_ = np.empty(m * 22, dtype=np.int64)
            ny_[:m] = py[:m]
            nx_[:m] = px[:m]
            py, px = ny_, nx_
        for k in range(sources):
            j = py[k]
            i = px[k]
            for dj in range(-2, 3):
                for di in range(-2, 3):
                    if abs(dj) + abs(di) >= 4:
                        continue
                    t, u = j + dj, i + di
                    # only the interior is dilated; the outer ring is copied
                    if 2 <= t < ny - 2 and 2 <= u < nx - 2 and not out[t, u]:
                        out[t, u] = True
                        py[m] = t
                        px[m] = u
                        m += 1
    return out
