"""crdask.io: reading image HDUs, header keywords, output headers, atomic writes."""

import ast
import os
import pathlib

import numpy as np
import pytest
from shared_data import SHARED
from astropy.io import fits

from crdask.io import (
    FitsInputError,
    OutputExistsError,
    atomic_open,
    header_number,
    is_temp_name,
    output_header,
    read_image,
    write_fits_atomic,
)

DATA = SHARED
M51 = DATA / "kpno-m51" / "dev_pix_m51_B_600s.fits"
SPRAT = DATA / "sprat-lhs6328" / "v_e_20180810_12_1_0_0.fits.gz"


def _wcs(h):
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = 202.47, 47.19
    h["CRPIX1"], h["CRPIX2"] = 10.0, 20.0
    h["CD1_1"], h["CD2_2"] = -1e-4, 1e-4
    return h


# ---------------------------------------------------------------------------
# read_image


def test_bzero_scaled_ints_become_physical_values(tmp_path):
    phys = np.array([[0, 1, 40000], [65535, 32768, 917]], dtype=np.uint16)
    p = tmp_path / "u16.fits"
    fits.PrimaryHDU(phys).writeto(p)   # stored as int16 with BZERO = 32768
    with fits.open(p, do_not_scale_image_data=True) as h:
        assert h[0].header["BZERO"] == 32768 and h[0].data.dtype.kind == "i"
    img = read_image(p)
    np.testing.assert_array_equal(img.data, phys)
    assert img.hdu == 0 and img.index == 0


def test_bscale_and_blank(tmp_path):
    raw = np.array([[10, 20], [-32768, 5]], dtype=np.int16)
    hdu = fits.PrimaryHDU(raw, do_not_scale_image_data=True)
    hdu.header["BSCALE"], hdu.header["BZERO"], hdu.header["BLANK"] = 0.5, 100.0, -32768
    p = tmp_path / "scaled.fits"
    hdu.writeto(p)
    d = read_image(p).data
    assert d[0, 0] == 105 and d[0, 1] == 110 and d[1, 1] == 102.5
    assert np.isnan(d[1, 0])


def test_real_sprat_gzip_bzero():
    img = read_image(SPRAT)
    assert img.data.shape == (254, 1024) and img.data.dtype == np.uint16
    np.testing.assert_array_equal(img.data, fits.getdata(SPRAT))
    assert header_number(img, "GAIN") == 2.45
    assert 800 < np.median(img.data) < 1200        # bias ~917 ADU: physical values


def test_real_m51_big_endian_int16():
    img = read_image(M51)
    assert img.data.shape == (512, 512) and img.data.dtype.kind == "i"
    img.data[0, 0] = 1   # a private, writeable copy, not a view of the file


def test_first_2d_hdu_is_default_and_extname(tmp_path):
    p = tmp_path / "mef.fits"
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    prim = fits.PrimaryHDU()
    prim.header["GAIN"] = 1.7
    sci2 = fits.ImageHDU(a * 2, name="SCI", ver=2)
    fits.HDUList([prim, fits.BinTableHDU.from_columns(
        [fits.Column(name="x", format="E", array=[1.0])]),
        fits.ImageHDU(a, name="SCI"), sci2, fits.ImageHDU((a > 5).astype(np.uint8), name="BPM")]).writeto(p)
    img = read_image(p)
    assert img.index == 2 and img.hdu == 2
    np.testing.assert_array_equal(img.data, a)
    assert header_number(img, "GAIN") == 1.7                   # primary fallback
    assert read_image(p, hdu="sci").index == 2
    np.testing.assert_array_equal(read_image(p, hdu="SCI,2").data, a * 2)
    assert read_image(p, hdu="3").index == 3
    m = read_image(p, hdu="SCI", mask_hdu="BPM").mask
    np.testing.assert_array_equal(m, a > 5)

    with pytest.raises(FitsInputError, match=r"mef\.fits\[1\]: HDU is a BinTableHDU"):
        read_image(p, hdu=1)
    with pytest.raises(FitsInputError, match=r"\[0\]: HDU has no data"):
        read_image(p, hdu=0)
    with pytest.raises(FitsInputError, match=r"\[NOPE\]: no such HDU"):
        read_image(p, hdu="NOPE")
    with pytest.raises(FitsInputError, match=r"\[9\]: no such HDU"):
        read_image(p, hdu=9)


