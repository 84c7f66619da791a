"""Spectroscopic flat normalisation by the lamp response along the dispersion."""

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from crdask.calib.response import calibrate_arc, normalise_response

NSP, NDISP = 160, 900            # spatial lines, dispersion pixels
SLIT = (20, 140)                 # illuminated spatial lines


def lamp_flat(seed=0):
    """Synthetic bias-subtracted lamp flat (e-), dispersion along x.

    Lamp x grating response rising smoothly from 1 (blue, x=0) to 20 (red),
    a slit-illumination profile (+-5 %), 1 % pixel-to-pixel sensitivity,
    0.2 % dead pixels (response 0.2), one bad column (0.3), Poisson + read
    noise. Returns (flat, truth response along x, pixel sensitivity, dead)."""
    rng = np.random.default_rng(seed)
    x = np.arange(NDISP) / (NDISP - 1)
    spec = 1500.0 * (1.0 + 19.0 * x ** 1.5) * (1 + 0.05 * np.sin(9 * x))   # 20x blue->red
    illum = np.zeros(NSP)
    s = np.arange(SLIT[0], SLIT[1])
    illum[s] = 1.0 + 0.05 * np.cos((s - s.mean()) / (s.size / 3.0))
    p2p = 1.0 + rng.normal(0, 0.01, (NSP, NDISP))
    dead = rng.random((NSP, NDISP)) < 0.002
    p2p[dead] = 0.2
    p2p[:, 613] *= 0.3
    expect = illum[:, None] * spec[None, :] * p2p
    flat = rng.poisson(expect) + rng.normal(0, 5.0, expect.shape)
    return flat.astype(np.float32), spec, p2p, dead


def test_normalised_flat_is_flat_along_the_spectrum():
    flat, spec, p2p, dead = lamp_flat()
    r = normalise_response(flat, dispaxis=1, fit="spline", order=20)
    inside = np.zeros(flat.shape, bool)
    inside[SLIT[0]:SLIT[1], :] = True
    assert (r.illuminated == inside[:, 0]).all()
    np.testing.assert_array_equal(r.valid, inside)
    blue = r.flat[inside[:, :NDISP // 2].any(1)][:, :NDISP // 2]
    red = r.flat[SLIT[0]:SLIT[1], NDISP // 2:]
    assert abs(np.median(blue) - 1) < 0.01 and abs(np.median(red) - 1) < 0.01
    # the fitted response follows the lamp shape (bad column rejected), so the
    # normalised flat is the pixel-to-pixel sensitivity times the slit profile
    med_illum = np.median(r.flat[SLIT[0]:SLIT[1]], axis=1)
    rel = r.response / spec
    assert np.ptp(rel) / rel.mean() < 0.02
    assert not r.fitted[613]
    # low-response bad pixels: < 1 %, and they are the dead pixels + bad column
    frac = r.bad[inside].mean()
    assert frac < 0.01
    assert r.bad[dead & inside].mean() > 0.99 and r.bad[SLIT[0]:SLIT[1], 613].all()
    # outside the slit: exactly 1, not bad
    assert (r.flat[~inside] == 1).all() and not r.bad[~inside].any()
    # the slit-illumination profile is kept (relative to its median line)
    s = np.arange(SLIT[0], SLIT[1])
    truth = 1.0 + 0.05 * np.cos((s - s.mean()) / (s.size / 3.0))
    np.testing.assert_allclose(med_illum, truth / np.median(truth), atol=0.008)
    assert np.ptp(med_illum) > 0.03           # truth: 0.047

    # contrast: the imaging normalisation (one median) flags the faint blue end
    imaging = flat / np.median(flat[inside])
    imaging_bad = (imaging < 0.5)[inside].mean()
    assert imaging_bad > 0.25, imaging_bad
    print(f"low-response bad-pixel fraction: response {frac:.4f}, imaging {imaging_bad:.3f}")


def test_dispaxis_2_is_the_transpose():
    flat = lamp_flat(1)[0]
    r1 = normalise_response(flat, dispaxis=1, fit="chebyshev", order=9)
    r2 = normalise_response(flat.T.copy(), dispaxis=2, fit="chebyshev", order=9)
    np.testing.assert_array_equal(r2.flat, r1.flat.T)
    np.testing.assert_array_equal(r2.bad, r1.bad.T)
    np.testing.assert_array_equal(r2.response, r1.response)


def test_threshold_and_explicit_slit():
    flat = lamp_flat(2)[0]
    flat[:, :50] = 0.0                       # blue end dark: response below threshold
    r = normalise_response(flat, slit=(30, 100), threshold=200.0, order=15)
    assert not r.valid[:, :45].any() and (r.flat[:, :45] == 1).all()
    assert r.valid[30:100, 60:].all() and not r.valid[:30].any() and not r.valid[100:].any()


@settings(max_examples=12, deadline=None)
@given(cy=st.integers(5, NSP), cx=st.integers(7, NDISP), dispaxis=st.sampled_from([1, 2]),
       fit=st.sampled_from(["spline", "chebyshev", "polynomial"]),
       threshold=st.sampled_from([None, 2500.0]))
def test_dask_equals_numpy(cy, cx, dispaxis, fit, threshold):
    flat = lamp_flat(3)[0]
    if dispaxis == 2:
        flat = flat.T.copy()
        cy, cx = cx, cy
    kw = dict(dispaxis=dispaxis, fit=fit, order=7 if fit != "spline" else 12,
              threshold=threshold)
    ref = normalise_response(flat, **kw)
    lazy = normalise_response(da.from_array(flat, chunks=(cy, cx)), **kw)
    assert isinstance(lazy.flat, da.Array)
    for name in ("flat", "valid", "bad", "response", "spectrum", "illuminated", "fitted"):
        np.testing.assert_array_equal(np.asarray(getattr(lazy, name).compute()),
                                      getattr(ref, name), err_msg=name)


def test_bad_parameters():
    flat = lamp_flat(4)[0]
    with pytest.raises(ValueError, match="dispaxis must be 1"):
        normalise_response(flat, dispaxis=0)
    with pytest.raises(ValueError, match="fit must be one of"):
        normalise_response(flat, fit="legendre9")
    with pytest.raises(ValueError, match="slit"):
        normalise_response(flat, slit=(100, 500))
    with pytest.raises(ValueError, match="no spatial line has a positive level"):
        normalise_response(np.zeros((10, 30)), order=2)


def test_calibrate_arc_is_not_flat_fielded():
    arc = np.full((5, 6), 1000.0, np.float32)
    out = calibrate_arc(arc, readnoise=4.0, bias=np.full((5, 6), 10.0, np.float32))
    assert (out.sci == 990.0).all() and (out.var == 16.0 + 990.0).all()
    assert not out.mask.any()
