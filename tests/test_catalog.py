"""crdask.io.catalog: the night catalogue, from headers only."""

import ast
import hashlib
import json
import os
import pathlib
import warnings

import numpy as np
import pytest
from astropy.io import fits

from crdask.io import Catalog, FrameInfo, KeywordMap, build_catalog
from crdask.io.catalog import frame_info, list_fits_files

from shared_data import REAL_FRAMES, SHARED

SPRAT_DIR = SHARED / "sprat-lhs6328"


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def write(path, shape=(8, 12), **cards):
    """A small uint16 (BZERO-scaled) frame with the given header cards; keys
    with '-' are written as DATE_OBS -> DATE-OBS."""
    hdu = fits.PrimaryHDU(np.full(shape, 1000, np.uint16))
    for k, v in cards.items():
        hdu.header[k.replace("_", "-") if k == "DATE_OBS" else k] = v
    hdu.writeto(path)
    return str(path)


# ---------------------------------------------------------------------------
# real frames


def test_sprat_night_from_real_headers():
    before = {p: sha256(p) for p in SPRAT_DIR.iterdir()}
    cat = build_catalog(SPRAT_DIR)
    assert len(cat) == 9 and not cat.unreadable
    by = {pathlib.Path(f.path).name: f for f in cat}
    e1 = by["v_e_20180810_12_1_0_0.fits.gz"]
    assert (e1.frame_type, e1.exptime, e1.filter, e1.object) == (
        "science", 120.0, "4020longpass", "LHS6328")
    assert e1.shape == (254, 1024) and e1.binning == "1x1" and e1.gain == 2.45
    assert e1.rdnoise is None                    # SPRAT writes no read noise
    assert e1.date_obs == "2018-08-10T23:22:58.628" and e1.warnings == ()
    assert by["v_a_20180810_13_1_0_1.fits.gz"].frame_type == "arc"
    assert by["v_dark_1.fits.gz"].frame_type == "dark"
    assert by["v_s_20180810_27_1_0_0.fits.gz"].frame_type == "standard"  # STANDARD
    # the normalised slit flat says OBSTYPE = 'EXPOSE': the catalogue believes it
    assert by["v_slit_red_1.fits.gz"].frame_type == "science"
    groups = {(g.frame_type, tuple(g.key.values())): g.count for g in cat.groups()}
    setup = "4020longpass/-/-/1x1/254x1024"
    assert e1.setup == setup
    assert groups[("science", (setup, "LHS6328"))] == 5
    assert groups[("standard", (setup, "Hilt102"))] == 1
    assert groups[("dark", (600.0, (254, 1024), "1x1"))] == 1
    assert {p: sha256(p) for p in SPRAT_DIR.iterdir()} == before


def test_wht_binned_dark_with_read_noise():
    f = frame_info(SHARED / REAL_FRAMES["wht"])
    assert (f.frame_type, f.exptime, f.shape) == ("dark", 1800.0, (226, 1124))
    assert f.binning == "1x3"                    # CCDXBIN = 1, CCDYBIN = 3
    assert (f.gain, f.rdnoise) == (1.1, 3.6)


def test_m51_has_no_type_keyword():
    f = frame_info(SHARED / REAL_FRAMES["m51"])
    assert f.frame_type == "other" and f.ok and f.exptime == 600.0
    assert f.object == "m51  B  600s" and f.shape == (512, 512)
    assert f.warnings == ("no frame type keyword (IMAGETYP, OBSTYPE, FRAMETYP, "
                          "IMGTYPE, EXPTYPE, ESO DPR TYPE)",)


