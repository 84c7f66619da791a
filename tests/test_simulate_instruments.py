"""The simulator as instruments write: pairs / groups, double hits, MEF / gzip /
fpack files, two amplifiers, long-slit spectroscopy -- with the truth consistent."""

import datetime as dt
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

from crdask.io import build_catalog, read_header, read_raw
from crdask.io.sections import apply_section, header_section
from crdask.simulate import Detector, NightManifest, simulate_longslit_night, simulate_raw
from crdask.simulate import write_night

WT = str(pathlib.Path(__file__).resolve().parents[1])
SMALL = dict(shape=(64, 96), n_bias=2, n_dark=1, dark_times=(30,), filters=("V",),
             n_flat=2, n_science=5, seed=4)


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    return {fmt: write_night(root / fmt, format=fmt, **SMALL)
            for fmt in ("single", "mef", "gzip", "fpack")}


def _described(cat):
    out = []
    for f in cat:
        d = f.to_dict()
        d["path"] = os.path.basename(f.path).split(".")[0]
        d.pop("hdu")
        out.append(d)
    return out


def test_formats_catalogued_identically(nights):
    cats = {fmt: build_catalog(m.directory) for fmt, m in nights.items()}
    ref = _described(cats["single"])
    assert len(ref) == 2 + 1 + 2 + 5 and all(f["warnings"] == [] for f in ref)
    for fmt, cat in cats.items():
        assert not cat.unreadable, fmt
        assert _described(cat) == ref, fmt
        eg = [(g.label, [os.path.basename(p).split(".")[0] for p in g.paths])
              for g in cat.exposure_groups()]
        assert eg == [(g.label, [os.path.basename(p).split(".")[0] for p in g.paths])
                      for g in cats["single"].exposure_groups()]
    assert {f.hdu for f in cats["mef"]} == {1} and {f.hdu for f in cats["fpack"]} == {1}


def test_formats_hold_the_same_pixels_and_keywords(nights):
    name = nights["single"].files[-1]["name"].split(".")[0]
    ref = read_raw(pathlib.Path(nights["single"].directory) / f"{name}.fits")
    for fmt, ext in (("mef", ".fits"), ("gzip", ".fits.gz"), ("fpack", ".fits.fz")):
        path = pathlib.Path(nights[fmt].directory) / f"{name}{ext}"
        r = read_raw(path)
        np.testing.assert_array_equal(r.data, ref.data)
        for key in ("GAIN", "RDNOISE", "EXPTIME", "DATASEC", "BIASSEC", "SATURATE",
                    "DATE-OBS", "OBJECT", "FILTER"):
            assert r.header[key] == ref.header[key], (fmt, key)
    mef = pathlib.Path(nights["mef"].directory) / f"{name}.fits"
    with fits.open(mef) as hdul:
        assert len(hdul) == 2 and hdul[1].name == "SCI" and hdul[0].data is None
        assert {"GAIN", "RDNOISE", "EXPTIME", "DATASEC", "BIASSEC"} <= set(hdul[0].header)
        assert "GAIN" not in hdul[1].header and hdul[1].header["BZERO"] == 32768
    h = read_header(mef)
    assert h.hdu == 1 and header_section(h, "BIASSEC").shape == (64, 32)
    fz = pathlib.Path(nights["fpack"].directory) / f"{name}.fits.fz"
    with fits.open(fz) as hdul:
        assert isinstance(hdul[1], fits.CompImageHDU)
    with fits.open(fz, disable_image_compression=True) as hdul:
        assert hdul[1].header["ZCMPTYPE"] == "RICE_1"


def test_pairs_layout(tmp_path):
    m = write_night(tmp_path / "p", layout="pairs", **SMALL)
    assert [len(g["members"]) for g in m.groups] == [2, 2, 1]
    cat = build_catalog(m.directory)
    got = sorted(tuple(os.path.basename(p) for p in g.paths) for g in cat.exposure_groups())
    assert got == sorted(tuple(g["members"]) for g in m.groups)
    for g in m.groups:
        starts = [dt.datetime.fromisoformat(m.select(group=g["id"])[i]["date_obs"])
                  for i in range(len(g["members"]))]
        assert starts == sorted(starts)
        if len(starts) == 2:      # consecutive: only the readout in between
            assert (starts[1] - starts[0]).total_seconds() == g["exptime"] + 30.0
    with pytest.raises(ValueError, match="layout"):
        write_night(tmp_path / "x", layout="triples", **SMALL)


