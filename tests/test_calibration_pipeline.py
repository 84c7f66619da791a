"""Masters, calibrated frames and the night's gain, on simulated raw nights and
the real frames; parity with ccdproc.ccd_process; bad frames set aside."""

import hashlib
import shutil
from pathlib import Path

import ccdproc
import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData
from click.testing import CliRunner

from shared_data import SHARED
from crdask.calib import bits
from crdask.cli import cli
from crdask.pipeline.calibration import CalibSetup, electrons
from crdask.pipeline.config import calibration_workflow
from crdask.pipeline.night import run_night
from crdask.pipeline.gain import measure_gain
from crdask.simulate import Detector, damage, simulate_raw, write_night


class Reduced:
    """What ``crdask calibrate`` made: masters, science products, set-asides."""

    def __init__(self, run):
        rec = run.record
        self.masters = {k: m["path"] for k, m in rec["masters"].items()}
        self.science = sorted(f["output"] for f in rec["frames"]
                              if f.get("type") == "science" and f["status"] == "done")
        self.rejected = [(f["file"], f["reason"]) for f in rec["failures"]]
        self.exit_code = run.exit_code


def reduce_night_calibration(raw, out):
    """The one calibration path: the night with the cosmic-ray step off."""
    return Reduced(run_night(calibration_workflow(raw, out), log=lambda m: None))


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    root = tmp_path_factory.mktemp("night")
    manifest = write_night(root / "raw", shape=(192, 224), n_bias=6, dark_times=(60, 300),
                           n_dark=3, filters=("V", "R"), n_flat=5, n_science=6, seed=3)
    return root / "raw", manifest


@pytest.fixture(scope="module")
def reduced(night, tmp_path_factory):
    raw, _ = night
    before = {p.name: sha(p) for p in raw.iterdir()}
    out = tmp_path_factory.mktemp("out")
    res = reduce_night_calibration(raw, out)
    after = {p.name: sha(p) for p in raw.iterdir()}
    return res, out, before, after


def test_night_reduces_and_outputs_open_with_ccddata(reduced):
    res, out, before, after = reduced
    assert res.rejected == [] and res.exit_code == 0
    assert set(res.masters) == {"bias", "dark", "flat_V", "flat_R", "bpm"}
    assert len(res.science) == 6
    ccd = CCDData.read(res.science[0])
    assert ccd.unit == u.electron
    assert type(ccd.uncertainty).__name__ == "VarianceUncertainty"
    assert ccd.mask is not None and ccd.mask.shape == ccd.shape == (192, 224)
    assert np.all(ccd.uncertainty.array[np.isfinite(ccd.data)] > 0)
    hdr = fits.getheader(res.science[0])
    history = " ".join(hdr["HISTORY"])
    assert "master_bias.fits" in history and "master_flat_" in history
    assert "BZERO" not in hdr and "BIASSEC" not in hdr
    assert before == after  # raw files untouched


def test_masters_record_inputs_with_checksums(reduced, night):
    res, *_ = reduced
    raw, _ = night
    with fits.open(res.masters["bias"]) as hdul:
        table = hdul["INPUTS"].data
        assert hdul[0].header["NCOMBINE"] == 6 == len(table)
        for name, digest in zip(table["FILE"], table["SHA256"]):
            assert sha(raw / name) == digest
        assert "VARIANCE" in hdul and "NFRAMES" in hdul
        assert (hdul["NFRAMES"].data <= 6).all()


def test_masters_match_the_simulated_truth(reduced, night):
    res, _, _, _ = reduced
    _, manifest = night
    truth = np.load(Path(manifest.truth_dir) / "detector.npz")
    dark = fits.getdata(res.masters["dark"])
    # dark current (e-/s): typical pixels at the simulated level, hot pixels found
    assert np.median(dark) == pytest.approx(float(np.median(truth["dark_current"])), abs=0.01)
    bpm = fits.getdata(res.masters["bpm"]).astype(bool)
    hot = truth["dark_current"] > 1.0
    assert hot.any() and bpm[hot].mean() > 0.9
    assert bpm.mean() < 0.05
    for filt in ("V", "R"):
        flat = fits.getdata(res.masters[f"flat_{filt}"])
        true = truth[f"flat_{filt}"] / np.median(truth[f"flat_{filt}"][48:144, 56:168])
        ratio = flat / true
        assert np.median(ratio) == pytest.approx(1.0, abs=0.005)
        assert np.std(ratio[~bpm]) < 0.01