def test_agrees_with_ccdproc_image_file_collection():
    import ccdproc
    files = sorted(p.name for p in SPRAT_DIR.iterdir())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ifc = ccdproc.ImageFileCollection(
            SPRAT_DIR, keywords=["obstype", "exptime", "object", "naxis1", "naxis2",
                                 "filter1", "gain"], filenames=files)
        summary = ifc.summary
    cat = {pathlib.Path(f.path).name: f for f in build_catalog(SPRAT_DIR)}
    for row in summary:
        f = cat[row["file"]]
        assert f.exptime == float(row["exptime"])
        assert (f.object or "") == (row["object"] or "")
        assert f.shape == (row["naxis2"], row["naxis1"])
        gain = row["gain"]
        assert f.gain == (None if np.ma.is_masked(gain) else float(gain))
        obstype = str(row["obstype"]).lower()
        expected = {"expose": "science", "standard": "standard", "arc": "arc",
                    "dark": "dark"}[obstype]
        assert f.frame_type == expected


# ---------------------------------------------------------------------------
# keyword conventions


@pytest.mark.parametrize("value,ftype", [
    ("BIAS", "bias"), ("zero", "bias"), ("Bias Frame", "bias"),
    ("DARK", "dark"), ("Dark Frame", "dark"),
    ("FLAT", "flat"), ("Flat Field", "flat"), ("domeflat", "flat"), ("DOME_FLAT", "flat"),
    ("SKYFLAT", "flat"), ("twilight", "flat"),
    ("OBJECT", "science"), ("Light Frame", "science"), ("EXPOSE", "science"),
    ("science", "science"), ("ARC", "arc"), ("COMP", "arc"), ("lamp", "arc"),
    ("FOCUS", "other"),
])
def test_type_aliases(tmp_path, value, ftype):
    f = frame_info(write(tmp_path / "f.fits", IMAGETYP=value, EXPTIME=1.0))
    assert f.frame_type == ftype
    assert (ftype == "other") == any("not a known frame type" in w for w in f.warnings)


def test_type_keys_tried_in_order(tmp_path):
    both = write(tmp_path / "both.fits", IMAGETYP="flat", OBSTYPE="dark", EXPTIME=1.0)
    only = write(tmp_path / "only.fits", FRAMETYP="Bias")
    blank = write(tmp_path / "blank.fits", IMAGETYP="", OBSTYPE="dark", EXPTIME=1.0)
    assert frame_info(both).frame_type == "flat"
    assert frame_info(only).frame_type == "bias"
    assert frame_info(blank).frame_type == "dark"     # empty value: next keyword
    km = KeywordMap(type_keys=("OBSTYPE", "IMAGETYP"))
    assert frame_info(both, km).frame_type == "dark"


def test_custom_aliases(tmp_path):
    p = write(tmp_path / "s.fits", IMAGETYP="SKY", EXPTIME=5.0, FILTER="R")
    assert frame_info(p).frame_type == "other"
    km = KeywordMap(type_aliases={**KeywordMap().type_aliases, "sky": "flat"})
    assert frame_info(p, km).frame_type == "flat"


@pytest.mark.parametrize("cards,exptime", [
    ({"EXPTIME": 30.0}, 30.0), ({"EXPOSURE": 12}, 12.0), ({"ITIME": 7.5}, 7.5),
    ({"EXPTIME": "45.5"}, 45.5), ({"EXPTIME": 2.0, "EXPOSURE": 9.0}, 2.0),
])
def test_exptime_keys(tmp_path, cards, exptime):
    f = frame_info(write(tmp_path / "e.fits", IMAGETYP="object", **cards))
    assert f.exptime == exptime and f.warnings == ()


@pytest.mark.parametrize("cards,expected", [
    ({"FILTER": "V"}, "V"), ({"FILTNAME": "r'"}, "r'"),
    ({"FILTER1": "4020longpass", "FILTER2": "clear"}, "4020longpass"),
    ({"FILTER1": "Open", "FILTER2": "Ha"}, "Ha"),
    ({"FILTER1": "B", "FILTER2": "ND1"}, "B+ND1"),
    ({"FILTER1": "CLEAR", "FILTER2": "clear"}, "CLEAR"),
    ({"FILTER": "V", "FILTER1": "R"}, "V"), ({}, None),
])
def test_filter_keys(tmp_path, cards, expected):
    f = frame_info(write(tmp_path / "f.fits", IMAGETYP="flat", EXPTIME=1.0, **cards))
    assert f.filter == expected