def test_groups_layout_sizes_and_dithers(tmp_path):
    m = write_night(tmp_path / "g", **{**SMALL, "n_science": 8})
    assert all(3 <= len(g["members"]) <= 5 for g in m.groups)
    assert sum(len(g["members"]) for g in m.groups) == 8
    for g in m.groups:
        assert all(max(abs(v) for v in d) <= 0.5 for d in g["dithers"])   # sub-pixel
        recs = m.select(group=g["id"])
        assert {(r["object"], r["filter"], r["exptime"]) for r in recs} == {
            (g["object"], g["filter"], g["exptime"])}


def test_double_hits_truth(tmp_path):
    m = write_night(tmp_path / "d", double_hits=6, **{**SMALL, "n_science": 7})
    assert all("double_hits" in g for g in m.groups)
    for g in m.groups:
        dh = g["double_hits"]
        assert dh["members"] == g["members"][:2] and dh["n_events"] == 6
        with np.load(m.truth_path(dh["mask"])) as z:
            mask = z["mask"]
        a, b = (m.crmask(n) for n in dh["members"])
        assert mask.any() and mask.sum() == dh["n_px"]
        assert not (mask & ~a).any() and not (mask & ~b).any()   # in both truths
        for n in dh["members"]:
            rec = next(r for r in m.files if r["name"] == n)
            assert rec["n_double_hit_px"] >= dh["n_px"]
        for n in g["members"][2:]:    # the other members do not share them
            assert (m.crmask(n) & mask).sum() < mask.sum()
            assert "n_double_hit_px" not in next(r for r in m.files if r["name"] == n)
    # the raw pixels carry the hits: both members are high there, a third is not
    g = m.groups[0]
    da, db, dc = (read_raw(m.path(n)).data for n in g["members"][:3])
    with np.load(m.truth_path(g["double_hits"]["mask"])) as z:
        mask = z["mask"]
    ys, xs = Detector(shape=SMALL["shape"]).data_slice
    sa, sb, sc = (d[ys, xs][mask] for d in (da, db, dc))
    assert np.median(sa - sc) > 50 and np.median(sb - sc) > 50


def test_two_amplifiers():
    det = Detector(shape=(64, 96), amplifiers=2, overscan=16, seed=2, bias_drift=0.0)
    flat = simulate_raw("flat", det, seed=5)
    bias = simulate_raw("bias", det, seed=6)
    h = flat.header
    assert h["NAMPS"] == 2 and "GAIN" not in h and "RDNOISE" not in h and "BIASSEC" not in h
    assert (h["DATASEC1"], h["BIASSEC1"]) == ("[17:64,1:64]", "[1:16,1:64]")
    assert (h["DATASEC2"], h["BIASSEC2"]) == ("[65:112,1:64]", "[113:128,1:64]")
    assert h["DATASEC"] == "[17:112,1:64]"
    assert h["GAIN2"] == pytest.approx(h["GAIN1"] * 1.08)
    assert h["RDNOISE2"] == pytest.approx(h["RDNOISE1"] * 1.15)
    secs = {k: header_section(h, k) for k in ("DATASEC1", "BIASSEC1", "DATASEC2", "BIASSEC2")}
    b = bias.data.astype(float)
    o1, o2 = (np.median(apply_section(b, secs[k])) for k in ("BIASSEC1", "BIASSEC2"))
    assert o2 - o1 == pytest.approx(20.0, abs=1.0)
    d1, d2 = (np.median(apply_section(b, secs[k])) for k in ("DATASEC1", "DATASEC2"))
    assert d2 - d1 == pytest.approx(20.0, abs=1.0)
    f = flat.data.astype(float)
    s1 = np.median(apply_section(f, secs["DATASEC1"])) - o1
    s2 = np.median(apply_section(f, secs["DATASEC2"])) - o2
    assert s1 / s2 == pytest.approx(1.08, rel=0.02)     # same electrons, other gain
    n1, n2 = (np.std(np.diff(apply_section(b, secs[k]), axis=1)) for k in ("BIASSEC1",
                                                                            "BIASSEC2"))
    assert n2 / n1 == pytest.approx(1.15 / 1.08, rel=0.1)
    with pytest.raises(ValueError, match="amplifiers"):
        Detector(amplifiers=2, prescan=4)


