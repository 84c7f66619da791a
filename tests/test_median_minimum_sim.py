"""The fused Median-Minimum simulation kernel (crdask.kernels.mm_sim) against
numpy/scipy references: its Poisson sampler against the Poisson law, its
diagram coordinates and bins against numpy's median/sort/histogramdd."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from crdask.cosmic import mm_boundary as mb
from crdask.kernels.mm_sim import (bin_index, hist_from_codes, normal_many, poisson_many,
                                   rng_state, sim_codes_poisson)


def _state(seed):
    return rng_state(np.random.SeedSequence(seed))


def test_poisson_sampler_follows_the_poisson_law():
    # both branches (multiplication below 10, PTRS from 10) and their edge
    n = 200_000
    for i, lam in enumerate([0.0, 0.3, 3.0, 9.99, 10.0, 57.3, 300.0, 3.0e4]):
        d = poisson_many(lam, n, _state(i))
        assert np.all(d == np.round(d)) and d.min() >= 0
        if lam == 0:
            assert not d.any()
            continue
        sd = np.sqrt(lam / n)
        assert abs(d.mean() - lam) < 5 * sd, (lam, d.mean())
        assert abs(d.var() / lam - 1) < 5 * np.sqrt(2.0 / n), (lam, d.var())
        # chi-square against scipy's pmf on bins with >= 20 expected draws
        lo, hi = stats.poisson.ppf([1e-4, 1 - 1e-4], lam)
        ks = np.arange(lo, hi + 1)
        exp = n * stats.poisson.pmf(ks, lam)
        keep = exp >= 20
        obs = np.array([(d == k).sum() for k in ks[keep]], float)
        e = exp[keep]
        chi2 = np.sum((obs - e) ** 2 / e)
        assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-4, (lam, chi2, keep.sum())


def test_normal_sampler_follows_the_normal_law():
    n = 1_000_000
    z = normal_many(n, _state(5))
    assert abs(z.mean()) < 5 / np.sqrt(n) and abs(z.var() - 1) < 5 * np.sqrt(2.0 / n)
    assert stats.kstest(z, "norm").pvalue > 1e-4
    # the tails (beyond the ziggurat's base layer, r = 3.654) and the wedges
    for t in (1.0, 2.5, 3.654, 4.2):
        p = 2 * stats.norm.sf(t)
        assert abs(np.mean(np.abs(z) > t) - p) < 5 * np.sqrt(p * (1 - p) / n), t
    assert abs(np.mean(z > 0) - 0.5) < 5 * np.sqrt(0.25 / n)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 31 - 1), st.integers(1, 300), st.integers(1, 40), st.booleans())
def test_bin_index_matches_histogramdd(seed, m, nb, on_edges):
    rng = np.random.default_rng(seed)
    e = np.linspace(rng.uniform(-20, 0), rng.uniform(1, 50), nb + 1)
    v = rng.uniform(e[0] - 5, e[-1] + 5, m)
    if on_edges:
        pick = rng.random(m) < 0.5
        v[pick] = rng.choice(e, pick.sum())
    v[rng.random(m) < 0.05] = np.nan
    got = np.array([bin_index(e, x, e[0], e[-1], nb / (e[-1] - e[0])) for x in v])
    for x, g in zip(v, got):
        ref, _ = np.histogram([x], bins=e) if np.isfinite(x) else (np.zeros(nb), None)
        assert g == (int(np.argmax(ref)) if ref.sum() else -1), (x, g)


@settings(max_examples=40, deadline=None)
@given(st.integers(3, 7), st.integers(1, 60), st.integers(1, 4), st.integers(0, 2 ** 31 - 1))
def test_codes_match_numpy_diagram_and_histogramdd(n, m, nsim, seed):
    # lam = 0: no Poisson draw, the values are the read noise only, drawn
    # in the documented order, so numpy can redo the diagram
    rng = np.random.default_rng(seed)
    ncoinc = int(rng.integers(1, n))
    rnoise = float(rng.uniform(0.5, 8))
    z = normal_many(m * nsim * n, _state(seed))
    ey = np.linspace(0.0, rng.uniform(1, 10), int(rng.integers(2, 30)))
    ex = np.linspace(rng.uniform(-20, -1), rng.uniform(1, 20), int(rng.integers(2, 30)))
    codes = np.empty((m, nsim), np.uint16)
    sim_codes_poisson(np.zeros((n, m)), 1.0, rnoise, ncoinc, ey, ex, codes, _state(seed))
    v = (0.0 + rnoise * z).reshape(m, nsim, n)
    srt = np.sort(v, axis=2)
    use = rng.random(m) < 0.7
    h = np.zeros((len(ey) - 1, len(ex) - 1), np.int64)
    hist_from_codes(codes, use, h)
    # the kernel's own x, y are summed in ascending order: redo that exactly
    xk = np.zeros((m, nsim))
    for k in range(n - ncoinc):
        xk = xk + srt[:, :, k]
    xk = xk / (n - ncoinc)
    med = srt[:, :, n // 2] if n % 2 else (srt[:, :, n // 2 - 1] + srt[:, :, n // 2]) / 2.0
    yk = med - xk
    np.testing.assert_allclose(med, np.median(v, axis=2))
    ref, _ = np.histogramdd(sample=(yk[use].ravel(), xk[use].ravel()), bins=(ey, ex))
    np.testing.assert_array_equal(h, ref.astype(np.int64))
    assert h.sum() <= use.sum() * nsim


def test_simulate_codes_any_threads_same_and_poisson_means():
    rng = np.random.default_rng(3)
    ny, nx, n, nsim = 70, 40, 3, 4
    base = rng.uniform(0, 400, (ny, nx))
    base[:5] = 2.0                             # small means: the other branch
    lam = np.stack([base] * n)
    ey = np.linspace(0, 60, 101)
    ex = np.linspace(-20, 450, 101)
    one = mb.simulate_codes(lam, 1.5, 4.0, 1, nsim, ey, ex, 11, num_threads=1)
    two = mb.simulate_codes(lam, 1.5, 4.0, 1, nsim, ey, ex, 11, num_threads=2)
    np.testing.assert_array_equal(one, two)
    other = mb.simulate_codes(lam, 1.5, 4.0, 1, nsim, ey, ex, 12, num_threads=2)
    assert (other != one).mean() > 0.5
    # x column of each simulated pixel: centred on the mean of the two
    # smallest of n draws, which lies below lam; mean over the frame close
    nbx = len(ex) - 1
    ok = one != 65535
    xc = ((ex[:-1] + ex[1:]) / 2)[(one % nbx)[ok]]
    expect = np.repeat(base.ravel(), nsim)[ok.ravel()]
    assert abs(np.mean(xc - expect)) < 0.05 * np.mean(expect)
    # the histogram path of the blocks stream is these codes, counted
    use = rng.random(ny * nx) < 0.9
    h = mb.simulate_histogram(None, lam, 1.5, 4.0, 1, nsim, "poisson", 1000, use, ey, ex,
                              stream="blocks", seed=11, num_threads=2)
    ref = np.zeros_like(h)
    hist_from_codes(one, use, ref)
    np.testing.assert_array_equal(h, ref)
