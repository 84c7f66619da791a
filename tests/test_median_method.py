"""cosmicray_median: parity with ccdproc 2.5, chunking independence, CCDData,
bad pixels and parameter errors."""

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared_data import read_real
from crdask.cosmic.median_method import cosmicray_median, frame_std, overlap_depth

import ccdproc  # noqa: E402  (test extra)



def synthetic(seed=7, shape=(256, 240)):
    """Sky + noise + 300 hot pixels + 40 short tracks, float32."""
    rng = np.random.default_rng(seed)
    ny, nx = shape
    img = rng.normal(200.0, 8.0, shape).astype(np.float32)
    yy, xx = np.mgrid[:ny, :nx]
    img += (400 * np.exp(-((yy - 100) ** 2 + (xx - 120) ** 2) / 50.0)).astype(np.float32)
    hot = rng.integers(0, img.size, 300)
    img.flat[hot] += rng.uniform(60, 3000, hot.size).astype(np.float32)
    for _ in range(40):
        y, x = rng.integers(5, ny - 5), rng.integers(5, nx - 5)
        dy, dx = rng.integers(-1, 2, 2)
        for k in range(int(rng.integers(2, 8))):
            j, i = y + k * dy, x + k * dx
            if 0 <= j < ny and 0 <= i < nx:
                img[j, i] += np.float32(rng.uniform(100, 1500))
    return img


@pytest.fixture(scope="module")
def m51():
    return read_real("m51")


def _assert_parity(data, **kw):
    clean, crmask = cosmicray_median(data, **kw)
    ref_clean, ref_mask = ccdproc.cosmicray_median(data, **kw)
    assert clean.dtype == np.float32 and crmask.dtype == bool
    assert crmask.shape == clean.shape == data.shape
    # Observed: identical masks and identical cleaned values (float32 throughout).
    assert np.array_equal(crmask, ref_mask), \
        f"{int((crmask != ref_mask).sum())} mask pixels differ of {int(ref_mask.sum())}"
    np.testing.assert_array_equal(clean, ref_clean)
    return crmask


PARAMS = [dict(), dict(gbox=2), dict(rbox=5), dict(gbox=2, rbox=5),
          dict(thresh=3.5, mbox=7, gbox=3, rbox=4)]


@pytest.mark.parametrize("kw", PARAMS)
@pytest.mark.parametrize("with_error", [False, True])
def test_parity_synthetic(kw, with_error):
    img = synthetic()
    err = np.sqrt(img).astype(np.float32) if with_error else None
    crmask = _assert_parity(img, error_image=err, **kw)
    assert crmask.sum() > 200


@pytest.mark.parametrize("gbox", [0, 2])
@pytest.mark.parametrize("rbox", [0, 5])
@pytest.mark.parametrize("with_error", [False, True])
def test_parity_m51(m51, gbox, rbox, with_error):
    # Poisson-like error (the frame is in ADU, flat-fielded, sky ~ 100s).
    err = np.sqrt(np.clip(m51, 1, None)).astype(np.float32) if with_error else None
    crmask = _assert_parity(m51, error_image=err, gbox=gbox, rbox=rbox)
    assert crmask.any()


def test_parity_scalar_error(m51):
    _assert_parity(m51, error_image=20.0, thresh=4, gbox=3, rbox=3)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # ccdproc: 0 / 0
def test_tiny_frames_match_scipy_reflection():
    # Frames smaller than the boxes: the mirror is applied repeatedly.
    rng = np.random.default_rng(3)
    for ny, nx, mbox, gbox, rbox in [(1, 1, 3, 0, 0), (2, 5, 11, 4, 7), (4, 3, 7, 5, 10),
                                     (6, 1, 15, 2, 6)]:
        x = rng.normal(0, 1, (ny, nx)).astype(np.float32)
        x.flat[0] += 30
        _assert_parity(x, thresh=1.0, mbox=mbox, gbox=gbox, rbox=rbox)


# ---------------------------------------------------------------------------
# Dask: lazy, and chunked == whole frame, bit for bit.
# ---------------------------------------------------------------------------

