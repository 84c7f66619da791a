"""Numba kernels of the Median-Minimum method (layer 1).

* :func:`stack_stats` -- per-pixel statistics of a stack of N exposures in
  one pass (each pixel's N values sorted in registers once, instead of one
  numpy partition/sort per statistic and N-sized temporaries per frame).
* :func:`dilate8` -- binary dilation with the 3x3 square, ``iterations``
  times, pixels outside the frame counted as False (scipy.ndimage's
  ``binary_dilation`` with ``generate_binary_structure(2, 2)``).
* :func:`keep_touching` -- the 8-connected groups of a mask that contain at
  least one seed pixel (numina's threshold rule for the auxiliary method and
  teareduce's peak/tail merge of the two-pass L.A.Cosmic).
* :func:`sim_xy`, :func:`hist2d_add` -- the diagram coordinates of a
  simulated stack and numpy's ``histogramdd`` binning of them (bins found
  from the even spacing, then checked against the edges).
* :func:`masked_mean_var_kernel` -- numpy.ma's mean and variance along the
  stack (numina's ``MEANCR`` arithmetic), bit for bit, in one pass.
* :func:`base_stats_kernel` -- numpy's min, median, mean and ``var(ddof=1)``
  along the stack (numina's combinations), equal to numpy's, in one pass.

Example
-------
>>> import numpy as np
>>> s = np.array([[[1.]], [[5.]], [[3.]]], dtype=np.float32)
>>> [float(a[0, 0]) for a in stack_stats(s, 2)]
[1.0, 3.0, 3.0, 5.0, 1.0, 4.0]
"""

import numpy as np
from numba import njit

__all__ = ["stack_stats", "sort_small", "load_sum", "sorted_median", "sim_xy", "sorted_xy",
           "hist2d_bin", "masked_mean_var_kernel", "base_stats_kernel", "dilate8",
           "keep_touching", "label8", "hist2d_add"]


@njit(cache=True, nogil=True)
def sort_small(v):
    """Sort the 1-D array ``v`` in place by insertion (n is small: 3..~20)."""
    for a in range(1, v.shape[0]):
        x = v[a]
        b = a - 1
        while b >= 0 and v[b] > x:
            v[b + 1] = v[b]
            b -= 1
        v[b + 1] = x


@njit(cache=True, nogil=True, inline="always")
def load_sum(stack, j, i, v):
    """Copy pixel ``(j, i)`` of every exposure of ``stack`` into ``v`` and
    return their float32 sum in frame order (numpy's axis-0 order)."""
    s = np.float32(0.0)
    for k in range(stack.shape[0]):
        x = stack[k, j, i]
        v[k] = x
        s = np.float32(s + x)
    return s


