"""Median-Minimum kernels against slow numpy/scipy references (hypothesis)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from crdask.cosmic.mm_stack import base_statistics, masked_mean_var
from crdask.kernels.mm_stack import (dilate8, hist2d_add, keep_touching, label8, sim_xy,
                                     stack_stats)

S8 = ndimage.generate_binary_structure(2, 2)


@st.composite
def stacks(draw, dtype=np.float32):
    n = draw(st.integers(3, 9))
    ny = draw(st.integers(1, 9))
    nx = draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    rng = np.random.default_rng(seed)
    a = rng.normal(100, 30, (n, ny, nx))
    if draw(st.booleans()):
        a = np.round(a)                       # ties, as in integer raw data
    return a.astype(dtype), draw(st.integers(2, n - 1))


@settings(max_examples=60, deadline=None)
@given(stacks())
def test_stack_stats_matches_numpy(sk):
    s, k = sk
    mn2, med, mea, mx, mn, var = stack_stats(s, k)
    n = s.shape[0]
    srt = np.sort(s, axis=0)
    ref_mn2 = np.zeros(s.shape[1:], np.float32)
    for i in range(n - k):                    # ascending order, float32
        ref_mn2 = (ref_mn2 + srt[i]).astype(np.float32)
    ref_mn2 = (ref_mn2 / np.float32(n - k)).astype(np.float32)
    np.testing.assert_array_equal(mn2, ref_mn2)
    np.testing.assert_array_equal(med, np.median(s, axis=0))
    seq = s[0].copy()                          # numpy's axis-0 float32 sum on frames
    for i in range(1, n):
        seq = (seq + s[i]).astype(np.float32)
    np.testing.assert_array_equal(mea, (seq / np.float32(n)).astype(np.float32))
    if s.shape[1] * s.shape[2] >= 2:          # (one pixel: numpy sums pairwise instead)
        np.testing.assert_array_equal(mea, np.mean(s, axis=0))
    np.testing.assert_array_equal(mx, s.max(axis=0))
    np.testing.assert_array_equal(mn, s.min(axis=0))
    np.testing.assert_allclose(var, np.var(s.astype(np.float64), axis=0, ddof=1), rtol=1e-6)
    # numina's average_excluding_top_n: same values up to float32 summation order
    part = np.partition(s, n - k, axis=0)[: n - k].mean(axis=0)
    np.testing.assert_allclose(mn2, part, rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(stacks(np.float64))
def test_sim_xy_matches_numpy(sk):
    s, k = sk
    x, y = sim_xy(s, k)
    n = s.shape[0]
    ref_x = np.sort(s, axis=0)[: n - k].mean(axis=0)
    np.testing.assert_allclose(x, ref_x, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(y, np.median(s, axis=0) - ref_x, rtol=1e-9, atol=1e-9)


@st.composite
def masks(draw):
    ny = draw(st.integers(1, 24))
    nx = draw(st.integers(1, 24))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 31 - 1)))
    p = draw(st.floats(0.0, 0.6))
    return rng.random((ny, nx)) < p, rng.random((ny, nx)) < draw(st.floats(0.0, 0.3))


@settings(max_examples=80, deadline=None)
@given(masks(), st.integers(0, 3))
def test_dilate8_matches_scipy(ms, it):
    m, _ = ms
    ref = ndimage.binary_dilation(m, structure=S8, iterations=it) if it else m
    np.testing.assert_array_equal(dilate8(m, it), ref)


@settings(max_examples=80, deadline=None)
@given(masks())
def test_keep_touching_matches_label_reference(ms):
    m, seed = ms
    lab, n = ndimage.label(m, structure=S8)
    ref = np.zeros_like(m)
    for i in range(1, n + 1):                 # numina's apply_threshold_cr loop
        g = lab == i
        if seed[g].any():
            ref[g] = True
    np.testing.assert_array_equal(keep_touching(m, seed), ref)


@settings(max_examples=80, deadline=None)
@given(masks())
def test_label8_matches_scipy_label(ms):
    m, _ = ms
    lab, n = label8(m)
    ref, nref = ndimage.label(m, structure=S8)
    assert n == nref
    np.testing.assert_array_equal(lab, ref)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 31 - 1), st.integers(1, 400))
def test_hist2d_add_matches_histogramdd(seed, m):
    rng = np.random.default_rng(seed)
    ey = np.linspace(0.0, rng.uniform(1, 50), 101)
    ex = np.linspace(rng.uniform(-20, 0), rng.uniform(1, 500), 101)
    y = rng.uniform(-5, ey[-1] * 1.1, m)
    x = rng.uniform(ex[0] - 5, ex[-1] * 1.1, m)
    pick = rng.random(m) < 0.3                 # values exactly on edges
    y[pick] = rng.choice(ey, pick.sum())
    x[pick] = rng.choice(ex, pick.sum())
    use = rng.random(m) < 0.8
    ref, _ = np.histogramdd(sample=(y[use], x[use]), bins=(ey, ex))
    h = np.zeros((100, 100), np.int64)
    hist2d_add(h, y, x, use, ey, ex)
    np.testing.assert_array_equal(h, ref.astype(np.int64))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 31 - 1), st.integers(2, 40), st.booleans())
def test_hist2d_add_any_edges_and_nan(seed, nb, even):
    # the bin is guessed from the spacing and checked against the edges:
    # uneven edges, values next to an edge and NaN must still bin as numpy
    rng = np.random.default_rng(seed)
    if even:
        e = np.linspace(rng.normal(0, 10), rng.uniform(11, 200), nb)
    else:
        e = np.unique(rng.normal(0, 50, nb))
        if e.size < 2:
            e = np.array([0.0, 1.0])
    v = np.concatenate([rng.normal(e.mean(), np.ptp(e) + 1, 300), e,
                        np.nextafter(e, np.inf), np.nextafter(e, -np.inf), [np.nan]])
    y, x = v, rng.permutation(v)
    h = np.zeros((e.size - 1, e.size - 1), np.int64)
    hist2d_add(h, y, x, np.ones(v.size, bool), e, e)
    ok = ~np.isnan(y) & ~np.isnan(x)
    ref, _ = np.histogramdd(sample=(y[ok], x[ok]), bins=(e, e))
    np.testing.assert_array_equal(h, ref.astype(np.int64))


@settings(max_examples=60, deadline=None)
@given(stacks(), st.sampled_from([0.0, 0.1, 0.5, 0.9]))
def test_masked_mean_var_matches_numpy_ma(sk, frac):
    # numina's MEANCR arithmetic (numpy.ma) bit for bit, fully masked and
    # single-value pixels included
    s, _ = sk
    rng = np.random.default_rng(int(s.size))
    mask = rng.random(s.shape) < frac
    mean, var = masked_mean_var(s, mask)
    ma = np.ma.array(s, mask=mask)
    np.testing.assert_array_equal(mean, np.ma.mean(ma, axis=0).data.astype(np.float32))
    np.testing.assert_array_equal(var, np.ma.var(ma, axis=0, ddof=1).data.astype(np.float32))


@settings(max_examples=60, deadline=None)
@given(stacks(), st.booleans())
def test_base_statistics_equal_numpy(sk, with_nan):
    # numina's combinations use numpy's min, median, mean and var(ddof=1):
    # the one-pass kernel gives the same float32 bits (one-pixel frames and
    # stacks with a NaN take numpy's own path)
    s, _ = sk
    if with_nan:
        s = s.copy()
        s[0, 0, 0] = np.nan
    got = base_statistics(s)
    ref = {"minimum": np.min(s, axis=0), "median": np.median(s, axis=0),
           "mean": np.mean(s, axis=0), "var": np.var(s, axis=0, ddof=1)}
    for key, want in ref.items():
        assert got[key].dtype == np.float32, key
        np.testing.assert_array_equal(got[key].view(np.uint32), want.view(np.uint32),
                                      err_msg=key)