def test_longslit_night(tmp_path):
    m = simulate_longslit_night(tmp_path / "ls", shape=(64, 256), n_bias=2, n_flat=2,
                                n_arc=1, n_science=3, seed=1, format="mef")
    cat = build_catalog(m.directory)
    types = sorted((f.frame_type, f.subtype) for f in cat)
    assert types == [("arc", "lamp"), ("bias", None), ("bias", None), ("flat", "lamp"),
                     ("flat", "lamp"), ("science", None), ("science", None),
                     ("science", None)]
    assert {f.setup for f in cat} == {"Free/Gr#sim/slit#1.0/1x1/64x288"}
    assert [g.size for g in cat.exposure_groups()] == [3]
    det = Detector(**{k: (tuple(v) if isinstance(v, list) else v)
                      for k, v in m.detector.items()
                      if k in Detector.__dataclass_fields__})
    ys, xs = det.data_slice
    by = {os.path.basename(f.path): f for f in cat}
    flat = read_raw(m.path("lampflat_001.fits"))
    assert flat.header["DISPAXIS"] == 1 and flat.header["IMAGETYP"] == "FLAT,LAMP"
    prof = np.median(flat.data[ys, xs], axis=0) - 1000
    assert prof.max() / prof[:5].mean() > 10                 # strong spectral shape
    truth = m.detector_truth()
    arc = np.median(read_raw(m.path("arc_001.fits")).data[ys, xs], axis=0)
    strongest = truth["arc_lines"][np.argmax(truth["arc_flux"])]
    assert abs(int(np.argmax(arc)) - strongest) <= 1
    for i, rec in enumerate(m.select("science")):
        sci = read_raw(m.path(rec["name"])).data[ys, xs]
        col = sci[:, int(0.6 * sci.shape[1])]
        y0 = truth["trace_y0"][i] + 0.01 * 0.6 * sci.shape[1]
        assert abs(int(np.argmax(col)) - y0) <= 2
        assert m.crmask(rec["name"]).shape == (64, 256)
        assert by[rec["name"]].object == "target01"
    assert NightManifest.load(m.truth_dir).groups[0]["members"] == [
        r["name"] for r in m.select("science")]


def test_cli_simulate_options(tmp_path):
    env = {**os.environ, "PYTHONPATH": WT}
    out = tmp_path / "n"
    p = subprocess.run([sys.executable, "-m", "crdask", "simulate", "night", str(out),
                        "--size", "64", "--bias", "1", "--darks", "0", "--flats", "1",
                        "--filters", "R", "--science", "4", "--layout", "pairs",
                        "--format", "fpack", "--double-hits", "2", "--amplifiers", "2"],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    names = sorted(os.listdir(out))
    assert names[0] == "bias_001.fits.fz" and len(names) == 6
    m = NightManifest.load(str(out) + "_truth")
    assert [len(g["members"]) for g in m.groups] == [2, 2]
    assert all(g["double_hits"]["n_events"] == 2 for g in m.groups)
    h = read_header(out / names[-1])
    assert h["NAMPS"] == 2 and "GAIN1" in h and h.hdu == 1
    c = subprocess.run([sys.executable, "-m", "crdask", "catalog", str(out)],
                       capture_output=True, text=True, env=env)
    assert c.returncode == 0 and "exposure groups (2;" in c.stdout
    s = subprocess.run([sys.executable, "-m", "crdask", "simulate", "night",
                        str(tmp_path / "s"), "--size", "64", "--bias", "1", "--flats", "1",
                        "--science", "2", "--mode", "spectroscopy"],
                       capture_output=True, text=True, env=env)
    assert s.returncode == 0, s.stderr
    assert "arc_001.fits" in os.listdir(tmp_path / "s")
