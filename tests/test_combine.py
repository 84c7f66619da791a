"""crdask.calib.combine: parity with ccdproc.combine, chunking, inputs, errors."""

import warnings

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdask.calib.combine import TARGET_BLOCK_BYTES, CombineResult, combine, strip_rows

import ccdproc  # noqa: E402  (test extra)
from astropy.nddata import CCDData  # noqa: E402


def _frames(n=9, shape=(23, 37), seed=0, outliers=True):
    rng = np.random.default_rng(seed)
    frames = [(1000 + rng.normal(0, 10, shape)).astype(np.float32) for _ in range(n)]
    if outliers:  # cosmic rays and a few low pixels
        for f in frames:
            hit = rng.random(shape) < 0.03
            f[hit] += rng.uniform(100, 5000, hit.sum()).astype(np.float32)
            low = rng.random(shape) < 0.01
            f[low] -= 300
    return frames


def _ccdproc(frames, **kw):
    ccds = [CCDData(f.astype(np.float64), unit="adu") for f in frames]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ccdproc.combine(ccds, **kw)


def _assert_parity(res, ref):
    ref_data = np.where(ref.mask, np.nan, ref.data) if ref.mask is not None else ref.data
    np.testing.assert_array_equal(np.isnan(res.data), np.isnan(ref_data))
    ok = ~np.isnan(ref_data)
    np.testing.assert_allclose(res.data[ok], ref_data[ok], rtol=1e-6)


W = np.array([1.0, 2.0, 0.5, 3.0, 1.5, 1.0, 2.5, 0.75, 1.25])
S = np.array([1.0, 1.1, 0.9, 1.05, 0.95, 1.2, 0.8, 1.0, 1.02])

PARITY = {
    "average": dict(method="average"),
    "median": dict(method="median"),
    "sum": dict(method="sum"),
    "average+sigma median/std": dict(method="average", sigma_clip=True,
                                     sigma_clip_func="median", sigma_clip_dev_func="std"),
    "average+sigma median/mad_std": dict(method="average", sigma_clip=True,
                                         sigma_clip_func="median",
                                         sigma_clip_dev_func="mad_std"),
    "average+sigma mean/std 2.5": dict(method="average", sigma_clip=True,
                                       sigma_clip_low_thresh=2.5, sigma_clip_high_thresh=2.5,
                                       sigma_clip_func="mean", sigma_clip_dev_func="std"),
    "median+sigma (ma.mean/ma.std callables)": dict(
        method="median", sigma_clip=True, sigma_clip_func=np.ma.mean,
        sigma_clip_dev_func=np.ma.std),
    "minmax clip": dict(method="average", minmax_clip=True, minmax_clip_min=980,
                        minmax_clip_max=1020),
    "minmax clip, max only": dict(method="median", minmax_clip=True, minmax_clip_max=1010),
    "clip_extrema 1/1": dict(method="average", clip_extrema=True),
    "clip_extrema 2/3 median": dict(method="median", clip_extrema=True, nlow=2, nhigh=3),
    "clip_extrema 0/2 sum": dict(method="sum", clip_extrema=True, nlow=0, nhigh=2),
    "weights average": dict(method="average", weights=W),
    "weights sum": dict(method="sum", weights=W),
    "scale average": dict(method="average", scale=S),
    "scale median": dict(method="median", scale=S),
    "scale sum + weights": dict(method="sum", scale=S, weights=W),
    "scale callable": dict(method="average", scale=lambda a: 1000.0 / np.median(a)),
    "minmax + sigma, nothing saturated": dict(method="average", minmax_clip=True,
                                              minmax_clip_max=60000, sigma_clip=True,
                                              sigma_clip_func="median"),
}


@pytest.mark.parametrize("case", list(PARITY))
def test_parity_with_ccdproc(case):
    kw = PARITY[case]
    frames = _frames()
    res = combine(frames, **kw)
    assert isinstance(res, CombineResult)
    assert res.data.dtype == np.float32 and res.count.dtype == np.uint16
    _assert_parity(res, _ccdproc(frames, **kw))


def test_sigma_clip_rejects_something_in_parity_data():
    # the parity data really exercises rejection (not a vacuous comparison)
    frames = _frames()
    res = combine(frames, sigma_clip=True)
    assert (res.count < len(frames)).mean() > 0.1
    assert res.count.min() >= len(frames) - 3


def test_all_rejected_pixels_match_ccdproc_mask():
    frames = _frames(n=3)
    kw = dict(method="average", minmax_clip=True, minmax_clip_min=1100)
    res = combine(frames, **kw)
    ref = _ccdproc(frames, **kw)
    assert ref.mask.any()
    np.testing.assert_array_equal(np.isnan(res.data), ref.mask)
    np.testing.assert_array_equal(res.count == 0, ref.mask)


