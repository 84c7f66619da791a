"""crdask.kernels.combine against astropy.stats.sigma_clip and numpy references."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from crdask.kernels.combine import combine_stack, lanes_for, sorting_network

import astropy.stats as astropy_stats  # noqa: E402


def _astropy_clip(data, mask, cenfunc, stdfunc, maxiters, lower, upper):
    """astropy's clipped masked array (float64) of a (N, by, bx) stack."""
    d = np.ma.masked_invalid(np.ma.array(data.astype(np.float64), mask=mask))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return astropy_stats.sigma_clip(d, sigma_lower=lower, sigma_upper=upper,
                                        maxiters=maxiters, cenfunc=cenfunc,
                                        stdfunc=stdfunc, axis=0)


def _reference(clipped, method, weights=None):
    """float64 combination of a masked (N, by, bx) array, NaN where empty."""
    n = (~np.ma.getmaskarray(clipped)).sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "median":
            ref = np.ma.median(clipped, axis=0)
        elif method == "sum":
            w = 1.0 if weights is None else weights[:, None, None]
            ref = (clipped * w).sum(axis=0)
        else:
            ref = np.ma.average(clipped, axis=0, weights=None if weights is None else
                                np.broadcast_to(weights[:, None, None], clipped.shape))
    ref = np.ma.filled(np.ma.asarray(ref, dtype=np.float64), np.nan)
    ref = np.where(n == 0, np.nan, ref)
    return ref, n


def _assert_close(got, ref):
    # float32 result of a float64 computation: within float32 rounding. The
    # absolute part is for means that cancel (small integers of both signs,
    # scaled): 0 in one order of summation, ~2e-16 in another (hypothesis
    # found one); 1e-9 is far below float32 rounding of the inputs (>= 0.5).
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    ok = ~np.isnan(ref)
    np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------
# The block kernel against astropy / numpy.ma.


@st.composite
def stacks(draw, max_frames=12):
    n = draw(st.integers(1, max_frames))
    by = draw(st.integers(1, 5))
    bx = draw(st.integers(1, 70))        # crosses the 64-pixel tile
    kind = draw(st.sampled_from(["ints", "floats", "outliers"]))
    if kind == "ints":                    # many ties
        data = draw(arrays(np.float32, (n, by, bx), elements=st.integers(-4, 4).map(float)))
    else:
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        data = (100 + rng.normal(0, 5, (n, by, bx))).astype(np.float32)
        if kind == "outliers":
            hit = rng.random((n, by, bx)) < 0.15
            data[hit] += rng.choice([-1, 1], hit.sum()) * rng.uniform(20, 500, hit.sum())
    mask = draw(arrays(np.bool_, (n, by, bx)))
    if not draw(st.booleans()):
        mask[...] = False
    nan = draw(arrays(np.bool_, (n, by, bx)))
    nan &= draw(st.booleans())
    data[nan] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return data, mask


@settings(max_examples=80, deadline=None)
@given(stacks(), st.sampled_from(["median", "mean"]), st.sampled_from(["std", "mad_std"]),
       st.sampled_from([1, 2, 5, None]), st.floats(0.5, 4), st.floats(0.5, 4),
       st.sampled_from(["average", "median", "sum"]))
def test_sigma_clip_matches_astropy(stack, cen, dev, maxiters, lo, hi, method):
    data, mask = stack
    clipped = _astropy_clip(data, mask, cen, dev, maxiters, lo, hi)
    ref, n = _reference(clipped, method)
    got, count = combine_stack(data, mask, method=method, sigma_clip=True, sigma_lower=lo,
                               sigma_upper=hi, cenfunc=cen, stdfunc=dev, maxiters=maxiters)
    assert got.dtype == np.float32 and count.dtype == np.uint16
    np.testing.assert_array_equal(count, n)
    _assert_close(got, ref)


@settings(max_examples=40, deadline=None)
@given(stacks(), st.sampled_from(["average", "median", "sum"]))
def test_no_rejection_matches_numpy(stack, method):
    data, mask = stack
    clipped = np.ma.masked_invalid(np.ma.array(data.astype(np.float64), mask=mask))
    ref, n = _reference(clipped, method)
    got, count = combine_stack(data, mask, method=method)
    np.testing.assert_array_equal(count, n)
    _assert_close(got, ref)


def _extrema_reference(data, mask, nlow, nhigh):
    """Mask of a stable argsort's lowest ``nlow`` / highest ``nhigh`` valid
    values per pixel (everything if no more than nlow + nhigh are valid)."""
    d = data.astype(np.float64)
    bad = mask | ~np.isfinite(d)
    out = bad.copy()
    nf, by, bx = d.shape
    for y in range(by):
        for x in range(bx):
            ok = np.flatnonzero(~bad[:, y, x])
            if ok.size <= nlow + nhigh:
                out[ok, y, x] = True
                continue
            order = ok[np.argsort(d[ok, y, x], kind="stable")]
            out[order[:nlow], y, x] = True
            if nhigh:
                out[order[-nhigh:], y, x] = True
    return out