@pytest.mark.parametrize("cards,expected", [
    ({"CCDSUM": "2 2"}, "2x2"), ({"CCDSUM": "1 4"}, "1x4"), ({"BINNING": "2x1"}, "2x1"),
    ({"BINNING": 2}, "2x2"), ({"XBINNING": 3, "YBINNING": 1}, "3x1"),
    ({"CCDXBIN": 1, "CCDYBIN": 3}, "1x3"), ({}, None),
])
def test_binning(tmp_path, cards, expected):
    assert frame_info(write(tmp_path / "b.fits", IMAGETYP="bias", **cards)).binning == expected


def test_gain_rdnoise_object_date(tmp_path):
    f = frame_info(write(tmp_path / "g.fits", IMAGETYP="object", EXPTIME=10.0,
                         EGAIN=1.9, RON=4.2, OBJECT="NGC 891",
                         DATE_OBS="2024-03-15T21:00:00"))
    assert (f.gain, f.rdnoise, f.object) == (1.9, 4.2, "NGC 891")
    assert f.date_obs == "2024-03-15T21:00:00"


def test_bad_numbers_are_warnings(tmp_path):
    f = frame_info(write(tmp_path / "n.fits", IMAGETYP="dark", EXPTIME="long", GAIN="?"))
    assert f.ok and f.exptime is None and f.gain is None
    assert "EXPTIME = 'long' is not a number; exposure time unknown" in f.warnings
    assert "GAIN = '?' is not a number; gain unknown" in f.warnings


def test_keywords_from_primary_of_a_multi_extension_file(tmp_path):
    prim = fits.PrimaryHDU()
    prim.header["IMAGETYP"], prim.header["EXPTIME"], prim.header["FILTER"] = "flat", 3.0, "B"
    sci = fits.ImageHDU(np.zeros((6, 9), np.float32), name="SCI")
    sci.header["FILTER"] = "R"                   # the image HDU wins
    p = tmp_path / "mef.fits"
    fits.HDUList([prim, sci]).writeto(p)
    f = frame_info(p)
    assert (f.frame_type, f.exptime, f.filter, f.shape, f.hdu) == ("flat", 3.0, "R",
                                                                   (6, 9), 1)


def test_fpack_file(tmp_path):
    p = tmp_path / "c.fits.fz"
    comp = fits.CompImageHDU(np.zeros((20, 30), np.uint16))
    comp.header["IMAGETYP"], comp.header["EXPTIME"] = "bias", 0.0
    fits.HDUList([fits.PrimaryHDU(), comp]).writeto(p)
    f = frame_info(p)
    assert (f.frame_type, f.shape, f.hdu) == ("bias", (20, 30), 1) and f.ok


# ---------------------------------------------------------------------------
# a night: groups, warnings, unreadable files, output


@pytest.fixture
def night(tmp_path):
    d = tmp_path / "night"
    d.mkdir()
    n = 0

    def add(name, **cards):
        nonlocal n
        n += 1
        return write(d / name, **cards)

    for i in range(3):
        add(f"bias{i}.fits", IMAGETYP="zero", EXPTIME=0.0, CCDSUM="1 1")
    add("bias_binned.fits", shape=(4, 6), IMAGETYP="BIAS", EXPTIME=0.0, CCDSUM="2 2")
    for t in (60.0, 60.0, 300.0):
        add(f"dark{n}.fits", IMAGETYP="DARK", EXPTIME=t, CCDSUM="1 1")
    add("dark_notime.fits", IMAGETYP="DARK", CCDSUM="1 1")
    for filt in ("V", "V", "R"):
        add(f"flat{n}.fits", IMAGETYP="Flat Field", EXPTIME=5.0, FILTER=filt, CCDSUM="1 1")
    for filt, obj in (("V", "M51"), ("V", "M51"), ("R", "M51"), ("V", "M101")):
        add(f"sci{n}.fits", IMAGETYP="object", EXPTIME=300.0, FILTER=filt, OBJECT=obj,
            CCDSUM="1 1")
    add("arc.fits", IMAGETYP="comp", EXPTIME=2.0)
    add("focus.fits", IMAGETYP="focus", EXPTIME=1.0)
    # unreadable files stay in the catalogue
    good = open(d / "bias0.fits", "rb").read()
    (d / "truncated.fits").write_bytes(good[: 2880 + 100])   # header + half the data
    (d / "empty.fit").write_bytes(b"")
    (d / "notes.fits").write_text("observing log, not FITS\n")
    # not catalogued: hidden (e.g. an unfinished atomic write) or not FITS by name
    (d / ".flat.fits.1234.tmp").write_bytes(good)
    (d / ".hidden.fits").write_bytes(good)
    (d / "log.txt").write_text("x")
    return d


