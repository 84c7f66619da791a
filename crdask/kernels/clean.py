"""The four L.A.Cosmic cleaners: replace flagged pixels from a 5x5 window.

Each works in place on a float32 ``(ny, nx)`` image ``arr`` and replaces the
pixels where ``crmask`` is True; pixels within 2 of the array edge are left
alone (as astroscrappy). ``mask`` marks bad pixels that are never used as
donors. ``background`` (same units as ``arr``) is the fallback when a window
has no usable donor.

The masked cleaners read only unflagged pixels, which they never write, so
the scan order does not matter and cleaning twice with the same ``crmask``
changes nothing. ``clean_median`` (unmasked) reads from a snapshot of ``arr``
taken before the pass, so it too is independent of scan order.
"""

import numpy as np
from numba import njit

from .median import lower_median, select_inplace

# Inverse-distance weights of the 5x5 window, centre excluded.
_IDW = np.zeros((5, 5), dtype=np.float32)
for _dy in range(-2, 3):
    for _dx in range(-2, 3):
        if _dy or _dx:
            _IDW[_dy + 2, _dx + 2] = np.float32(1.0 / np.hypot(_dy, _dx))


@njit(cache=True, nogil=True)
def clean_meanmask(arr, crmask, mask, background):
    """Mean of the unflagged, unmasked pixels of the 5x5 window (float32 sum,
    rows outer)."""
    ny, nx = arr.shape
    for j in range(2, ny - 2):
        for i in range(2, nx - 2):
            if crmask[j, i]:
                s = np.float32(0.0)
                n = 0
                for l in range(-2, 3):
                    for k in range(-2, 3):
                        if not (crmask[j + l, i + k] or mask[j + l, i + k]):
                            s += arr[j + l, i + k]
                            n += 1
                if n == 0:
                    arr[j, i] = background
                else:
                    arr[j, i] = s / np.float32(n)


@njit(cache=True, nogil=True)
def clean_medmask(arr, crmask, mask, background):
    """Lower median of the unflagged, unmasked pixels of the 5x5 window."""
    ny, nx = arr.shape
    buf = np.empty(25, dtype=np.float32)
    for j in range(2, ny - 2):
        for i in range(2, nx - 2):
            if crmask[j, i]:
                n = 0
                for l in range(-2, 3):
                    for k in range(-2, 3):
                        if not (crmask[j + l, i + k] or mask[j + l, i + k]):
                            buf[n] = arr[j + l, i + k]
                            n += 1
                if n == 0:
                    arr[j, i] = background
                else:
                    arr[j, i] = lower_median(buf, n)


@njit(cache=True, nogil=True)
def clean_idw(arr, crmask, mask, background, weights=_IDW):
    """Inverse-distance-weighted mean of the unflagged, unmasked pixels of the
    5x5 window (weights 1/r, float32)."""
    ny, nx = arr.shape
    for j in range(2, ny - 2):
        for i in range(2, nx - 2):
            if crmask[j, i]:
                val = np.float32(0.0)
                wsum = np.float32(0.0)
                for l in range(-2, 3):
                    for k in range(-2, 3):
                        if not (crmask[j + l, i + k] or mask[j + l, i + k]):
                            w = weights[l + 2, k + 2]
                            val += w * arr[j + l, i + k]
                            wsum += w
                if wsum < np.float32(1e-6):
                    arr[j, i] = background
                else:
                    arr[j, i] = val / wsum


@njit(cache=True, nogil=True)
def clean_median(arr, crmask):
    """Median of all 25 pixels of the 5x5 window (flagged ones included),
    read from the image as it was before this pass.

    astroscrappy 1.3's ``clean_median`` fills its buffer wrongly (a
    ``counter =+ 1`` typo) and returns the median of mostly uninitialised
    memory; this is the filter its docstring describes.
    """
    ny, nx = arr.shape
    src = arr.copy()
    buf = np.empty(25, dtype=np.float32)
    for j in range(2, ny - 2):
        for i in range(2, nx - 2):
            if crmask[j, i]:
                n = 0
                for l in range(-2, 3):
                    for k in range(-2, 3):
                        buf[n] = src[j + l, i + k]
                        n += 1
                arr[j, i] = select_inplace(buf, 25, 12)
