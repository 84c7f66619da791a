"""Numba kernels against slow numpy/scipy references on random inputs."""

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from crdask.kernels import clean, laplace, lacosmic_steps, median, morphology, select, sepmedian
from crdask.kernels.convolve import convolve

# Images with many ties (small integers) or continuous values.
def images(min_side=1, max_side=40):
    shapes = st.tuples(st.integers(min_side, max_side), st.integers(min_side, max_side))
    ints = hnp.arrays(np.float32, shapes, elements=st.integers(-3, 3).map(float))
    floats = hnp.arrays(np.float32, shapes,
                        elements=st.floats(-1e4, 1e4, width=32, allow_nan=False))
    return st.one_of(ints, floats)


def ref_median_filter(data, size):
    """Full median with the border copied (scipy in the interior)."""
    out = data.copy()
    h = size // 2
    if data.shape[0] > 2 * h and data.shape[1] > 2 * h:
        med = ndimage.median_filter(data, size=size, mode="constant")
        out[h:-h, h:-h] = med[h:-h, h:-h]
    return out


def ref_sep_median(data, size):
    h = size // 2
    out = data.copy()
    ny, nx = data.shape
    if ny <= 2 * h or nx <= 2 * h:
        return out
    rows = data.copy()
    rows[:, h:nx - h] = np.median(sliding_window_view(data, size, axis=1), axis=-1)
    cols = np.median(sliding_window_view(rows, size, axis=0), axis=-1)
    out[h:ny - h, h:nx - h] = cols[:, h:nx - h]
    return out


@pytest.mark.parametrize("size", [3, 5, 7, 9])
@given(data=images())
def test_sepmedfilt_matches_reference(size, data):
    np.testing.assert_array_equal(sepmedian.sepmedfilt(data, size), ref_sep_median(data, size))