@njit(cache=True, nogil=True, inline="always")
def sorted_median(v):
    """numpy's median of the sorted float32 ``v``: the middle value, or the
    float32 mean of the two middle ones for an even length."""
    n = v.shape[0]
    if n % 2 == 1:
        return v[n // 2]
    return np.float32(np.float32(v[n // 2 - 1] + v[n // 2]) / np.float32(2.0))


@njit(cache=True, nogil=True)
def stack_stats(stack, ncoinc):
    """Per-pixel statistics of a float32 stack ``(n, ny, nx)``.

    Returns six float32 ``(ny, nx)`` arrays: ``min2d`` (mean of the
    ``n - ncoinc`` smallest values, summed in ascending order), ``median2d``
    (middle value; mean of the two middle ones for even ``n``), ``mean2d``
    (values summed in frame order, then divided by ``n``, as numpy does along
    axis 0 in float32), ``max2d``, the plain minimum and the variance with
    ``ddof=1`` (float64 accumulation, as ``np.var`` of float32 computes in
    float32 only approximately: documented as not bit-exact with numpy).
    Units are those of the input.
    """
    n, ny, nx = stack.shape
    kept = n - ncoinc
    f32 = np.float32
    mn2 = np.empty((ny, nx), np.float32)
    med = np.empty((ny, nx), np.float32)
    mea = np.empty((ny, nx), np.float32)
    mx = np.empty((ny, nx), np.float32)
    mn = np.empty((ny, nx), np.float32)
    var = np.empty((ny, nx), np.float32)
    v = np.empty(n, np.float32)
    for j in range(ny):
        for i in range(nx):
            m = f32(load_sum(stack, j, i, v) / f32(n))
            mea[j, i] = m
            sort_small(v)
            t = f32(0.0)
            for k in range(kept):
                t = f32(t + v[k])
            mn2[j, i] = f32(t / f32(kept))
            med[j, i] = sorted_median(v)
            mx[j, i] = v[n - 1]
            mn[j, i] = v[0]
            md = 0.0
            for k in range(n):
                md += float(stack[k, j, i])
            md /= n
            q = 0.0
            for k in range(n):
                d = float(stack[k, j, i]) - md
                q += d * d
            var[j, i] = q / (n - 1)
    return mn2, med, mea, mx, mn, var


@njit(cache=True, nogil=True)
def dilate8(mask, iterations):
    """Dilate a bool ``(ny, nx)`` mask by the 3x3 square ``iterations`` times
    (outside the frame is False). Returns a new bool array."""
    ny, nx = mask.shape
    cur = mask.copy()
    for _ in range(iterations):
        nxt = cur.copy()
        for j in range(ny):
            for i in range(nx):
                if cur[j, i]:
                    continue
                hit = False
                for dj in range(-1, 2):
                    jj = j + dj
                    if jj < 0 or jj >= ny:
                        continue
                    for di in range(-1, 2):
                        ii = i + di
                        if 0 <= ii < nx and cur[jj, ii]:
                            hit = True
                if hit:
                    nxt[j, i] = True
        cur = nxt
    return cur


@njit(cache=True, nogil=True)
def keep_touching(mask, seed):
    """The pixels of ``mask`` whose 8-connected group (within ``mask``)
    contains a pixel where ``seed`` is True. Both bool ``(ny, nx)``."""
    ny, nx = mask.shape
    out = np.zeros((ny, nx), np.bool_)
    stack = np.empty(ny * nx, np.int64)
    for j0 in range(ny):
        for i0 in range(nx):
            if not (mask[j0, i0] and seed[j0, i0]) or out[j0, i0]:
                continue
            out[j0, i0] = True
            top = 0
            stack[top] = j0 * nx + i0
            top += 1
            while top > 0:
                top -= 1
                p = stack[top]
                j = p // nx
                i = p - j * nx
                for dj in range(-1, 2):
                    jj = j + dj
                    if jj < 0 or jj >= ny:
                        continue
                    for di in range(-1, 2):
                        ii = i + di
                        if 0 <= ii < nx and mask[jj, ii] and not out[jj, ii]:
                            out[jj, ii] = True
                            stack[top] = jj * nx + ii
                            top += 1
    return out


@njit(cache=True, nogil=True)
def sorted_xy(v, ncoinc):
    """Sort the float64 values ``v`` ``(n,)`` in place (insertion sort: n is
    small) and return the diagram coordinates ``(x, y)``: ``x`` = mean of
    the ``n - ncoinc`` smallest, ``y`` = median - x."""
    n = v.shape[0]
    kept = n - ncoinc
    sort_small(v)
    t = 0.0
    for k in range(kept):
        t += v[k]
    m = t / kept
    if n % 2 == 1:
        med = v[n // 2]
    else:
        med = (v[n // 2 - 1] + v[n // 2]) / 2.0
    return m, med - m


@njit(cache=True, nogil=True)
def sim_xy(stack, ncoinc):
    """Diagram coordinates of a float64 stack ``(n, ny, nx)``:
    ``x`` = mean of the ``n - ncoinc`` smallest values, ``y`` = median - x
    (both float64 ``(ny, nx)``)."""
    n, ny, nx = stack.shape
    xo = np.empty((ny, nx), np.float64)
    yo = np.empty((ny, nx), np.float64)
    v = np.empty(n, np.float64)
    for j in range(ny):
        for i in range(nx):
            for k in range(n):
                v[k] = stack[k, j, i]
            xo[j, i], yo[j, i] = sorted_xy(v, ncoinc)
    return xo, yo


@njit(cache=True, nogil=True)
def label8(mask):
    """8-connected labels of a bool ``(ny, nx)`` mask, numbered 1, 2, ... in
    the raster order of each group's first pixel (as scipy.ndimage.label).
    Returns (int32 labels, number of groups)."""
    ny, nx = mask.shape
    lab = np.zeros((ny, nx), np.int32)
    stack = np.empty(ny * nx, np.int64)
    count = 0
    for j0 in range(ny):
        for i0 in range(nx):
            if not mask[j0, i0] or lab[j0, i0] != 0:
                continue
            count += 1
            lab[j0, i0] = count
            top = 1
            stack[0] = j0 * nx + i0
            while top > 0:
                top -= 1
                p = stack[top]
                j = p // nx
                i = p - j * nx
                for dj in range(-1, 2):
                    jj = j + dj
                    if jj < 0 or jj >= ny:
                        continue
                    for di in range(-1, 2):
                        ii = i + di
                        if 0 <= ii < nx and mask[jj, ii] and lab[jj, ii] == 0:
                            lab[jj, ii] = count
                            stack[top] = jj * nx + ii
                            top += 1
    return lab, count


@njit(cache=True, nogil=True)
def hist2d_bin(hist, yv, xv, edges_y, edges_x):
    """Add the point ``(yv, xv)`` to ``hist`` as ``numpy.histogramdd`` bins
    it (bins closed on the left, the last one on both sides; outside or NaN
    left out). For evenly spaced edges the bin is guessed arithmetically
    and then checked against the edges, so any edges give numpy's bin."""
    ny = edges_y.shape[0]
    nx = edges_x.shape[0]
    iy = _bin_of(edges_y, yv)
    if yv == edges_y[ny - 1]:
        iy -= 1
    ix = _bin_of(edges_x, xv)
    if xv == edges_x[nx - 1]:
        ix -= 1
    if iy <= 0 or iy >= ny or ix <= 0 or ix >= nx:
        return
    hist[iy - 1, ix - 1] += 1


@njit(cache=True, nogil=True)
def _bin_of(edges, v):
    # searchsorted(edges, v, 'right'): a guess from the spacing, then moved
    # until edges[i - 1] <= v < edges[i] (exact for any sorted edges)
    m = edges.shape[0]
    lo, hi = edges[0], edges[m - 1]
    if not (v >= lo):                    # below, or NaN
        return 0 if v < lo else m
    if v >= hi:
        return m
    i = int((v - lo) / (hi - lo) * (m - 1)) + 1
    if i < 1:
        i = 1
    elif i > m - 1:
        i = m - 1
    while i > 1 and v < edges[i - 1]:
        i -= 1
    while i < m and v >= edges[i]:
        i += 1
    return i


@njit(cache=True, nogil=True)
def hist2d_add(hist, y, x, usable, edges_y, edges_x):
    """Add the points ``(y, x)`` (float64 ``(m,)``) where ``usable`` to
    ``hist`` (int64 ``(len(edges_y) - 1, len(edges_x) - 1)``), binned exactly
    as ``numpy.histogramdd((y, x), bins=(edges_y, edges_x))``: bins closed
    on the left, the last one on both sides, points outside (or NaN) left
    out."""
    for k in range(y.shape[0]):
        if usable[k]:
            hist2d_bin(hist, y[k], x[k], edges_y, edges_x)


@njit(cache=True, nogil=True)
def masked_mean_var_kernel(stack, mask):
    """``numpy.ma`` mean and variance (ddof=1) along axis 0 of a float32
    stack ``(n, ny, nx)`` with a bool ``mask`` (True = left out), with
    numpy.ma's arithmetic: the kept values summed in float32 in frame order,
    divided by the count in float64; the squared float64 anomalies summed
    in frame order and divided by ``count - 1`` (0 where fewer than two
    values are kept; the mean 0 where none is). Returns two float32
    ``(ny, nx)``. Finite inputs only (numpy.ma masks non-finite results)."""
    n, ny, nx = stack.shape
    mean = np.empty((ny, nx), np.float32)
    var = np.empty((ny, nx), np.float32)
    for j in range(ny):
        for i in range(nx):
            s = np.float32(0.0)
            c = 0
            for k in range(n):
                if not mask[k, j, i]:
                    s = np.float32(s + stack[k, j, i])
                    c += 1
            if c == 0:
                mean[j, i] = 0.0
                var[j, i] = 0.0
                continue
            m = float(s) / c
            mean[j, i] = m
            q = 0.0
            for k in range(n):
                if not mask[k, j, i]:
                    d = float(stack[k, j, i]) - m
                    q += d * d
            var[j, i] = q / (c - 1) if c > 1 else q
    return mean, var


@njit(cache=True, nogil=True)
def base_stats_kernel(stack):
    """numpy's ``min``, ``median``, ``mean`` and ``var(ddof=1)`` along axis 0
    of a finite float32 stack ``(n, ny, nx)``, with numpy's float32
    arithmetic: sums in frame order (numpy reduces the outer axis slice by
    slice), each division rounded once to float32 (numpy divides in float64
    and casts, which rounds the same for one division); the median is the
    middle value, or the float32 mean of the two middle ones for even ``n``.
    Returns four float32 ``(ny, nx)`` arrays, in the input's units (the
    variance squared). One pass over the stack instead of numpy's four
    reductions and a partition, single-threaded each."""
    n, ny, nx = stack.shape
    f32 = np.float32
    fn = f32(n)
    fd = f32(max(n - 1, 0))
    mn = np.empty((ny, nx), np.float32)
    med = np.empty((ny, nx), np.float32)
    mea = np.empty((ny, nx), np.float32)
    var = np.empty((ny, nx), np.float32)
    v = np.empty(n, np.float32)
    for j in range(ny):
        for i in range(nx):
            m = f32(load_sum(stack, j, i, v) / fn)
            q = f32(0.0)
            for k in range(n):
                d = f32(stack[k, j, i] - m)
                q = f32(q + f32(d * d))
            mea[j, i] = m
            var[j, i] = f32(q / fd)
            sort_small(v)
            mn[j, i] = v[0]
            med[j, i] = sorted_median(v)
    return mn, med, mea, var
