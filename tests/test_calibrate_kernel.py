"""The fused calibration kernel equals the numpy expressions bit for bit."""

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from crdask.calib import bits
from crdask.calib.calibrate import calibrate_frame, calibrate_numpy

SHAPE = st.tuples(st.integers(1, 9), st.integers(1, 9))
VALUES = st.floats(-1e4, 1e5, width=32) | st.sampled_from(
    [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-30, 1e30])


def _reference(data, readnoise, **kw):
    rn2 = np.float32(readnoise) ** 2 if np.ndim(readnoise) == 0 else \
        readnoise.astype(np.float32) * readnoise.astype(np.float32)
    return calibrate_numpy(data, rn2, kw.get("exptime"), *(kw.get(k) for k in (
        "bias", "bias_var", "dark", "dark_var", "flat", "flat_var", "bad", "saturated")))


@st.composite
def frames(draw):
    shape = draw(SHAPE)
    f32 = arrays(np.float32, shape, elements=VALUES)
    kw = {}
    for key in ("bias", "bias_var", "dark", "dark_var", "flat", "flat_var"):
        if draw(st.booleans()):
            kw[key] = draw(f32)
    for key in ("bad", "saturated"):
        if draw(st.booleans()):
            kw[key] = draw(arrays(np.bool_, shape))
    if draw(st.booleans()):
        readnoise = draw(arrays(np.float32, shape, elements=st.floats(0, 50, width=32)))
    else:
        readnoise = draw(st.floats(0, 50))
    exptime = draw(st.floats(0, 3600))
    return draw(f32), readnoise, exptime, kw


def _same(a, b):
    """Equal bits, except that any NaN equals any NaN (the sign and payload of
    a NaN made by inf * 0 differ between numpy's SIMD loops and scalar code)."""
    assert a.dtype == b.dtype and a.shape == b.shape
    if a.dtype.kind == "f":
        nan = np.isnan(a)
        assert np.array_equal(nan, np.isnan(b))
        a, b = np.where(nan, 0, a), np.where(nan, 0, b)
    assert np.array_equal(a.view(np.uint8), b.view(np.uint8))


@settings(max_examples=300, deadline=None)
@given(frames())
def test_kernel_is_bit_identical_to_numpy(case):
    data, readnoise, exptime, kw = case
    fused = calibrate_frame(data, readnoise=readnoise, exptime=exptime, **kw)
    ref = _reference(data, readnoise, exptime=exptime, **kw)
    _same(fused.sci, ref.sci.astype(np.float32))
    _same(fused.var, ref.var.astype(np.float32))
    _same(fused.mask, ref.mask)


def test_dask_and_other_dtypes_take_the_numpy_path():
    rng = np.random.default_rng(1)
    data = rng.normal(1000, 30, (64, 48)).astype(np.float32)
    bias = rng.normal(100, 3, (64, 48)).astype(np.float32)
    flat = rng.normal(1, 0.05, (64, 48)).astype(np.float32)
    flat[3, 4] = 0
    fused = calibrate_frame(data, readnoise=4.0, bias=bias, flat=flat)
    lazy = calibrate_frame(da.from_array(data, chunks=16), readnoise=4.0,
                           bias=bias, flat=flat)
    for a, b in ((fused.sci, lazy.sci), (fused.var, lazy.var), (fused.mask, lazy.mask)):
        np.testing.assert_array_equal(a, np.asarray(b))
    assert fused.mask[3, 4] & bits.FLAT_INVALID
    wide = calibrate_frame(data.astype(np.float64), readnoise=4.0, bias=bias, flat=flat)
    assert wide.sci.dtype == np.float32
    np.testing.assert_allclose(wide.sci, fused.sci, rtol=1e-6)


def test_dark_needs_an_exposure_time():
    d = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match="exptime"):
        calibrate_frame(d, readnoise=1.0, dark=d)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_merge_cosmics_equals_the_numpy_expressions(data):
    from crdask.pipeline.frame_task import merge_result, unusable
    shape = data.draw(SHAPE)
    sci = data.draw(arrays(np.float32, shape, elements=VALUES))
    clean = data.draw(arrays(np.float32, shape, elements=VALUES))
    crmask = data.draw(arrays(np.bool_, shape))
    mask = data.draw(arrays(np.uint8, shape))
    out, new, n = merge_result(sci, clean, crmask, mask)
    bad = unusable(mask)
    flagged = crmask & ~bad
    _same(out, np.where(bad, sci, clean).astype(np.float32))
    _same(new, mask | np.where(flagged, bits.COSMIC_RAY, 0).astype(np.uint8))
    assert n == int(flagged.sum())
    # the numpy fallback (another dtype) gives the same
    out2, new2, n2 = merge_result(sci, clean, crmask.astype(np.uint8), mask)
    _same(out2, out)
    _same(new2, new)
    assert n2 == n