def test_directory_listing(night):
    names = [os.path.basename(p) for p in list_fits_files(night)]
    assert names == sorted(names) and len(names) == 20
    assert "log.txt" not in names and not any(n.startswith(".") for n in names)
    assert "empty.fit" in names


def test_groups(night):
    cat = build_catalog(night)
    got = [(g.frame_type, g.key, g.count) for g in cat.groups()]
    assert got == [
        ("bias", {"shape": (4, 6), "binning": "2x2"}, 1),
        ("bias", {"shape": (8, 12), "binning": "1x1"}, 3),
        ("dark", {"exptime": None, "shape": (8, 12), "binning": "1x1"}, 1),
        ("dark", {"exptime": 60.0, "shape": (8, 12), "binning": "1x1"}, 2),
        ("dark", {"exptime": 300.0, "shape": (8, 12), "binning": "1x1"}, 1),
        ("flat", {"setup": "R/-/-/1x1/8x12"}, 1),
        ("flat", {"setup": "V/-/-/1x1/8x12"}, 2),
        ("arc", {"setup": "-/-/-/-/8x12"}, 1),
        ("science", {"setup": "R/-/-/1x1/8x12", "object": "M51"}, 1),
        ("science", {"setup": "V/-/-/1x1/8x12", "object": "M101"}, 1),
        ("science", {"setup": "V/-/-/1x1/8x12", "object": "M51"}, 2),
    ]
    grouped = {p for g in cat.groups() for p in g.paths}
    assert not any(f.path in grouped for f in cat.unreadable)


def test_missing_exptime_is_a_warning_not_an_error(night):
    cat = build_catalog(night)
    f = next(f for f in cat if f.path.endswith("dark_notime.fits"))
    assert f.ok and f.frame_type == "dark" and f.exptime is None
    assert f.warnings == ("dark frame without an exposure time (EXPTIME, EXPOSURE, "
                          "ITIME, EXPTIM)",)
    bias = frame_info(write(night.parent / "b.fits", IMAGETYP="bias"))
    assert bias.warnings == ()                   # biases need no exposure time


def test_unreadable_files_are_kept_and_marked(night):
    cat = build_catalog(night)
    bad = {os.path.basename(f.path): f for f in cat.unreadable}
    assert set(bad) == {"truncated.fits", "empty.fit", "notes.fits"}
    for name, f in bad.items():
        assert f.frame_type == "other" and f.shape is None
        assert f.error.startswith(str(night / name)) and "\n" not in f.error
    assert "file is truncated" in bad["truncated.fits"].error
    assert bad["empty.fit"].error.endswith(": empty file")
    assert "not a FITS file" in bad["notes.fits"].error


def test_missing_paths_in_a_list(tmp_path):
    ok = write(tmp_path / "a.fits", IMAGETYP="bias")
    cat = build_catalog([ok, tmp_path / "gone.fits"])
    assert [f.ok for f in cat] == [True, False]
    assert cat.frames[1].error == f"{tmp_path / 'gone.fits'}: no such file"


