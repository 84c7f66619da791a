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

import math

import numpy as np
from numba import njit

from .median import lower_median, select_inplace

# Inverse-distance weights of the 5x5 window, centre excluded.
_IDW = np.zeros((5, 5), dtype=np.float32)
for _dy in range(-2, 3):
    for _dx in range(-2, 3):
        if _dy or _dx:
            _IDW[_dy + 2, _dx + 2] = np.float32(1.0 / np.hypot(_dy, _dx))


@njit(cache=True, inline="always")
def _meanmask_value(arr, crmask, mask, background, j, i):
    s = np.float32(0.0)
    n = 0
    for l in range(-2, 3):
        for k in range(-2, 3):
            if not (crmask[j + l, i + k] or mask[j + l, i + k]):
                s += arr[j + l, i + k]
                n += 1
    return background if n == 0 else s / np.float32(n)


@njit(cache=True, inline="always")
def _medmask_value(arr, crmask, mask, background, j, i, buf):
    n = 0
    for l in range(-2, 3):
        for k in range(-2, 3):
            if not (crmask[j + l, i + k] or mask[j + l, i + k]):
                buf[n] = arr[j + l, i + k]
                n += 1
    return background if n == 0 else lower_median(buf, n)


@njit(cache=True, inline="always")
def _idw_value(arr, crmask, mask, background, j, i, weights):
    val = np.float32(0.0)
    wsum = np.float32(0.0)
    for l in range(-2, 3):
        for k in range(-2, 3):
            if not (crmask[j + l, i + k] or mask[j + l, i + k]):
                w = weights[l + 2, k + 2]
                val += w * arr[j + l, i + k]
                wsum += w
    return background if wsum < np.float32(1e-6) else val / wsum


#: ``kind`` codes of :func:`clean_masked_at`.
MASKED_KINDS = {"meanmask": 0, "medmask": 1, "idw": 2}


@njit(cache=True, nogil=True)
def _masked_value(kind, arr, crmask, mask, background, j, i, buf, weights):
    if kind == 0:
        return _meanmask_value(arr, crmask, mask, background, j, i)
    if kind == 1:
        return _medmask_value(arr, crmask, mask, background, j, i, buf)
    return _idw_value(arr, crmask, mask, background, j, i, weights)


@njit(cache=True, nogil=True)
def _clean_masked(kind, arr, crmask, mask, background):
    ny, nx = arr.shape
    buf = np.empty(25, dtype=np.float32)
    for j in range(2, ny - 2):
        for i in range(2, nx - 2):
            if crmask[j, i]:
                arr[j, i] = _masked_value(kind, arr, crmask, mask, background, j, i, buf, _IDW)


@njit(cache=True, nogil=True)
def clean_meanmask(arr, crmask, mask, background):
    """Mean of the unflagged, unmasked pixels of the 5x5 window (float32 sum,
    rows outer)."""
    _clean_masked(0, arr, crmask, mask, background)


@njit(cache=True, nogil=True)
def clean_medmask(arr, crmask, mask, background):
    """Lower median of the unflagged, unmasked pixels of the 5x5 window."""
    _clean_masked(1, arr, crmask, mask, background)


@njit(cache=True, nogil=True)
def clean_idw(arr, crmask, mask, background):
    """Inverse-distance-weighted mean of the unflagged, unmasked pixels of the
    5x5 window (weights 1/r, float32)."""
    _clean_masked(2, arr, crmask, mask, background)


@njit(cache=True, nogil=True)
def clean_masked_at(kind, arr, crmask, mask, background, idx):
    """Clean only the flagged pixels at flat indices ``idx`` with a masked
    cleaner (``kind`` from :data:`MASKED_KINDS`), as the whole-image cleaner
    would; pixels within 2 of the edge are left alone.

    A masked cleaner's value depends only on which window pixels are flagged
    and on the unflagged ones, which no cleaning writes: so after the mask
    grows, only flagged pixels within 2 of a newly flagged one can get a new
    value, and cleaning those alone gives the whole-image result.

    Parameters
    ----------
    kind : int.  arr : float32 (ny, nx), cleaned in place.
    crmask, mask : bool (ny, nx).  background : float32.
    idx : int64 (n,), flat indices into ``arr``.

    Returns
    -------
    bool (n,): True where the pixel's bits changed.

    Example
    -------
    >>> changed = clean_masked_at(0, img, crmask, bad, np.float32(0), idx)  # doctest: +SKIP
    """
    ny, nx = arr.shape
    buf = np.empty(25, dtype=np.float32)
    changed = np.zeros(idx.shape[0], dtype=np.bool_)
    for q in range(idx.shape[0]):
        j = idx[q] // nx
        i = idx[q] - j * nx
        if j < 2 or i < 2 or j >= ny - 2 or i >= nx - 2:
            continue
        v = _masked_value(kind, arr, crmask, mask, background, j, i, buf, _IDW)
        old = arr[j, i]
        # bits, not values: -0.0 == 0.0 but is a change (values are finite)
        changed[q] = v != old or math.copysign(1.0, v) != math.copysign(1.0, old)
        arr[j, i] = v
    return changed


@njit(cache=True, nogil=True)
def flag_new(crmask, found):
    """OR ``found`` into ``crmask`` and return the flat indices of the pixels
    that were not flagged before (int64, ascending)."""
    flat = crmask.reshape(-1)
    ff = found.reshape(-1)
    size = flat.shape[0]
    n = 0
    for q in range(size):
        n += np.int64(ff[q] & (not flat[q]))
    out = np.empty(n, dtype=np.int64)
    if n == 0:
        return out
    n = 0
    # runs of 64 pixels with nothing new (nearly all of them) are skipped
    # after a branch-free test that vectorises; the others are listed
    for q0 in range(0, size, 64):
        q1 = min(q0 + 64, size)
        any_new = False
        for q in range(q0, q1):
            any_new |= ff[q] & (not flat[q])
        if not any_new:
            continue
        for q in range(q0, q1):
            if ff[q] and not flat[q]:
                out[n] = q
                n += 1
                flat[q] = True
    return out


@njit(cache=True, nogil=True)
def flagged_near(crmask, idx, reach):
    """Flat indices (unique, in no particular order) of the ``crmask`` pixels
    within Chebyshev distance ``reach`` of the pixels at flat indices ``idx``."""
    ny, nx = crmask.shape
    mark = np.zeros((ny, nx), dtype=np.bool_)
    out = np.empty(idx.shape[0] * (2 * reach + 1) ** 2, dtype=np.int64)
    n = 0
    for q in range(idx.shape[0]):
        j0 = idx[q] // nx
        i0 = idx[q] - j0 * nx
        for j in range(max(j0 - reach, 0), min(j0 + reach + 1, ny)):
            for i in range(max(i0 - reach, 0), min(i0 + reach + 1, nx)):
                if crmask[j, i] and not mark[j, i]:
                    mark[j, i] = True
                    out[n] = j * nx + i
                    n += 1
    return out[:n]


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
