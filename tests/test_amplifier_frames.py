"""``instrument.amplifiers`` and ``steps.qa`` below the night: the workflow
keys, the per-frame calibration of a two-amplifier frame (``electrons``), and
the night's injection-recovery on one calibrated frame (fast, no cluster)."""

import numpy as np
import pytest
from astropy.io import fits

from crdask.cosmic.registry import get_method
from crdask.pipeline.calibration import CalibSetup, FrameRejected, electrons
from crdask.pipeline.config import load_workflow
from crdask.pipeline.qa import qa_calibrated
from crdask.pipeline.schema import WorkflowError
from crdask.simulate import Detector, simulate_raw, write_raw

DET = Detector(shape=(48, 64), amplifiers=2, overscan=8, seed=4)
# The same layout as the simulator's header keywords, written out (1-based).
LISTED = [{"name": "1", "data": "[9:40,1:48]", "overscan": "[1:8,1:48]", "gain": 1.5,
           "readnoise": 4.5},
          {"name": "2", "data": "[41:72,1:48]", "overscan": "[73:80,1:48]",
           "gain": 1.5 * 1.08, "readnoise": 4.5 * 1.15}]


def workflow(tmp_path, instrument=None, steps=None):
    doc = {"version": 1, "inputs": {"directory": str(tmp_path)}, "output": str(tmp_path / "o")}
    if instrument is not None:
        doc["instrument"] = instrument
    if steps is not None:
        doc["steps"] = steps
    return load_workflow(doc)


@pytest.fixture(scope="module")
def raw_flat(tmp_path_factory):
    sim = simulate_raw("flat", DET, exptime=5.0, filter="V", seed=9)
    data = sim.hdu.data.copy()
    data[10, 50] = 65535          # a saturated pixel read by amplifier 2
    sim.hdu.data = data
    path = tmp_path_factory.mktemp("amps") / "flat.fits"
    write_raw(sim, path)
    return path


def test_workflow_amplifier_settings(tmp_path):
    assert workflow(tmp_path).instrument["amplifiers"] is None       # default: one amp
    assert workflow(tmp_path, {"amplifiers": "header"}).calib_setup().amplifiers == "header"
    amps = workflow(tmp_path, {"amplifiers": LISTED}).instrument["amplifiers"]
    assert amps[1] == {**LISTED[1], "detsec": None, "overscan_axis": None, "bias_level": 0.0}
    bad = [("headers", "instrument.amplifiers: 'headers' is not allowed"),
           ([], "instrument.amplifiers: expected a non-empty list"),
           ([{**LISTED[0], "datasec": "[1:2,1:2]"}], "instrument.amplifiers[0].datasec: "
                                                     "unknown key"),
           ([{k: v for k, v in LISTED[0].items() if k != "data"}],
            "instrument.amplifiers[0].data: missing"),
           ([{**LISTED[0], "gain": 0}], "instrument.amplifiers[0].gain: 0 is not allowed"),
           ([{**LISTED[0], "overscan": "[1:8]"}], "instrument.amplifiers[0].overscan: "
                                                  "malformed section"),
           ([{**LISTED[0], "overscan_axis": 2}], "instrument.amplifiers[0].overscan_axis"),
           ([LISTED[0], LISTED[0]], "amplifier names must be unique")]
    for value, msg in bad:
        with pytest.raises(WorkflowError) as e:
            workflow(tmp_path, {"amplifiers": value})
        assert msg in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_workflow_qa_settings(tmp_path):
    assert workflow(tmp_path).qa["inject"] is False                 # off by default
    wf = workflow(tmp_path, steps={"qa": {"inject": True, "n": 30}})
    assert wf.qa == {"inject": True, "seed": 0, "n": 30, "snr_min": 3.0, "snr_max": 100.0,
                     "border": 0}
    assert load_workflow(wf.to_dict()).qa == wf.qa
    for qa, msg in (({"inject": "yes"}, "steps.qa.inject: expected true or false"),
                    ({"n": 0}, "steps.qa.n: 0 is not allowed"),
                    ({"snr_min": 50, "snr_max": 5}, "steps.qa.snr_max: 5 is not above"),
                    ({"nevents": 3}, "steps.qa.nevents: unknown key")):
        with pytest.raises(WorkflowError) as e:
            workflow(tmp_path, steps={"qa": qa})
        assert msg in str(e.value), str(e.value)


