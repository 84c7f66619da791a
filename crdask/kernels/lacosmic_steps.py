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
    not ``bad`` and have ``sp > thresh``. Returns (new mask, its pixel count).

    The edge rows and columns are done apart so that the interior loop has no
    branch and vectorises (about ten times faster than one loop with an edge
    test per pixel)."""
    ny, nx = cand.shape
    out = np.empty((ny, nx), dtype=np.bool_)
    count = 0
    for j in range(ny):
        br = bad[j]
        sr = sp[j]
        o = out[j]
        b = cand[j]
        if j == 0 or j == ny - 1 or nx < 3:
            for i in range(nx):
                o[i] = b[i] & (not br[i]) & (sr[i] > thresh)
                count += np.int64(o[i])
            continue
        a = cand[j - 1]
        c = cand[j + 1]
        for i in (0, nx - 1):
            o[i] = b[i] & (not br[i]) & (sr[i] > thresh)
            count += np.int64(o[i])
        n = np.int64(0)
        for i in range(1, nx - 1):
            # | rather than or: the same value without branches
            v = ((a[i - 1] | a[i] | a[i + 1] | b[i - 1] | b[i] | b[i + 1]
                  | c[i - 1] | c[i] | c[i + 1]) & (not br[i]) & (sr[i] > thresh))
            o[i] = v
            n += np.int64(v)
        count += n
    return out, count


@njit(cache=True, nogil=True)
def electrons_plain(data, gain, rn2, clean, var):
    """Electrons and their variance of a frame without background or given
    variance, in one pass: ``clean = float32(data * gain)``, ``var = clean +
    rn2`` (float32), written into ``clean`` and ``var``.

    The same operations as numpy's ``data * gain`` for float32 or float64
    ``data`` (the product in the input's precision, then rounded), so the
    same bits. Returns False, leaving the outputs incomplete, as soon as a
    pixel of ``data`` is not finite (the caller then masks them).

    Example
    -------
    >>> c = np.empty((1, 2), np.float32); v = np.empty_like(c)
    >>> electrons_plain(np.array([[1.0, 2.0]], np.float32), np.float32(2), np.float32(25), c, v)
    True
    """
    ny, nx = data.shape
    for j in range(ny):
        row = data[j]
        ok = True
        for i in range(nx):
            ok &= np.isfinite(row[i])
        if not ok:
            return False
        c = clean[j]
        v = var[j]
        for i in range(nx):
            e = np.float32(row[i] * gain)
            c[i] = e
            v[i] = e + rn2
    return True


@njit(cache=True, nogil=True)
def pixels_at_least(img, level):
    """``np.nonzero(img >= level)`` (rows, columns; int64, row-major order),
    in two passes without a full-size temporary mask.

    Example
    -------
    >>> pixels_at_least(np.array([[1, 5], [7, 2]], np.float32), np.float32(5))
    (array([0, 1]), array([1, 0]))
    """
    ny, nx = img.shape
    n = 0
    for j in range(ny):
        row = img[j]
        for i in range(nx):
            n += np.int64(row[i] >= level)
    ys = np.empty(n, dtype=np.int64)
    xs = np.empty(n, dtype=np.int64)
    if n == 0:
        return ys, xs
    n = 0
    for j in range(ny):
        row = img[j]
        c = np.int64(0)
        for i in range(nx):
            c += np.int64(row[i] >= level)
        if c == 0:
            continue
        for i in range(nx):
            if row[i] >= level:
                ys[n] = j
                xs[n] = i
                n += 1
    return ys, xs


@njit(cache=True, nogil=True)
def dirty_boxes(ys, xs, ny, nx, reach, cell):
    """Boxes covering the pixels within ``reach`` of changed pixels, one per
    group of changed pixels whose reaches touch.

    The frame is cut into ``cell x cell`` cells; a cell is dirty when it
    meets the reach (Chebyshev distance) of a changed pixel ``(ys[k],
    xs[k])``. Dirty cells are grouped by 8-connectivity, and each group gets
    the pixel bounding box of the reaches of its changed pixels. Every pixel
    within ``reach`` of a changed pixel lies in at least one box.

    Parameters
    ----------
    ys, xs : int64 (n,), the changed pixels.  ny, nx : frame shape.
    reach : int >= 0, pixels.  cell : int >= 1, pixels.

    Returns
    -------
    int64 (m, 4): rows ``(y0, y1, x0, x1)``, half-open pixel ranges.

    Example
    -------
    >>> dirty_boxes(np.array([10, 90]), np.array([10, 90]), 100, 100, 2, 8)
    array([[ 8, 13,  8, 13],
           [88, 93, 88, 93]])
    """
    gy = (ny + cell - 1) // cell
    gx = (nx + cell - 1) // cell
    dirty = np.zeros((gy, gx), dtype=np.bool_)
    for k in range(ys.shape[0]):
        c0 = max(ys[k] - reach, 0) // cell
        c1 = min(ys[k] + reach, ny - 1) // cell
        d0 = max(xs[k] - reach, 0) // cell
        d1 = min(xs[k] + reach, nx - 1) // cell
        for a in range(c0, c1 + 1):
            for b in range(d0, d1 + 1):
                dirty[a, b] = True
    label = np.full((gy, gx), -1, dtype=np.int64)
    stack = np.empty(gy * gx, dtype=np.int64)
    n = 0
    for a in range(gy):
        for b in range(gx):
            if not dirty[a, b] or label[a, b] >= 0:
                continue
            label[a, b] = n
            top = 0
            stack[0] = a * gx + b
            top = 1
            while top:
                top -= 1
                q = stack[top]
                qa, qb = q // gx, q % gx
                for da in range(-1, 2):
                    for db in range(-1, 2):
                        ra, rb = qa + da, qb + db
                        if 0 <= ra < gy and 0 <= rb < gx and dirty[ra, rb] \
                                and label[ra, rb] < 0:
                            label[ra, rb] = n
                            stack[top] = ra * gx + rb
                            top += 1
            n += 1
    out = np.empty((n, 4), dtype=np.int64)
    for g in range(n):
        out[g, 0] = ny
        out[g, 1] = 0
        out[g, 2] = nx
        out[g, 3] = 0
    for k in range(ys.shape[0]):
        g = label[ys[k] // cell, xs[k] // cell]
        out[g, 0] = min(out[g, 0], max(ys[k] - reach, 0))
        out[g, 1] = max(out[g, 1], min(ys[k] + reach + 1, ny))
        out[g, 2] = min(out[g, 2], max(xs[k] - reach, 0))
        out[g, 3] = max(out[g, 3], min(xs[k] + reach + 1, nx))
    return out