@pytest.mark.parametrize("n", [4, 6, 8])
def test_middle_pair_networks_by_the_zero_one_principle(n):
    # A comparator network selects ranks correctly for every input iff it
    # does for every 0/1 input (Knuth, TAOCP 5.3.4): check all 2**n of them.
    import itertools
    net = getattr(sepmedian, f"mid2_of{n}")
    for bits in itertools.product((0.0, 1.0), repeat=n):
        lo, hi = net(*[np.float32(b) for b in bits])
        ranked = sorted(bits)
        assert (lo, hi) == (ranked[n // 2 - 1], ranked[n // 2]), bits


@pytest.mark.parametrize("size", [3, 5, 7, 9])
@given(data=images(max_side=30))
def test_medfilt_matches_scipy(size, data):
    np.testing.assert_array_equal(median.medfilt(data, size), ref_median_filter(data, size))


@pytest.mark.parametrize("size", [5, 7])
def test_medfilt_small_and_wide_shapes(size):
    # Shapes around the border width (nothing or one row/column filtered)
    # and wider than any internal block, with ties and with distinct values.
    rng = np.random.default_rng(size)
    h = size // 2
    sides = [1, 2 * h, 2 * h + 1, 2 * h + 2, 2 * h + 3]
    for ny, nx in [(a, b) for a in sides for b in sides] + [(9, 301), (301, 9), (40, 517)]:
        for data in (rng.integers(-2, 3, (ny, nx)).astype(np.float32),
                     rng.normal(size=(ny, nx)).astype(np.float32)):
            np.testing.assert_array_equal(median.medfilt(data, size),
                                          ref_median_filter(data, size))


def test_median_nets_module_is_generated():
    # median_nets.py is generated (numba cannot cache exec'd code): it must
    # be what the generator writes, which also proves each network on every
    # 0/1 input with sorted columns.
    import inspect
    from crdask.kernels import median_netgen, median_nets
    assert inspect.getsource(median_nets) == median_netgen.module_source()


def test_medfilt_rejects_even_size():
    with pytest.raises(ValueError, match="odd"):
        median.medfilt(np.zeros((5, 5), np.float32), 4)


@pytest.mark.parametrize("n", [2, 3, 9, 25, 49, 121])
def test_selection_network_sorts_median(n):
    rng = np.random.default_rng(n)
    pairs = median.selection_pairs(n, (n - 1) // 2)
    for _ in range(200):
        a = rng.integers(0, 4, n).astype(float) if rng.random() < 0.5 else rng.normal(size=n)
        b = a.copy()
        for i, j in pairs:
            if b[i] > b[j]:
                b[i], b[j] = b[j], b[i]
        assert b[(n - 1) // 2] == np.sort(a)[(n - 1) // 2]


@given(values=hnp.arrays(np.float32, st.integers(1, 200),
                         elements=st.floats(-100, 100, width=32)), data=st.data())
def test_select_inplace_and_lower_median(values, data):
    k = data.draw(st.integers(0, len(values) - 1))
    assert median.select_inplace(values.copy(), len(values), k) == np.sort(values)[k]
    assert median.lower_median(values.copy(), len(values)) == np.sort(values)[(len(values) - 1) // 2]


@given(data=images(max_side=20))
def test_subsample_rebin_laplace(data):
    sub = laplace.subsample(data)
    np.testing.assert_array_equal(sub, np.repeat(np.repeat(data, 2, 0), 2, 1))
    np.testing.assert_array_equal(laplace.rebin(sub), data)  # mean of 4 equal values
    lap = laplace.laplace_convolve(data)
    kern = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], np.float64)
    ref = ndimage.convolve(data.astype(np.float64), kern, mode="constant", cval=0.0)
    np.testing.assert_allclose(lap, ref, rtol=1e-5, atol=1e-2)
    composed = laplace.laplace_convolve(sub)
    composed[composed < 0] = 0
    np.testing.assert_array_equal(laplace.laplacian_rebin(data), laplace.rebin(composed))


_CORNERLESS = np.ones((5, 5), bool)
_CORNERLESS[[0, 0, 4, 4], [0, 4, 0, 4]] = False


@given(mask=hnp.arrays(np.bool_, st.tuples(st.integers(1, 30), st.integers(1, 30))),
       niter=st.integers(1, 3))
def test_dilations_match_scipy(mask, niter):
    ref3 = mask.copy()
    if min(mask.shape) > 2:
        ref3[1:-1, 1:-1] = ndimage.binary_dilation(mask, np.ones((3, 3), bool))[1:-1, 1:-1]
    np.testing.assert_array_equal(morphology.dilate3(mask), ref3)
    ref5 = mask.copy()
    for _ in range(niter):
        nxt = ref5.copy()
        if min(mask.shape) > 4:
            nxt[2:-2, 2:-2] = ndimage.binary_dilation(ref5, _CORNERLESS)[2:-2, 2:-2]
        ref5 = nxt
    np.testing.assert_array_equal(morphology.dilate5(mask, niter), ref5)


@given(data=images(max_side=25), ksize=st.sampled_from([1, 3, 5, 7]), seed=st.integers(0, 99))
def test_convolve_matches_scipy(data, ksize, seed):
    kernel = np.random.default_rng(seed).random((ksize, ksize)).astype(np.float32)
    ref = ndimage.convolve(data.astype(np.float64), kernel.astype(np.float64),
                           mode="constant", cval=0.0)
    np.testing.assert_allclose(convolve(data, kernel), ref, rtol=1e-4,
                               atol=1e-4 * (np.abs(data).max() + 1) * ksize * ksize)


def _ref_clean(arr, crmask, mask, background, kind):
    out = arr.copy()
    src = arr.copy()
    ny, nx = arr.shape
    w = np.zeros((5, 5))
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            if dy or dx:
                w[dy + 2, dx + 2] = np.float32(1 / np.hypot(dy, dx))
    for j in range(2, ny - 2):
        for i in range(2, nx - 2):
            if not crmask[j, i]:
                continue
            win = src[j - 2:j + 3, i - 2:i + 3]
            good = ~(crmask[j - 2:j + 3, i - 2:i + 3] | mask[j - 2:j + 3, i - 2:i + 3])
            if kind == "median":
                out[j, i] = np.sort(win.ravel())[12]
            elif not good.any():
                out[j, i] = background
            elif kind == "meanmask":
                out[j, i] = win[good].astype(np.float64).mean()
            elif kind == "medmask":
                v = np.sort(win[good])
                out[j, i] = v[(len(v) - 1) // 2]
            else:
                out[j, i] = (w[good] * win[good]).sum() / w[good].sum()
    return out


@pytest.mark.parametrize("kind", ["meanmask", "medmask", "idw", "median"])
@given(data=images(min_side=5, max_side=20), seed=st.integers(0, 1000))
def test_cleaners_match_reference(kind, data, seed):
    rng = np.random.default_rng(seed)
    crmask = rng.random(data.shape) < 0.3
    mask = rng.random(data.shape) < 0.2
    bg = np.float32(7.5)
    ref = _ref_clean(data, crmask, mask, bg, kind)
    got = data.copy()
    if kind == "meanmask":
        clean.clean_meanmask(got, crmask, mask, bg)
    elif kind == "medmask":
        clean.clean_medmask(got, crmask, mask, bg)
    elif kind == "idw":
        clean.clean_idw(got, crmask, mask, bg)
    else:
        clean.clean_median(got, crmask)
    if kind != "median":  # the at-indices form gives the same values and says what moved
        at = data.copy()
        idx = np.flatnonzero(crmask)
        moved = clean.clean_masked_at(clean.MASKED_KINDS[kind], at, crmask, mask, bg, idx)
        np.testing.assert_array_equal(at.view(np.uint32), got.view(np.uint32))
        np.testing.assert_array_equal(
            moved, at.view(np.uint32).ravel()[idx] != data.view(np.uint32).ravel()[idx])
    if kind in ("meanmask", "idw"):  # float32 running sums vs float64 reference
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * (np.abs(data).max() + 1))
    else:
        np.testing.assert_array_equal(got, ref)
    if kind != "median":  # masked cleaners are idempotent for a fixed mask
        again = got.copy()
        getattr(clean, "clean_idw" if kind == "idw" else f"clean_{kind}")(again, crmask, mask, bg)
        np.testing.assert_array_equal(again, got)


@given(shape=st.tuples(st.integers(1, 25), st.integers(1, 25)), seed=st.integers(0, 1000),
       reach=st.integers(0, 3))
def test_flag_new_and_flagged_near_match_numpy(shape, seed, reach):
    rng = np.random.default_rng(seed)
    crmask = rng.random(shape) < 0.2
    found = rng.random(shape) < 0.2
    before = crmask.copy()
    new = clean.flag_new(crmask, found)
    np.testing.assert_array_equal(new, np.flatnonzero(found & ~before))
    np.testing.assert_array_equal(crmask, before | found)
    seeds = np.zeros(shape, bool)
    seeds.flat[new] = True
    near = ndimage.binary_dilation(seeds, np.ones((2 * reach + 1,) * 2, bool)) & crmask
    got = clean.flagged_near(crmask, new, reach)
    assert len(set(got.tolist())) == got.size
    np.testing.assert_array_equal(np.sort(got), np.flatnonzero(near))


@given(values=hnp.arrays(np.float32, st.tuples(st.integers(1, 40), st.integers(1, 90)),
                         elements=st.floats(-4, 4, width=32)),
       level=st.sampled_from([-np.inf, -1.0, 0.0, 0.5, 3.9, np.inf]))
def test_pixels_at_least_matches_nonzero(values, level):
    level = np.float32(level)
    ys, xs = lacosmic_steps.pixels_at_least(values, level)
    want = np.nonzero(values >= level)
    np.testing.assert_array_equal(ys, want[0])
    np.testing.assert_array_equal(xs, want[1])


@given(values=hnp.arrays(np.float32, st.tuples(st.integers(1, 40), st.integers(1, 40)),
                         elements=st.floats(width=32, allow_nan=False, allow_infinity=False)),
       seed=st.integers(0, 100), q=st.floats(0, 1))
def test_histogram_order_statistic_is_exact(values, seed, q):
    exclude = np.random.default_rng(seed).random(values.shape) < 0.3
    good = np.sort(values[~exclude])
    if good.size == 0:
        return
    rank = int(q * (good.size - 1))
    hi, r = select.locate_rank(select.histogram_high(values, exclude), rank)
    lo, _ = select.locate_rank(select.histogram_low(values, exclude, hi), r)
    assert select.key_to_float((hi << 16) | lo) == good[rank]


@given(sp=images(min_side=3, max_side=20), seed=st.integers(0, 100))
def test_candidate_growth_matches_numpy(sp, seed):
    rng = np.random.default_rng(seed)
    bad = rng.random(sp.shape) < 0.2
    fs = np.abs(rng.normal(size=sp.shape)).astype(np.float32) + np.float32(0.01)
    sig, obj = np.float32(1.0), np.float32(2.0)
    cand = lacosmic_steps.initial_candidates(sp, fs, bad, sig, obj)
    np.testing.assert_array_equal(cand, (sp > sig) & ~bad & ((sp / fs) > obj))
    grown, n = lacosmic_steps.grow_candidates(cand, sp, bad, np.float32(0.3))
    ref = morphology.dilate3(cand) & ~bad & (sp > np.float32(0.3))
    np.testing.assert_array_equal(grown, ref)
    assert n == ref.sum()


@pytest.mark.parametrize("size", [3, 5, 7, 9])
@given(data=images(max_side=30), seed=st.integers(0, 2**32 - 1))
def test_filters_at_points_equal_the_whole_image_filters(size, data, seed):
    rng = np.random.default_rng(seed)
    ys, xs = np.nonzero(rng.random(data.shape) < 0.3)
    np.testing.assert_array_equal(sepmedian.sepmedfilt_at(data, ys, xs, size),
                                  ref_sep_median(data, size)[ys, xs])
    np.testing.assert_array_equal(median.medfilt_at(data, ys, xs, size),
                                  ref_median_filter(data, size)[ys, xs])


@given(mask=hnp.arrays(np.bool_, st.tuples(st.integers(1, 30), st.integers(1, 30)),
                       elements=st.sampled_from([False, False, False, False, True])),
       niter=st.integers(0, 3))
def test_dilate5_points_equals_dilate5(mask, niter):
    ys, xs = np.nonzero(mask)
    got = morphology.dilate5_points(ys, xs, mask.shape[0], mask.shape[1], niter)
    np.testing.assert_array_equal(got, morphology.dilate5(mask, niter))
    ref = mask.copy()  # and scipy's dilation with the edge ring copied
    fp = np.ones((5, 5), bool)
    fp[0, 0] = fp[0, -1] = fp[-1, 0] = fp[-1, -1] = False
    for _ in range(niter):
        d = ndimage.binary_dilation(ref, structure=fp)
        ref[2:-2, 2:-2] = d[2:-2, 2:-2]
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("size", [3, 5, 7, 9])
@given(data=images(max_side=30), seed=st.integers(0, 2**32 - 1))
def test_sepmed_apply_inplace_equals_two_steps(size, data, seed):
    noise = (np.random.default_rng(seed).random(data.shape) + 0.05).astype(np.float32)
    got0 = sepmedian.sepmedfilt_apply_inplace(data.copy(), size, noise, 0)
    got1 = sepmedian.sepmedfilt_apply_inplace(data.copy(), size, noise, 1)
    # bit for bit (signed zeros too) against the two-step kernels it replaces
    two0 = lacosmic_steps.subtract_inplace(data.copy(), sepmedian.sepmedfilt(data, size))
    two1 = lacosmic_steps.fine_structure_contrast(data.copy(), sepmedian.sepmedfilt(data, size),
                                                  noise)
    np.testing.assert_array_equal(got0.view(np.uint32), two0.view(np.uint32))
    np.testing.assert_array_equal(got1.view(np.uint32), two1.view(np.uint32))
    # and by value against numpy (whose medians may differ in the sign of a zero)
    np.testing.assert_array_equal(got0, data - ref_sep_median(data, size))
    np.testing.assert_array_equal(
        got1, np.maximum((data - ref_sep_median(data, size)) / noise, np.float32(0.01)))