def test_header_and_listed_amplifiers_calibrate_alike(raw_flat):
    a = electrons(str(raw_flat), CalibSetup(amplifiers="header"), 5.0)
    b = electrons(str(raw_flat), CalibSetup(amplifiers=LISTED), 5.0)
    assert a.data.shape == (48, 64)
    np.testing.assert_array_equal(np.asarray(a.data), np.asarray(b.data))
    np.testing.assert_array_equal(np.asarray(a.readnoise_map), np.asarray(b.readnoise_map))
    # the saturation mask is assembled with the pixels: raw (10, 50) -> (10, 42)
    sat = np.asarray(a.saturated)
    assert sat.shape == (48, 64) and sat[10, 42] and sat.sum() == 1
    # each amplifier converted with its own gain: the two halves of the flat agree
    d = np.asarray(a.data)
    assert abs(d[:, 31].mean() / d[:, 32].mean() - 1) < 0.01
    one = electrons(str(raw_flat), CalibSetup(overscan="BIASSEC1", gain=1.5, readnoise=4.5),
                    5.0)
    d1 = np.asarray(one.data)
    assert d1[:, 32].mean() / d1[:, 31].mean() < 0.95     # one gain: amp 2 8 % low
    assert one.readnoise_map is None and one.layout is None     # the one-amplifier path


def test_amplifier_header_errors_name_the_file(raw_flat, tmp_path):
    with fits.open(raw_flat) as h:
        hdr, data = h[0].header.copy(), h[0].data.copy()
    del hdr["GAIN2"]
    p = tmp_path / "nogain2.fits"
    fits.writeto(p, data, hdr)
    with pytest.raises(FrameRejected) as e:
        electrons(str(p), CalibSetup(amplifiers="header"))
    assert str(e.value).startswith(f"{p}[0] GAIN2: missing gain of amplifier 2"), str(e.value)
    wide = [dict(LISTED[0]), {**LISTED[1], "data": "[41:90,1:48]"}]
    with pytest.raises(FrameRejected) as e:
        electrons(str(raw_flat), CalibSetup(amplifiers=wide))
    assert str(e.value).startswith(f"{raw_flat}[0]: instrument.amplifiers[1].data"), \
        str(e.value)


def test_night_qa_is_seeded_and_leaves_the_frame_alone():
    rng = np.random.default_rng(2)
    sci = (200 + rng.normal(0, 15, (96, 96))).astype(np.float32)
    var = np.full(sci.shape, 225.0, np.float32)
    mask = np.zeros(sci.shape, np.uint8)
    keep = sci.copy(), var.copy()
    params = get_method("lacosmic", "frame").params.validate({})
    settings = {"inject": True, "seed": 5, "n": 25, "snr_min": 3.0, "snr_max": 100.0,
                "border": 3}
    runs = [qa_calibrated(sci, var, mask, mask != 0, "lacosmic", params, 15.0,
                          settings=settings, name=name).to_dict()
            for name in ("a.fits", "a.fits", "b.fits")]
    assert runs[0] == runs[1]                       # same seed and name: same result
    assert runs[0]["seed"] != runs[2]["seed"]       # another frame: other positions
    np.testing.assert_array_equal(sci, keep[0])
    np.testing.assert_array_equal(var, keep[1])
    assert runs[0]["n_injected"] == 25 and runs[0]["recall_above"]["10"] >= 0.8
    assert runs[0]["params"]["sigclip"] == params["sigclip"]
