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


# ---------------------------------------------------- raw ADU -> e- in one pass

def _electrons_reference(block, level, along, offset, gain):
    """The numpy steps the kernel replaces, one rounding each."""
    from crdask.kernels.calibrate import COLUMNS, NO_LEVEL, ROWS
    if along == NO_LEVEL:
        x = block.astype(np.float32)
    else:
        b = {ROWS: level[:, None], COLUMNS: level[None, :]}.get(along, np.float64(level[0]))
        x = (block.astype(np.float64) - b).astype(np.float32)
    return ((x - np.float32(offset)) * np.float32(gain)).astype(np.float32)


@st.composite
def raw_blocks(draw):
    from crdask.kernels.calibrate import COLUMNS, NO_LEVEL, ROWS, SCALAR
    shape = draw(SHAPE)
    dtype = draw(st.sampled_from([np.float32, np.int16, np.uint16, np.float64]))
    along = draw(st.sampled_from([ROWS, COLUMNS, SCALAR, NO_LEVEL]))
    if along == NO_LEVEL:
        dtype = np.float32      # (the only input the pipeline gives it)
    if np.dtype(dtype).kind == "f":
        elements = VALUES if dtype == np.float32 else st.floats(-1e6, 1e6)
    else:
        info = np.iinfo(dtype)
        elements = st.integers(int(info.min), int(info.max))
    block = draw(arrays(dtype, shape, elements=elements))
    n = {ROWS: shape[0], COLUMNS: shape[1]}.get(along, 1)
    level = draw(arrays(np.float64, n, elements=st.floats(-1e3, 7e4)
                        | st.sampled_from([np.nan, 0.0, 1e-9])))
    offset = draw(st.sampled_from([0.0]) | st.floats(-500, 500, width=32))
    gain = draw(st.sampled_from([1.0]) | st.floats(0.0625, 20, width=32))
    return block, level, along, offset, gain


@settings(max_examples=300, deadline=None)
@given(raw_blocks())
def test_adu_to_electrons_is_bit_identical_to_numpy(case):
    from crdask.kernels.calibrate import adu_to_electrons
    block, level, along, offset, gain = case
    out = adu_to_electrons(block, level, along, np.float32(offset), np.float32(gain))
    _same(out, _electrons_reference(block, level, along, offset, gain))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(0, 1), st.floats(-50, 50, width=32),
       st.floats(0.125, 5, width=32), st.integers(0, 2**31 - 1))
def test_subtract_overscan_with_level_and_gain_chunked_equals_whole(rows, axis, level, gain,
                                                                     seed):
    """Overscan, level and gain in the one pass: Dask, any chunking, gives
    the numpy result, and both equal the three steps done one by one."""
    from crdask.calib.overscan import overscan_model, subtract_overscan
    rng = np.random.default_rng(seed)
    raw = rng.normal(1000, 30, (23, 17)).astype(np.float32)
    region = (slice(None), slice(14, 17)) if axis == 1 else (slice(20, 23), slice(None))
    whole = subtract_overscan(raw, region, axis=axis, level=level, gain=gain)
    lazy = subtract_overscan(da.from_array(raw, chunks=(rows, 5)), region, axis=axis,
                             level=level, gain=gain)
    _same(lazy.compute(scheduler="sync"), whole)
    model = overscan_model(raw, region, axis=axis)
    steps = (raw.astype(np.float64) - (model[:, None] if axis == 1 else model[None, :]))
    steps = (steps.astype(np.float32) - np.float32(level)) * np.float32(gain)
    _same(whole, steps.astype(np.float32))
