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
