"""Multi-amplifier readouts: per-amplifier overscan and gain, assembly, headers."""

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from crdask.calib.amplifiers import Amplifier, assemble_amplifiers
from crdask.calib.calibrate import calibrate_frame, to_electrons
from crdask.calib.overscan import subtract_overscan, trim
from crdask.io.amplifiers import (amplifiers_from_config, amplifiers_from_extensions,
                                  amplifiers_from_header)
from crdask.io.sections import parse_section

NY, NAMP, NOS = 400, 200, 24          # rows, data columns per amp, overscan columns
GAINS = (1.5, 2.1)                    # e-/ADU
BIAS = (1000.0, 1020.0)               # ADU, 20 ADU apart
RN_E = (4.0, 5.0)                     # e-
SKY_E = 3000.0                        # e- per pixel, flat illumination


def two_amp_raw(seed=0):
    """Raw (NY, 2*NAMP + 2*NOS) uint16: [amp1 data | amp1 os | amp2 os | amp2 data],
    amp 2 read out from the right (its data reversed in x on the detector)."""
    rng = np.random.default_rng(seed)
    nx = 2 * NAMP + 2 * NOS
    raw = np.empty((NY, nx))
    y = np.arange(NY)[:, None]
    for k, (x0, x1, o0, o1) in enumerate(((0, NAMP, NAMP, NAMP + NOS),
                                          (NAMP + 2 * NOS, nx, NAMP + NOS, NAMP + 2 * NOS))):
        drift = BIAS[k] + 3.0 * np.sin(y / NY * 4.0 + k)        # bias drift along y
        sig = rng.poisson(SKY_E, (NY, x1 - x0)) / GAINS[k]
        raw[:, x0:x1] = drift + sig + rng.normal(0, RN_E[k] / GAINS[k], (NY, x1 - x0))
        raw[:, o0:o1] = drift + rng.normal(0, RN_E[k] / GAINS[k], (NY, o1 - o0))
    return np.round(raw).astype(np.uint16)


HEADER = {
    "NAXIS1": 2 * NAMP + 2 * NOS, "NAXIS2": NY,
    "DATASEC1": f"[1:{NAMP},1:{NY}]", "BIASSEC1": f"[{NAMP + 1}:{NAMP + NOS},1:{NY}]",
    "GAIN1": GAINS[0], "RDNOISE1": RN_E[0], "DETSEC1": f"[1:{NAMP},1:{NY}]",
    "DATASEC2": f"[{NAMP + 2 * NOS + 1}:{2 * NAMP + 2 * NOS},1:{NY}]",
    "BIASSEC2": f"[{NAMP + NOS + 1}:{NAMP + 2 * NOS},1:{NY}]",
    "GAIN2": GAINS[1], "RDNOISE2": RN_E[1], "DETSEC2": f"[{2 * NAMP}:{NAMP + 1},1:{NY}]",
}


def test_no_step_at_the_amplifier_boundary():
    raw = two_amp_raw()
    amps = amplifiers_from_header(HEADER)
    out = assemble_amplifiers(raw, amps)
    assert out.data.shape == (NY, 2 * NAMP) and out.data.dtype == np.float32
    # columns either side of the boundary, 10 each
    left = out.data[:, NAMP - 10:NAMP].mean(axis=0)
    right = out.data[:, NAMP:NAMP + 10].mean(axis=0)
    step = right.mean() - left.mean()
    se = np.hypot(left.std(ddof=1), right.std(ddof=1)) / np.sqrt(10)
    se = max(se, np.sqrt(SKY_E / (NY * 10) * 2))   # at least the Poisson error
    assert abs(step) < 3 * se, (step, se)
    assert abs(out.data.mean() - SKY_E) < 5
    # the naive calibration (one overscan, one gain) has a large step
    naive = to_electrons(subtract_overscan(raw, (slice(None), slice(NAMP, NAMP + NOS))),
                         GAINS[0])
    naive_step = naive[:, -10:].mean() - naive[:, :NAMP][:, -10:].mean()
    assert abs(naive_step) > 100 * se
    # read-noise map per amplifier; levels recorded
    assert set(np.unique(out.readnoise)) == {np.float32(4.0), np.float32(5.0)}
    assert (out.readnoise[:, :NAMP] == 4.0).all() and (out.readnoise[:, NAMP:] == 5.0).all()
    lev = out.layout.levels
    assert abs(lev[0] - BIAS[0]) < 3 and abs(lev[1] - BIAS[1]) < 3
    hist = out.layout.history()
    assert len(hist) == 3 and "GAIN=2.1" in hist[2] and "BIASSEC=[225:248,1:400]" in hist[2]


