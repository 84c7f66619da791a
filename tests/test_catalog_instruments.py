"""The catalogue on headers as instruments write them: qualifiers, HIERARCH,
MEF, non-ASCII cards, header checks, duplicates, exposure groups, EFOSC2."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

from crdask.io import build_catalog
from crdask.io.catalog import FrameInfo, KeywordMap, exposure_groups, frame_info
from crdask.io.raw import read_header, read_raw
from crdask.io.sections import header_section

from shared_data import SHARED

EFOSC = SHARED / "efosc2-ntt"
WT = str(pathlib.Path(__file__).resolve().parents[1])


def write(path, shape=(8, 12), data=None, **cards):
    hdu = fits.PrimaryHDU(np.full(shape, 1000, np.uint16) if data is None else data)
    for k, v in cards.items():
        hdu.header[k.replace("_", "-") if k in ("DATE_OBS", "MJD_OBS") else k] = v
    hdu.writeto(path)
    return str(path)


# ---------------------------------------------------------------------------
# frame-type values with qualifiers


QUALIFIED = [
    ("FLAT,LAMP", "flat", "lamp"), ("SKY,FLAT", "flat", "sky"),
    ("FLAT,DOME", "flat", "dome"), ("LAMP,FLAT", "flat", "lamp"),
    ("WAVE,LAMP", "arc", "lamp"), ("WAVE", "arc", None), ("ARC", "arc", None),
    ("COMP", "arc", None), ("ZERO", "bias", None), ("STD", "standard", None),
    ("OBJECT", "science", None), ("flat, twilight", "flat", "twilight"),
]


@pytest.mark.parametrize("value,ftype,subtype", QUALIFIED)
def test_qualified_types_in_imagetyp_and_hierarch(tmp_path, value, ftype, subtype):
    a = frame_info(write(tmp_path / "a.fits", IMAGETYP=value, EXPTIME=5.0))
    h = fits.Header()
    h["HIERARCH ESO DPR TYPE"] = value
    h["EXPTIME"] = 5.0
    fits.PrimaryHDU(np.zeros((4, 4), np.uint16), header=h).writeto(tmp_path / "b.fits")
    b = frame_info(tmp_path / "b.fits")
    for f in (a, b):
        assert (f.frame_type, f.subtype) == (ftype, subtype), value
        assert not any("frame type" in w for w in f.warnings)


def test_catalogue_covers_every_qualifier_form(tmp_path):
    for i, (value, _, _) in enumerate(QUALIFIED):
        write(tmp_path / f"f{i:02d}.fits", IMAGETYP=value, EXPTIME=5.0)
    cat = build_catalog(tmp_path)
    got = [(f.frame_type, f.subtype) for f in cat]
    assert got == [(t, s) for _, t, s in QUALIFIED]
    assert "standard" in cat.format_table()


def test_two_types_in_one_value_is_not_guessed(tmp_path):
    f = frame_info(write(tmp_path / "x.fits", IMAGETYP="FLAT,DARK", EXPTIME=1.0))
    assert f.frame_type == "other"
    assert f.warnings == ("IMAGETYP = 'FLAT,DARK' is not a known frame type",)


def test_zero_second_dark_is_a_bias_but_a_real_dark_is_not(tmp_path):
    z = frame_info(write(tmp_path / "z.fits", IMAGETYP="DARK", EXPTIME=0.0))
    d = frame_info(write(tmp_path / "d.fits", IMAGETYP="DARK", EXPTIME=60.0))
    assert (z.frame_type, z.subtype) == ("bias", "dark")
    assert (d.frame_type, d.subtype) == ("dark", None)


def test_hierarch_names_in_a_keyword_map(tmp_path):
    h = fits.Header()
    h["HIERARCH ESO DPR TYPE"] = "OBJECT"
    h["HIERARCH ESO INS FILT9 NAME"] = "Halpha"
    h["HIERARCH ESO DET CHIP GAIN"] = 2.5
    h["EXPTIME"] = 3.0
    fits.PrimaryHDU(np.zeros((4, 4), np.uint16), header=h).writeto(tmp_path / "e.fits")
    km = KeywordMap(filter_keys=("HIERARCH ESO INS FILT9 NAME",),
                    gain_keys=("eso det chip gain",))
    f = frame_info(tmp_path / "e.fits", km)
    assert (f.frame_type, f.filter, f.gain) == ("science", "Halpha", 2.5)
    assert f.setup.startswith("Halpha/")


# ---------------------------------------------------------------------------
# MEF: keywords in the primary header


def mef(path, primary, ext, data=None):
    data = np.full((6, 10), 1200, np.uint16) if data is None else data
    fits.HDUList([fits.PrimaryHDU(header=fits.Header(primary)),
                  fits.ImageHDU(data, header=fits.Header(ext), name="SCI")]).writeto(path)
    return str(path)


def test_read_header_merges_primary_under_the_image_hdu(tmp_path):
    p = mef(tmp_path / "m.fits", {"GAIN": 1.7, "RDNOISE": 4.0, "EXPTIME": 30.0,
                                  "SATURATE": 60000, "DATASEC": "[1:8,1:6]",
                                  "FILTER": "B", "BZERO": 5},
            {"FILTER": "R", "IMAGETYP": "object"})
    h = read_header(p)
    assert (h.hdu, h.hdu_index, h.where) == (1, 1, f"{p}[1]")
    h["HISTORY"] = "a Header still: methods such as index() work"
    assert h.index("HISTORY") == len(h) - 1
    assert (h["GAIN"], h["RDNOISE"], h["EXPTIME"], h["SATURATE"]) == (1.7, 4.0, 30.0, 60000)
    assert h["FILTER"] == "R"                    # the image HDU wins
    assert h["BZERO"] == 32768                   # encoding keys: the image's own only
    assert header_section(h, "DATASEC").shape == (6, 8)
    raw = read_raw(p)
    assert raw.header["GAIN"] == 1.7 and raw.data.max() == 1200
    f = frame_info(p)
    assert (f.gain, f.rdnoise, f.exptime, f.filter, f.hdu) == (1.7, 4.0, 30.0, "R", 1)


def test_section_errors_name_the_hdu_read(tmp_path):
    p = mef(tmp_path / "m.fits", {"BIASSEC": "[1:80,1:6]"}, {})
    with pytest.raises(ValueError) as e:
        header_section(read_header(p), "BIASSEC")
    assert str(e.value).startswith(f"{p}[1] BIASSEC: section '[1:80,1:6]' exceeds")


# ---------------------------------------------------------------------------
# non-ASCII cards: the real CLI, in a subprocess


def patch_card(path, text, raw):
    b = open(path, "rb").read()
    i = b.index(text.encode())
    assert len(raw) == len(text)
    open(path, "wb").write(b[:i] + raw + b[i + len(text):])


def test_non_ascii_cards_give_warnings_not_tracebacks(tmp_path):
    night = tmp_path / "night"
    night.mkdir()
    a = write(night / "a.fits", IMAGETYP="object", OBJECT="M51 xx", FILTER="Rxx",
              EXPTIME=10.0)
    write(night / "b.fits", IMAGETYP="bias", EXPTIME=0.0)
    patch_card(a, "M51 xx", b"M51 \xc3\xa9")      # UTF-8 e-acute
    patch_card(a, "Rxx", b"R\xb0\xb0")             # Latin-1 degree signs
    before = open(a, "rb").read()
    env = {**os.environ, "PYTHONPATH": WT}
    p = subprocess.run([sys.executable, "-m", "crdask", "catalog", str(night)],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    assert "a.fits: card OBJECT has non-ASCII bytes" in p.stdout
    assert "a.fits: card FILTER has non-ASCII bytes" in p.stdout
    f = frame_info(a)
    assert (f.object, f.filter, f.frame_type) == ("M51 ??", "R??", "science")
    assert len(f.warnings) == 2
    r = read_raw(a)
    assert r.header["OBJECT"] == "M51 ??" and any(str(a) in w for w in r.warnings)
    assert open(a, "rb").read() == before        # the raw file is not touched
    j = subprocess.run([sys.executable, "-m", "crdask", "catalog", "--json", str(night)],
                       capture_output=True, text=True, env=env)
    assert j.returncode == 0 and "Traceback" not in j.stderr


def test_non_ascii_cards_in_a_night_for_gain_and_calibrate(tmp_path):
    from crdask.simulate import write_night
    m = write_night(tmp_path / "raw", shape=(96, 96), n_bias=3, n_dark=0, filters=("V",),
                    n_flat=4, n_science=1, seed=2)
    for rec in m.files:
        if rec["kind"] in ("flat", "science"):
            b = open(m.path(rec["name"]), "rb").read()
            i = b.index(b"OBJECT  = '") + 11          # first letter of the name
            open(m.path(rec["name"]), "wb").write(b[:i] + b"\xe9" + b[i + 1:])
            assert b"\xe9" in open(m.path(rec["name"]), "rb").read()
    env = {**os.environ, "PYTHONPATH": WT}
    for cmd in (["gain", m.directory], ["calibrate", m.directory, "-o", str(tmp_path / "o")]):
        p = subprocess.run([sys.executable, "-m", "crdask", *cmd], capture_output=True,
                           text=True, env=env)
        assert p.returncode == 0, (cmd, p.stderr)
        assert "Traceback" not in p.stderr and "VerifyError" not in p.stderr
    assert (tmp_path / "o" / "master_flat_V.fits").exists()
    with fits.open(next((tmp_path / "o").glob("*_cal.fits"))) as hdul:
        assert hdul[0].header["OBJECT"].startswith("?")


# ---------------------------------------------------------------------------
# header checks


def test_gain_zero_and_negative_exptime_are_set_aside_with_the_keyword(tmp_path):
    g = frame_info(write(tmp_path / "g.fits", IMAGETYP="object", EXPTIME=5.0, GAIN=0.0))
    t = frame_info(write(tmp_path / "t.fits", IMAGETYP="object", EXPTIME=-5.0))
    assert g.error == f"{tmp_path / 'g.fits'}[0]: GAIN = 0: gain must be > 0 (e-/ADU)"
    assert t.error == f"{tmp_path / 't.fits'}[0]: EXPTIME = -5: exposure time must be >= 0 s"
    h = fits.Header()
    h["HIERARCH ESO DET OUT1 CONAD"] = 0.0
    h["IMAGETYP"] = "flat"
    fits.PrimaryHDU(np.zeros((4, 4), np.uint16), header=h).writeto(tmp_path / "e.fits")
    e = frame_info(tmp_path / "e.fits")
    assert "ESO DET OUT1 CONAD = 0: gain must be > 0" in e.error
    cat = build_catalog(tmp_path)
    assert len(cat.unreadable) == 3 and cat.groups() == []


def test_unsigned_data_without_bzero_warns(tmp_path):
    adu = np.full((16, 16), 1000, np.int64)
    adu[:4] = 65535                                   # saturated rows
    stored = adu.astype(np.uint16).view(np.int16)     # written without BZERO
    p = tmp_path / "nobzero.fits"
    fits.PrimaryHDU(stored).writeto(p)
    assert "BZERO" not in fits.getheader(p)
    fits.setval(p, "IMAGETYP", value="object")
    f = frame_info(p)
    w = [x for x in f.warnings if "BZERO" in x]
    assert len(w) == 1 and "saturation is not flagged" in w[0] and "64 negative" in w[0]
    assert any(str(p) in x and "BZERO" in x for x in read_raw(p).warnings)
    ok = frame_info(write(tmp_path / "ok.fits", IMAGETYP="object"))
    assert not any("BZERO" in x for x in ok.warnings)


def test_duplicate_files_are_named(tmp_path):
    a = write(tmp_path / "a.fits", IMAGETYP="object", DATE_OBS="2024-01-01T00:00:00",
              EXPTIME=1.0)
    b = tmp_path / "copy_of_a.fits"
    b.write_bytes(open(a, "rb").read())
    write(tmp_path / "c.fits", IMAGETYP="object", DATE_OBS="2024-01-01T00:00:00", EXPTIME=1.0,
          data=np.full((8, 12), 7, np.uint16))     # same headers, other pixels
    cat = build_catalog(tmp_path)
    assert cat.duplicates == [(str(a), str(b))]
    by = {os.path.basename(f.path): f for f in cat}
    assert by["a.fits"].warnings == ("duplicate raw file: same content as copy_of_a.fits",)
    assert by["copy_of_a.fits"].warnings == ("duplicate raw file: same content as a.fits",)
    assert by["c.fits"].warnings == ()
    assert "copy_of_a.fits: duplicate raw file: same content as a.fits" in cat.format_table()


# ---------------------------------------------------------------------------
# exposure groups


def fi(name, date, t=100.0, obj="M51", setup="R/-/-/1x1/8x8", ftype="science", mjd=None):
    return FrameInfo(path=name, frame_type=ftype, exptime=t, object=obj, setup=setup,
                     filter="R", date_obs=date, mjd_obs=mjd, shape=(8, 8))


def test_exposure_groups_rules():
    frames = [
        fi("a1", "2024-01-01T20:00:00"), fi("a2", "2024-01-01T20:02:10"),   # gap 30 s
        fi("b1", "2024-01-01T20:04:00", obj="M101"),                         # other target
        fi("a3", "2024-01-01T20:05:00", t=100.5),                            # within 1%
        fi("a4", "2024-01-01T20:07:00", t=120.0),                            # other exptime
        fi("a5", "2024-01-01T21:00:00", t=120.0),                            # gap > 600 s
        fi("s1", "2024-01-01T20:01:00", setup="V/-/-/1x1/8x8"),              # other setup
        fi("n1", None), fi("n2", "not a date"),                              # untimed
        fi("m1", None, mjd=60310.0), fi("m2", None, mjd=60310.0 + 130 / 86400),
        fi("f1", "2024-01-01T20:00:00", ftype="flat"),                       # not science
    ]
    groups = exposure_groups(frames)
    got = {g.label: list(g.paths) for g in groups}
    assert got == {     # MJD 60310.0 is 2024-01-01T00:00: the m pair comes first
        "M51_R_100s_01": ["m1", "m2"], "M51_R_100s_02": ["a1", "a2", "a3"],
        "M51_R_100s_03": ["s1"], "M101_R_100s_01": ["b1"], "M51_R_120s_01": ["a4"],
        "M51_R_120s_02": ["a5"], "M51_R_100s_04": ["n1"], "M51_R_100s_05": ["n2"],
    }
    assert groups[0].gaps == (30.0,)
    a = groups[1]
    assert a.gaps == (30.0, 70.0) and a.timed and a.exptime == 100.0
    assert [g.timed for g in groups][-2:] == [False, False]
    assert [g.label for g in exposure_groups(list(reversed(frames)))] == list(got)
    assert [g.paths for g in exposure_groups(frames, min_size=2)] == [
        ("m1", "m2"), ("a1", "a2", "a3")]
    tight = exposure_groups(frames, max_gap=35.0)
    assert next(g for g in tight if "a1" in g.paths).paths == ("a1", "a2")
    strict = exposure_groups(frames, exptime_rtol=0.001)
    assert next(g for g in strict if "a1" in g.paths).paths == ("a1", "a2")
    s2s = exposure_groups(frames, max_gap=135.0, gap="start-to-start")
    assert next(g for g in s2s if "a1" in g.paths).paths == ("a1", "a2")   # 130 s, 170 s
    assert next(g for g in s2s if "a1" in g.paths).gaps == (130.0,)
    unlimited = exposure_groups(frames, max_gap=None)
    assert next(g for g in unlimited if "a4" in g.paths).paths == ("a4", "a5")
    assert [m.path for m in a.members] == list(a.paths)
    with pytest.raises(ValueError, match="max_gap"):
        exposure_groups(frames, max_gap=-1)
    with pytest.raises(ValueError, match="gap must be"):
        exposure_groups(frames, gap="middle")
    legacy = FrameInfo("/n/s.fits", "science", 60.0, "R", "M51")   # positional, as before
    assert (legacy.exptime, legacy.filter, legacy.object) == (60.0, "R", "M51")


# ---------------------------------------------------------------------------
# the real EFOSC2 night


def test_efosc2_night():
    before = {p.name: p.stat().st_mtime_ns for p in EFOSC.iterdir()}
    cat = build_catalog(EFOSC)
    assert len(cat) == 24 and not cat.unreadable
    kinds = {}
    for f in cat:
        kinds.setdefault((f.frame_type, f.subtype), []).append(f)
    assert {k: len(v) for k, v in kinds.items()} == {
        ("bias", "dark"): 5, ("flat", None): 6, ("arc", None): 1, ("science", None): 8,
        ("flat", "sky"): 3, ("standard", None): 1}
    assert all(f.exptime == 0 for f in kinds[("bias", "dark")])
    assert all(f.gain == 1.1 and f.rdnoise == 7.8 and f.binning == "2x2" for f in cat)
    imaging = "g#782/Free/Free/2x2/1030x1030"
    assert {f.setup for f in kinds[("flat", "sky")]} == {imaging}
    lamp_setups = sorted({f.setup for f in kinds[("flat", None)]})
    assert lamp_setups == ["Free/Gr#3/slit#1.2/2x2/1030x1030",
                           "Free/Gr#3/slit#5.0/2x2/1030x1030"]
    assert kinds[("standard", None)][0].object == "EG21"
    assert len(cat.science_like()) == 9 and len(cat.of_type("science")) == 8
    spectra = [f for f in kinds[("science", None)] if f.grism == "Gr#3"]
    assert len(spectra) == 2 and all(f.exptime > 599 for f in spectra)
    flats = [g for g in cat.groups() if g.frame_type == "flat"]
    assert sorted((g.key["setup"], g.count) for g in flats) == [
        (lamp_setups[0], 3), (lamp_setups[1], 3), (imaging, 3)]
    eg = {g.label: g.size for g in cat.exposure_groups()}
    assert eg["Q1010-0100_g-782_180s_01"] == 3 and eg["J123410-332638_g-782_120s_01"] == 3
    assert eg["EG21_Free_15s_01"] == 1 and len(eg) == 5
    text = cat.format_table()
    assert "exposure groups (5;" in text and "3  Q1010-0100_g-782_180s_01:" in text
    assert {p.name: p.stat().st_mtime_ns for p in EFOSC.iterdir()} == before


def test_workflow_keyword_lists_take_hierarch_names(tmp_path):
    """A workflow names ESO keywords as people write them; the catalogue
    built with its keyword map reads them (here: only the HIERARCH names)."""
    from crdask.pipeline.config import load_workflow
    y = tmp_path / "efosc2.yaml"
    y.write_text(f"""version: 1