def test_json_is_stable_and_complete(night):
    cat = build_catalog(night)
    text = cat.to_json()
    assert text == build_catalog(night, max_workers=1).to_json()
    assert text == build_catalog(sorted(list_fits_files(night), reverse=True),
                                 max_workers=3).to_json()
    d = json.loads(text)
    assert list(d) == sorted(d)
    assert d["counts"] == {"bias": 4, "dark": 4, "flat": 3, "science": 4, "standard": 0,
                           "arc": 1, "other": 1, "unreadable": 3, "total": 20}
    assert len(d["frames"]) == 20 and len(d["groups"]) == 11
    assert [f["path"] for f in d["frames"]] == sorted(f["path"] for f in d["frames"])
    assert {u["path"] for u in d["unreadable"]} == {
        str(night / n) for n in ("truncated.fits", "empty.fit", "notes.fits")}
    flat_v = next(g for g in d["groups"] if g["frame_type"] == "flat"
                  and g["key"]["setup"].startswith("V/"))
    assert flat_v["count"] == 2 and flat_v["key"]["setup"] == "V/-/-/1x1/8x12"
    assert sum(g["size"] for g in d["exposure_groups"]) == 4


def test_threads_only_for_slow_filesystems(night, monkeypatch):
    import crdask.io.catalog as catalog
    used = []

    class Pool(catalog.ThreadPoolExecutor):
        def __init__(self, max_workers):
            used.append(max_workers)
            super().__init__(max_workers=max_workers)

    monkeypatch.setattr(catalog, "ThreadPoolExecutor", Pool)
    serial = build_catalog(night).to_json()          # local tmp files: fast
    assert used == []
    monkeypatch.setattr(catalog, "SLOW_FILE_S", -1.0)  # pretend every file is slow
    assert build_catalog(night).to_json() == serial
    assert len(used) == 1 and used[0] >= 1
    build_catalog(night, max_workers=2)
    assert used[-1] == 2


def test_format_table(night):
    text = build_catalog(night).format_table()
    lines = text.splitlines()
    assert lines[0].split() == ["file", "type", "subtype", "exptime", "object", "setup"]
    row = next(line for line in lines if line.startswith("sci"))
    assert row.split()[1:] == ["science", "-", "300", "M51", "V/-/-/1x1/8x12"]
    assert "20 files: 4 bias, 4 dark, 3 flat, 4 science, 1 arc, 1 other, 3 unreadable" \
        in text
    assert "     2  flat setup=V/-/-/1x1/8x12" in text
    assert "     1  dark exptime=- shape=8x12 binning=1x1" in text
    assert "dark_notime.fits: dark frame without an exposure time" in text
    assert "set aside (3 files):" in text
    assert f"  {night / 'empty.fit'}: empty file" in text


def test_raw_files_unchanged(night):
    before = {p: sha256(p) for p in list_fits_files(night)}
    build_catalog(night).to_json()
    assert {p: sha256(p) for p in list_fits_files(night)} == before


def test_empty_directory_and_single_file(tmp_path):
    cat = build_catalog(tmp_path)
    assert len(cat) == 0 and cat.groups() == [] and "0 files" in cat.format_table()
    p = write(tmp_path / "one.fits", IMAGETYP="bias")
    assert [f.frame_type for f in build_catalog(p)] == ["bias"]
    with pytest.raises(ValueError, match="max_workers"):
        build_catalog(tmp_path, max_workers=0)
    with pytest.raises(FileNotFoundError, match="nigth: no such file or directory"):
        build_catalog(tmp_path / "nigth")


def test_frameinfo_and_catalog_are_plain_data():
    f = FrameInfo(path="x.fits", frame_type="bias", shape=(2, 3))
    assert f.to_dict()["shape"] == [2, 3] and f.ok
    assert len(Catalog(frames=[f])) == 1


def test_io_layer_imports_nothing_above_it():
    import crdask.io.catalog as c
    import crdask.io.raw as r
    import crdask.io.sections as s
    for mod in (c, r, s):
        tree = ast.parse(pathlib.Path(mod.__file__).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                name = ("." * node.level) + (node.module or "")
            elif isinstance(node, ast.Import):
                name = ",".join(a.name for a in node.names)
            else:
                continue
            assert "pipeline" not in name and "cli" not in name, (mod.__name__, name)