def test_scale_then_clip_equals_ccdproc_on_prescaled_frames():
    # Documented difference: crdask clips the *scaled* values (IRAF). That is
    # ccdproc's result for frames multiplied by the factors beforehand.
    frames = _frames()
    scale = np.array([1.0, 2.0, 0.5, 1.0, 3.0, 1.0, 0.8, 1.0, 1.5])
    kw = dict(method="average", sigma_clip=True, sigma_clip_func="median",
              sigma_clip_dev_func="std")
    pre = [f * s for f, s in zip(frames, scale)]
    res = combine(pre, scale=1 / scale, **kw)
    ref = _ccdproc([f / s for f, s in zip(pre, scale)], **kw)
    _assert_parity(res, ref)


def test_weighted_average_uses_weights_of_kept_frames():
    frames = [np.full((1, 1), v, np.float32) for v in (1.0, 1.0, 100.0)]
    res = combine(frames, weights=[1.0, 3.0, 5.0], minmax_clip=True, minmax_clip_max=50)
    assert res.data[0, 0] == 1.0 and res.count[0, 0] == 2


# ---------------------------------------------------------------------------
# Chunking, input kinds, laziness.


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_chunked_equals_whole_frame(data):
    frames = _frames(n=data.draw(st.integers(1, 7)), shape=(29, 71),
                     seed=data.draw(st.integers(0, 1000)))
    kw = data.draw(st.sampled_from([
        dict(method="average", sigma_clip=True),
        dict(method="median", sigma_clip=True, sigma_clip_dev_func="mad_std", maxiters=None),
        dict(method="sum", clip_extrema=True, nlow=1, nhigh=0, weights=None),
        dict(method="average", minmax_clip=True, minmax_clip_max=1500),
    ]))

    def split(n, total):
        cuts = sorted(set(data.draw(st.lists(st.integers(1, total - 1), max_size=n))))
        edges = [0] + cuts + [total]
        return tuple(b - a for a, b in zip(edges, edges[1:]))

    yc, xc = split(4, 29), split(5, 71)
    whole = combine(np.stack(frames), chunks=(-1, -1), **kw)
    lazy = combine([da.from_array(f, chunks=(yc, xc)) for f in frames], **kw)
    assert isinstance(lazy.data, da.Array) and isinstance(lazy.count, da.Array)
    got, count = da.compute(lazy.data, lazy.count)
    np.testing.assert_array_equal(got, whole.data)
    np.testing.assert_array_equal(count, whole.count)
    again = combine(np.stack(frames), chunks=(yc, xc), **kw)
    np.testing.assert_array_equal(again.data, whole.data)
    lazy3 = combine(da.from_array(np.stack(frames), chunks=(1, yc, xc)), **kw)
    np.testing.assert_array_equal(lazy3.data.compute(), whole.data)


def test_masks_list_with_none_and_3d():
    frames = _frames(n=4, outliers=False)
    rng = np.random.default_rng(3)
    masks = [rng.random(frames[0].shape) < 0.3 for _ in range(4)]
    masks[1] = None
    res = combine(frames, mask=masks, method="median")
    full = np.stack([np.zeros_like(masks[0]) if m is None else m for m in masks])
    ref = np.ma.median(np.ma.array(np.stack(frames).astype(np.float64), mask=full), axis=0)
    ok = ~np.ma.getmaskarray(ref)
    np.testing.assert_allclose(res.data[ok], ref.data[ok], rtol=1e-6)
    assert np.isnan(res.data[~ok]).all()
    np.testing.assert_array_equal(res.count, (~full).sum(axis=0))
    res3 = combine(np.stack(frames), mask=full.astype(np.uint8), method="median")
    np.testing.assert_array_equal(res3.data, res.data)
    lazy = combine([da.from_array(f, chunks=5) for f in frames],
                   mask=[None if m is None else da.from_array(m, chunks=7) for m in masks],
                   method="median")
    np.testing.assert_array_equal(lazy.data.compute(), res.data)


def test_nan_frames_and_integer_input():
    frames = [np.arange(12, dtype=np.uint16).reshape(3, 4) + i for i in range(3)]
    res = combine(frames, method="average")
    np.testing.assert_array_equal(res.data, np.arange(12).reshape(3, 4) + 1.0)
    f = [a.astype(np.float32) for a in frames]
    f[0][0, 0] = np.nan
    f[1][0, 0] = np.inf
    res = combine(f + [np.full((3, 4), np.nan, np.float32)], method="sum")
    assert res.data[0, 0] == 2 and res.count[0, 0] == 1
    assert (res.count[1:] == 3).all()
    big_endian = [a.astype(">f4") for a in f]
    np.testing.assert_array_equal(combine(big_endian, method="sum").data,
                                  combine(f, method="sum").data)