def test_detsec_reversal_puts_amp2_mirrored():
    raw = np.zeros((4, 10), np.float32)
    raw[:, 6:10] = np.arange(4)[None, :] + 1      # amp 2 data: 1 2 3 4 along x
    amps = [Amplifier("1", (slice(0, 4), slice(0, 4)), 1.0, 1.0,
                      detsec=parse_section("[1:4,1:4]")),
            Amplifier("2", (slice(0, 4), slice(6, 10)), 2.0, 1.0,
                      detsec=parse_section("[8:5,1:4]"))]
    out = assemble_amplifiers(raw, amps)
    np.testing.assert_array_equal(out.data[0], [0, 0, 0, 0, 8, 6, 4, 2])
    # without detsec: raw order, gap removed, no mirror
    amps = [Amplifier(a.name, a.datasec, a.gain, a.readnoise) for a in amps]
    out = assemble_amplifiers(raw, amps)
    np.testing.assert_array_equal(out.data[0], [0, 0, 0, 0, 2, 4, 6, 8])


def test_one_amplifier_equals_the_single_path():
    raw = two_amp_raw(1)
    bias, data = (slice(None), slice(NAMP, NAMP + NOS)), (slice(None), slice(0, NAMP))
    ref = to_electrons(trim(subtract_overscan(raw, bias, fit="chebyshev"), data), 1.5)
    out = assemble_amplifiers(raw, [Amplifier("1", data, 1.5, 4.0, biassec=bias)],
                              fit="chebyshev")
    np.testing.assert_array_equal(out.data, ref)


@settings(max_examples=15, deadline=None)
@given(cy=st.integers(7, NY), cx=st.integers(13, 2 * NAMP + 2 * NOS),
       fit=st.sampled_from([None, "chebyshev", "spline"]))
def test_dask_equals_numpy(cy, cx, fit):
    raw = two_amp_raw(2)
    amps = amplifiers_from_header(HEADER)
    ref = assemble_amplifiers(raw, amps, fit=fit, order=3)
    lazy = assemble_amplifiers(da.from_array(raw, chunks=(cy, cx)), amps, fit=fit, order=3)
    assert isinstance(lazy.data, da.Array)
    np.testing.assert_array_equal(lazy.data.compute(), ref.data)
    np.testing.assert_array_equal(lazy.readnoise.compute(), ref.readnoise)


def test_calibrate_frame_takes_the_readnoise_map():
    raw = two_amp_raw(3)
    out = assemble_amplifiers(raw, amplifiers_from_header(HEADER))
    cal = calibrate_frame(out.data, readnoise=out.readnoise)
    expect = out.readnoise ** 2 + np.maximum(out.data, 0)
    np.testing.assert_allclose(cal.var, expect, rtol=1e-6)
    with pytest.raises(ValueError, match="readnoise map has shape"):
        calibrate_frame(out.data, readnoise=out.readnoise[:, :5])


def test_bad_amplifiers_one_line_errors():
    raw = two_amp_raw(4)
    a = amplifiers_from_header(HEADER)
    with pytest.raises(ValueError, match="amplifier 1: gain must be > 0"):
        assemble_amplifiers(raw, [Amplifier("1", a[0].datasec, 0.0, 4.0)])
    with pytest.raises(ValueError, match="overlap"):
        assemble_amplifiers(raw, [Amplifier("1", (slice(None), slice(0, 100)), 1, 1),
                                  Amplifier("2", (slice(None), slice(50, 150)), 1, 1)])
    with pytest.raises(ValueError, match="amplifier 2 datasec"):
        assemble_amplifiers(raw, [a[0], Amplifier("2", (slice(0, 9999), slice(0, 5)), 1, 1)])
    bad = dict(HEADER, GAIN2="high")
    with pytest.raises(ValueError, match=r"GAIN2: gain of amplifier 2 must be a number"):
        amplifiers_from_header(bad, path="raw/a.fits", hdu=0)
    bad = dict(HEADER, DATASEC2="[1:9999,1:10]")
    with pytest.raises(ValueError, match=r"raw/a.fits\[0\] DATASEC2: .*exceeds"):
        amplifiers_from_header(bad, path="raw/a.fits", hdu=0)


