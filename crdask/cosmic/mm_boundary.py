"""The simulated Median-Minimum diagram and its detection boundary (layer 2).

Run once per group on whole frames (the histogram and the fit need every
pixel), after the per-pixel statistics. Values are in ADU after the bias,
as in numina-crmasks: ``x = min2d`` (mean after dropping the
``mm_cr_coincidences`` highest values), ``y = median2d - min2d``.

The random draws are made in the same order, with the same numpy
``Generator`` calls, as numina-crmasks 0.40 makes them, so the same
``mm_seed`` gives the same simulated histogram when the inputs to the
simulation (the pre-cleaned median and the masks of the auxiliary method)
are the same.

Example
-------
>>> import numpy as np
>>> f = piecewise_boundary([[0, 5], [100, 20]])
>>> float(f(np.array([50.0]))[0])
12.5
"""

from __future__ import annotations

import numpy as np

from ..kernels.mm_sim import hist_from_codes, rng_state, sim_codes_poisson
from ..kernels.mm_stack import hist2d_add, sim_xy

__all__ = ["parse_fixed_points", "piecewise_boundary", "diagram_limits",
           "simulate_histogram", "simulate_codes", "boundary_points", "spline_boundary",
           "remove_sparse_bins", "shift_flux", "NBINS", "DEFAULT_FIXED_WEIGHT"]

#: Bins of the diagram along x and y (numina's 100 x 100).
NBINS = 100
#: Weight of a fixed point given as ``[x, y]`` (numina's default).
DEFAULT_FIXED_WEIGHT = 10000.0


def parse_fixed_points(points):
    """``[[x, y], [x, y, w], ...]`` -> three float arrays (x, y, weight), or
    three ``None`` when ``points`` is None. Raises ``ValueError``."""
    if points is None:
        return None, None, None
    xs, ys, ws = [], [], []
    for p in points:
        if not isinstance(p, (list, tuple)) or len(p) not in (2, 3):
            raise ValueError(f"point {p!r} is not [x, y] or [x, y, weight]")
        vals = [float(v) for v in p]
        if not np.all(np.isfinite(vals)):
            raise ValueError(f"point {p!r} has a non-finite number")
        xs.append(vals[0])
        ys.append(vals[1])
        ws.append(vals[2] if len(vals) == 3 else DEFAULT_FIXED_WEIGHT)
    return np.array(xs), np.array(ys), np.array(ws)


def piecewise_boundary(points):
    """The piecewise-linear boundary through fixed points ``[[x, y(, w)], ...]``
    (sorted by x; constant beyond the end points, as ``np.interp``).
    Returns ``f(x) -> y`` (float64 arrays, ADU)."""
    x, y, _ = parse_fixed_points(points)
    order = np.argsort(x)
    xs, ys = x[order], y[order]

    def boundary(xv):
        return np.interp(xv, xs, ys)
    boundary.points = (xs, ys)
    return boundary


