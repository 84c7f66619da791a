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
from crdask.pipeline.spectro_masters import night_labels

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
    seen = Counter((f.frame_type, f.setup) for f in cat.frames)
    spec12, spec50 = "Free/Gr#3/slit#1.2/2x2/1030x1030", "Free/Gr#3/slit#5.0/2x2/1030x1030"
    img = "g#782/Free/Free/2x2/1030x1030"
    assert seen == Counter({("bias", "Free/Gr#1/Holes_Mask/2x2/1030x1030"): 5,
                            ("flat", spec12): 3, ("arc", spec12): 1, ("science", spec12): 2,
                            ("flat", img): 3, ("science", img): 6,
                            ("standard", spec50): 1, ("flat", spec50): 3})
    assert night_labels(cat.frames, wf.keymap()) == {
        spec12: "Gr_3+slit_1.2", spec50: "Gr_3+slit_5.0", img: "g_782"}
    assert {(f.gain, f.rdnoise, f.binning) for f in cat.frames} == {(1.1, 7.8, "2x2")}


def test_night_subset_reduces_with_the_workflow(tmp_path):
    """``crdask run`` with workflows/efosc2.yaml on an imaging + long-slit subset
    of the night (3 biases, the g#782 sky flats and one image, the slit#1.2
    lamp flats, its arc and one spectrum, and the slit#5.0 standard without
    its flats): imaging and spectroscopic masters apart, every science frame
    calibrated and cleaned, the standard with one warning line, exit 0."""
    import json
    import os
    import subprocess
    import sys

    from astropy.io import fits

    files = sorted(glob.glob(str(NIGHT / "EFOSC.*.fits")))
    if len(files) != 24:
        pytest.fail(f"real test data missing: {NIGHT} (see shared/data/README.md)")
    pick = {"DARK": 3, "SKY,FLAT": 3, "FLAT": 3, "WAVE": 1, "OBJECT-IMAGE": 1,
            "OBJECT-SPECTRUM": 1, "STD": 1}
    chosen = []
    for f in files:
        h = fits.getheader(f)
        kind = h["HIERARCH ESO DPR TYPE"]
        if kind == "OBJECT":
            kind += "-" + h["HIERARCH ESO DPR TECH"]
        if kind == "FLAT" and h["HIERARCH ESO INS SLIT1 NAME"] != "slit#1.2":
            continue
        if pick.get(kind, 0) > 0:
            pick[kind] -= 1
            chosen.append(f)
    assert len(chosen) == 13 and not any(pick.values())
    doc = yaml.safe_load(WORKFLOW.read_text())
    doc["inputs"]["files"] = chosen
    doc["output"] = str(tmp_path / "out")
    doc["execution"].update(workers=1, threads_per_worker=2)
    (tmp_path / "efosc2.yaml").write_text(yaml.safe_dump(doc))
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "crdask", "run", str(tmp_path / "efosc2.yaml")],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = tmp_path / "out"
    rec = json.loads((out / "report.json").read_text())
    img, spec = "g_782", "Gr_3+slit_1.2"
    assert set(rec["masters"]) == {"bias", f"flat_{img}", f"flat_{spec}", "bpm", f"bpm_{spec}"}
    names = {os.path.basename(f): fits.getheader(f) for f in chosen}
    names_path = {os.path.basename(f): os.path.abspath(f) for f in chosen}
    for label, tech in ((img, "IMAGE"), (spec, "SPECTRUM")):
        used = rec["masters"][f"flat_{label}"]["inputs"]
        assert len(used) == 3 and all(names[u]["HIERARCH ESO DPR TECH"] == tech for u in used)
    h = fits.getheader(out / f"master_flat_{img}.fits")
    assert (h["FLATNORM"], h["OBSMODE"]) == ("median", "imaging")
    h = fits.getheader(out / f"master_flat_{spec}.fits")
    assert (h["FLATNORM"], h["OBSMODE"], h["DISPAXIS"]) == ("response", "spectroscopy", 2)
    spec_bad = fits.getdata(out / f"master_bpm_{spec}.fits").mean()
    print(f"EFOSC2 subset: bad pixels, {spec} {spec_bad:.4f}, imaging "
          f"{fits.getdata(out / 'master_bpm.fits').mean():.4f}")
    assert spec_bad < 0.01
    science = [f for f in rec["frames"] if f["type"] == "science"]
    assert len(science) == 3
    for fr in science:
        assert fr["status"] == "done" and fr["cr_pixels"] > 0, fr
        hist = str(fits.getheader(fr["output"])["HISTORY"])
        if names[fr["file"]]["HIERARCH ESO DPR TYPE"] == "STD":   # no slit#5.0 flat here
            assert "(no flat of this setup)" in hist and "flat_" not in hist
            lines = [w for w in rec["warnings"] if w.startswith(names_path[fr["file"]])]
            assert len(lines) == 1 and "no master flat of its setup Free/Gr#3/slit#5.0" \
                in lines[0], rec["warnings"]
            continue
        tech = names[fr["file"]]["HIERARCH ESO DPR TECH"]
        label = img if tech == "IMAGE" else spec
        assert f"flat_{label}=master_flat_{label}.fits" in hist
        assert ("bpm=master_bpm.fits" in hist) == (label == img)
        assert (f"bpm_{spec}=" in hist) == (label == spec)
    arcs = [f for f in rec["frames"] if f["type"] == "arc"]
    assert [a["status"] for a in arcs] == ["done"]
    assert fits.getdata(arcs[0]["output"]).shape == (1024, 1024)