def test_masters_read_once_equal_the_lazy_strips(night, monkeypatch):
    """Frames read once into memory (the default within MEMORY_BUDGET) give
    the same masters, bit for bit, as the lazy row-strip graph used for sets
    too large for memory."""
    import dask
    from crdask.io.catalog import build_catalog
    from crdask.pipeline import calibration

    raw, _ = night
    wf = calibration_workflow(raw, raw.parent / "unused")
    cat = build_catalog(sorted(str(p) for p in raw.iterdir()), wf.keymap())

    def built(budget):
        monkeypatch.setattr(calibration, "MEMORY_BUDGET", budget)
        masters = calibration.build_masters(cat, wf.calib_setup(), [])
        flat = masters["flat"]
        arrays = {"bias": masters["bias"], "dark": masters["dark"], **flat}
        out = {k: dask.compute(m.data, m.variance, m.count) for k, m in arrays.items()}
        out["bpm"] = dask.compute(masters["bpm"])
        return out, all(isinstance(m.data, np.ndarray) for m in arrays.values())

    budget = calibration.MEMORY_BUDGET
    lazy, lazy_in_memory = built(0)
    eager, eager_in_memory = built(budget)
    assert eager_in_memory and not lazy_in_memory
    assert lazy.keys() == eager.keys() == {"bias", "dark", "V", "R", "bpm"}
    for key in lazy:
        for a, b in zip(lazy[key], eager[key]):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=key)


def test_master_bias_noise_is_readnoise_over_sqrt_n(tmp_path):
    """Structure-free bias frames: the master's pixel noise is sigma_read /
    sqrt(N) (within 5%), overscan noise and clipping included."""
    det = Detector(shape=(512, 512), bias_ramp=0, bias_transient=0, bias_column_rms=0,
                   seed=2)
    n = 10
    for i in range(n):
        simulate_raw("bias", det, seed=100 + i).hdu.writeto(tmp_path / f"b{i:02d}.fits")
    res = reduce_night_calibration(tmp_path, tmp_path / "out")
    bias = fits.getdata(res.masters["bias"])
    expected = det.readnoise / np.sqrt(n)
    assert np.std(bias) == pytest.approx(expected, rel=0.05)


def test_gain_from_the_night_recovers_the_simulation(night):
    raw, _ = night
    rep = measure_gain(raw)
    assert rep.result.gain == pytest.approx(1.5, rel=0.05)
    assert rep.result.readnoise == pytest.approx(4.5, rel=0.05)
    assert rep.warnings == []
    out = CliRunner().invoke(cli, ["gain", str(raw)])
    assert out.exit_code == 0, out.output
    assert "e-/ADU" in out.output and "read noise" in out.output


def test_gain_warns_when_the_header_is_wrong(night, tmp_path):
    raw, _ = night
    for p in raw.iterdir():
        with fits.open(p) as hdul:
            hdul[0].header["GAIN"] = 2.0  # true 1.5: 33% off
            hdul.writeto(tmp_path / p.name)
    rep = measure_gain(tmp_path)
    assert any("gain" in w.lower() for w in rep.warnings)


def test_science_frame_equals_ccdproc_ccd_process(reduced, night):
    res, out, _, _ = reduced
    raw, manifest = night
    sci_path = sorted(p for p in raw.iterdir() if p.name.startswith("sci_") and "_V_" in p.name)[0]
    ours = CCDData.read(out / f"{sci_path.name.split('.')[0]}_cal.fits")
    hdr = fits.getheader(sci_path)
    bias = CCDData(fits.getdata(res.masters["bias"]), unit=u.electron)
    dark = CCDData(fits.getdata(res.masters["dark"]), unit=u.electron)  # per second
    flat_data = fits.getdata(res.masters["flat_V"])
    flat = CCDData(flat_data, unit=u.dimensionless_unscaled)
    raw_ccd = CCDData(fits.getdata(sci_path).astype(np.float64), unit=u.adu, meta=hdr)
    ref = ccdproc.ccd_process(
        raw_ccd, oscan=hdr["BIASSEC"], trim=hdr["DATASEC"], master_bias=bias,
        dark_frame=dark, master_flat=flat, gain=hdr["GAIN"] * u.electron / u.adu,
        readnoise=hdr["RDNOISE"] * u.electron, oscan_median=True,
        dark_exposure=1 * u.s, data_exposure=hdr["EXPTIME"] * u.s, dark_scale=True)
    # ccdproc divides by flat / mean(flat); we divide by the flat as normalised
    scale = np.mean(flat_data, dtype=np.float64)
    np.testing.assert_allclose(ours.data * scale, ref.data, rtol=2e-5, atol=2e-3)


