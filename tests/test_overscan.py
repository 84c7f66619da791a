"""Overscan model, subtraction and trim: ccdproc parity, Dask == numpy, real data."""

import warnings

import dask.array as da
import numpy as np
import pytest

from crdask.calib.overscan import as_slices, overscan_model, subtract_overscan, trim
from crdask.io import sections


def S(text):
    """FITS section text -> Section (parsed in the io layer, as the pipeline does)."""
    return sections.parse_section(text)

import ccdproc  # noqa: E402  (test extra)
from astropy.modeling import models  # noqa: E402
from astropy.nddata import CCDData  # noqa: E402

NY, NX = 200, 130
OSCAN = slice(104, 128)          # 24 overscan columns, like a BIASSEC [105:128,*]


def raw_frame(seed=0, dtype=np.uint16, ny=NY, nx=NX):
    """Synthetic raw frame in ADU: a smooth bias drift along y (readout
    direction) plus row-to-row jitter, read noise, a sky in the image area."""
    rng = np.random.default_rng(seed)
    y = np.arange(ny)[:, None]
    bias = 1000.0 + 8.0 * np.sin(y / ny * 3.0) + 0.002 * y ** 2 / ny
    bias = bias + rng.normal(0, 0.7, (ny, 1))               # row jitter
    img = bias + rng.normal(0, 4.0, (ny, nx))
    img[:, :100] += 350.0                                    # "sky"
    return np.round(img).astype(dtype), bias[:, 0]


def as_ccd(a):
    return CCDData(a.astype(np.float64), unit="adu")


# ---------------------------------------------------------------------------
# ccdproc parity
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("median,statistic", [(True, "median"), (False, "mean")])
def test_parity_ccdproc_columns(median, statistic):
    raw, _ = raw_frame()
    ccd = as_ccd(raw)
    ref = ccdproc.subtract_overscan(ccd, overscan=ccd[:, OSCAN], overscan_axis=1,
                                    median=median)
    ours = subtract_overscan(raw, (slice(None), OSCAN), axis=1, statistic=statistic)
    assert ours.dtype == np.float32 and ours.shape == raw.shape
    np.testing.assert_allclose(ours, ref.data.astype(np.float32), rtol=0, atol=2e-4)


@pytest.mark.parametrize("median,statistic", [(True, "median"), (False, "mean")])
def test_parity_ccdproc_rows_and_guess(median, statistic):
    """A strip of rows (per-column model) and ccdproc's shape-based axis guess."""
    raw = raw_frame()[0].T.copy()                # (130, 200): strip of rows
    ccd = as_ccd(raw)
    ref = ccdproc.subtract_overscan(ccd, overscan=ccd[OSCAN, :], overscan_axis=None,
                                    median=median)
    ours = subtract_overscan(raw, (OSCAN, slice(None)), statistic=statistic)
    np.testing.assert_allclose(ours, ref.data.astype(np.float32), rtol=0, atol=2e-4)
    model = overscan_model(raw, (OSCAN, slice(None)), statistic=statistic)
    assert model.shape == (raw.shape[1],)


def test_parity_ccdproc_fits_section_string():
    raw, _ = raw_frame()
    ccd = as_ccd(raw)
    ref = ccdproc.subtract_overscan(ccd, fits_section="[105:128,1:200]", overscan_axis=None,
                                    median=True)
    ours = subtract_overscan(raw, S("[105:128,1:200]"))
    np.testing.assert_allclose(ours, ref.data.astype(np.float32), rtol=0, atol=2e-4)


@pytest.mark.parametrize("median,statistic", [(True, "median"), (False, "mean")])
def test_parity_ccdproc_polynomial_model(median, statistic):
    """fit='polynomial', fit_iters=0 is ccdproc's model=Polynomial1D(order)."""
    raw, _ = raw_frame(seed=3)
    ccd = as_ccd(raw)
    ref = ccdproc.subtract_overscan(ccd, overscan=ccd[:, OSCAN], overscan_axis=1,
                                    median=median, model=models.Polynomial1D(2))
    ours = subtract_overscan(raw, (slice(None), OSCAN), axis=1, statistic=statistic,
                             fit="polynomial", order=2, fit_iters=0)
    np.testing.assert_allclose(ours, ref.data.astype(np.float32), rtol=0, atol=2e-4)
    # Chebyshev of the same degree spans the same functions: same fit.
    cheb = subtract_overscan(raw, (slice(None), OSCAN), axis=1, statistic=statistic,
                             fit="chebyshev", order=2, fit_iters=0)
    np.testing.assert_allclose(cheb, ours, rtol=0, atol=2e-4)


