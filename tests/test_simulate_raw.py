"""Tests for crdask.simulate.raw and crdask.simulate.night: raw frames and nights."""

import hashlib
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from crdask.simulate import (
    Detector,
    NightManifest,
    damage,
    make_star_field,
    simulate_raw,
    write_night,
)
from crdask.simulate.raw import bias_model, dark_current_map, flat_response

SMALL = Detector(shape=(128, 160), seed=5)


def _section(text):
    """FITS '[x1:x2,y1:y2]' -> numpy (slice_y, slice_x)."""
    m = re.fullmatch(r"\[(\d+):(\d+),(\d+):(\d+)\]", text)
    assert m, text
    x1, x2, y1, y2 = (int(v) for v in m.groups())
    assert 1 <= x1 <= x2 and 1 <= y1 <= y2
    return slice(y1 - 1, y2), slice(x1 - 1, x2)


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    root = tmp_path_factory.mktemp("night")
    return write_night(root / "raw", shape=(128, 160), seed=3, n_bias=4, n_dark=3,
                       n_flat=3, n_science=20)


# -- raw frames ---------------------------------------------------------------


def test_fits_on_disk_is_int16_with_bzero(night):
    for rec in night.files:
        path = night.path(rec["name"])
        with fits.open(path, do_not_scale_image_data=True) as hdul:
            assert len(hdul) == 1
            h = hdul[0].header
            assert h["BITPIX"] == 16 and h["BZERO"] == 32768
            assert hdul[0].data.dtype.kind == "i" and hdul[0].data.dtype.itemsize == 2
        with fits.open(path) as hdul:            # physical values: uint16
            assert hdul[0].data.dtype == np.uint16
            assert hdul[0].data.shape == SMALL.raw_shape


def test_sections_consistent_with_shape(night):
    for rec in night.files:
        with fits.open(night.path(rec["name"])) as hdul:
            h, data = hdul[0].header, hdul[0].data
        ny, nx = data.shape
        assert (h["NAXIS1"], h["NAXIS2"]) == (nx, ny)
        ds, bs, ts = (_section(h[k]) for k in ("DATASEC", "BIASSEC", "TRIMSEC"))
        assert ts == ds
        for ys, xs in (ds, bs):
            assert ys.stop <= ny and xs.stop <= nx
        assert data[ds].shape == (128, 160)
        assert data[bs].shape == (128, 32)
        assert bs[1].start == ds[1].stop and bs[1].stop == nx     # overscan on the right
        assert h["CCDSUM"] == "1 1"