inputs: {{directory: {EFOSC}}}
output: {tmp_path / 'out'}
keywords:
  type: [HIERARCH ESO DPR TYPE]
  filter: [ESO INS FILT1 NAME]
  grism: [ESO INS GRIS1 NAME]
  slit: [ESO INS SLIT1 NAME]
  gain: [ESO DET OUT1 CONAD]
  readnoise: [ESO DET OUT1 RON]
  binning: []
  binning_pairs: [[ESO DET WIN1 BINX, ESO DET WIN1 BINY]]
""")
    wf = load_workflow(y)
    cat = build_catalog(wf.input_files(), wf.keymap())
    assert len(cat) == 24 and not cat.unreadable
    std = next(f for f in cat if f.frame_type == "standard")
    assert (std.gain, std.rdnoise, std.binning) == (1.1, 7.8, "2x2")
    assert std.setup == "Free/Gr#3/slit#5.0/2x2/1030x1030"
    assert sum(f.frame_type == "bias" for f in cat) == 5


def test_control_characters_are_read_leniently(tmp_path):
    p = write(tmp_path / "tab.fits", IMAGETYP="object", OBJECT="NGC xx", EXPTIME=1.0)
    patch_card(p, "NGC xx", b"NGC\t\x00x")
    f = frame_info(p)
    assert f.ok and f.object == "NGC??x"
    assert f.warnings == ("card OBJECT has non-ASCII bytes (b'\\t\\x00'); read as 'NGC??x'",)