def test_parity_ccdproc_trim():
    raw, _ = raw_frame()
    ccd = as_ccd(raw)
    ref = ccdproc.trim_image(ccd[10:190, 5:100])
    for section in [(slice(10, 190), slice(5, 100)), S("[6:100,11:190]")]:
        ours = trim(raw.astype(np.float32), section)
        np.testing.assert_array_equal(ours, ref.data.astype(np.float32))
    ref2 = ccdproc.trim_image(ccd, fits_section="[6:100,11:190]")
    np.testing.assert_array_equal(trim(raw, S("[6:100,11:190]")), ref2.data)


def test_trim_copy_dask_and_reversed_section():
    raw, _ = raw_frame()
    t = trim(raw, (slice(0, 10), slice(0, 5)))
    t[...] = 0
    assert raw[:10, :5].any(), "trim of a numpy frame must not be a view of the raw"
    lazy = trim(da.from_array(raw, chunks=64), S("[6:100,11:190]"))
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), raw[10:190, 5:100])
    rev = trim(raw, S("[100:6,11:190]"))           # columns read backwards
    np.testing.assert_array_equal(rev, raw[10:190, 5:100][:, ::-1])


def test_section_object_accepted():
    raw, _ = raw_frame()
    sec = sections.parse_section("[105:128,*]", shape=raw.shape)
    a = subtract_overscan(raw, sec)
    b = subtract_overscan(raw, (slice(None), OSCAN))
    np.testing.assert_array_equal(a, b)
    assert as_slices(sec, raw.shape) == (slice(0, NY), OSCAN)


# ---------------------------------------------------------------------------
# statistics and fits
# ---------------------------------------------------------------------------

def test_clipped_mean_matches_astropy_sigma_clip():
    from astropy.stats import sigma_clipped_stats
    raw, _ = raw_frame(seed=5, dtype=np.float32)
    raw[::7, 110] += 500.0                      # CR hits in the strip
    ours = overscan_model(raw, (slice(None), OSCAN), statistic="clipped_mean",
                          clip_sigma=3.0, clip_iters=5)
    ref = sigma_clipped_stats(raw[:, OSCAN].astype(np.float64), axis=1, sigma=3.0,
                              maxiters=5)[0]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)


def test_fit_rejects_outlying_rows():
    """ccdproc's model fit has no rejection (ccdproc issue #722): a few hot
    rows in the strip drag it. Ours rejects them and recovers the true bias."""
    rng = np.random.default_rng(11)
    ny = 400
    y = np.arange(ny)
    true = 500.0 + 3.0 * (y / ny) - 4.0 * (y / ny) ** 2
    frame = true[:, None] + rng.normal(0, 3.0, (ny, 60))
    frame[[40, 41, 200, 350], 40:] += 80.0      # hot rows in the overscan
    region = (slice(None), slice(40, 60))
    ours = overscan_model(frame, region, statistic="mean", fit="polynomial", order=2)
    plain = overscan_model(frame, region, statistic="mean", fit="polynomial", order=2,
                           fit_iters=0)
    ref = ccdproc.subtract_overscan(as_ccd(frame), overscan=as_ccd(frame)[:, 40:60],
                                    overscan_axis=1, median=False,
                                    model=models.Polynomial1D(2))
    ref_model = frame[:, 0] - ref.data[:, 0]
    np.testing.assert_allclose(plain, ref_model, atol=1e-6)
    assert np.abs(ours - true).max() < 0.3
    assert np.abs(plain - true).max() > 0.6     # pulled up by the hot rows


@pytest.mark.parametrize("fit,order", [("spline", 6), ("chebyshev", 7)])
def test_fit_follows_smooth_bias(fit, order):
    raw, _ = raw_frame(seed=2)
    smooth = 1000.0 + 8.0 * np.sin(np.arange(NY) / NY * 3.0)
    model = overscan_model(raw, (slice(None), OSCAN), fit=fit, order=order,
                           statistic="mean")
    # per-row noise of a 24-column mean is ~0.8 ADU (0.7 jitter + 4/sqrt(24));
    # the fit follows the smooth drift to a fraction of that.
    assert np.std(model - smooth) < 0.35