@pytest.mark.parametrize("kw", [
    dict(prescan=8, overscan=16),
    dict(prescan=6, overscan=0),
    dict(overscan=0, overscan_rows=10),
    dict(overscan=20, overscan_rows=4, binning=(2, 2)),
])
def test_detector_geometry(kw):
    det = Detector(shape=(64, 96), **kw)
    sim = simulate_raw("bias", det, seed=1)
    data, h = sim.hdu.data, sim.header
    assert data.shape == det.raw_shape
    ds, bs = _section(h["DATASEC"]), _section(h["BIASSEC"])
    assert data[ds].shape == det.image_shape == sim.truth["crmask"].shape
    bx, by = kw.get("binning", (1, 1))
    assert det.image_shape == (64 // by, 96 // bx)
    assert h["CCDSUM"] == f"{bx} {by}"
    # DATASEC and BIASSEC do not overlap and lie inside the array
    mask = np.zeros(data.shape, int)
    mask[ds] += 1
    mask[bs] += 1
    assert mask.max() == 1
    assert data[bs].size > 0


def test_overscan_matches_bias_level():
    det = Detector(shape=(256, 256), seed=2)
    for kind, kw in (("bias", {}), ("dark", {"exptime": 300}),
                     ("flat", {"filter": "R"}), ("science", {"filter": "V"})):
        sim = simulate_raw(kind, det, seed=11, **kw)
        bs = _section(sim.header["BIASSEC"])
        over = sim.hdu.data[bs].astype(float)
        true = sim.truth["bias"][bs].astype(float)
        sigma = det.readnoise / det.gain
        # mean agrees with the true bias to within 5 standard errors
        assert abs(over.mean() - true.mean()) < 5 * sigma / np.sqrt(over.size) + 0.01
        # residual scatter is the read noise (plus rounding)
        assert np.std(over - true) == pytest.approx(np.hypot(sigma, 12 ** -0.5), rel=0.05)
        # and the bias is ~1000 ADU with the per-frame offset applied
        assert abs(true.mean() - det.bias_level - sim.truth["bias_offset"]) < 15


def test_row_ramp_is_in_overscan_and_data():
    det = Detector(shape=(256, 128), seed=2, bias_ramp=20.0, bias_transient=0.0)
    stack = np.mean([simulate_raw("bias", det, seed=s).hdu.data.astype(float)
                     for s in range(4)], axis=0)
    ds, bs = _section("[1:128,1:256]"), _section("[129:160,1:256]")
    for sec in (ds, bs):
        rows = stack[sec].mean(axis=1)
        slope = np.polyfit(np.arange(rows.size), rows, 1)[0] * (rows.size - 1)
        assert slope == pytest.approx(20.0, abs=2.0)


def test_header_gain_readnoise_equal_truth(night):
    det = night.detector
    for rec in night.files:
        h = fits.getheader(night.path(rec["name"]))
        assert h["GAIN"] == det["gain"] == 1.5
        assert h["RDNOISE"] == det["readnoise"] == 4.5
        assert h["SATURATE"] == 65535
        assert h["INSTRUME"] and h["SIMSEED"] == rec["seed"]
        assert h["EXPTIME"] == rec["exptime"] and h["DATE-OBS"] == rec["date_obs"]
    truth = night.detector_truth()
    assert float(truth["gain"]) == 1.5 and float(truth["readnoise"]) == 4.5
    sim = simulate_raw("bias", SMALL, seed=0)
    assert sim.truth["gain"] == sim.header["GAIN"] == SMALL.gain
    assert sim.truth["readnoise"] == sim.header["RDNOISE"] == SMALL.readnoise


def test_headers_hold_no_truth(night):
    allowed = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "BZERO", "BSCALE",
               "INSTRUME", "DETECTOR", "IMAGETYP", "OBSTYPE", "OBJECT", "DATE-OBS",
               "EXPTIME", "DARKTIME", "FILTER", "GAIN", "RDNOISE", "SATURATE", "DATASEC",
               "TRIMSEC", "BIASSEC", "CCDSUM", "BUNIT", "SIMSEED", "SIMDET", "ORIGIN"}
    for rec in night.files:
        assert set(fits.getheader(night.path(rec["name"]))) <= allowed


def test_bias_difference_noise():
    det = Detector(shape=(512, 512), seed=4)
    a = simulate_raw("bias", det, seed=1).hdu.data.astype(float)
    b = simulate_raw("bias", det, seed=2).hdu.data.astype(float)
    ys, xs = det.data_slice
    diff = a[ys, xs] - b[ys, xs]
    expected = np.sqrt(2) * det.readnoise / det.gain
    assert np.std(diff) == pytest.approx(expected, rel=0.05)
    # the fixed column pattern cancels: column means of the difference are flat
    assert np.std(diff.mean(axis=0)) < 3 * expected / np.sqrt(512)


def test_bias_frame_is_structured():
    det = Detector(shape=(512, 256), seed=4)
    stack = np.mean([simulate_raw("bias", det, seed=s).hdu.data.astype(float)
                     for s in range(8)], axis=0)
    ys, xs = det.data_slice
    img = stack[ys, xs]
    assert 990 < np.median(img) < 1015
    cols = img.mean(axis=0)
    assert 0.6 < np.std(cols - np.median(cols)) < 1.5          # column pattern ~1 ADU
    assert img[:5].mean() > img[100:200].mean() + 3             # transient at readout start


def test_darks_scale_with_exptime():
    det = Detector(shape=(128, 160), seed=6)
    levels = {}
    for t in (60.0, 300.0, 1200.0):
        sims = [simulate_raw("dark", det, exptime=t, seed=s, cosmics=False) for s in range(3)]
        ys, xs = det.data_slice
        e = [(s.hdu.data.astype(float) - s.truth["bias"])[ys, xs] * det.gain for s in sims]
        levels[t] = np.mean(e)
        # the same measured without truth: median minus overscan, robust to hot pixels
        bs = det.bias_slice
        med = np.mean([np.median(s.hdu.data[ys, xs]) - np.median(s.hdu.data[bs])
                       for s in sims]) * det.gain
        if t == 1200.0:
            assert med == pytest.approx(det.dark_current * t, abs=3.0)
    rate = float(dark_current_map(det).mean())
    for t, level in levels.items():
        assert level == pytest.approx(rate * t, rel=0.05, abs=0.3)
    assert levels[1200.0] / levels[300.0] == pytest.approx(4.0, rel=0.05)


