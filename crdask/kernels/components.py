"""Connected components and a rectangular median filter (Numba, layer 1).

Kernels for pair differencing (:mod:`crdask.cosmic.cr2images`):

* :func:`label4` -- 4-connected labelling of a bool image, labels numbered
  in raster order of each component's first pixel (what
  ``scipy.ndimage.label`` does with its default cross structure);
* :func:`tail_components` -- the labels of the "tail" pixels of a
  difference image, with per-label size and whether the component holds a
  "peak" pixel inside the useful region (the seed of a cosmic ray);
* :func:`union_pairs` -- union-find over label pairs that touch across
  block borders, so components split by chunking are joined again;
* :func:`medfilt_rect` -- a ``(sy, sx)`` median filter with mirrored
  edges, the window placement and (upper) median of
  ``scipy.ndimage.median_filter(mode='reflect')``.

Example
-------
>>> import numpy as np
>>> m = np.array([[1, 0, 1], [1, 0, 1], [0, 0, 1]], dtype=bool)
>>> labels, n = label4(m)
>>> n, labels.tolist()
(2, [[1, 0, 2], [1, 0, 2], [0, 0, 2]])
"""

import numpy as np
from numba import njit

from .median import select_inplace

__all__ = ["label4", "tail_components", "union_pairs", "medfilt_rect"]


@njit(cache=True, nogil=True, inline="always")
def _find(parent, i):
    # Path halving: every visited node points to its grandparent.
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@njit(cache=True, nogil=True)
def label4(mask):
    """4-connected labels of ``mask``.

    Parameters
    ----------
    mask : bool array (ny, nx), C-contiguous

    Returns
    -------
    labels : int32 array (ny, nx)
        0 off the mask, 1..n on it; components are numbered in raster
        order of their first pixel.
    n : int
        Number of components.
    """
    ny, nx = mask.shape
    labels = np.zeros((ny, nx), dtype=np.int32)
    # A new provisional label needs a pixel whose left neighbour is off the
    # mask, so a row holds at most ceil(nx / 2) of them.
    parent = np.zeros(ny * ((nx + 1) // 2) + 1, dtype=np.int32)
    nprov = 0
    for j in range(ny):
        for i in range(nx):
            if not mask[j, i]:
                continue
            up = labels[j - 1, i] if j > 0 else 0
            left = labels[j, i - 1] if i > 0 else 0
            if up == 0 and left == 0:
                nprov += 1
                parent[nprov] = nprov
                labels[j, i] = nprov
            elif up == 0:
                labels[j, i] = left
            elif left == 0:
                labels[j, i] = up
            else:
                ru = _find(parent, up)
                rl = _find(parent, left)
                # The smaller root wins, so a root is the label of its
                # component's first pixel in raster order.
                if ru < rl:
                    parent[rl] = ru
                    labels[j, i] = ru
                else:
                    parent[ru] = rl
                    labels[j, i] = rl
    final = np.zeros(nprov + 1, dtype=np.int32)
    n = 0
    for k in range(1, nprov + 1):
        r = _find(parent, k)
        if r == k:
            n += 1
            final[k] = n
        else:
            final[k] = final[r]
    for j in range(ny):
        for i in range(nx):
            if labels[j, i]:
                labels[j, i] = final[labels[j, i]]
    return labels, n


@njit(cache=True, nogil=True)
def tail_components(diff, useful, thr_tail, thr_peak, positive):
    """Components of the tail pixels of a difference image.

    Parameters
    ----------
    diff : float32 array (ny, nx)
        ``data1 - data2`` (e- or ADU); NaN pixels are never tail or peak.
    useful : bool array (ny, nx)
        Where a peak may seed a component.
    thr_tail, thr_peak : float
        Thresholds (same unit as ``diff``), compared in float64.
    positive : bool
        True: tail/peak pixels are ``diff > thr``; False: ``diff < thr``.

    Returns
    -------
    labels : int32 (ny, nx), n : int
        As :func:`label4` on the tail mask.
    seeded : bool (n + 1,)
        ``seeded[k]``: component ``k`` holds a pixel that is tail, peak and
        useful (index 0 unused).
    size : int64 (n + 1,)
        Pixels of each component.
    """
    ny, nx = diff.shape
    tail = np.zeros((ny, nx), dtype=np.bool_)
    for j in range(ny):
        for i in range(nx):
            v = np.float64(diff[j, i])
            tail[j, i] = v > thr_tail if positive else v < thr_tail
    labels, n = label4(tail)
    seeded = np.zeros(n + 1, dtype=np.bool_)
    size = np.zeros(n + 1, dtype=np.int64)
    for j in range(ny):
        for i in range(nx):
            k = labels[j, i]
            if k:
                size[k] += 1
                if useful[j, i]:
                    v = np.float64(diff[j, i])
                    if (v > thr_peak) if positive else (v < thr_peak):
                        seeded[k] = True
    return labels, n, seeded, size


@njit(cache=True, nogil=True)
def union_pairs(n, a, b):
    """Roots of ``n`` labels after joining each ``a[k]`` with ``b[k]``.

    Parameters
    ----------
    n : int
        Labels are 0..n-1.
    a, b : int64 arrays (m,)
        Label pairs that belong to one component.

    Returns
    -------
    root : int64 (n,)
        The smallest label of each label's component.
    """
    parent = np.arange(n).astype(np.int64)
    for k in range(a.shape[0]):
        ra = _find(parent, a[k])
        rb = _find(parent, b[k])
        if ra < rb:
            parent[rb] = ra
        elif rb < ra:
            parent[ra] = rb
    root = np.empty(n, dtype=np.int64)
    for k in range(n):
        root[k] = _find(parent, k)
    return root


@njit(cache=True, nogil=True, inline="always")
def _mirror(i, n):
    # scipy 'reflect' (= numpy 'symmetric'): d c b a | a b c d | d c b a,
    # repeated for windows longer than the axis.
    p = 2 * n
    m = i % p
    if m < 0:
        m += p
    return m if m < n else p - 1 - m


@njit(cache=True, nogil=True)
def medfilt_rect(data, sy, sx):
    """Median filter with an ``sy x sx`` window and mirrored edges.

    Parameters
    ----------
    data : float32 array (ny, nx)
    sy, sx : int >= 1
        Window rows and columns. The window of pixel ``(j, i)`` spans rows
        ``j - sy // 2 .. j - sy // 2 + sy - 1`` (likewise for columns), as
        scipy places even windows.

    Returns
    -------
    float32 array (ny, nx)
        The ``(m // 2)``-th smallest of the ``m`` finite values in each
        window (the upper median for even ``m``; scipy's rank), NaN where
        the window holds no finite value.
    """
    ny, nx = data.shape
    out = np.empty((ny, nx), dtype=np.float32)
    buf = np.empty(sy * sx, dtype=np.float32)
    oy, ox = sy // 2, sx // 2
    for j in range(ny):
        for i in range(nx):
            m = 0
            for dj in range(sy):
                jj = _mirror(j - oy + dj, ny)
                for di in range(sx):
                    v = data[jj, _mirror(i - ox + di, nx)]
                    if np.isfinite(v):
                        buf[m] = v
                        m += 1
            out[j, i] = select_inplace(buf, m, m // 2) if m else np.float32(np.nan)
    return out
