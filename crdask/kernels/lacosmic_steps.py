"""Element-wise and neighbourhood steps of one L.A.Cosmic iteration, fused.

All arrays are C-contiguous ``(ny, nx)``; float32 for images, bool for masks.
Thresholds arrive as float32 so the comparisons are made in float32, as in
astroscrappy.
"""

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def noise_map(smoothed_var):
    """``sqrt(max(var, 1e-5))`` in place: var (e-^2) -> noise (e-)."""
    ny, nx = smoothed_var.shape
    floor = np.float32(0.00001)
    for j in range(ny):
        for i in range(nx):
            v = smoothed_var[j, i]
            if v < floor:
                v = floor
            smoothed_var[j, i] = np.sqrt(v)
    return smoothed_var


@njit(cache=True, nogil=True, error_model="numpy")
def divide_twice_noise(lap, noise):
    """``lap / (2 * noise)`` in place: the Laplacian-to-noise image."""
    ny, nx = lap.shape
    two = np.float32(2.0)
    for j in range(ny):
        for i in range(nx):
            lap[j, i] = lap[j, i] / (two * noise[j, i])
    return lap


@njit(cache=True, nogil=True)
def subtract_inplace(a, b):
    """``a -= b`` (float32) and return ``a``."""
    ny, nx = a.shape
    for j in range(ny):
        for i in range(nx):
            a[j, i] = a[j, i] - b[j, i]
    return a


@njit(cache=True, nogil=True, error_model="numpy")
def fine_structure_contrast(f, f_large, noise):
    """``max((f - f_large) / noise, 0.01)`` in place on ``f``."""
    ny, nx = f.shape
    floor = np.float32(0.01)
    for j in range(ny):
        for i in range(nx):
            v = (f[j, i] - f_large[j, i]) / noise[j, i]
            if v < floor:
                v = floor
            f[j, i] = v
    return f


@njit(cache=True, nogil=True, error_model="numpy")
def weighted_inputs(clean, noise):
    """``(clean / noise / noise, 1 / noise / noise)`` for the matched filter."""
    ny, nx = clean.shape
    a = np.empty((ny, nx), dtype=np.float32)
    b = np.empty((ny, nx), dtype=np.float32)
    one = np.float32(1.0)
    for j in range(ny):
        for i in range(nx):
            n = noise[j, i]
            a[j, i] = clean[j, i] / n / n
            b[j, i] = one / n / n
    return a, b


@njit(cache=True, nogil=True, error_model="numpy")
def divide_inplace(a, b):
    """``a /= b`` (float32) and return ``a``."""
    ny, nx = a.shape
    for j in range(ny):
        for i in range(nx):
            a[j, i] = a[j, i] / b[j, i]
    return a


@njit(cache=True, nogil=True, error_model="numpy")
def initial_candidates(sp, fs, bad, sigclip, objlim):
    """Pixels with ``sp > sigclip``, not ``bad`` and ``sp / fs > objlim``."""
    ny, nx = sp.shape
    out = np.empty((ny, nx), dtype=np.bool_)
    for j in range(ny):
        for i in range(nx):
            s = sp[j, i]
            # non-short-circuit & (same value): no branches, so it vectorises
            out[j, i] = (s > sigclip) & (not bad[j, i]) & (s / fs[j, i] > objlim)
    return out


@njit(cache=True, nogil=True)
def grow_candidates(cand, sp, bad, thresh):
    """3x3 dilation of ``cand`` (outer ring copied), then keep pixels that are
    not ``bad`` and have ``sp > thresh``. Returns (new mask, its pixel count)."""
    ny, nx = cand.shape
    out = np.empty((ny, nx), dtype=np.bool_)
    count = 0
    for j in range(ny):
        for i in range(nx):
            if j == 0 or i == 0 or j == ny - 1 or i == nx - 1:
                v = cand[j, i]
            else:
                # | rather than or: the same value without branches
                v = (cand[j - 1, i - 1] | cand[j - 1, i] | cand[j - 1, i + 1]
                     | cand[j, i - 1] | cand[j, i] | cand[j, i + 1]
                     | cand[j + 1, i - 1] | cand[j + 1, i] | cand[j + 1, i + 1])
            v = v & (not bad[j, i]) & (sp[j, i] > thresh)
            out[j, i] = v
            count += np.int64(v)
    return out, count


@njit(cache=True, nogil=True)
def or_into(acc, new):
    """``acc |= new`` in place."""
    ny, nx = acc.shape
    for j in range(ny):
        for i in range(nx):
            acc[j, i] = acc[j, i] | new[j, i]  # no branch: vectorises
    return acc


@njit(cache=True, nogil=True)
def dirty_runs(ys, xs, ny, nx, reach, band, gap):
    """Where pixels within ``reach`` of changed pixels lie, as row-band runs.

    The frame is cut into bands of ``band`` rows. A changed pixel
    ``(ys[k], xs[k])`` makes every pixel within ``reach`` (Chebyshev
    distance) of it dirty; in each band the dirty columns are merged into
    runs, two runs closer than ``gap`` columns becoming one.

    Parameters
    ----------
    ys, xs : int64 (n,), the changed pixels' row and column.
    ny, nx : frame shape, pixels.
    reach, band, gap : ints >= 0, >= 1, >= 0 (pixels).

    Returns
    -------
    int64 (m, 3): rows ``(band index, first column, last column + 1)``.

    Example
    -------
    >>> dirty_runs(np.array([10]), np.array([50]), 100, 100, 2, 32, 0)
    array([[ 0, 48, 53]])
    """
    nb = (ny + band - 1) // band
    cols = np.zeros((nb, nx), dtype=np.bool_)
    for k in range(ys.shape[0]):
        y = ys[k]
        x = xs[k]
        b0 = max(y - reach, 0) // band
        b1 = min(y + reach, ny - 1) // band
        x0 = max(x - reach, 0)
        x1 = min(x + reach, nx - 1)
        for b in range(b0, b1 + 1):
            for i in range(x0, x1 + 1):
                cols[b, i] = True
    out = np.empty((nb * (nx // 2 + 1), 3), dtype=np.int64)
    m = 0
    for b in range(nb):
        i = 0
        while i < nx:
            if not cols[b, i]:
                i += 1
                continue
            start = i
            end = i + 1
            while True:
                while end < nx and cols[b, end]:
                    end += 1
                nxt = end
                while nxt < nx and not cols[b, nxt] and nxt - end < gap:
                    nxt += 1
                if nxt < nx and cols[b, nxt] and nxt - end < gap:
                    end = nxt
                else:
                    break
            out[m, 0] = b
            out[m, 1] = start
            out[m, 2] = end
            m += 1
            i = end
    return out[:m]