def test_hot_pixels_and_bad_column():
    det = Detector(shape=(256, 256), seed=7)
    dark = dark_current_map(det)
    assert np.median(dark) == pytest.approx(det.dark_current)
    hot = dark > 0.5
    counts = hot.sum(axis=0)
    col = int(np.argmax(counts))
    assert counts[col] > 64                          # the hot column, from some row up
    assert hot[-1, col] and hot[:, col][np.argmax(hot[:, col]):].all()
    others = np.delete(hot, col, axis=1)
    assert det.n_hot_pixels() - 1 <= others.sum() <= det.n_hot_pixels()
    assert dark.max() <= 50 + 3 + det.dark_current
    dead = Detector(shape=(256, 256), seed=7, bad_column="dead")
    flat = flat_response(dead, "V")
    assert np.count_nonzero((flat < 0.1).all(axis=0)) == 1
    assert np.count_nonzero(dark_current_map(dead) > 0.5) == dead.n_hot_pixels()


def test_cosmics_scale_with_exptime_and_truth_is_sane():
    det = Detector(shape=(256, 256), seed=8)
    n = {t: np.mean([simulate_raw("dark", det, exptime=t, seed=s).truth["n_cosmics"]
                     for s in range(4)]) for t in (60.0, 600.0)}
    expected = det.cr_rate * 600.0 * 256 * 256 / 512 ** 2
    assert n[600.0] == pytest.approx(expected, rel=0.1)
    assert n[600.0] / n[60.0] == pytest.approx(10.0, rel=0.35)
    sim = simulate_raw("science", det, exptime=300.0, seed=3)
    mask = sim.truth["crmask"]
    assert mask.any() and mask.shape == det.image_shape
    ys, xs = det.data_slice
    excess = ((sim.hdu.data.astype(float) - sim.truth["bias"])[ys, xs] * det.gain
              - sim.truth["electrons"])
    noise = np.sqrt(sim.truth["electrons"] + det.readnoise ** 2)
    assert np.median(excess[mask] / noise[mask]) > 3
    assert (sim.truth["crcharge"][mask] > 0).all()
    for kind in ("bias", "flat"):
        s = simulate_raw(kind, det, seed=3)
        assert not s.truth["crmask"].any() and s.truth["n_cosmics"] == 0
    assert not simulate_raw("science", det, seed=3, cosmics=False).truth["crmask"].any()


def test_flats_differ_per_filter(night):
    levels, norm = {}, {}
    for f in ("V", "R"):
        recs = night.select("flat", filter=f)
        assert len(recs) == 3
        data = np.mean([fits.getdata(night.path(r["name"])).astype(float) for r in recs],
                       axis=0)
        ys, xs = _section(fits.getheader(night.path(recs[0]["name"]))["DATASEC"])
        img = data[ys, xs] - np.median(data[_section("[161:192,1:128]")])
        levels[f] = np.median(img)
        norm[f] = img / levels[f]
        assert 20000 < levels[f] * 1.0 < 32000
    assert abs(levels["V"] - levels["R"]) > 1000
    truth = night.detector_truth()
    assert np.std(truth["flat_V"] / truth["flat_R"]) > 0.003
    # the measured normalised flat follows the true response
    for f in ("V", "R"):
        t = truth[f"flat_{f}"] / np.median(truth[f"flat_{f}"])
        assert np.corrcoef(norm[f].ravel(), t.ravel())[0, 1] > 0.8


def test_flat_pattern_components():
    det = Detector(shape=(256, 256), seed=9)
    flat = flat_response(det, "V")
    assert flat.mean() == pytest.approx(1.0, abs=1e-4)
    assert flat.dtype == np.float32 and not flat.flags.writeable
    # vignetting: the corners are darker than the middle
    assert flat[:16, :16].mean() < flat[112:144, 112:144].mean() - 0.03
    # pixel-to-pixel ~1%
    hp = flat[1:-1, 1:-1] - 0.25 * (flat[:-2, 1:-1] + flat[2:, 1:-1]
                                   + flat[1:-1, :-2] + flat[1:-1, 2:])
    assert 0.007 < np.median(np.abs(hp)) / 0.6745 / np.sqrt(1.25) < 0.02
    assert flat_response(det, "V") is flat                       # cached
    assert not np.array_equal(flat_response(det, "R"), flat)


