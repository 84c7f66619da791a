"""Tests for crdask.simulate: synthetic frames with a known CR truth."""

import math

import numpy as np
import pytest

from crdask.simulate import SimulatedFrame, label_components, score, simulate_frame

from scipy import ndimage  # noqa: E402  (test extra)

EIGHT = np.ones((3, 3), dtype=bool)


@pytest.fixture(scope="module")
def frame():
    return simulate_frame((512, 512), seed=3)


def _components(mask):
    lab, n = ndimage.label(mask, structure=EIGHT)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    extents = [max(s[0].stop - s[0].start, s[1].stop - s[1].start)
               for s in ndimage.find_objects(lab)]
    return lab, n, sizes, np.array(extents)


# -- determinism ----------------------------------------------------------


def test_same_seed_same_frame():
    a = simulate_frame((128, 160), seed=11)
    b = simulate_frame((128, 160), seed=11)
    for name in ("data", "clean", "crmask", "saturated", "crcharge"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.header == b.header


def test_other_seed_other_frame():
    a = simulate_frame((128, 160), seed=11)
    b = simulate_frame((128, 160), seed=12)
    assert not np.array_equal(a.data, b.data)
    assert not np.array_equal(a.crmask, b.crmask)
    assert b.header["SEED"] == 12


def test_cosmics_do_not_change_clean_frame():
    # Independent random streams: the CR-free frame is the same realisation
    # whatever the number of CRs.
    a = simulate_frame((128, 128), seed=5, n_cosmics=0)
    b = simulate_frame((128, 128), seed=5, n_cosmics=60)
    np.testing.assert_array_equal(a.clean, b.clean)
    np.testing.assert_array_equal(a.data, a.clean)
    assert not a.crmask.any()
    assert b.crmask.any()


def test_seed_none_is_recorded_and_reproducible():
    a = simulate_frame((64, 64), seed=None)
    b = simulate_frame((64, 64), seed=a.header["SEED"])
    np.testing.assert_array_equal(a.data, b.data)


# -- types, shapes, header ------------------------------------------------


def test_dtypes_and_shapes():
    f = simulate_frame((96, 200), seed=1)     # non-square: catches (x, y) mix-ups
    assert isinstance(f, SimulatedFrame)
    for arr in (f.data, f.clean):
        assert arr.dtype == np.float32 and arr.shape == (96, 200)
    for arr in (f.crmask, f.saturated):
        assert arr.dtype == bool and arr.shape == (96, 200)
    assert f.crcharge.shape == (96, 200)
    g = simulate_frame((96, 200), seed=1, dtype=np.float64)
    assert g.data.dtype == np.float64
    np.testing.assert_array_equal(g.crmask, f.crmask)
    np.testing.assert_allclose(g.data, f.data, rtol=1e-6)


def test_header_and_default_counts():
    f = simulate_frame((256, 384), seed=2, gain=1.7, readnoise=4.0)
    h = f.header
    area = 256 * 384 / 512 ** 2
    assert h["NCR"] == round(150 * area)
    assert h["NSTARS"] == round(200 * area)
    assert h["NCRSING"] + h["NCRBLOB"] + h["NCRTRACK"] == h["NCR"]
    assert min(h["NCRSING"], h["NCRBLOB"], h["NCRTRACK"]) > 0
    assert 0 < h["NCRVIS"] <= h["NCR"]
    assert h["NCRPIX"] == f.crmask.sum()
    assert (h["GAIN"], h["RDNOISE"], h["SATURATE"]) == (1.7, 4.0, 60000.0)
    assert (f.gain, f.readnoise, f.satlevel) == (1.7, 4.0, 60000.0)
    assert h["EXPTIME"] > 0
    assert all(len(k) <= 8 and k == k.upper() for k in h)


@pytest.mark.parametrize("kwargs", [dict(gain=0.0), dict(readnoise=-1.0),
                                    dict(sky=70000.0), dict(bias=59950.0, sky=100.0),
                                    dict(n_cosmics=-1), dict(shape=(0, 10)),
                                    dict(dtype=np.int32)])
def test_bad_arguments(kwargs):
    kwargs = {"shape": (32, 32), **kwargs}
    with pytest.raises(ValueError):
        simulate_frame(**kwargs)


# -- CR truth ---------------------------------------------------------------


def test_data_minus_clean_only_on_cr_pixels(frame):
    diff = frame.data.astype(np.float64) - frame.clean
    touched = frame.crcharge > 0
    assert np.all(diff[~touched] == 0)
    assert np.all(diff >= 0)
    assert frame.crmask.any()
    assert np.all(touched[frame.crmask])
    assert np.all(diff[frame.crmask] > 0)
    # the truth is the visible part: every true pixel's excess is well above
    # the sky noise on average, and many touched pixels are sub-noise tails
    sigma_adu = math.sqrt(200.0 * 2.0 + 25.0) / 2.0
    assert np.median(diff[frame.crmask]) > 5 * sigma_adu
    assert (touched & ~frame.crmask).sum() > 0


def test_truth_rule_threshold(frame):
    # Pixels just below 3 sigma of the sky noise are never truth; pixels well
    # above it (off saturated cores) always are.
    sigma_e = math.sqrt(200.0 * 2.0 + 25.0)
    q = frame.crcharge
    assert not frame.crmask[(q > 0) & (q < 2.99 * sigma_e)].any()
    strong = (q > 1e3 * sigma_e)   # far above any star's noise in this frame
    assert strong.any()
    assert frame.crmask[strong & ~frame.saturated].all()


def test_morphologies_singles_blobs_and_long_tracks(frame):
    _, n, sizes, extents = _components(frame.crmask)
    assert n > 100
    assert (sizes == 1).sum() >= 10                 # single-pixel hits
    assert ((sizes >= 2) & (sizes <= 6)).sum() >= 10  # blobs
    assert (extents > 10).sum() >= 5                # long tracks
    assert extents.max() >= 20


def test_tracks_have_subpixel_charge_sharing(frame):
    # Tracks deposit fractional charge on their flanks: long components
    # contain pixels with much less charge than their peak.
    lab, n, sizes, extents = _components(frame.crmask)
    long_ids = np.nonzero(extents > 10)[0] + 1
    ratios = []
    for k in long_ids:
        q = frame.crcharge[lab == k]
        ratios.append(q.min() / q.max())
    assert min(ratios) < 0.2


def test_crs_hit_edges_and_stars():
    f = simulate_frame((256, 256), seed=4, n_cosmics=600)
    m = f.crmask
    assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()
    sigma_adu = math.sqrt(200.0 * 2.0 + 25.0) / 2.0
    on_star = m & (f.clean > 200.0 + 20 * sigma_adu)
    assert on_star.sum() >= 3


# -- saturation and noise -----------------------------------------------------


def test_saturation_clipping():
    f = simulate_frame((256, 256), seed=6, n_saturated=3, saturation=30000.0)
    assert f.data.max() == 30000.0 and f.clean.max() == 30000.0
    np.testing.assert_array_equal(f.saturated, f.data >= 30000.0)
    _, n, sizes, _ = _components(f.saturated)
    assert n >= 3 and sizes.max() >= 5               # clipped star cores
    # a CR on a saturated core is not a detectable CR
    assert not (f.crmask & (f.clean >= 30000.0)).any()
    g = simulate_frame((256, 256), seed=6, n_saturated=0, n_cosmics=0)
    assert not g.saturated.any()


@pytest.mark.parametrize("sky, gain, rn, bias", [(200.0, 2.0, 5.0, 0.0),
                                                 (50.0, 1.3, 9.0, 1000.0)])
def test_sky_noise_level(sky, gain, rn, bias):
    f = simulate_frame((512, 512), seed=8, sky=sky, gain=gain, readnoise=rn, bias=bias,
                       n_stars=0, n_saturated=0, n_cosmics=0)
    expected = math.sqrt(sky * gain + rn ** 2) / gain
    assert f.clean.std(dtype=np.float64) == pytest.approx(expected, rel=0.02)
    assert f.clean.mean(dtype=np.float64) == pytest.approx(sky + bias, abs=0.05)


def test_sky_noise_level_with_stars(frame):
    c = frame.clean.astype(np.float64)
    med = np.median(c)
    robust_std = 1.4826 * np.median(np.abs(c - med))
    expected = math.sqrt(200.0 * 2.0 + 5.0 ** 2) / 2.0
    assert robust_std == pytest.approx(expected, rel=0.05)
    assert med == pytest.approx(200.0, abs=1.0)


def test_stars_span_a_wide_range_of_brightness(frame):
    c = frame.clean
    peaks = c[(c == ndimage.maximum_filter(c, size=7)) & (c > 200 + 10 * 10.3)]
    assert peaks.size > 50
    assert peaks.min() < 1000 and peaks.max() > 20000


# -- score -----------------------------------------------------------------------


def _mask(points, shape=(10, 10)):
    m = np.zeros(shape, dtype=bool)
    for p in points:
        m[p] = True
    return m


def test_score_exact_values():
    truth = _mask([(2, 2), (2, 3), (7, 7)])
    found = _mask([(2, 2), (7, 8), (4, 4)])
    s = score(found, truth)
    assert s["n_true"] == 3 and s["n_found"] == 3
    assert s["true_positives"] == 1 and s["false_negatives"] == 2
    assert s["recall"] == pytest.approx(1 / 3)
    assert s["false_positives"] == 2
    assert s["precision"] == pytest.approx(1 / 3)
    assert s["n_events"] == 2
    assert s["events_found"] == 0.5
    s1 = score(found, truth, tolerance=1)          # (7, 8) touches (7, 7)
    assert s1["false_positives"] == 1 and s1["recall"] == pytest.approx(1 / 3)
    assert s1["precision"] == pytest.approx(2 / 3)
    s2 = score(found, truth, tolerance=2)          # (4, 4) is 2 px from (2, 2)
    assert s2["false_positives"] == 0


def test_score_edge_cases():
    empty = np.zeros((5, 5), dtype=bool)
    full = np.ones((5, 5), dtype=bool)
    s = score(empty, empty)
    assert s["recall"] == 1.0 and s["false_positives"] == 0 and s["precision"] == 1.0
    s = score(full, empty, tolerance=3)
    assert s["false_positives"] == 25 and s["precision"] == 0.0
    s = score(empty, full)
    assert s["recall"] == 0.0 and s["n_events"] == 1 and s["events_found"] == 0.0
    s = score(full.astype(np.uint8), full)          # uint8 masks accepted
    assert s["recall"] == 1.0
    with pytest.raises(ValueError):
        score(empty, np.zeros((5, 6), bool))
    with pytest.raises(ValueError):
        score(empty, empty, tolerance=-1)


def test_score_perfect_on_simulated_truth(frame):
    s = score(frame.crmask, frame.crmask, tolerance=1)
    assert s["recall"] == 1.0 and s["false_positives"] == 0
    assert s["events_found"] == 1.0
    _, n, _, _ = _components(frame.crmask)
    assert s["n_events"] == n


@pytest.mark.parametrize("density", [0.05, 0.3, 0.6])
def test_label_components_matches_scipy(density):
    rng = np.random.default_rng(int(density * 100))
    mask = rng.random((61, 47)) < density
    mask[0, :] = True                              # a component along an edge
    ours, n = label_components(mask)
    ref, n_ref = ndimage.label(mask, structure=EIGHT)
    assert n == n_ref
    np.testing.assert_array_equal(ours, ref)


def test_label_components_empty():
    lab, n = label_components(np.zeros((4, 4), bool))
    assert n == 0 and not lab.any()