def _chunks(draw, n):
    cuts = draw(st.lists(st.integers(1, n - 1), unique=True, max_size=5))
    edges = [0] + sorted(cuts) + [n]
    return tuple(b - a for a, b in zip(edges[:-1], edges[1:]))


@st.composite
def chunkings(draw, shape):
    return tuple(_chunks(draw, n) for n in shape)


FRAME = synthetic(seed=11, shape=(61, 70))
FRAME_NAN = FRAME.copy()
FRAME_NAN[10:14, 20:40] = np.nan
FRAME_NAN[40, 3] = np.inf
FRAME_NAN[:, 66] = np.nan


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=chunkings(FRAME.shape), mbox=st.sampled_from([3, 5, 7]),
       gbox=st.integers(0, 4), rbox=st.integers(0, 6), with_nan=st.booleans(),
       error=st.sampled_from(["none", "array", "scalar"]))
def test_dask_chunked_equals_numpy(chunks, mbox, gbox, rbox, with_nan, error):
    img = FRAME_NAN if with_nan else FRAME
    err = {"none": None, "scalar": 9.0,
           "array": np.sqrt(np.abs(FRAME)).astype(np.float32)}[error]
    kw = dict(thresh=4, mbox=mbox, gbox=gbox, rbox=rbox)
    clean, crmask = cosmicray_median(img, error_image=err, **kw)
    derr = da.from_array(err, chunks=chunks) if isinstance(err, np.ndarray) else err
    lclean, lmask = cosmicray_median(da.from_array(img, chunks=chunks), error_image=derr, **kw)
    assert isinstance(lclean, da.Array) and isinstance(lmask, da.Array)
    assert lclean.dtype == np.float32 and lmask.dtype == bool
    lclean, lmask = da.compute(lclean, lmask)
    assert np.array_equal(lmask, crmask)
    assert np.array_equal(lclean, clean, equal_nan=True)


def test_frame_std_is_chunking_independent():
    img = synthetic(seed=5, shape=(97, 83)) * np.float32(1e3)
    ref = frame_std(img)
    assert ref == np.float32(np.std(img.astype(np.float64)))
    for chunks in [(10, 7), (97, 1), (1, 83), (50, 40)]:
        assert frame_std(da.from_array(img, chunks=chunks)).compute() == ref


def test_overlap_depth():
    assert overlap_depth(11, 0, 0) == 5
    assert overlap_depth(11, 2, 5) == 6
    assert overlap_depth(3, 0, 9) == 4


# ---------------------------------------------------------------------------
# Bad pixels.
# ---------------------------------------------------------------------------

def test_nan_pixels_not_flagged_and_unchanged():
    rng = np.random.default_rng(1)
    img = rng.normal(100, 3, (80, 90)).astype(np.float32)
    img[20:45, 30:60] = np.nan
    img[70, :] = np.inf
    clean, crmask = cosmicray_median(img, rbox=5, gbox=3)
    bad = ~np.isfinite(img)
    assert not crmask[bad].any()
    assert np.array_equal(clean[bad], img[bad], equal_nan=True)
    # noise only: a bad region must not fake CRs around it
    assert not crmask.any()
    img[60, 10] += 1000
    clean, crmask = cosmicray_median(img, rbox=5, gbox=3)
    assert crmask[60, 10] and crmask.sum() == 9
    assert abs(clean[60, 10] - 100) < 10


def test_masked_array_mask_is_bad():
    img = synthetic(seed=2, shape=(64, 64))
    mask = np.zeros(img.shape, bool)
    hot = np.argwhere(cosmicray_median(img)[1])[:3]
    mask[tuple(hot.T)] = True
    clean, crmask = cosmicray_median(np.ma.masked_array(img, mask), rbox=3)
    assert not crmask[mask].any()
    assert np.array_equal(clean[mask], img[mask])
    assert isinstance(clean, np.ndarray) and not isinstance(clean, np.ma.MaskedArray)


