"""Spectroscopic nights through the real ``crdask run``: masters per setup,
lamp flats normalised by their response, arcs as calibrated products."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dask
import numpy as np
import pytest
import yaml
from astropy.io import fits

from crdask.calib import bits
from crdask.io.catalog import build_catalog
from crdask.pipeline.calibration import build_masters
from crdask.pipeline.config import WorkflowError, load_workflow
from crdask.pipeline.spectro_masters import frame_masters, frame_mode, setup_labels
from crdask.simulate import simulate_longslit_night

REPO = Path(__file__).resolve().parents[1]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def _run(workflow, cwd):
    return subprocess.run([sys.executable, "-m", "crdask", "run", str(workflow)], cwd=cwd,
                          env=_env(), capture_output=True, text=True)


# --- the small pieces -------------------------------------------------------------

def test_setup_labels_unique_and_imaging_names_unchanged():
    assert setup_labels(["V/-/-/1x1/64x64", "R/-/-/1x1/64x64"]) == {
        "V/-/-/1x1/64x64": "V", "R/-/-/1x1/64x64": "R"}
    got = setup_labels(["Free/Gr#3/slit#1.2/2x2/1030x1030", "Free/Gr#3/slit#1.2/1x1/2060x2060",
                        "g#782/Free/Free/2x2/1030x1030"])
    assert got == {"Free/Gr#3/slit#1.2/2x2/1030x1030": "Gr_3+slit_1.2_2x2",
                   "Free/Gr#3/slit#1.2/1x1/2060x2060": "Gr_3+slit_1.2_1x1",
                   "g#782/Free/Free/2x2/1030x1030": "g_782"}
    # setups made of other parts (keywords.setup)
    assert setup_labels(["Gr#3", "Gr#5"], names=("grism",)) == {"Gr#3": "Gr_3", "Gr#5": "Gr_5"}
    assert setup_labels(["2x2/100x100"], names=("binning", "shape")) == {
        "2x2/100x100": "2x2+100x100"}
    # a spectroscopic setup's own mask replaces the night's
    paths = {"bias": "b", "flat_A": "fa", "bpm": "m", "bpm_A": "ma"}
    assert frame_masters(paths, "A") == {"bias": "bias", "flat": "flat_A", "bpm": "bpm_A"}
    assert frame_masters(paths, "") == {"bias": "bias", "bpm": "bpm"}


def test_mode_from_keyword_and_schema(tmp_path):
    class S:
        mode, mode_keyword = "imaging", "ESO DPR TECH"
    assert frame_mode({"ESO DPR TECH": "SPECTRUM"}, S) == "spectroscopy"
    assert frame_mode({"ESO DPR TECH": "IMAGE"}, S) == "imaging"
    assert frame_mode({}, S) == "imaging"
    base = {"inputs": {"directory": str(tmp_path)}, "output": str(tmp_path / "o")}
    wf = load_workflow({**base, "instrument": {"mode": "spectroscopy", "dispersion_axis": 2},
                        "steps": {"masters": {"flat_norm": "response",
                                              "response": {"order": 8}}}})
    s = wf.calib_setup()
    assert (s.mode, s.dispersion_axis, s.flat_norm, s.response["order"]) == \
        ("spectroscopy", 2, "response", 8)
    assert wf.arcs == {"enabled": True, "cosmics": False, "flat": False}
    for bad, key in [({"instrument": {"mode": "ifu"}}, "instrument.mode"),
                     ({"instrument": {"dispersion_axis": 0}}, "instrument.dispersion_axis"),
                     ({"steps": {"masters": {"response": {"fit": "cubic"}}}},
                      "steps.masters.response.fit"),
                     ({"steps": {"masters": {"response": {"order": 0}}}},
                      "steps.masters.response.order"),
                     ({"steps": {"arcs": {"cosmics": "yes"}}}, "steps.arcs.cosmics")]:
        with pytest.raises(WorkflowError) as e:
            load_workflow({**base, **bad})
        assert f": {key}: " in str(e.value) and "\n" not in str(e.value)


# --- a simulated long-slit night ---------------------------------------------------------

@pytest.fixture(scope="module")
def longslit(tmp_path_factory):
    root = tmp_path_factory.mktemp("longslit")
    m = simulate_longslit_night(root / "raw", shape=(128, 512), n_bias=3, n_flat=3, n_arc=1,
                                n_science=2, seed=3)
    doc = {"version": 1, "inputs": {"directory": "raw"}, "output": "out",
           "truth": "raw_truth", "instrument": {"mode": "spectroscopy"},
           "steps": {"masters": {"flat_norm": "response"},
                     "cosmics": {"enabled": True, "method": "lacosmic"}},
           "execution": {"workers": 1, "threads_per_worker": 2}}
    (root / "night.yaml").write_text(yaml.safe_dump(doc))
    proc = _run(root / "night.yaml", root)
    return root, m, proc, doc


def _halves(root, m):
    """Pooled (recall, bad fraction) of the blue (low-response) and red halves."""
    found = {"blue": [0, 0, 0, 0], "red": [0, 0, 0, 0]}
    for rec in m.files:
        if rec["kind"] != "science":
            continue
        stem = rec["name"].split(".")[0]
        mask = fits.getdata(root / "out" / f"{stem}_cal.fits", "MASK")
        truth = np.load(root / "raw_truth" / rec["truth"]["crmask"])["crmask"]
        nx = mask.shape[1]
        for name, sl in (("blue", slice(0, nx // 2)), ("red", slice(nx // 2, None))):
            cr, t = (mask[:, sl] & bits.COSMIC_RAY) != 0, truth[:, sl]
            f = found[name]
            f[0] += int((cr & t).sum())
            f[1] += int(t.sum())
            f[2] += int(((mask[:, sl] & bits.BAD) != 0).sum())
            f[3] += t.size
    return {k: (v[0] / v[1], v[2] / v[3]) for k, v in found.items()}


def test_longslit_night_response_flat(longslit):
    root, m, proc, _ = longslit
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = root / "out"
    label = "Gr_sim+slit_1.0"
    flat = out / f"master_flat_{label}.fits"
    assert flat.exists() and (out / f"master_bpm_{label}.fits").exists()
    h = fits.getheader(flat)
    assert (h["FLATNORM"], h["OBSMODE"], h["DISPAXIS"]) == ("response", "spectroscopy", 1)
    # the normalised flat keeps no lamp spectrum: ~1 at both ends of the dispersion
    f = fits.getdata(flat)
    assert abs(np.median(f[20:-20, 5:60]) - 1) < 0.02 and abs(np.median(f[20:-20, -60:-5]) - 1) < 0.02
    halves = _halves(root, m)
    (rb, bb), (rr, br) = halves["blue"], halves["red"]
    print(f"response flat: recall blue {rb:.3f} red {rr:.3f}; bad blue {bb:.4f} red {br:.4f}")
    assert bb < 0.01 and br < 0.01
    assert abs(rb - rr) < 0.05
    assert rb > 0.5 and rr > 0.5          # the CR step did find cosmic rays
    # the science frames name their setup's masters; the ledger closure too
    hist = str(fits.getheader(out / "sci_target01_001_cal.fits")["HISTORY"])
    assert f"flat_{label}=master_flat_{label}.fits" in hist
    assert f"bpm_{label}=master_bpm_{label}.fits" in hist and "setup=Free/Gr#sim" in hist
    entry = json.loads((out / "ledger" / "sci_target01_001.json").read_text())
    assert {f"master:flat_{label}", f"master:bpm_{label}", "master:bias"} <= set(entry["inputs"])


def test_longslit_arcs_are_calibrated_products(longslit):
    root, m, proc, _ = longslit
    assert proc.returncode == 0
    arc = root / "out" / "arc_001_arc.fits"
    with fits.open(arc) as hdul:
        sci, mask, h = hdul[0].data, hdul["MASK"].data, hdul[0].header
        assert "UNCERT" in hdul
    assert sci.shape == (128, 512) and h["BUNIT"] == "electron"
    hist = str(h["HISTORY"])
    assert "not flat-fielded" in hist and "no cosmic-ray cleaning" in hist
    assert "master_bias.fits" in hist and "master_flat_" not in hist
    assert not (mask & bits.COSMIC_RAY).any()
    # bias-subtracted, in e-: the inter-line level is ~0, the lines where the truth puts them
    det = np.load(root / "raw_truth" / "detector.npz")
    profile = np.median(sci, axis=0)
    assert abs(np.median(profile)) < 5
    top = np.argsort(det["arc_flux"])[-3:]
    for x in det["arc_lines"][top]:
        peak = int(round(x)) - 3 + int(np.argmax(profile[int(round(x)) - 3:int(round(x)) + 4]))
        assert abs(peak - x) <= 1.0 and profile[peak] > 50 * 1.5  # e-, well above noise
    rec = json.loads((root / "out" / "report.json").read_text())
    arcs = [f for f in rec["frames"] if f["type"] == "arc"]
    assert [(a["file"], a["status"]) for a in arcs] == [("arc_001.fits", "done")]
    entry = json.loads((root / "out" / "ledger" / "arc_001.json").read_text())
    assert not any(k.startswith("master:flat_") for k in entry["inputs"])


def test_imaging_normalisation_of_the_same_night_flags_the_blue_end(longslit):
    """What the response normalisation avoids: the lamp flat divided by its
    median marks the faint end of the spectrum as low-response bad pixels."""
    root, _, _, doc = longslit
    doc = {**doc, "steps": {**doc["steps"], "masters": {"flat_norm": "median"}}}
    wf = load_workflow(doc, base_dir=root)
    cat = build_catalog(wf.input_files(), wf.keymap())
    rejected = []
    masters = build_masters(cat, wf.calib_setup(), rejected)
    assert not rejected and not masters["bpm_setup"]
    bad = np.asarray(dask.compute(masters["bpm"])[0])   # numpy or lazy (large sets)
    nx = bad.shape[1]
    print(f"median-normalised lamp flat: bad {bad.mean():.3f} (blue half "
          f"{bad[:, :nx // 2].mean():.3f})")
    assert bad.mean() > 0.2 and bad[:, :nx // 2].mean() > 0.4
