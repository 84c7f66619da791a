"""``crdask crmasks PARAMS.yaml``: numina's YAML in, numina's products out,
one clear line for bad input, nothing half-written."""

import subprocess
import sys

import numpy as np
import pytest
import yaml
from astropy.io import fits
from click.testing import CliRunner

from crdask.cli_crmasks import crmasks_cmd
from mm_numina import write_frames, write_yaml
from mm_sets import make_set

REQ = dict(crmethod="mm_lacosmic", mm_boundary_fit="piecewise", dilation=1,
           mm_fixed_points_in_boundary=[[0, 40], [300, 110], [3000, 400], [60000, 3000]],
           interactive=False, semiwindow=15, color_scale="zscale", maxplots=10,
           verify_cr=False, la_cleantype="meanmask", mm_seed=3)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("crm")
    s = make_set(3, (96, 96), seed=8, bias=900.0, gain=2.0, readnoise=6.0, n_double=15)
    paths = write_frames(s["frames"], d / "raw")
    return d, s, paths


def run(args):
    return CliRunner().invoke(crmasks_cmd, [str(a) for a in args], catch_exceptions=False)


def test_products_with_numina_names(inputs, tmp_path):
    d, s, paths = inputs
    y = write_yaml(tmp_path / "p.yaml", paths, s["gain"], s["rnoise"], s["bias"],
                   dict(REQ, mm_xy_offsets=s["offsets"]))
    raw_before = [open(p, "rb").read() for p in paths]
    r = run([y, "--output-dir", tmp_path / "out"])
    assert r.exit_code == 0, r.output
    warn = [ln for ln in r.output.splitlines() if "warning" in ln]
    assert len(warn) == 1
    for key in ("interactive", "semiwindow", "color_scale", "maxplots", "verify_cr"):
        assert key in warn[0]
    out = tmp_path / "out"
    with fits.open(out / "crmasks.fits") as h:
        names = [x.name for x in h]
        assert names == ["PRIMARY", "MEDIANCR", "MEANCRT", "CRMASK1", "CRMASK2", "CRMASK3",
                         "MEANCR", "AUXCLEAN"]
        hdr = h[0].header
        assert hdr["FLUXF1"] == 1.0 and "UUID" in hdr
        hist = "\n".join(hdr["HISTORY"])
        assert "mm_boundary_fit = piecewise" in hist and "v_e" not in hist
        assert h["MEDIANCR"].data.dtype == np.uint8
        assert h["MEDIANCR"].header["NPMASKED"] == int(h["MEDIANCR"].data.sum()) > 0
        medcr_mask = h["MEDIANCR"].data.astype(bool)
    for name in ("mean", "median", "min", "mediancr", "meancrt", "meancr", "meancr2"):
        with fits.open(out / f"combined_{name}.fits") as h:
            assert [x.name for x in h] == ["PRIMARY", "VARIANCE", "MAP"]
            assert h[0].header["BITPIX"] == -32 and h["MAP"].header["BITPIX"] == 16
    with fits.open(out / "combined_mediancr.fits") as h, \
            fits.open(out / "combined_median.fits") as m:
        assert (h[0].data[medcr_mask] < m[0].data[medcr_mask]).all()
        assert (h["MAP"].data[medcr_mask] == 1).all()
        # bias subtracted
        assert abs(np.median(m[0].data) - np.median(s["frames"][0] - s["bias"])) < 5
    rows = 0
    for cat in ("any4", "only3", "only2", "other"):
        text = (out / f"mediancr_identified_{cat}.csv").read_text().splitlines()
        assert text[0] == "CR_number,X_pixel,Y_pixel,Mask_value"
        rows += len(text) - 1
    assert rows == medcr_mask.sum()
    for png in ("diagnostic_histogram2d.png", "diagnostic_mediancr.png",
                "mediancr_identified.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert [open(p, "rb").read() for p in paths] == raw_before
    assert not list(out.glob(".*.tmp"))


def test_no_plots_and_defaults(inputs, tmp_path):
    d, s, paths = inputs
    # only the keys numina itself cannot do without; mmcosmic alone is fine here
    doc = {"images": paths, "requirements": {"crmethod": "mmcosmic",
                                             "mm_boundary_fit": "piecewise",
                                             "mm_fixed_points_in_boundary": [[0, 80], [5e4, 6e3]]}}
    y = tmp_path / "p.yaml"
    y.write_text(yaml.safe_dump(doc))
    r = run([y, "--output-dir", tmp_path / "o", "--no-plots", "--json"])
    assert r.exit_code == 0, r.output
    assert not list((tmp_path / "o").glob("*.png"))
    assert (tmp_path / "o" / "combined_meancr2.fits").exists()
    with fits.open(tmp_path / "o" / "crmasks.fits") as h:
        assert "AUXCLEAN" not in [x.name for x in h]


@pytest.mark.parametrize("change, text", [
    (lambda doc: doc["requirements"].update(mm_bondary_fit="spline"),
     "requirements.mm_bondary_fit: unknown parameter (did you mean mm_boundary_fit?)"),
    (lambda doc: doc.update(rnoyse=3.0), "rnoyse: unknown key (did you mean rnoise?)"),
    (lambda doc: doc["requirements"].update(crmethod="mm_pycosmic"),
     "'mm_pycosmic' is a numina-crmasks method crdask does not have; allowed: mm_lacosmic, "
     "lacosmic, mmcosmic"),
    (lambda doc: doc["images"].__setitem__(1, "/nonexistent/b.fits"),
     "/nonexistent/b.fits: image file not found"),
    (lambda doc: doc.update(images=doc["images"][:2]), "needs at least 3"),
    (lambda doc: doc["requirements"].update(mm_cr_coincidences=3),
     "mm_cr_coincidences: 3 with 3 exposures"),
    (lambda doc: doc["requirements"].update(mm_xy_offsets=[[0, 0], [0, 500], [0, 0]]),
     "leaves no overlap"),
])
def test_bad_input_one_line_nothing_written(inputs, tmp_path, change, text):
    d, s, paths = inputs
    doc = {"images": list(paths), "gain": 2.0, "rnoise": 3.0, "bias": 900.0,
           "requirements": dict(REQ)}
    change(doc)
    y = tmp_path / "p.yaml"
    y.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    r = run([y, "--output-dir", out])
    assert r.exit_code == 1
    err = [ln for ln in r.output.splitlines() if ln.startswith("crdask: error:")]
    assert len(err) == 1 and text in err[0], r.output
    assert not out.exists() or not any(out.iterdir())


def test_shapes_that_differ(inputs, tmp_path):
    d, s, paths = inputs
    other = write_frames([np.zeros((96, 95), np.float32)], tmp_path, stem="odd")[0]
    y = write_yaml(tmp_path / "p.yaml", [paths[0], paths[1], other], 2.0, 3.0, 900.0, REQ)
    r = run([y, "--output-dir", tmp_path / "out"])
    assert r.exit_code == 1
    assert "odd1.fits[0]: shape (96, 95) differs" in r.output
    assert not (tmp_path / "out").exists()


def test_console_script_never_waits(inputs, tmp_path):
    d, s, paths = inputs
    y = write_yaml(tmp_path / "p.yaml", paths, s["gain"], s["rnoise"], s["bias"],
                   dict(REQ, interactive=True))
    res = subprocess.run([sys.executable, "-m", "crdask", "crmasks", str(y), "--output-dir",
                          str(tmp_path / "o"), "--no-plots"], stdin=subprocess.PIPE,
                         capture_output=True, text=True, cwd=str(tmp_path),
                         env={**__import__("os").environ,
                              "PYTHONPATH": str(__import__("pathlib").Path(__file__)
                                                .resolve().parents[1])})
    assert res.returncode == 0, res.stderr
    assert "masked pixels: MEDIANCR" in res.stdout