@settings(max_examples=60, deadline=None)
@given(stacks(), st.integers(0, 3), st.integers(0, 3), st.booleans())
def test_clip_extrema(stack, nlow, nhigh, weighted):
    data, mask = stack
    nf = data.shape[0]
    weights = np.arange(1.0, nf + 1) if weighted else None
    rej = _extrema_reference(data, mask, nlow, nhigh)
    clipped = np.ma.array(data.astype(np.float64), mask=rej)
    ref, n = _reference(clipped, "average", weights)
    got, count = combine_stack(data, mask, method="average", nlow=nlow, nhigh=nhigh,
                               weights=weights)
    np.testing.assert_array_equal(count, n)
    _assert_close(got, ref)


@settings(max_examples=40, deadline=None)
@given(stacks(), st.one_of(st.none(), st.floats(-2, 100)), st.one_of(st.none(),
                                                                    st.floats(0, 120)))
def test_minmax_then_sigma(stack, vmin, vmax):
    # min/max clipping acts on unscaled values, before sigma clipping
    data, mask = stack
    nf = data.shape[0]
    scale = np.linspace(0.5, 2.0, nf)
    d = data.astype(np.float64)
    rej = mask.copy()
    with np.errstate(invalid="ignore"):
        if vmin is not None:
            rej |= d < vmin
        if vmax is not None:
            rej |= d > vmax
    scaled = d * scale[:, None, None]
    clipped = _astropy_clip(scaled, rej, "median", "std", 1, 3.0, 3.0)
    ref, n = _reference(clipped, "average")
    got, count = combine_stack(data, mask, method="average", scale=scale, vmin=vmin,
                               vmax=vmax, sigma_clip=True)
    np.testing.assert_array_equal(count, n)
    _assert_close(got, ref)


def test_one_sided_threshold():
    data = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 50], np.float32)[:, None, None]
    got, count = combine_stack(data, sigma_clip=True, sigma_lower=None, sigma_upper=1.0)
    assert count[0, 0] == 9                  # only the high value goes
    data[0] = -50                             # median 1, std ~22
    got, count = combine_stack(data, sigma_clip=True, sigma_lower=1.0, sigma_upper=None)
    assert count[0, 0] == 9 and got[0, 0] == np.float32((8 + 50) / 9)


def test_all_rejected_is_nan_with_count_zero():
    data = np.full((3, 2, 2), np.nan, np.float32)
    data[:, 0, 0] = [1, 2, 3]
    for method in ("average", "median", "sum"):
        got, count = combine_stack(data, method=method)
        assert np.isnan(got[1:, :]).all() and np.isnan(got[0, 1])
        assert count.tolist() == [[3, 0], [0, 0]]
    got, count = combine_stack(data, nlow=2, nhigh=1)
    assert count[0, 0] == 0 and np.isnan(got[0, 0])


def test_even_median_is_mean_of_middle_values():
    data = np.array([1, 2, 4, 100], np.float32)[:, None, None]
    got, _ = combine_stack(data, method="median")
    assert got[0, 0] == 3.0


@pytest.mark.parametrize("n", [1, 2, 3, 64, 150])
@pytest.mark.parametrize("cen, dev", [("median", "std"), ("mean", "mad_std")])
def test_many_frames_and_lane_widths(n, cen, dev):
    # 150 frames: narrower tiles (lanes_for), the long sorting network
    rng = np.random.default_rng(n)
    data = (500 + rng.normal(0, 3, (n, 3, 130))).astype(np.float32)
    hit = rng.random(data.shape) < 0.05
    data[hit] += rng.uniform(50, 5000, hit.sum()).astype(np.float32)
    mask = rng.random(data.shape) < 0.1
    data[rng.random(data.shape) < 0.02] = np.nan
    for maxiters in (1, None):
        clipped = _astropy_clip(data, mask, cen, dev, maxiters, 2.5, 3.0)
        for method in ("average", "median"):
            ref, cnt = _reference(clipped, method)
            got, count = combine_stack(data, mask, method=method, sigma_clip=True,
                                       sigma_lower=2.5, sigma_upper=3.0, cenfunc=cen,
                                       stdfunc=dev, maxiters=maxiters)
            np.testing.assert_array_equal(count, cnt)
            _assert_close(got, ref)


def test_list_of_blocks_equals_stack():
    rng = np.random.default_rng(5)
    data = rng.normal(size=(7, 4, 90)).astype(np.float32)
    masks = [None if k % 2 else rng.random((4, 90)) < 0.2 for k in range(7)]
    full = np.stack([np.zeros((4, 90), bool) if m is None else m for m in masks])
    a = combine_stack(list(data.astype(np.float64)), masks, method="median", sigma_clip=True)
    b = combine_stack(data, full, method="median", sigma_clip=True)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_sorting_network_sorts_and_lanes():
    rng = np.random.default_rng(0)
    from crdask.kernels.median import compare_exchange_lanes
    for n in (1, 2, 5, 33, 100):
        t = rng.integers(0, 5, (n, 16)).astype(np.float32)
        ref = np.sort(t, axis=0)
        compare_exchange_lanes(t, sorting_network(n), t.shape[1])
        np.testing.assert_array_equal(t, ref)
    assert lanes_for(100, 4) == 64 and lanes_for(1000, 8) == 8
    assert lanes_for(150, 4) % 8 == 0
