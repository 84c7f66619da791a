"""crdask.kernels.box against scipy.ndimage / math.fsum references."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from scipy import ndimage  # noqa: E402  (test extra)

from crdask.kernels.box import box_max, box_median_at, sum_partials  # noqa: E402

shapes = st.tuples(st.integers(1, 14), st.integers(1, 14))


@settings(max_examples=60, deadline=None)
@given(mask=arrays(np.bool_, shapes), size=st.integers(1, 9))
def test_box_max_matches_scipy_maximum_filter(mask, size):
    assert np.array_equal(box_max(mask, size), ndimage.maximum_filter(mask, size))


@settings(max_examples=60, deadline=None)
@given(data=st.data(), shape=shapes, size=st.integers(1, 8))
def test_box_median_at_matches_scipy_median_filter(data, shape, size):
    # small integers -> many ties; values stay float32-exact
    img = data.draw(arrays(np.float32, shape, elements=st.integers(-5, 5).map(float)))
    flags = data.draw(arrays(np.bool_, shape))
    pad = size // 2
    src = np.pad(img, pad, mode="symmetric")  # scipy 'reflect'
    dst = np.full(shape, -99.0, dtype=np.float32)
    box_median_at(dst, src, flags, size, pad, pad)
    ref = ndimage.median_filter(img, size)
    assert np.array_equal(dst[flags], ref[flags])
    assert np.all(dst[~flags] == -99.0)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), size=st.integers(1, 6))
def test_box_median_at_skips_non_finite(data, size):
    img = data.draw(arrays(np.float32, (7, 9), elements=st.sampled_from(
        [0.0, 1.0, 2.0, 3.5, np.nan, np.inf, -np.inf])))
    flags = np.isfinite(img)
    pad = size // 2
    src = np.pad(img, pad, mode="symmetric")
    dst = np.zeros_like(img)
    box_median_at(dst, src, flags, size, pad, pad)
    back = size // 2
    for j, i in zip(*np.nonzero(flags)):
        win = src[j + pad - back:j + pad - back + size, i + pad - back:i + pad - back + size]
        v = np.sort(win[np.isfinite(win)])
        assert dst[j, i] == v[len(v) // 2]


finite32 = st.floats(min_value=-2.0 ** 100, max_value=2.0 ** 100, width=32)


@settings(max_examples=60, deadline=None)
@given(values=arrays(np.float32, st.tuples(st.integers(1, 9), st.integers(1, 9)),
                     elements=finite32),
       good=st.data(), cut=st.integers(0, 9), center=st.floats(-1e3, 1e3))
def test_sum_partials_is_exact_and_blocking_independent(values, good, cut, center):
    g = good.draw(arrays(np.bool_, values.shape))
    ref = math.fsum(values[g].astype(np.float64))
    parts, n = sum_partials(values, g, np.nan)
    assert n == g.sum()
    assert math.fsum(parts) == ref
    # split the rows into two blocks: same correctly rounded total
    c = min(cut, values.shape[0])
    p1, n1 = sum_partials(np.ascontiguousarray(values[:c]), np.ascontiguousarray(g[:c]), np.nan)
    p2, n2 = sum_partials(np.ascontiguousarray(values[c:]), np.ascontiguousarray(g[c:]), np.nan)
    assert n1 + n2 == n and math.fsum(np.concatenate([p2, p1])) == ref
    sq, _ = sum_partials(values, g, center)
    assert math.fsum(sq) == math.fsum((values[g].astype(np.float64) - center) ** 2)
