"""The EFOSC2 workflow's sections and the response-normalised lamp flat, on the
real raw night in ../shared/data/efosc2-ntt."""

import glob
from pathlib import Path

import numpy as np
import pytest
import yaml

from crdask.calib.amplifiers import assemble_amplifiers
from crdask.calib.response import normalise_response
from crdask.io.amplifiers import amplifiers_from_config
from crdask.io.raw import read_raw
from crdask.io.sections import apply_section, parse_section

from shared_data import SHARED

WORKFLOW = Path(__file__).resolve().parents[1] / "workflows" / "efosc2.yaml"
NIGHT = SHARED / "efosc2-ntt"


@pytest.fixture(scope="module")
def night():
    files = sorted(glob.glob(str(NIGHT / "EFOSC.*.fits")))
    if len(files) != 24:
        pytest.fail(f"real test data missing: {NIGHT} (see shared/data/README.md)")
    inst = yaml.safe_load(WORKFLOW.read_text())["instrument"]
    frames = {f: read_raw(f) for f in files}
    kinds = {f: r.header["HIERARCH ESO DPR TYPE"] for f, r in frames.items()}
    return frames, kinds, inst


def _calibrate(raw, inst):
    h = raw.header
    amps = amplifiers_from_config(
        [{"name": h["HIERARCH ESO DET OUT1 NAME"], "data": inst["trim"],
          "overscan": inst["overscan"], "gain": h["HIERARCH ESO DET OUT1 CONAD"],
          "readnoise": h["HIERARCH ESO DET OUT1 RON"]}], raw.data.shape)
    return assemble_amplifiers(raw.data, amps, statistic=inst["overscan_statistic"],
                               fit=inst["overscan_fit"], order=inst["overscan_order"])


def test_sections_measured(night):
    frames, kinds, inst = night
    inner = parse_section("[101:900,101:900]")
    prescan = parse_section("[1025:1029,1:1024]")
    for f, raw in frames.items():
        assert raw.data.shape == (1030, 1030)
        out = _calibrate(raw, inst)
        assert out.data.shape == (1024, 1024)
        level = out.layout.levels[0]
        pre = np.median(apply_section(raw.data, prescan))
        if kinds[f] == "DARK":      # the 0 s biases: overscan rows track the data
            data_adu = np.median(apply_section(raw.data, inner))
            assert abs(data_adu - level) < 5, (f, data_adu, level)
            assert abs(np.median(out.data)) < 5      # e-
            assert 215 < level < 230
        if kinds[f] in ("FLAT", "SKY,FLAT"):
            # bright frames: the prescan columns pick up charge, the overscan
            # rows far less (why the workflow uses the rows)
            assert pre - level > 10, (f, pre, level)
            assert level < 235


def test_lamp_flat_response_normalisation(night):
    frames, kinds, inst = night
    cal = {f: _calibrate(r, inst).data for f, r in frames.items()}
    bias = np.mean([d for f, d in cal.items() if kinds[f] == "DARK"], axis=0)
    lamp = [cal[f] - bias for f, r in frames.items() if kinds[f] == "FLAT"
            and r.header["HIERARCH ESO INS SLIT1 NAME"] == "slit#1.2"]
    assert len(lamp) == 3
    master = np.median(lamp, axis=0)
    r = normalise_response(master, dispaxis=2, fit="spline", order=20)   # Gr#3: along y
    ratio = r.response.max() / r.response[r.response > 0].min()
    v = r.valid
    half = master.shape[0] // 2
    blue = np.median(r.flat[:half][v[:half]])
    red = np.median(r.flat[half:][v[half:]])
    bad = r.bad[v].mean()
    imaging = master / np.median(master[v])
    imaging_bad = (imaging < 0.5)[v].mean()
    print(f"EFOSC2 Gr#3 lamp flat: response max/min {ratio:.0f}; normalised median "
          f"blue {blue:.4f} red {red:.4f}; bad {bad:.4f} vs imaging norm {imaging_bad:.3f};"
          f" valid {v.mean():.3f}")
    assert ratio > 20
    assert abs(blue - 1) < 0.01 and abs(red - 1) < 0.01
    assert bad < 0.01 and imaging_bad > 0.2
    # the dark slit end (first ~50 columns) is outside the slit: flat = 1, flagged
    assert not r.illuminated[:40].any() and (r.flat[:, :40] == 1).all()


def test_workflow_validates_and_catalogues_the_night():
    from collections import Counter

    from crdask.io.catalog import build_catalog
    from crdask.pipeline.config import load_workflow
    # the example names the night relative to itself (shared/ beside the
    # repository); here it is read wherever the test data are
    doc = yaml.safe_load(Path(WORKFLOW).read_text())
    doc["inputs"]["files"] = [str(SHARED / "efosc2-ntt" / "EFOSC.*.fits")]
    wf = load_workflow(doc, base_dir=Path(WORKFLOW).parent)
    cat = build_catalog(wf.input_files(), wf.keymap())
    seen = Counter((f.frame_type, f.filter) for f in cat.frames)
    assert seen == Counter({("bias", "Gr#1+Holes_Mask"): 5, ("flat", "Gr#3+slit#1.2"): 3,
                            ("arc", "Gr#3+slit#1.2"): 1, ("science", "Gr#3+slit#1.2"): 2,
                            ("flat", "g#782"): 3, ("science", "g#782"): 6,
                            ("science", "Gr#3+slit#5.0"): 1, ("flat", "Gr#3+slit#5.0"): 3})
    assert {(f.gain, f.rdnoise, f.binning) for f in cat.frames} == {(1.1, 7.8, "2x2")}