def diagram_limits(rng, distribution, nbinom_shape, gain, rnoise, maxvalue, n,
                   npixels=10000, *, stream="numina"):
    """(xmin, xmax, ymin, ymax) of the diagram from ``npixels`` simulated
    pixels at zero signal and at ``maxvalue`` (ADU), ``n`` exposures.
    ``gain`` e-/ADU, ``rnoise`` ADU (scalars). Draws from ``rng``: pixel by
    pixel in numina's order (``stream='numina'``), or all pixels at once
    (``'blocks'``: the same distributions, a different stream)."""
    maxvalue = max(float(maxvalue), 0.0)
    if stream != "numina":
        return _limits_at_once(rng, distribution, nbinom_shape, gain, rnoise, maxvalue, n,
                               npixels)
    lam = np.full(n, maxvalue)
    xlo = ylo = np.inf
    xhi = yhi = -np.inf
    def med_min(d):
        # (np.median(d), np.min(d)) of a few values, without their overhead
        d = sorted(d.tolist())
        return (d[n // 2] if n % 2 else (d[n // 2 - 1] + d[n // 2]) / 2.0), d[0]

    for _ in range(npixels):
        d = rng.normal(loc=0, scale=rnoise, size=n)
        med, lo = med_min(d)
        xlo = min(xlo, med)
        ylo = min(ylo, med - lo)
        if distribution == "poisson":
            d = rng.poisson(lam=lam * gain).astype(float) / gain
        else:
            d = rng.negative_binomial(n=nbinom_shape,
                                      p=nbinom_shape / (nbinom_shape + lam * gain)
                                      ).astype(float) / gain
        if rnoise > 0:
            d += rng.normal(loc=0, scale=rnoise, size=n)
        med, lo = med_min(d)
        xhi = max(xhi, med)
        yhi = max(yhi, med - lo)
    return xlo, xhi, ylo, yhi


def _limits_at_once(rng, distribution, nbinom_shape, gain, rnoise, maxvalue, n, npixels):
    def med_min(d):
        return np.median(d, axis=1), np.min(d, axis=1)
    med, lo = med_min(rng.normal(loc=0, scale=rnoise, size=(npixels, n)))
    lam = np.full((npixels, n), maxvalue)
    hi = _draw(rng, lam, gain, rnoise, distribution, nbinom_shape, lam.shape)
    mhi, lhi = med_min(hi)
    return (float(med.min()), float(mhi.max()), float((med - lo).min()),
            float((mhi - lhi).max()))


def _draw(gen, lam, gain, rnoise, distribution, nbinom_shape, shape):
    if distribution == "poisson":
        out = gen.poisson(lam=lam * gain).astype(float) / gain
    else:
        out = gen.negative_binomial(n=nbinom_shape,
                                    p=nbinom_shape / (nbinom_shape + lam * gain)
                                    ).astype(float) / gain
    out += gen.normal(loc=0, scale=rnoise, size=shape)
    return out


#: Rows per block of the parallel simulation (fixed: the draws of a block
#: depend on the seed, the simulation and the block only).
SIM_BLOCK_ROWS = 128
#: Rows per block of the fused Poisson simulation (every simulation of a
#: block in one pass; fixed, as :data:`SIM_BLOCK_ROWS`).
SIM_FUSED_ROWS = 32


def simulate_histogram(rng, lam3d, gain, rnoise, ncoinc, nsim, distribution,
                       nbinom_shape, usable, bins_y, bins_x, *, stream="numina",
                       seed=None, num_threads=None):
    """Accumulated 2-D histogram ``(NBINS, NBINS)`` (int, rows = y) of the
    diagram of ``nsim`` simulated stacks drawn around ``lam3d``
    ``(n, ny, nx)`` (expected ADU, >= 0): photons Poisson or negative
    binomial in e- (``gain`` e-/ADU), read noise ``rnoise`` ADU, only the
    pixels where ``usable`` (flattened bool) is True.

    ``stream='numina'`` draws whole frames from ``rng`` in numina's order
    (one thread); ``stream='blocks'`` draws blocks of rows from generators
    seeded by the seed and the block on ``num_threads`` threads: the same
    histogram for any number of threads, a different (equally valid) random
    stream. Poisson photons go through the fused kernel
    (:func:`simulate_codes`: every simulation of :data:`SIM_FUSED_ROWS`
    rows in one pass); negative binomial ones through numpy, per simulation
    and :data:`SIM_BLOCK_ROWS` rows.
    """
    n, ny, nx = lam3d.shape
    hist = np.zeros((len(bins_y) - 1, len(bins_x) - 1), dtype=np.int64)
    if stream == "numina":
        sim = np.empty(lam3d.shape, dtype=np.float64)
        for _ in range(nsim):
            for i in range(n):
                sim[i] = _draw(rng, lam3d[i], gain, rnoise, distribution, nbinom_shape,
                               lam3d.shape[1:])
            x, y = sim_xy(sim, ncoinc)
            hist2d_add(hist, y.ravel(), x.ravel(), usable, bins_y, bins_x)
        return hist
    import os
    from concurrent.futures import ThreadPoolExecutor

    root = np.random.SeedSequence(seed)
    use2d = usable.reshape(ny, nx)
    workers = num_threads or os.cpu_count() or 1
    if distribution == "poisson":
        codes = simulate_codes(lam3d, gain, rnoise, ncoinc, nsim, bins_y, bins_x, seed,
                               num_threads)
        hist_from_codes(codes, usable, hist)
        return hist
    starts = list(range(0, ny, SIM_BLOCK_ROWS))

    def task(k, b):
        r0 = starts[b]
        r1 = min(r0 + SIM_BLOCK_ROWS, ny)
        gen = np.random.Generator(np.random.PCG64(
            np.random.SeedSequence(root.entropy, spawn_key=(k, b))))
        sim = np.empty((n, r1 - r0, nx))
        for i in range(n):
            sim[i] = _draw(gen, lam3d[i, r0:r1], gain, rnoise, distribution, nbinom_shape,
                           (r1 - r0, nx))
        x, y = sim_xy(sim, ncoinc)
        h = np.zeros_like(hist)
        hist2d_add(h, y.ravel(), x.ravel(), np.ascontiguousarray(use2d[r0:r1]).ravel(),
                   bins_y, bins_x)
        return h

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for h in pool.map(lambda kb: task(*kb),
                          [(k, b) for k in range(nsim) for b in range(len(starts))]):
            hist += h
    return hist


def simulate_codes(lam3d, gain, rnoise, ncoinc, nsim, bins_y, bins_x, seed,
                   num_threads=None):
    """The diagram bin of every simulated pixel: uint16 ``(ny * nx, nsim)``
    (flat bin ``iy * nbins_x + ix``, 65535 outside), Poisson photons, for
    :func:`simulate_histogram` (``hist_from_codes`` then keeps the usable
    pixels). Every pixel is simulated, so this can run before the usable
    pixels are known (while the auxiliary method runs). Blocks of
    :data:`SIM_FUSED_ROWS` rows on ``num_threads`` threads, each block's
    draws from the seed and the block only."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    if (len(bins_x) - 1) * (len(bins_y) - 1) >= 65535:
        raise ValueError("too many diagram bins for uint16 codes")
    n, ny, nx = lam3d.shape
    root = np.random.SeedSequence(seed)
    codes = np.empty((ny * nx, nsim), np.uint16)
    starts = list(range(0, ny, SIM_FUSED_ROWS))

    def block(b):
        r0, r1 = starts[b], min(starts[b] + SIM_FUSED_ROWS, ny)
        st = rng_state(np.random.SeedSequence(root.entropy, spawn_key=(b,)))
        sim_codes_poisson(lam3d[:, r0:r1].reshape(n, -1), float(gain), float(rnoise),
                          int(ncoinc), bins_y, bins_x, codes[r0 * nx:r1 * nx], st)

    with ThreadPoolExecutor(max_workers=num_threads or os.cpu_count() or 1) as pool:
        list(pool.map(block, range(len(starts))))
    return codes


def remove_sparse_bins(hist, min_neighbors):
    """Zero the non-empty bins with fewer than ``min_neighbors`` non-empty
    8-neighbours (outside the diagram counts as empty)."""
    if min_neighbors <= 0:
        return hist
    occ = np.pad((hist > 0).astype(int), 1)
    cnt = sum(occ[1 + dy:occ.shape[0] - 1 + dy, 1 + dx:occ.shape[1] - 1 + dx]
              for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))
    out = hist.copy()
    out[(hist > 0) & (cnt < min_neighbors)] = 0
    return out


def boundary_points(hist_mean, bins_x, bins_y, nsim):
    """Per x column of the mean histogram (``hist / nsim``) with any pixel,
    the y bin centre below which all but about one simulated pixel lie.
    Returns (x, y) float arrays (bin centres, ADU)."""
    xc = (bins_x[:-1] + bins_x[1:]) / 2
    yc = (bins_y[:-1] + bins_y[1:]) / 2
    one = 1.0 / nsim
    xs, ys = [], []
    for i in range(hist_mean.shape[1]):
        col = hist_mean[:, i]
        total = np.sum(col)
        if total <= 0:
            continue
        xs.append(xc[i])
        if total > one:
            level = (total - one) / total
            p = np.interp(level, np.cumsum(col / total), np.arange(len(yc)))
            ys.append(yc[int(p + 0.5)])
        else:
            ys.append(bins_y[0])
    return np.array(xs), np.array(ys)


def _fit_positive_spline(x, y, w, nknots, threshold=1e-6):
    # Weighted least squares for a clamped cubic B-spline on evenly spaced
    # knots, derivative >= threshold at 100 points: a convex QP, solved
    # with SLSQP from all-ones coefficients (as numina sets it up).
    from scipy.interpolate import BSpline
    from scipy.optimize import minimize

    k = 3
    knots = np.linspace(x.min(), x.max(), nknots)
    t = np.concatenate(([x.min()] * k, knots, [x.max()] * k))
    nb = len(t) - k - 1
    eye = np.eye(nb)
    B = np.column_stack([BSpline(t, eye[i], k)(x) for i in range(nb)])
    xd = np.linspace(x.min(), x.max(), 100)
    D = np.column_stack([BSpline(t, eye[i], k).derivative()(xd) for i in range(nb)])
    m = len(x)
    # The optimum does not depend on the scale of the weights, but SLSQP's
    # line search fails when they reach 1e7 (fixed points x extension
    # weights) and then returns its starting point: scale them to <= 1.
    w = w / np.max(w)

    def loss(c):
        r = y - B @ c
        return np.mean(w * r * r)

    def grad(c):
        r = y - B @ c
        return -2.0 * (B.T @ (w * r)) / m

    cons = {"type": "ineq", "fun": lambda c: D @ c - threshold, "jac": lambda c: D}
    res = minimize(loss, np.ones(nb), jac=grad, constraints=[cons], method="SLSQP")
    return BSpline(t, res.x, k), knots, bool(res.success)


def spline_boundary(xb, yb, nknots, niter, weight, fixed=None):
    """The spline boundary through boundary points ``(xb, yb)``: a cubic
    spline with ``nknots`` knots and a positive derivative, refitted
    ``niter`` times with weight ``weight**k`` on the points above the
    previous fit; fixed points ``[[x, y(, w)], ...]`` enter with their weight
    times the largest point weight. Returns ``f(x) -> y`` (extrapolating the
    end polynomials, as numina evaluates it), with ``f.knots`` and
    ``f.history`` (the fits of every iteration)."""
    fx, fy, fw = parse_fixed_points(fixed)
    fit = None
    history = []
    for it in range(niter + 1):
        wb = np.ones_like(xb, dtype=float)
        if it > 0:
            wb[yb > fit(xb)] = weight ** it
        if fx is None:
            X, Y, W = xb, yb, wb
        else:
            X = np.concatenate((xb, fx))
            Y = np.concatenate((yb, fy))
            W = np.concatenate((wb, fw * np.max(wb)))
        order = np.argsort(X)
        new, knots, ok = _fit_positive_spline(X[order], Y[order], W[order], nknots)
        if not ok and fit is not None:
            break               # keep the last fit that converged
        fit = new
        history.append(fit)

    def boundary(xv):
        return fit(np.asarray(xv, dtype=float))
    boundary.knots = knots
    boundary.history = history
    return boundary


def shift_flux(image, dx, dy):
    """``image`` moved by (+dx, +dy) pixels, flux-conserving (each output
    pixel takes the area it overlaps in the input); pixels that come from
    outside the frame are 0. float64 ``(ny, nx)`` out."""
    out = np.asarray(image, dtype=np.float64)
    for axis, d in ((1, dx), (0, dy)):
        if d == 0:
            continue
        base = int(np.floor(d))
        frac = d - base
        a = _roll0(out, base, axis)
        b = _roll0(out, base + 1, axis)
        out = (1.0 - frac) * a + frac * b
    return out


def _roll0(a, s, axis):
    out = np.zeros_like(a)
    n = a.shape[axis]
    if abs(s) >= n:
        return out
    src = [slice(None)] * 2
    dst = [slice(None)] * 2
    if s >= 0:
        src[axis], dst[axis] = slice(0, n - s), slice(s, n)
    else:
        src[axis], dst[axis] = slice(-s, n), slice(0, n + s)
    out[tuple(dst)] = a[tuple(src)]
    return out