def test_no_2d_data(tmp_path):
    p = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.zeros((2, 3, 4), np.float32)).writeto(p)
    with pytest.raises(FitsInputError, match=r"cube\.fits: no HDU with 2-D image data"):
        read_image(p)
    with pytest.raises(FitsInputError, match=r"cube\.fits\[0\]: HDU has 3-D data"):
        read_image(p, hdu=0)


def test_mask_shape_mismatch(tmp_path):
    p = tmp_path / "m.fits"
    fits.HDUList([fits.PrimaryHDU(np.zeros((4, 4), np.float32)),
                  fits.ImageHDU(np.zeros((3, 4), np.uint8), name="BPM")]).writeto(p)
    with pytest.raises(FitsInputError, match=r"m\.fits\[BPM\]: mask shape"):
        read_image(p, mask_hdu="BPM")


@pytest.mark.parametrize("keep", [0.5, 0.01, 0.0])
def test_truncated_and_missing_files(tmp_path, keep):
    p = tmp_path / "t.fits"
    fits.PrimaryHDU(np.ones((128, 128), np.float32)).writeto(p)
    blob = p.read_bytes()
    p.write_bytes(blob[:int(len(blob) * keep)])
    with pytest.raises(FitsInputError) as e:
        read_image(p)
    msg = str(e.value)
    assert msg.startswith(str(p)) and "\n" not in msg
    with pytest.raises(FitsInputError, match="no such file"):
        read_image(tmp_path / "missing.fits")


def test_header_number_errors(tmp_path):
    p = tmp_path / "k.fits"
    h = fits.Header()
    h["GAIN"], h["RDNOISE"], h["FLAG"] = "abc", 4.0, True
    fits.PrimaryHDU(np.zeros((4, 4), np.float32), header=h).writeto(p)
    img = read_image(p)
    assert header_number(img, "RDNOISE") == 4.0
    with pytest.raises(FitsInputError, match=r"k\.fits\[0\]: keyword GAIN = 'abc' is not"):
        header_number(img, "GAIN")
    with pytest.raises(FitsInputError, match=r"keyword FLAG = True is not"):
        header_number(img, "FLAG")
    with pytest.raises(FitsInputError, match=r"k\.fits\[0\]: keyword EGAIN not found") as e:
        header_number(img, "EGAIN")
    assert e.value.keyword == "EGAIN"


def test_output_header_drops_scaling_keeps_wcs(tmp_path):
    p = tmp_path / "w.fits"
    prim = fits.PrimaryHDU()
    prim.header["TELESCOP"] = "KPNO"
    prim.header["OBJECT"] = "primary object"
    ext = fits.ImageHDU(np.arange(6, dtype=np.uint16).reshape(2, 3) + 40000, name="SCI")
    _wcs(ext.header)
    ext.header["OBJECT"] = "M51"
    ext.header["DATAMAX"] = 40005
    fits.HDUList([prim, ext]).writeto(p)
    h = output_header(read_image(p))
    for k in ("BZERO", "BSCALE", "BLANK", "DATAMAX", "XTENSION", "NAXIS1", "EXTNAME",
              "PCOUNT", "SIMPLE", "BITPIX"):
        assert k not in h, k
    assert h["CTYPE1"] == "RA---TAN" and h["CRVAL2"] == 47.19 and h["CD1_1"] == -1e-4
    assert h["TELESCOP"] == "KPNO" and h["OBJECT"] == "M51"     # extension wins


# ---------------------------------------------------------------------------
# atomic writes


