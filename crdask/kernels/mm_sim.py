"""Fused simulation kernel of the Median-Minimum diagram (layer 1).

numina-crmasks simulates ``mm_nsimulations`` stacks of N exposures (Poisson
photons plus read noise) around the pre-cleaned median, whole frame by whole
frame, and bins their diagram coordinates with ``np.histogramdd``: for 3 x
2048² and 10 simulations, 126 million Poisson and normal draws, each written
to and read back from full-frame float64 temporaries.
:func:`sim_codes_poisson` does the same per pixel in one pass: the Poisson
set-up (square root, logarithms, divisions) once per pixel and exposure for
all the simulations, the N values of a simulated pixel sorted in registers,
reduced to ``(x, y)`` and binned at once. It stores each simulated pixel's
bin (2 bytes) rather than a histogram, so it can run before the pixels to
leave out are known; :func:`hist_from_codes` then counts the usable ones.

The samplers are numpy's algorithms (``Generator.poisson``: Hörmann's PTRS
transformed rejection for ``lam >= 10``, the multiplication method below;
``Generator.standard_normal``: the 256-layer ziggurat) on an inline
xoshiro256** generator (:func:`next_u64`, seeded per block by the caller: a
block gives the same draws on any thread); numpy's own calls cost a
function call and an array pass per value, these a few instructions.

Example
-------
>>> import numpy as np
>>> lam = np.zeros((3, 4))                     # no photons, no read noise
>>> e = np.array([-1.0, 0.5, 2.0])
>>> codes = np.empty((4, 2), np.uint16)
>>> sim_codes_poisson(lam, 1.0, 0.0, 1, e, e, codes, rng_state(np.random.SeedSequence(1)))
>>> h = np.zeros((2, 2), np.int64)
>>> hist_from_codes(codes, np.ones(4, bool), h)
>>> h.tolist()
[[8, 0], [0, 0]]
"""

import math

import numpy as np
from numba import njit

from .mm_stack import sorted_xy

__all__ = ["sim_codes_poisson", "hist_from_codes", "poisson_many", "poisson_setup",
           "poisson_draw", "uniform", "normal", "normal_many", "next_u64", "bin_index",
           "rng_state"]


def rng_state(seed_sequence):
    """A state for :func:`uniform` from a ``numpy.random.SeedSequence``
    (uint64 ``(4,)``; never all zero)."""
    st = seed_sequence.generate_state(4, np.uint64)
    if not st.any():
        st[0] = 1
    return st

_LOGGAM_A = np.array([8.333333333333333e-02, -2.777777777777778e-03, 7.936507936507937e-04,
                      -5.952380952380952e-04, 8.417508417508418e-04, -1.917526917526918e-03,
                      6.410256410256410e-03, -2.955065359477124e-02, 1.796443723688307e-01,
                      -1.39243221690590e+00])


@njit(cache=True, nogil=True)
def _loggam(x):
    # log(Gamma(x)) as numpy's random_loggam computes it (Stirling series)
    if x == 1.0 or x == 2.0:
        return 0.0
    x0 = x
    n = 0
    if x < 7.0:
        n = int(7 - x)
        x0 = x + n
    x2 = 1.0 / (x0 * x0)
    gl0 = _LOGGAM_A[9]
    for k in range(8, -1, -1):
        gl0 = gl0 * x2 + _LOGGAM_A[k]
    gl = gl0 / x0 + 0.5 * math.log(2.0 * math.pi) + (x0 - 0.5) * math.log(x0) - x0
    if x < 7.0:
        for _ in range(n):
            x0 -= 1.0
            gl -= math.log(x0)
    return gl


@njit(cache=True, nogil=True, inline="always")
def _rotl(x, k):
    return (x << np.uint64(k)) | (x >> np.uint64(64 - k))


@njit(cache=True, nogil=True, inline="always")
def next_u64(st):
    """The next 64-bit output of the xoshiro256** state ``st`` (uint64
    ``(4,)``, not all zero; advanced in place)."""
    s0, s1, s2, s3 = st[0], st[1], st[2], st[3]
    r = _rotl(s1 * np.uint64(5), 7) * np.uint64(9)
    t = s1 << np.uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    st[0], st[1], st[2], st[3] = s0, s1, s2, s3
    return r