def test_saturation_and_range():
    det = Detector(shape=(128, 128), seed=1)
    stars = make_star_field(det, 1, exptime=300.0, n_saturated=5)
    sim = simulate_raw("science", det, exptime=300.0, seed=1, scene=stars)
    data = sim.hdu.data
    assert data.dtype == np.uint16 and data.max() == 65535
    assert sim.header["SATURATE"] == 65535


# -- nights -------------------------------------------------------------------


def test_night_layout_and_truth_outside(night):
    raw = Path(night.directory)
    truth = Path(night.truth_dir)
    assert truth == raw.parent / "raw_truth"
    assert raw not in truth.parents and truth != raw
    names = sorted(p.name for p in raw.iterdir())
    assert names == sorted(r["name"] for r in night.files)
    assert all(n.endswith(".fits") for n in names)
    kinds = {k: len(night.select(k)) for k in ("bias", "dark", "flat", "science")}
    assert kinds == {"bias": 4, "dark": 6, "flat": 6, "science": 20}
    assert "bias_001.fits" in names and "dark_300s_003.fits" in names
    assert "dark_60s_001.fits" in names and "flat_V_003.fits" in names
    assert (truth / "manifest.json").is_file() and (truth / "detector.npz").is_file()
    for rec in night.files:
        if rec["kind"] in ("dark", "science"):
            p = night.truth_path(rec["truth"]["crmask"])
            assert p.is_file() and truth in p.parents
            assert night.crmask(rec["name"]).shape == (128, 160)
        else:
            assert rec["truth"] == {}
    for grp in night.groups:
        with np.load(night.truth_path(grp["stars"])) as z:
            assert z["x"].size == z["flux"].size > 0
    # the manifest on disk round-trips and is plain JSON
    loaded = NightManifest.load(truth)
    assert loaded.to_dict() == json.loads(json.dumps(night.to_dict()))


def test_date_obs_sequential(night):
    dates = [r["date_obs"] for r in night.files]
    assert dates == sorted(dates) and len(set(dates)) == len(dates)


def test_groups(night):
    members = []
    for grp in night.groups:
        assert 3 <= len(grp["members"]) <= 5
        heads = [fits.getheader(night.path(n)) for n in grp["members"]]
        for key in ("OBJECT", "FILTER", "EXPTIME", "IMAGETYP"):
            assert len({h[key] for h in heads}) == 1, key
        assert heads[0]["OBJECT"] == grp["object"] and heads[0]["FILTER"] == grp["filter"]
        assert heads[0]["EXPTIME"] == grp["exptime"]
        assert all(abs(v) <= 0.5 for d in grp["dithers"] for v in d)
        for n in grp["members"]:
            assert re.fullmatch(rf"sci_{grp['object']}_{grp['filter']}_\d{{3}}\.fits", n)
        members += grp["members"]
    assert sorted(members) == sorted(r["name"] for r in night.select("science"))
    # equivalent exposures: the same stars (up to noise and CRs) within a group
    grp = night.groups[0]
    imgs = [fits.getdata(night.path(n)).astype(float)[:, :160] for n in grp["members"]]
    masks = [night.crmask(n) for n in grp["members"]]
    a, b = imgs[0] - np.median(imgs[0]), imgs[1] - np.median(imgs[1])
    good = ~(masks[0] | masks[1]) & (imgs[0] < 60000) & (imgs[1] < 60000)
    assert np.corrcoef(a[good], b[good])[0, 1] > 0.8