def test_partial_region_needs_fit_and_extrapolates():
    rng = np.random.default_rng(4)
    y = np.arange(300)
    frame = (200.0 + 0.05 * y)[:, None] + rng.normal(0, 1.0, (300, 50))
    region = (slice(20, 280), slice(30, 50))
    with pytest.raises(ValueError, match="without a fit"):
        overscan_model(frame, region)
    model = overscan_model(frame, region, fit="polynomial", order=1, statistic="mean")
    assert model.shape == (300,)
    np.testing.assert_allclose(model, 200.0 + 0.05 * y, atol=0.1)


def test_nan_pixels_ignored():
    raw, _ = raw_frame(dtype=np.float32)
    with_nan = raw.copy()
    with_nan[5, 110] = np.nan
    with_nan[9, OSCAN] = np.nan                     # a whole strip row
    for stat in ("median", "mean", "clipped_mean"):
        m = overscan_model(with_nan, (slice(None), OSCAN), statistic=stat)
        assert np.isfinite(m[5]) and np.isnan(m[9])
        f = overscan_model(with_nan, (slice(None), OSCAN), statistic=stat, fit="spline",
                           order=4)
        assert np.isfinite(f).all()


@pytest.mark.parametrize("kwargs,match", [
    (dict(statistic="mode"), "statistic must be one of median, mean, clipped_mean"),
    (dict(fit="legendre"), "fit must be None or one of polynomial, chebyshev, spline"),
    (dict(fit="spline", order=0), "order must be an integer >= 1"),
    (dict(fit="polynomial", order=2.5), "order must be an integer"),
    (dict(axis=2), "axis must be None, 0 or 1"),
    (dict(fit="polynomial", fit_sigma=-1), "fit_sigma must be a positive number"),
])
def test_bad_parameters(kwargs, match):
    raw, _ = raw_frame()
    with pytest.raises(ValueError, match=match):
        subtract_overscan(raw, (slice(None), OSCAN), **kwargs)


def test_bad_regions():
    raw, _ = raw_frame()
    with pytest.raises(ValueError, match="outside"):
        overscan_model(raw, (slice(None), slice(120, 140)))
    with pytest.raises(ValueError, match="step must be 1"):
        overscan_model(raw, (slice(None), slice(104, 128, 2)))
    with pytest.raises(TypeError, match="expected a Section"):
        overscan_model(raw, [104, 128])
    with pytest.raises(ValueError, match="overscan region"):
        overscan_model(raw, S("[105:140,1:200]"))      # past NAXIS1 = 130
    with pytest.raises(ValueError, match="2-D"):
        overscan_model(raw[0], (slice(None), OSCAN))


# ---------------------------------------------------------------------------
# Dask: chunked == numpy, bit for bit
# ---------------------------------------------------------------------------

DASK_CASES = [
    dict(),
    dict(statistic="mean"),
    dict(statistic="clipped_mean"),
    dict(fit="polynomial", order=2),
    dict(fit="chebyshev", order=4, statistic="clipped_mean"),
    dict(fit="spline", order=5, statistic="mean"),
]


@pytest.mark.parametrize("kwargs", DASK_CASES)
@pytest.mark.parametrize("chunks", [(37, 41), (200, 130), (64, 13), (1, 130)])
def test_dask_equals_numpy(kwargs, chunks):
    raw, _ = raw_frame(seed=7, dtype=np.float32)
    raw[3, 110] = np.nan
    draw = da.from_array(raw, chunks=chunks)
    for region in [(slice(None), OSCAN), (slice(180, 200), slice(None))]:
        ref = subtract_overscan(raw, region, **kwargs)
        out = subtract_overscan(draw, region, **kwargs)
        assert isinstance(out, da.Array) and out.chunks == draw.chunks
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out.compute(), ref)
        m = overscan_model(draw, region, **kwargs)
        np.testing.assert_array_equal(m.compute(), overscan_model(raw, region, **kwargs))