@njit(cache=True, nogil=True, inline="always")
def uniform(st):
    """A double in [0, 1) from the state ``st`` (:func:`next_u64`): the top
    53 bits, as numpy's bit generators make doubles."""
    return float(next_u64(st) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


def _ziggurat_tables():
    # Marsaglia & Tsang's 256-layer ziggurat on 52-bit magnitudes, the
    # layout of numpy's random_standard_normal (ki, wi, fi)
    dn = tn = 3.6541528853610088
    vn = 0.00492867323399
    m1 = 2.0 ** 52
    ki = np.zeros(256, np.uint64)
    wi = np.zeros(256)
    fi = np.zeros(256)
    q = vn / math.exp(-0.5 * dn * dn)
    ki[0] = np.uint64((dn / q) * m1)
    wi[0] = q / m1
    wi[255] = dn / m1
    fi[0] = 1.0
    fi[255] = math.exp(-0.5 * dn * dn)
    for i in range(254, 0, -1):
        dn = math.sqrt(-2.0 * math.log(vn / dn + math.exp(-0.5 * dn * dn)))
        ki[i + 1] = np.uint64((dn / tn) * m1)
        tn = dn
        fi[i] = math.exp(-0.5 * dn * dn)
        wi[i] = dn / m1
    return ki, wi, fi


_ZKI, _ZWI, _ZFI = _ziggurat_tables()
_ZR = 3.6541528853610088


@njit(cache=True, nogil=True, inline="always")
def normal(st):
    """A standard normal variate by numpy's ziggurat (one 64-bit draw 99.3%
    of the time) from the state ``st`` (:func:`next_u64`)."""
    while True:
        r = next_u64(st)
        idx = int(r & np.uint64(0xff))
        r >>= np.uint64(8)
        rabs = (r >> np.uint64(1)) & np.uint64(0x000fffffffffffff)
        x = float(rabs) * _ZWI[idx]
        if r & np.uint64(1):
            x = -x
        if rabs < _ZKI[idx]:
            return x
        if idx == 0:
            while True:
                xx = -math.log1p(-uniform(st)) / _ZR
                yy = -math.log1p(-uniform(st))
                if yy + yy > xx * xx:
                    return -(_ZR + xx) if (rabs >> np.uint64(8)) & np.uint64(1) else _ZR + xx
        elif ((_ZFI[idx - 1] - _ZFI[idx]) * uniform(st) + _ZFI[idx]) < math.exp(-0.5 * x * x):
            return x


@njit(cache=True, nogil=True)
def normal_many(size, st):
    """``size`` standard normal variates of :func:`normal` (for tests)."""
    out = np.empty(size)
    for i in range(size):
        out[i] = normal(st)
    return out


@njit(cache=True, nogil=True)
def poisson_setup(lam, par, i):
    """Fill row ``i`` of ``par`` (float64 ``(m, 6)``) with what
    :func:`poisson_draw` needs for the mean ``lam`` (>= 0, counts): computed
    once, used for many draws."""
    par[i, 0] = lam
    if lam >= 10.0:
        slam = math.sqrt(lam)
        b = 0.931 + 2.53 * slam
        a = -0.059 + 0.02483 * b
        par[i, 1] = math.log(lam)
        par[i, 2] = 2.0 * a
        par[i, 3] = b
        par[i, 4] = math.log(1.1239 + 1.1328 / (b - 3.4))                 # log(1 / alpha)
        par[i, 5] = 0.9277 - 3.6224 / (b - 2.0)                           # v_r
    else:
        par[i, 1] = math.exp(-lam)


@njit(cache=True, nogil=True, inline="always")
def poisson_draw(par, i, st):
    """One Poisson variate (float) for the parameters in row ``i`` of ``par``
    (:func:`poisson_setup`), uniforms from the state ``st``
    (:func:`uniform`). numpy's PTRS with its algebra regrouped:
    ``log(V) + log(1/alpha) - log(a/us² + b)`` as
    ``log(V·us²) + log(1/alpha) - log(a + b·us²)``."""
    lam = par[i, 0]
    if lam >= 10.0:
        loglam, a2, b, linvalpha, vr = par[i, 1], par[i, 2], par[i, 3], par[i, 4], par[i, 5]
        while True:
            u = uniform(st) - 0.5
            v = uniform(st)
            us = 0.5 - abs(u)
            k = math.floor((a2 / us + b) * u + lam + 0.43)
            if us >= 0.07 and v <= vr:
                return float(k)
            if k < 0 or (us < 0.013 and v > us):
                continue
            us2 = us * us
            if (math.log(v * us2) + linvalpha - math.log(0.5 * a2 + b * us2)
                    <= -lam + k * loglam - _loggam(k + 1.0)):
                return float(k)
    if lam == 0.0:
        return 0.0
    enlam = par[i, 1]
    x = 0.0
    prod = 1.0
    while True:
        prod *= uniform(st)
        if prod > enlam:
            x += 1.0
        else:
            return x


@njit(cache=True, nogil=True)
def poisson_many(lam, size, st):
    """``size`` Poisson variates (float64) of mean ``lam`` from the state
    ``st`` (:func:`uniform`): the sampler of :func:`sim_hist_poisson`."""
    par = np.empty((1, 6))
    poisson_setup(lam, par, 0)
    out = np.empty(size)
    for i in range(size):
        out[i] = poisson_draw(par, 0, st)
    return out


@njit(cache=True, nogil=True)
def sim_codes_poisson(lam, gain, rnoise, ncoinc, edges_y, edges_x, codes, st):
    """Simulate ``codes.shape[1]`` stacks of ``m`` pixels and store the
    diagram bin of each simulated pixel.

    Parameters
    ----------
    lam : float64 ``(n, m)``
        Expected signal (ADU, >= 0) of ``m`` pixels in each of ``n`` exposures.
    gain, rnoise : float
        e-/ADU; read noise (ADU).
    ncoinc : int
        ``mm_cr_coincidences`` (x = mean of the ``n - ncoinc`` smallest).
    edges_y, edges_x : float64
        Bin edges (sorted; binned as ``numpy.histogramdd`` bins:
        closed on the left, the last bin on both sides).
    codes : uint16 ``(m, nsim)``
        Filled with the flat bin of each simulated pixel (``iy * nbins_x +
        ix``), or 65535 when it falls outside the diagram.
    st : uint64 ``(4,)``
        State of the generator (:func:`next_u64`), advanced in place.

    Each simulated value is ``Poisson(lam * gain) / gain + rnoise * N(0, 1)``,
    drawn pixel by pixel, simulation by simulation, exposure by exposure
    (the Poisson draw first; none when ``lam`` is 0).
    """
    n, m = lam.shape
    nsim = codes.shape[1]
    kept = n - ncoinc
    nbx = edges_x.shape[0] - 1
    ly, hy = edges_y[0], edges_y[edges_y.shape[0] - 1]
    lx, hx = edges_x[0], edges_x[nbx]
    sy = (edges_y.shape[0] - 1) / (hy - ly)
    sx = nbx / (hx - lx)
    par = np.empty((n, 6))
    v = np.empty(n)
    for p in range(m):
        for i in range(n):
            poisson_setup(lam[i, p] * gain, par, i)
        for k in range(nsim):
            for i in range(n):
                v[i] = poisson_draw(par, i, st) / gain + rnoise * normal(st)
            if n == 3:
                # branchless sorting network (the common case), then the
                # sums of sorted_xy in the same order
                a, b, c = v[0], v[1], v[2]
                a, b = min(a, b), max(a, b)
                b, c = min(b, c), max(b, c)
                a, b = min(a, b), max(a, b)
                x = (0.0 + a + b) / 2.0 if kept == 2 else a
                y = b - x
            else:
                x, y = sorted_xy(v, ncoinc)
            iy = bin_index(edges_y, y, ly, hy, sy)
            ix = bin_index(edges_x, x, lx, hx, sx)
            codes[p, k] = 65535 if iy < 0 or ix < 0 else iy * nbx + ix


@njit(cache=True, nogil=True, inline="always")
def bin_index(edges, v, lo, hi, scale):
    """numpy.histogramdd's bin of ``v`` for the sorted ``edges`` (bins closed
    on the left, the last one on both sides; -1 outside or NaN); ``lo``,
    ``hi`` the end edges, ``scale`` = bins / (hi - lo): a guess from the
    even spacing, then moved until ``edges[i] <= v < edges[i + 1]`` (exact
    for any sorted edges)."""
    nb = edges.shape[0] - 1
    if not (v >= lo and v <= hi):
        return -1
    if v == hi:
        return nb - 1
    i = int((v - lo) * scale)
    if i > nb - 1:
        i = nb - 1
    while i > 0 and v < edges[i]:
        i -= 1
    while i < nb - 1 and v >= edges[i + 1]:
        i += 1
    return i


@njit(cache=True, nogil=True)
def hist_from_codes(codes, usable, hist):
    """Add to ``hist`` (int64 ``(nby, nbx)``) the simulated pixels of
    ``codes`` (:func:`sim_codes_poisson`) whose pixel is ``usable``
    (bool ``(m,)``)."""
    nbx = hist.shape[1]
    for p in range(codes.shape[0]):
        if not usable[p]:
            continue
        for k in range(codes.shape[1]):
            c = codes[p, k]
            if c != 65535:
                hist[c // nbx, c % nbx] += 1