def _listing(d):
    return sorted(os.listdir(d))


def test_atomic_open_success_and_no_overwrite(tmp_path):
    out = tmp_path / "a.bin"
    with atomic_open(out) as f:
        f.write(b"hello")
        assert not out.exists()                    # invisible until complete
        assert any(is_temp_name(n) for n in os.listdir(tmp_path))
    assert out.read_bytes() == b"hello" and _listing(tmp_path) == ["a.bin"]
    with pytest.raises(OutputExistsError, match="exists"):
        with atomic_open(out) as f:
            f.write(b"other")
    assert out.read_bytes() == b"hello" and _listing(tmp_path) == ["a.bin"]
    with atomic_open(out, overwrite=True) as f:
        f.write(b"new")
    assert out.read_bytes() == b"new" and _listing(tmp_path) == ["a.bin"]


def test_atomic_open_failure_leaves_nothing(tmp_path):
    out = tmp_path / "b.fits"
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_open(out) as f:
            f.write(b"x" * 10000)
            raise RuntimeError("disk on fire")
    assert _listing(tmp_path) == []
    # a failed overwrite leaves the old file as it was
    out.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(out, overwrite=True) as f:
            f.write(b"partial")
            raise KeyboardInterrupt
    assert out.read_bytes() == b"old" and _listing(tmp_path) == ["b.fits"]


def test_atomic_no_overwrite_race(tmp_path):
    # the destination appears while we write: it is not replaced
    out = tmp_path / "c.bin"
    with pytest.raises(OutputExistsError):
        with atomic_open(out) as f:
            f.write(b"mine")
            out.write_bytes(b"theirs")
    assert out.read_bytes() == b"theirs" and _listing(tmp_path) == ["c.bin"]


def test_write_fits_atomic_failure_mid_write(tmp_path, monkeypatch):
    out = tmp_path / "d.fits"
    hdul = fits.HDUList([fits.PrimaryHDU(np.ones((64, 64), np.float32))])

    def boom(self, fileobj, **kw):
        fileobj.write(b"SIMPLE  =" + b" " * 2000)
        raise OSError("No space left on device")

    monkeypatch.setattr(fits.HDUList, "writeto", boom)
    with pytest.raises(OSError, match="No space"):
        write_fits_atomic(hdul, out)
    assert _listing(tmp_path) == []
    monkeypatch.undo()
    write_fits_atomic(hdul, out)
    np.testing.assert_array_equal(fits.getdata(out), 1.0)
    assert _listing(tmp_path) == ["d.fits"]


# ---------------------------------------------------------------------------
# layering


def test_io_imports_no_upper_layers():
    root = pathlib.Path(__file__).resolve().parents[1] / "crdask" / "io"
    for src in root.glob("*.py"):
        for node in ast.walk(ast.parse(src.read_text())):
            if isinstance(node, ast.ImportFrom):
                mod = ("." * node.level) + (node.module or "")
            elif isinstance(node, ast.Import):
                mod = ",".join(a.name for a in node.names)
            else:
                continue
            assert "pipeline" not in mod and "cli" not in mod, (src.name, mod)


def test_read_image_reads_non_ascii_cards_leniently(tmp_path):
    hdu = fits.PrimaryHDU(np.zeros((4, 5), np.float32))
    hdu.header["OBJECT"] = "M51 xx"
    hdu.header["GAIN"] = 2.0
    path = tmp_path / "na.fits"
    hdu.writeto(path)
    b = path.read_bytes()
    i = b.index(b"M51 xx")
    path.write_bytes(b[:i + 4] + b"\xc3\xa9" + b[i + 6:])
    image = read_image(path)
    assert image.header["OBJECT"] == "M51 ??"     # one ? per byte, as astropy
    assert header_number(image, "GAIN") == 2.0
    assert any("non-ASCII" in w for w in image.warnings)   # astropy's own note
    out = output_header(image)                    # writable again: plain ASCII
    assert out["OBJECT"] == "M51 ??"
