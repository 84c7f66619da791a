"""Real instruments through the real night (``python -m crdask run``, issue #11):

* a two-amplifier night (bias levels 20 ADU apart, gains 8 % apart), written
  as MEF with the numbered amplifier keywords in the primary header, with
  ``instrument.amplifiers: header``: no step at the amplifier boundary in the
  master bias, the master flat or the science frames (within the propagated
  noise); the same bias frames through the one-amplifier path keep the step;
* one night written four ways (single HDU, MEF with GAIN/RDNOISE/EXPTIME/
  sections in the primary header, gzip, fpack): the same SCI, variance, mask
  and CR mask;
* ``steps.qa.inject`` in the gzip night: per-frame recall and extra false
  pixels in report.json and report.md, the PNG curve, and outputs identical
  to the night without it.

Frames are small (64 x 96 pixels); each ``crdask run`` is a real subprocess
with one worker process.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.io import fits

from cluster_helpers import crdask_cli, show
from crdask.calib import bits
from crdask.pipeline.calibration import CalibSetup, electrons
from crdask.simulate import write_night

pytestmark = pytest.mark.slow

SHAPE = (64, 96)           # imaging area (y, x); amplifier boundary at x = 48
NIGHT = dict(shape=SHAPE, n_bias=3, dark_times=(60,), n_dark=2, filters=("V",), n_flat=3,
             n_science=2, group_size=(1, 1))
FORMATS = ("single", "mef", "gzip", "fpack")
QA = {"inject": True, "n": 40, "seed": 3, "border": 3}   # L.A.Cosmic skips 3 px edges


def run(root, raw, *, instrument=None, qa=None):
    """``crdask run`` of a workflow for ``raw``; returns the output folder."""
    out = Path(root) / "out"
    doc = {"version": 1, "inputs": {"directory": str(raw)}, "output": str(out)}
    if instrument:
        doc["instrument"] = instrument
    if qa:
        doc["steps"] = {"qa": qa}
    wf = Path(root) / "night.yaml"
    wf.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = crdask_cli("run", wf, "--workers", "1", cwd=root)
    assert proc.returncode == 0, show(proc)
    return out


@pytest.fixture(scope="module")
def two_amp(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_amp")
    m = write_night(root / "raw", amplifiers=2, format="mef", seed=21, **NIGHT)
    return Path(m.directory), run(root, m.directory, instrument={"amplifiers": "header"})


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """The same night in four file formats, each through ``crdask run`` (the
    gzip one with ``steps.qa.inject``)."""
    out = {}
    for fmt in FORMATS:
        root = tmp_path_factory.mktemp(fmt)
        m = write_night(root / "raw", format=fmt, seed=22, **NIGHT)
        out[fmt] = (Path(m.directory), run(root, m.directory,
                                           qa=QA if fmt == "gzip" else None))
    return out


def read_product(path):
    with fits.open(path) as h:
        return {e.name: (e.data.copy() if e.data is not None else None) for e in h}, \
            h[0].header.copy()


def column_step(data, var, c, rows=slice(None)):
    """Mean of column c minus mean of column c - 1 and its propagated error."""
    a, b = data[rows, c - 1].astype(float), data[rows, c].astype(float)
    err = np.sqrt(var[rows, c - 1].sum() + var[rows, c].sum()) / a.size
    return b.mean() - a.mean(), err


# --------------------------------------------------------------------------- amplifiers

def test_mef_holds_the_amplifier_keywords_in_the_primary(two_amp):
    raw, _ = two_amp
    with fits.open(sorted(raw.glob("bias_*.fits"))[0]) as h:
        assert h[0].data is None and h[1].data is not None
        for key in ("GAIN1", "GAIN2", "RDNOISE1", "RDNOISE2", "DATASEC1", "BIASSEC2"):
            assert key in h[0].header and key not in h[1].header
        assert h[0].header["GAIN2"] != h[0].header["GAIN1"]


def test_two_amplifier_night_has_no_step_at_the_boundary(two_amp):
    raw, out = two_amp
    c = SHAPE[1] // 2
    bias, _ = read_product(out / "master_bias.fits")
    assert bias["PRIMARY"].shape == SHAPE       # both overscan strips trimmed away
    step, err = column_step(bias["PRIMARY"], bias["VARIANCE"], c)
    print(f"master bias step {step:.3f} +- {err:.3f} e-")
    assert abs(step) < 4 * err and err < 1.0
    # per-amplifier gains: the flat is continuous (a single gain leaves 8 %)
    flat, _ = read_product(out / "master_flat_V.fits")
    ratio = flat["PRIMARY"][:, c].mean() / flat["PRIMARY"][:, c - 1].mean()
    print(f"master flat ratio across the boundary {ratio:.4f}")
    assert abs(ratio - 1) < 0.01
    for p in sorted(out.glob("sci_*_cal.fits")):
        d, header = read_product(p)
        sci, var, mask = d["PRIMARY"], d["UNCERT"] ** 2, d["MASK"]
        ok = (mask[:, c - 1] == 0) & (mask[:, c] == 0)
        # the per-row difference across the boundary in units of its error:
        # its median is robust to the few rows a star crosses
        z = (sci[ok, c] - sci[ok, c - 1]) / np.sqrt(var[ok, c] + var[ok, c - 1])
        print(f"{p.name}: median z across the boundary {np.median(z):.3f} ({ok.sum()} rows)")
        assert ok.sum() > 40 and abs(np.median(z)) < 4 * 1.2533 / np.sqrt(ok.sum())
        history = [str(h) for h in header["HISTORY"]]
        text = "".join(history)
        assert "2 amplifier(s) from the header" in text, text
        assert "AMP 1 DATASEC=[33:80,1:64] BIASSEC=[1:32,1:64] -> [1:48,1:64] GAIN=1.5" in text
        assert "AMP 2 DATASEC=[81:128,1:64]" in text and "GAIN=1.62" in text


def test_without_the_amplifier_config_the_step_is_there(two_amp):
    """The same raw bias frames through ``electrons`` (the night's one
    per-frame calibration): one overscan strip and one gain for both halves
    leave the 20 ADU step, the amplifier layout removes it."""
    raw, _ = two_amp
    c = SHAPE[1] // 2
    biases = sorted(raw.glob("bias_*.fits"))
    one = CalibSetup(overscan="BIASSEC1", trim="DATASEC", gain=1.5, readnoise=4.5)
    amps = CalibSetup(amplifiers="header")
    for setup, expect_step in ((one, True), (amps, False)):
        frames = [electrons(str(p), setup) for p in biases]
        mean = np.mean([np.asarray(f.data) for f in frames], axis=0)
        rn = frames[0].readnoise_map
        rn = np.full(mean.shape, frames[0].readnoise) if rn is None else np.asarray(rn)
        step, err = column_step(mean, rn ** 2 / len(frames), c)
        print(f"amplifiers={setup.amplifiers}: step {step:.2f} +- {err:.2f} e-")
        if expect_step:
            assert step > 10 * err and 20 < step < 40     # ~20 ADU x 1.5 e-/ADU
        else:
            assert abs(step) < 4 * err
    # each amplifier's read noise, per pixel, for the variance
    np.testing.assert_array_equal(np.unique(np.asarray(frames[0].readnoise_map[:, :c])),
                                  [np.float32(4.5)])
    np.testing.assert_array_equal(np.unique(np.asarray(frames[0].readnoise_map[:, c:])),
                                  [np.float32(4.5 * 1.15)])


# --------------------------------------------------------------------------- file formats

def test_mef_gzip_fpack_twins_reduce_to_the_same_pixels(twins):
    raw, _ = twins["mef"]
    with fits.open(sorted(raw.glob("bias_*.fits"))[0]) as h:
        for key in ("GAIN", "RDNOISE", "DATASEC", "BIASSEC", "EXPTIME"):
            assert key in h[0].header and key not in h[1].header
    _, ref = twins["single"]
    names = sorted(p.name for p in ref.glob("*_cal.fits"))
    assert len(names) == NIGHT["n_science"]
    for fmt in ("mef", "gzip", "fpack"):
        _, out = twins[fmt]
        assert sorted(p.name for p in out.glob("*_cal.fits")) == names, fmt
        for name in names + ["master_bias.fits", "master_flat_V.fits"]:
            a, _ = read_product(ref / name)
            b, _ = read_product(out / name)
            assert a.keys() == b.keys()
            for ext in a:
                if a[ext] is not None and a[ext].dtype.kind != "V":
                    np.testing.assert_array_equal(b[ext], a[ext], err_msg=f"{fmt} {name} {ext}")
        for name in names:
            mask = read_product(out / name)[0]["MASK"]
            assert ((mask & bits.COSMIC_RAY) != 0).sum() > 0


# --------------------------------------------------------------------------- steps.qa

def test_qa_inject_in_a_night(twins):
    _, out = twins["gzip"]
    _, ref = twins["single"]
    rec = json.loads((out / "report.json").read_text())
    sci = [f for f in rec["frames"] if f.get("type") == "science"]
    assert len(sci) == NIGHT["n_science"]
    for f in sci:
        q = f["qa"]
        assert q["n_injected"] == QA["n"] and q["name"] == f["file"]
        assert len(q["recall"]) == len(q["bins"]) - 1 == len(q["n_events"])
        assert sum(q["n_events"]) == QA["n"]
        assert isinstance(q["extra_false_pixels"], int) and q["extra_false_pixels"] >= 0
        assert q["params"]["method"] == "lacosmic" and q["params"]["sigclip"] == 4.5
        # completeness rises with S/N (40 events on a 64 x 96 frame: loose bounds)
        assert q["recall_above"]["10"] >= 0.7 and q["recall"][0] < q["recall_above"]["10"]
        assert q["border"] == 3
    assert sci[0]["qa"]["seed"] != sci[1]["qa"]["seed"]          # one seed per frame
    assert rec["qa"] == {"frames": 2, "completeness_png": "qa_completeness.png"}
    png = out / "qa_completeness.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text()
    assert "## CR completeness (injection-recovery)" in md and "qa_completeness.png" in md
    # the night without qa has none of it, and the same outputs (previous test)
    rec0 = json.loads((ref / "report.json").read_text())
    assert "qa" not in rec0 and all("qa" not in f for f in rec0["frames"])
    assert not (ref / "qa_completeness.png").exists()