def test_night_determinism(tmp_path, night):
    kw = dict(shape=(64, 80), n_bias=2, n_dark=2, dark_times=(30,), n_flat=2,
              filters=("B",), n_science=3)
    m1 = write_night(tmp_path / "a", seed=12, workers=2, **kw)
    m2 = write_night(tmp_path / "b", seed=12, workers=1, **kw)
    m3 = write_night(tmp_path / "c", seed=13, **kw)
    for r1, r2 in zip(m1.files, m2.files):
        assert r1 == r2
        assert _sha(m1.path(r1["name"])) == _sha(m2.path(r2["name"]))
        np.testing.assert_array_equal(np.load(m1.truth_path(r1["truth"]["crmask"]))["crmask"]
                                      if r1["truth"] else 0,
                                      np.load(m2.truth_path(r2["truth"]["crmask"]))["crmask"]
                                      if r2["truth"] else 0)
    assert m1.groups == m2.groups
    differ = [_sha(m1.path(r["name"])) != _sha(m3.path(r["name"])) for r in m1.files]
    assert all(differ)


def test_simulate_raw_determinism():
    a = simulate_raw("science", SMALL, seed=21, filter="R")
    b = simulate_raw("science", SMALL, seed=21, filter="R")
    c = simulate_raw("science", SMALL, seed=22, filter="R")
    np.testing.assert_array_equal(a.hdu.data, b.hdu.data)
    np.testing.assert_array_equal(a.truth["crmask"], b.truth["crmask"])
    assert a.header == b.header
    assert not np.array_equal(a.hdu.data, c.hdu.data)
    # the detector's fixed patterns depend on its seed only
    np.testing.assert_array_equal(bias_model(SMALL), bias_model(Detector(shape=(128, 160),
                                                                         seed=5)))


def test_write_night_refuses_truth_inside_and_clobbering(tmp_path):
    kw = dict(shape=(32, 32), n_bias=1, n_dark=0, n_flat=0, n_science=0)
    with pytest.raises(ValueError, match="outside"):
        write_night(tmp_path / "n", truth_dir=tmp_path / "n" / "truth", **kw)
    with pytest.raises(ValueError, match="outside"):
        write_night(tmp_path / "n", truth_dir=tmp_path / "n", **kw)
    write_night(tmp_path / "n", truth_dir=tmp_path / "elsewhere", **kw)
    with pytest.raises(FileExistsError):
        write_night(tmp_path / "n", truth_dir=tmp_path / "elsewhere", **kw)
    write_night(tmp_path / "n", truth_dir=tmp_path / "elsewhere", overwrite=True, **kw)


def test_imagetyp_variety(tmp_path):
    m = write_night(tmp_path / "v", shape=(32, 32), n_bias=2, n_dark=0, n_flat=1,
                    filters=("V",), n_science=3, imagetyp_variety=True)
    types = {fits.getheader(m.path(r["name"]))["IMAGETYP"] for r in m.files}
    assert {"BIAS", "zero", "flat", "object"} <= types
    assert {fits.getheader(m.path(r["name"]))["OBSTYPE"] for r in m.files} == {
        "BIAS", "FLAT", "OBJECT"}


# -- damaged copies -----------------------------------------------------------


def test_damage_helpers(tmp_path, night):
    src = night.path(night.select("science")[0]["name"])
    before = _sha(src)
    out = tmp_path / "bad"
    out.mkdir()

    t = damage.truncate(src, out / "trunc.fits")
    assert t.stat().st_size < src.stat().st_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception):
            with fits.open(t) as hdul:
                np.asarray(hdul[0].data).sum()

    d = damage.drop_keyword(src, "EXPTIME", out / "noexp.fits")
    h = fits.getheader(d)
    assert "EXPTIME" not in h and h["FILTER"] == fits.getheader(src)["FILTER"]
    np.testing.assert_array_equal(fits.getdata(d), fits.getdata(src))
    assert fits.getdata(d).dtype == np.uint16

    w = damage.wrong_shape(src, out / "shape.fits")
    data = fits.getdata(w)
    assert data.shape != fits.getdata(src).shape and data.dtype == np.uint16
    np.testing.assert_array_equal(data, fits.getdata(src)[:data.shape[0], :data.shape[1]])

    default = damage.truncate(src, None)           # default: a sibling copy
    assert default != src and default.name.endswith("_truncated.fits")
    default.unlink()
    with pytest.raises(ValueError):
        damage.drop_keyword(src, "EXPTIME", src)
    assert _sha(src) == before


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        simulate_raw("arcs", SMALL)
    with pytest.raises(ValueError, match="exptime"):
        simulate_raw("bias", SMALL, exptime=3)
    with pytest.raises(ValueError):
        Detector(shape=(0, 10))
    with pytest.raises(ValueError):
        Detector(bad_column="warm")