def test_dask_graph_has_no_delayed_and_partial_region():
    raw, _ = raw_frame(seed=8)
    draw = da.from_array(raw, chunks=(50, 40))
    region = (slice(10, 190), OSCAN)
    out = subtract_overscan(draw, region, fit="chebyshev", order=3)
    keys = [str(k) for k in dict(out.__dask_graph__())]
    assert not any("delayed" in k or "finalize" in k for k in keys)
    np.testing.assert_array_equal(
        out.compute(), subtract_overscan(raw, region, fit="chebyshev", order=3))


# ---------------------------------------------------------------------------
# real data
# ---------------------------------------------------------------------------

WHT_PRESCAN = sections.parse_section("[5:45,1:226]")        # inside the prescan columns 1-50, edges avoided
WHT_DATASEC = sections.parse_section("[51:1074,1:226]")     # CCDXIMST = 51, CCDXIMSI = 1024


def _row_profile(img):
    from astropy.stats import sigma_clipped_stats
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sigma_clipped_stats(img.astype(np.float64), axis=1)[0]


def test_real_wht_dark_prescan(real_frames):
    """WHT ISIS TEK5 1800 s dark (``wht070.fits``, 226 x 1124, binned x3 in y).

    The bias is taken from prescan columns 5-45 (of 1-50) and the frame is
    trimmed to the useful area [51:1074, 1:226]. (Columns ~1077-1124 are a
    second, overscan strip at ~441.7 ADU, 1.4 ADU below the prescan; not used.)

    What the data show (measured when this test was written):

    * bias level 443.1 ADU in the prescan; the useful area's median drops
      from 447.7 ADU to 4.5-4.6 ADU after correction (dark current plus a
      small prescan-to-image offset, about 5 e- in 1800 s at GAIN 1.1),
      whatever the statistic or fit;
    * the frame has almost no row-to-row bias structure except row 0, which
      the prescan reads 11 ADU low but the image area only 3.4 ADU low;
    * a per-row median of 41 prescan pixels (read noise 3.6 e- = 3.3 ADU) has
      ~0.6 ADU rms noise of its own, which it adds to every row; a Chebyshev
      fit (order 3, 3-sigma rejection) removes the bias level and its slow
      drift, rejects row 0 and leaves the row profile as flat as the raw
      image's own (0.17 ADU rms).
    """
    raw = real_frames["wht"]
    assert raw.shape == (226, 1124)
    raw_profile = _row_profile(trim(raw, WHT_DATASEC))

    for kwargs in [dict(), dict(statistic="clipped_mean"),
                   dict(fit="chebyshev", order=3)]:
        corrected = trim(subtract_overscan(raw, WHT_PRESCAN, **kwargs), WHT_DATASEC)
        assert corrected.shape == (226, 1024) and corrected.dtype == np.float32
        assert 2.0 < np.median(corrected) < 7.0            # was 447.7 ADU

    fitted = trim(subtract_overscan(raw, WHT_PRESCAN, fit="chebyshev", order=3),
                  WHT_DATASEC)
    prof = _row_profile(fitted)[1:]
    assert np.std(prof) < 0.25                               # flat row profile
    assert np.std(prof) <= np.std(raw_profile[1:]) + 0.02    # adds no noise
    slope = np.polyfit(np.arange(prof.size), prof, 1)[0] * prof.size
    assert abs(slope) < 0.5                                  # no residual drift, ADU

    model = overscan_model(raw, WHT_PRESCAN, fit="chebyshev", order=3)
    per_row = overscan_model(raw, WHT_PRESCAN)
    assert abs(model[0] - np.median(model)) < 1.0            # row 0 rejected
    assert per_row[0] < np.median(per_row) - 8.0             # raw prescan row 0 low
    per_row_prof = _row_profile(trim(subtract_overscan(raw, WHT_PRESCAN),
                                     WHT_DATASEC))[1:]
    assert 0.3 < np.std(per_row_prof) < 1.0                  # prescan noise added

    # chunked Dask == numpy on the real frame
    lazy = subtract_overscan(da.from_array(raw, chunks=(100, 300)), WHT_PRESCAN,
                             fit="chebyshev", order=3)
    np.testing.assert_array_equal(trim(lazy, WHT_DATASEC).compute(), fitted)