def test_lazy_scale_callable_and_vector():
    frames = _frames(n=5, outliers=False)
    lazy_frames = [da.from_array(f, chunks=(8, 13)) for f in frames]

    def first_pixel(a):
        return 1000.0 / a[0, 0]          # dask 0-d array for dask frames

    eager = combine(frames, scale=first_pixel, sigma_clip=True)
    lazy = combine(lazy_frames, scale=first_pixel, sigma_clip=True)
    np.testing.assert_array_equal(lazy.data.compute(), eager.data)
    vec = da.from_array(np.array([1000.0 / f[0, 0] for f in frames]), chunks=2)
    lazy = combine(frames, scale=vec, sigma_clip=True)      # numpy frames, lazy scale
    assert isinstance(lazy.data, da.Array)
    np.testing.assert_array_equal(lazy.data.compute(), eager.data)
    bad = combine(lazy_frames, scale=lambda a: a[0, 0] * 0)
    with pytest.raises(ValueError, match="scale"):
        bad.data.compute()


def test_fits_files_through_open_stack(tmp_path):
    from astropy.io import fits

    from crdask.io.raw import open_stack
    frames = [np.round(f).astype(np.uint16) for f in _frames(n=5)]
    paths = []
    for i, f in enumerate(frames):
        p = tmp_path / f"f{i}.fits"
        fits.PrimaryHDU(f).writeto(p)      # int16 + BZERO = 32768
        paths.append(str(p))
    with pytest.raises(TypeError, match="open_stack"):  # FITS is the io layer's job
        combine(paths, method="median")
    res = combine(open_stack(paths), method="median", sigma_clip=True)
    assert isinstance(res.data, da.Array)
    np.testing.assert_array_equal(res.data.compute(),
                                  combine(frames, method="median", sigma_clip=True).data)


def test_strip_rows_bounds_memory():
    rows = strip_rows(100, (2048, 2048))
    assert 1 <= rows and 100 * rows * 2048 * 4 <= TARGET_BLOCK_BYTES
    assert strip_rows(1, (10, 10)) == 10
    assert strip_rows(10**6, (10, 10**6)) == 1


# ---------------------------------------------------------------------------
# Errors: one line, naming the parameter.


@pytest.mark.parametrize("kw, exc, words", [
    (dict(method="mean"), ValueError, "method"),
    (dict(weights=[1, 2]), ValueError, "weights"),
    (dict(weights=[1, 2, -1]), ValueError, r"weights\[2\]"),
    (dict(scale=[1, np.nan, 1]), ValueError, r"scale\[1\]"),
    (dict(scale="exptime"), TypeError, "scale"),
    (dict(scale=lambda a: 0.0), ValueError, "scale"),
    (dict(minmax_clip=True, minmax_clip_min=5, minmax_clip_max=1), ValueError,
     "minmax_clip_min"),
    (dict(minmax_clip=True, minmax_clip_max="high"), TypeError, "minmax_clip_max"),
    (dict(minmax_clip="yes"), TypeError, "minmax_clip"),
    (dict(clip_extrema=True, nlow=-1), ValueError, "nlow"),
    (dict(clip_extrema=True, nhigh=1.5), ValueError, "nhigh"),
    (dict(sigma_clip=True, sigma_clip_low_thresh=0), ValueError, "sigma_clip_low_thresh"),
    (dict(sigma_clip=True, sigma_clip_high_thresh=np.inf), ValueError,
     "sigma_clip_high_thresh"),
    (dict(sigma_clip=True, sigma_clip_func="mode"), ValueError, "sigma_clip_func"),
    (dict(sigma_clip=True, sigma_clip_dev_func=np.var), ValueError, "sigma_clip_dev_func"),
    (dict(sigma_clip=True, maxiters=0), ValueError, "maxiters"),
    (dict(mask=[None, None]), ValueError, "mask"),
    (dict(mask=[None, np.zeros((2, 2), bool), None]), ValueError, r"mask\[1\]"),
    (dict(chunks="big"), ValueError, "chunks"),
])
def test_parameter_errors(kw, exc, words):
    frames = [np.ones((3, 4), np.float32)] * 3
    with pytest.raises(exc, match=words) as info:
        combine(frames, **kw)
    assert "\n" not in str(info.value)


def test_frame_errors():
    a = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"frames\[2\] has shape \(3, 5\) but frames\[0\] "
                                         r"has shape \(3, 4\)"):
        combine([a, a, np.ones((3, 5))])
    with pytest.raises(ValueError, match=r"frames\[1\] must be a 2-D"):
        combine([a, np.ones(4)])
    with pytest.raises(ValueError, match="empty"):
        combine([])
    with pytest.raises(TypeError, match="frames"):
        combine(a)
    with pytest.raises(TypeError, match=r"frames\[0\] must hold real numbers"):
        combine([np.array([["a"]])])