def test_zero_or_nan_error_pixels_not_flagged():
    img = synthetic(seed=4, shape=(64, 64))
    err = np.full(img.shape, 5, np.float32)
    _, crmask = cosmicray_median(img, error_image=err)
    hot = np.argwhere(crmask)[:2]
    err[tuple(hot[0])] = 0
    err[tuple(hot[1])] = np.nan
    _, crmask2 = cosmicray_median(img, error_image=err)
    assert not crmask2[tuple(hot[0])] and not crmask2[tuple(hot[1])]
    assert crmask2.sum() == crmask.sum() - 2


# ---------------------------------------------------------------------------
# CCDData.
# ---------------------------------------------------------------------------

def test_ccddata_round_trip():
    from astropy import units as u
    from astropy.nddata import CCDData, StdDevUncertainty, VarianceUncertainty

    img = synthetic(seed=9, shape=(70, 66))
    sigma = np.sqrt(img).astype(np.float32)
    old_mask = np.zeros(img.shape, bool)
    old_mask[0, :5] = True
    ccd = CCDData(img, unit=u.electron, mask=old_mask, meta={"OBJECT": "x"},
                  uncertainty=StdDevUncertainty(sigma))
    out = cosmicray_median(ccd, thresh=5, gbox=2, rbox=5)
    clean, crmask = cosmicray_median(np.ma.masked_array(img, old_mask), error_image=sigma,
                                     thresh=5, gbox=2, rbox=5)
    assert isinstance(out, CCDData) and out.unit == u.electron
    assert out.meta["OBJECT"] == "x"
    assert np.array_equal(out.data, clean) and out.data.dtype == np.float32
    assert np.array_equal(out.mask, crmask | old_mask) and crmask.any()
    assert np.array_equal(ccd.data, img) and np.array_equal(ccd.mask, old_mask)  # input kept
    # without a mask: same as ccdproc
    ccd2 = CCDData(img, unit=u.electron, uncertainty=StdDevUncertainty(sigma))
    ref = ccdproc.cosmicray_median(ccd2, thresh=5, gbox=2, rbox=5)
    out2 = cosmicray_median(ccd2, thresh=5, gbox=2, rbox=5)
    assert np.array_equal(out2.mask, ref.mask) and np.array_equal(out2.data, ref.data)
    # variance uncertainty is converted to sigma; no uncertainty -> frame std
    out3 = cosmicray_median(CCDData(img, unit="adu", uncertainty=VarianceUncertainty(sigma ** 2)))
    assert np.array_equal(out3.mask, cosmicray_median(img, error_image=sigma)[1])
    out4 = cosmicray_median(CCDData(img, unit="adu"))
    assert np.array_equal(out4.mask, cosmicray_median(img)[1])


# ---------------------------------------------------------------------------
# Errors.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kw, exc, match", [
    (dict(thresh=0), ValueError, "thresh"),
    (dict(thresh=-1), ValueError, "thresh"),
    (dict(thresh=np.nan), ValueError, "thresh"),
    (dict(thresh="5"), TypeError, "thresh"),
    (dict(mbox=4), ValueError, "mbox"),
    (dict(mbox=1), ValueError, "mbox"),
    (dict(mbox=5.5), ValueError, "mbox"),
    (dict(gbox=-1), ValueError, "gbox"),
    (dict(gbox=1.5), ValueError, "gbox"),
    (dict(rbox=-2), ValueError, "rbox"),
    (dict(error_image=np.ones((3, 3))), ValueError, "error_image"),
    (dict(error_image=0.0), ValueError, "error_image"),
    (dict(error_image=-1), ValueError, "error_image"),
])
def test_bad_parameters(kw, exc, match):
    with pytest.raises(exc, match=match):
        cosmicray_median(np.ones((10, 12), np.float32), **kw)


@pytest.mark.parametrize("data", [np.ones(10), np.ones((2, 3, 4)), np.ones((0, 5)),
                                  np.array([["a", "b"]])])
def test_bad_data(data):
    with pytest.raises((ValueError, TypeError), match="ccd"):
        cosmicray_median(data)
