"""The L.A.Cosmic Laplacian: 2x subsample, discrete Laplacian, clip, 2x rebin.

van Dokkum (2001) takes the Laplacian of the image block-replicated 2x2, sets
negative values to zero and block-averages back. ``subsample``,
``laplace_convolve`` and ``rebin`` are the three steps on their own (for tests
and teaching); ``laplacian_rebin`` fuses them without building the 4x larger
image, in the same float32 operation order, so its result is bit-identical to
the three steps composed.

Edge behaviour: the Laplacian treats pixels outside the (subsampled) image as
zero, as astroscrappy does; pixels of the outer ring therefore get a positive
response. Callers either accept that (parity) or pad the frame first.

Arithmetic is float32 in a fixed order, so results are deterministic. They can
differ from astroscrappy's in the last bit: astroscrappy is compiled with
``-ffast-math``, which lets the compiler reorder these sums.
"""

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def subsample(data):
    """Replicate each pixel into a 2x2 block: (ny, nx) -> (2ny, 2nx) float32."""
    ny, nx = data.shape
    out = np.empty((2 * ny, 2 * nx), dtype=np.float32)
    for j in range(ny):
        for i in range(nx):
            v = data[j, i]
            out[2 * j, 2 * i] = v
            out[2 * j, 2 * i + 1] = v
            out[2 * j + 1, 2 * i] = v
            out[2 * j + 1, 2 * i + 1] = v
    return out


@njit(cache=True, nogil=True)
def rebin(data):
    """Average 2x2 blocks: (2ny, 2nx) -> (ny, nx) float32.

    Sum order: top-left, bottom-left, bottom-right, top-right (float32).
    """
    ny = data.shape[0] // 2
    nx = data.shape[1] // 2
    out = np.empty((ny, nx), dtype=np.float32)
    for j in range(ny):
        for i in range(nx):
            p = data[2 * j, 2 * i]
            p += data[2 * j + 1, 2 * i]
            p += data[2 * j + 1, 2 * i + 1]
            p += data[2 * j, 2 * i + 1]
            out[j, i] = p / np.float32(4.0)
    return out


@njit(cache=True, nogil=True, inline="always")
def _lap_at(d, j, i, ny, nx):
    # Laplacian (kernel [[0,-1,0],[-1,4,-1],[0,-1,0]]) at (j, i), zero
    # outside the image, in float32, subtracting right, left, below, above in
    # that order (the order the fused kernel below reproduces).
    p = np.float32(4.0) * d[j, i]
    if i < nx - 1:
        p -= d[j, i + 1]
    if i > 0:
        p -= d[j, i - 1]
    if j < ny - 1:
        p -= d[j + 1, i]
    if j > 0:
        p -= d[j - 1, i]
    return p


@njit(cache=True, nogil=True)
def laplace_convolve(data):
    """Discrete Laplacian with zero padding: (ny, nx) float32 -> same shape."""
    ny, nx = data.shape
    out = np.empty((ny, nx), dtype=np.float32)
    for j in range(ny):
        for i in range(nx):
            out[j, i] = _lap_at(data, j, i, ny, nx)
    return out


@njit(cache=True, nogil=True)
def _fine_lap(d, fj, fi, fny, fnx):
    # ``_lap_at`` on the subsampled grid at fine pixel (fj, fi), reading the
    # coarse array (used on the outer ring only, where neighbours are missing).
    p = np.float32(4.0) * d[fj // 2, fi // 2]
    if fi < fnx - 1:
        p -= d[fj // 2, (fi + 1) // 2]
    if fi > 0:
        p -= d[fj // 2, (fi - 1) // 2]
    if fj < fny - 1:
        p -= d[(fj + 1) // 2, fi // 2]
    if fj > 0:
        p -= d[(fj - 1) // 2, fi // 2]
    return p


@njit(cache=True, nogil=True)
def laplacian_rebin(data):
    """``rebin(max(laplace_convolve(subsample(data)), 0))`` in one pass.

    Parameters
    ----------
    data : float32 (ny, nx), C-contiguous.

    Returns
    -------
    float32 (ny, nx): the clipped, block-averaged Laplacian (same units as
    ``data``), bit-identical to the three-step composition.
    """
    ny, nx = data.shape
    out = np.empty((ny, nx), dtype=np.float32)
    zero = np.float32(0.0)
    four = np.float32(4.0)
    fny = 2 * ny
    fnx = 2 * nx
    for j in range(ny):
        interior_row = j > 0 and j < ny - 1
        up = data[max(j - 1, 0)]
        row = data[j]
        dn = data[min(j + 1, ny - 1)]
        for i in range(nx):
            if interior_row and i > 0 and i < nx - 1:
                v = row[i]
                v4 = four * v
                left = row[i - 1]
                right = row[i + 1]
                u = up[i]
                d = dn[i]
                # The four fine pixels of the block: each sees two copies of
                # v and one neighbour on each of its two outer sides.
                tl = (((v4 - v) - left) - v) - u
                bl = (((v4 - v) - left) - d) - v
                br = (((v4 - right) - v) - d) - v
                tr = (((v4 - right) - v) - v) - u
            else:
                fj = 2 * j
                fi = 2 * i
                tl = _fine_lap(data, fj, fi, fny, fnx)
                bl = _fine_lap(data, fj + 1, fi, fny, fnx)
                br = _fine_lap(data, fj + 1, fi + 1, fny, fnx)
                tr = _fine_lap(data, fj, fi + 1, fny, fnx)
            p = max(tl, zero)
            p += max(bl, zero)
            p += max(br, zero)
            p += max(tr, zero)
            out[j, i] = p / four
    return out