def test_header_conventions_agree():
    raw = two_amp_raw(5)
    numbered = assemble_amplifiers(raw, amplifiers_from_header(HEADER)).data
    cfg = amplifiers_from_config(
        [{"name": "1", "data": HEADER["DATASEC1"], "overscan": HEADER["BIASSEC1"],
          "gain": 1.5, "readnoise": 4.0, "detsec": HEADER["DETSEC1"]},
         {"name": "2", "data": HEADER["DATASEC2"], "overscan": HEADER["BIASSEC2"],
          "gain": 2.1, "readnoise": 5.0, "detsec": HEADER["DETSEC2"]}], raw.shape)
    np.testing.assert_array_equal(assemble_amplifiers(raw, cfg).data, numbered)
    # MEF: each extension its own header; binned 2x1 detsec in unbinned pixels
    exts = []
    for n in (1, 2):
        h = {"NAXIS1": raw.shape[1], "NAXIS2": NY, "DATASEC": HEADER[f"DATASEC{n}"],
             "BIASSEC": HEADER[f"BIASSEC{n}"], "GAIN": GAINS[n - 1],
             "RDNOISE": RN_E[n - 1], "CCDSUM": "2 1", "AMPNAME": "LR"[n - 1]}
        h["DETSEC"] = ("[1:400,1:400]" if n == 1 else "[800:401,1:400]")
        exts.append((n, h))
    mef = amplifiers_from_extensions(exts)
    assert [a.name for a in mef] == ["L", "R"]
    assert mef[1].detsec.slices == (slice(0, 400), slice(200, 400)) and mef[1].detsec.flip_x
    np.testing.assert_array_equal(assemble_amplifiers(raw, mef).data, numbered)
    with pytest.raises(ValueError, match=r"instrument.amplifiers\[0\]: unknown key"):
        amplifiers_from_config([{"data": "[1:5,1:5]", "gain": 1, "readnoise": 1,
                                 "bais": 3}], raw.shape)
    single = amplifiers_from_header({"NAXIS1": 10, "NAXIS2": 5, "GAIN": 2, "RDNOISE": 3})
    assert len(single) == 1 and single[0].biassec is None


def test_four_amplifier_quad_readout_reassembles_the_scene():
    """2x2 amplifiers, each read from its own corner (DETSEC reversed in x and/or
    y), noise-free: assembly must give back the scene exactly, numpy and dask."""
    rng = np.random.default_rng(7)
    scene = rng.integers(0, 5000, (40, 60)).astype(np.float64)     # e-, detector order
    gains = {"LL": 1.0, "LR": 2.0, "UL": 4.0, "UR": 0.5}
    bias = {"LL": 100.0, "LR": 120.0, "UL": 90.0, "UR": 200.0}
    # raw layout: [amp data 30 wide | 5 overscan] per amp, two rows of amps 20 high
    raw = np.zeros((40, 70))
    amps = []
    for name, (qy, qx) in {"LL": (0, 0), "LR": (0, 1), "UL": (1, 0), "UR": (1, 1)}.items():
        part = scene[qy * 20:(qy + 1) * 20, qx * 30:(qx + 1) * 30]
        # each amplifier reads from its outer corner: stored flipped
        if qx == 1:
            part = part[:, ::-1]
        if qy == 1:
            part = part[::-1, :]
        x0 = qx * 35
        raw[qy * 20:(qy + 1) * 20, x0:x0 + 30] = part / gains[name] + bias[name]
        raw[qy * 20:(qy + 1) * 20, x0 + 30:x0 + 35] = bias[name]
        dx = f"{qx * 30 + 1}:{qx * 30 + 30}" if qx == 0 else f"{qx * 30 + 30}:{qx * 30 + 1}"
        dy = f"{qy * 20 + 1}:{qy * 20 + 20}" if qy == 0 else f"{qy * 20 + 20}:{qy * 20 + 1}"
        amps.append(Amplifier(name, (slice(qy * 20, qy * 20 + 20), slice(x0, x0 + 30)),
                              gains[name], 3.0,
                              biassec=(slice(qy * 20, qy * 20 + 20), slice(x0 + 30, x0 + 35)),
                              detsec=parse_section(f"[{dx},{dy}]")))
    out = assemble_amplifiers(raw, amps)
    np.testing.assert_array_equal(out.data, scene.astype(np.float32))
    lazy = assemble_amplifiers(da.from_array(raw, chunks=(13, 17)), amps)
    np.testing.assert_array_equal(lazy.data.compute(), out.data)
    assert [round(float(v), 6) for v in out.layout.levels] == [100, 120, 90, 200]