def test_calibrated_noise_matches_the_variance(tmp_path):
    """(sci - truth) / sqrt(var) has unit scatter: the variance is right."""
    det = Detector(shape=(256, 256), seed=5, bad_column=None, hot_pixels=3)
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(8):
        simulate_raw("bias", det, seed=10 + i).hdu.writeto(raw / f"b{i}.fits")
    for i in range(6):
        simulate_raw("flat", det, filter="V", seed=30 + i).hdu.writeto(raw / f"f{i}.fits")
    for i in range(5):
        simulate_raw("dark", det, exptime=300, seed=40 + i, cosmics=False).hdu.writeto(
            raw / f"d{i}.fits")
    sim = simulate_raw("science", det, filter="V", exptime=300, seed=50, cosmics=False)
    sim.hdu.writeto(raw / "s.fits")
    res = reduce_night_calibration(raw, tmp_path / "out")
    assert res.rejected == []
    ccd = CCDData.read(res.science[0])
    # sky + stars seen through flat / median(flat): the truth in our units
    true_e = sim.truth["scene"] * det_flat(sim)
    good = (ccd.mask == 0) & np.isfinite(ccd.data)
    chi = (ccd.data - true_e)[good] / np.sqrt(ccd.uncertainty.array[good])
    assert abs(np.mean(chi)) < 0.1
    assert np.std(chi) == pytest.approx(1.0, abs=0.1)


def det_flat(sim):
    """The flat normalisation our master applied (median of the true flat in
    the central region), to put the truth in the same units."""
    flat = sim.truth["flat"]
    ny, nx = flat.shape
    return np.median(flat[ny // 4:ny - ny // 4, nx // 4:nx - nx // 4])


def test_bad_frames_are_set_aside_with_one_line_each(night, tmp_path):
    raw, _ = night
    work = tmp_path / "raw"
    shutil.copytree(raw, work)
    flat = sorted(work.glob("flat_V_*.fits"))[0]
    dark = sorted(work.glob("dark_*.fits"))[0]
    sci = sorted(work.glob("sci_*.fits"))[0]
    damage.truncate(sci, work / "truncated.fits")
    damage.drop_keyword(flat, "EXPTIME", work / "flat_noexp.fits")
    damage.wrong_shape(sorted(work.glob("bias_*.fits"))[0], work / "bias_wrongshape.fits")
    with fits.open(dark) as hdul:  # a dark with EXPTIME < 0 (EXPTIME = 0 makes a bias)
        hdul[0].header["EXPTIME"] = -5.0
        hdul.writeto(work / "dark_zero.fits")
    with fits.open(flat) as hdul:  # an all-NaN flat (float data)
        h = hdul[0].header.copy()
        for k in ("BZERO", "BSCALE"):
            h.remove(k, ignore_missing=True)
        fits.PrimaryHDU(np.full(hdul[0].data.shape, np.nan, np.float32), h).writeto(
            work / "flat_nan.fits")
        fits.PrimaryHDU(np.full(hdul[0].data.shape, 1000.0, np.float32), h).writeto(
            work / "flat_negative.fits")  # below the bias: a negative flat
    before = {p.name: sha(p) for p in work.iterdir()}
    result = CliRunner().invoke(cli, ["calibrate", str(work), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    err = result.output
    for name, words in [("truncated.fits", ""), ("flat_noexp.fits", "EXPTIME"),
                        ("bias_wrongshape.fits", "shape"), ("dark_zero.fits", "EXPTIME"),
                        ("flat_nan.fits", "NaN"), ("flat_negative.fits", "not positive")]:
        lines = [ln for ln in err.splitlines() if name in ln and "error" in ln]
        assert len(lines) == 1, (name, err)
        assert words in lines[0]
    outputs = list((tmp_path / "out").glob("*_cal.fits"))
    assert len(outputs) == 6  # every good science frame still calibrated
    assert {p.name: sha(p) for p in work.iterdir()} == before


def test_real_wht_dark_prescan_and_trim():
    """The WHT ISIS dark: prescan columns 5-45 give the per-row bias; the
    trimmed frame ([51:1074,1:226]) then sits near zero."""
    path = SHARED / "wht-isis-dark" / "wht070.fits"
    prep = electrons(path, CalibSetup(overscan="[5:45,1:226]", trim="[51:1074,1:226]"))
    data = prep.data.compute()
    assert data.shape == (226, 1024)
    assert prep.gain == pytest.approx(1.1)  # from the header
    assert abs(np.median(data)) < 10 * prep.gain  # was ~448 ADU before
    assert any("overscan" in n for n in prep.notes)


def test_real_sprat_bias_level_and_gain_from_header():
    """SPRAT has no overscan: a constant bias level (917 ADU) and the header
    GAIN (2.45 e-/ADU) take it to electrons."""
    path = SHARED / "sprat-lhs6328" / "v_e_20180810_12_1_0_0.fits.gz"
    raw = fits.getdata(path).astype(np.float64)
    prep = electrons(path, CalibSetup(overscan=None, trim=None, bias_level=917.0,
                                      readnoise=7.0))
    data = prep.data.compute()
    assert prep.gain == pytest.approx(2.45)
    np.testing.assert_allclose(data, ((raw - 917.0) * 2.45).astype(np.float32), rtol=1e-6,
                               atol=1e-3)
    with pytest.raises(Exception, match=r"v_e_20180810_12_1_0_0.fits.gz\[0\].*read noise"):
        electrons(path, CalibSetup(overscan=None, trim=None))
