"""Exact order statistics of large float32 arrays in two streaming passes.

A float32 maps to a uint32 key whose unsigned order is the numeric order
(flip all bits of negatives, the sign bit of the rest). Pass one histograms
the top 16 bits of the keys of the selected pixels, pass two the low 16 bits
of those in the one top bin holding the wanted rank. Histograms add up over
blocks, so a Dask reduction finds the exact k-th value of a frame without
gathering it. Values must be finite.
"""

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def _key(v):
    b = np.float32(v).view(np.uint32)
    if b & np.uint32(0x80000000):
        return ~b
    return b | np.uint32(0x80000000)


@njit(cache=True, nogil=True)
def key_to_float(key):
    """Inverse of the key mapping: uint32 key -> float32 value."""
    k = np.uint32(key)
    if k & np.uint32(0x80000000):
        b = k & np.uint32(0x7FFFFFFF)
    else:
        b = ~k
    return np.array([b], dtype=np.uint32).view(np.float32)[0]


@njit(cache=True, nogil=True)
def histogram_high(values, exclude):
    """Counts of the top 16 key bits of ``values`` where ``exclude`` is False.

    values : float32 (ny, nx); exclude : bool (ny, nx). Returns int64 (65536,).
    """
    counts = np.zeros(65536, dtype=np.int64)
    ny, nx = values.shape
    for j in range(ny):
        for i in range(nx):
            if not exclude[j, i]:
                counts[_key(values[j, i]) >> np.uint32(16)] += 1
    return counts


@njit(cache=True, nogil=True)
def histogram_low(values, exclude, high):
    """Counts of the low 16 key bits of the pixels whose top bits are ``high``.

    Returns int64 (65536,).
    """
    counts = np.zeros(65536, dtype=np.int64)
    ny, nx = values.shape
    hi = np.uint32(high)
    for j in range(ny):
        for i in range(nx):
            if not exclude[j, i]:
                k = _key(values[j, i])
                if (k >> np.uint32(16)) == hi:
                    counts[k & np.uint32(0xFFFF)] += 1
    return counts


def locate_rank(counts, rank):
    """Bin holding the ``rank``-th (0-based) element and the rank within it."""
    cum = np.cumsum(counts)
    b = int(np.searchsorted(cum, rank, side="right"))
    below = int(cum[b - 1]) if b > 0 else 0
    return b, rank - below
