"""crdask.io.sections: FITS sections '[x1:x2,y1:y2]' (1-based, inclusive)."""

import pickle

import dask.array as da
import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given
from hypothesis import strategies as st

from crdask.io import (
    Section,
    SectionError,
    apply_section,
    header_section,
    parse_section,
)
from crdask.io.raw import read_header

from shared_data import REAL_FRAMES, SHARED


def _grid(ny, nx):
    """Pixel value = 1000 * (FITS y) + (FITS x), both 1-based."""
    y, x = np.mgrid[1:ny + 1, 1:nx + 1]
    return 1000 * y + x


def _fits_range(a, b):
    """FITS pixel numbers a..b inclusive, in the section's order."""
    step = 1 if b >= a else -1
    return list(range(a, b + step, step))


# ---------------------------------------------------------------------------
# parsing


def test_plain_section_becomes_zero_based_slices():
    s = parse_section("[51:1074,1:226]")
    assert (s.x1, s.x2, s.y1, s.y2) == (51, 1074, 1, 226)
    assert s.slices == (slice(0, 226), slice(50, 1074))
    assert s.shape == (226, 1024)
    assert not s.flip_x and not s.flip_y
    assert str(s) == "[51:1074,1:226]"


def test_pixels_are_the_ones_the_fits_numbers_name():
    a = _grid(10, 20)
    s = parse_section("[3:7,2:4]", shape=a.shape)
    sub = apply_section(a, s)
    assert sub.shape == s.shape == (3, 5)
    assert sub[0, 0] == 1000 * 2 + 3     # pixel (x=3, y=2)
    assert sub[-1, -1] == 1000 * 4 + 7   # pixel (x=7, y=4): inclusive ends


def test_whitespace_is_tolerated():
    assert parse_section("  [ 1 : 50 ,\t1 :100 ] ") == Section(1, 50, 1, 100)


def test_reversed_ranges_flip():
    a = _grid(6, 10)
    s = parse_section("[8:3,5:2]", shape=a.shape)
    assert s.flip_x and s.flip_y
    assert s.slices == (slice(1, 5), slice(2, 8))   # ascending, same pixels
    assert s.shape == (4, 6)
    sub = apply_section(a, s)
    assert sub[0, 0] == 1000 * 5 + 8 and sub[-1, -1] == 1000 * 2 + 3
    np.testing.assert_array_equal(sub, a[1:5, 2:8][::-1, ::-1])
    assert str(s) == "[8:3,5:2]"


def test_one_pixel_wide_range_is_not_flipped():
    s = parse_section("[4:4,1:3]")
    assert s.shape == (3, 1) and not s.flip_x


def test_star_means_whole_axis():
    s = parse_section("[*,1:100]")
    assert s.x1 is None and s.shape == (100, None)
    assert s.slices == (slice(0, 100), slice(None))
    assert str(s) == "[*,1:100]"
    r = parse_section("[*,1:100]", shape=(200, 50))
    assert r == Section(1, 50, 1, 100) and r.shape == (100, 50)
    a = _grid(200, 50)
    np.testing.assert_array_equal(apply_section(a, s), a[:100])


def test_apply_section_returns_a_view():
    a = np.zeros((10, 12), np.float32)
    v = apply_section(a, parse_section("[12:1,1:5]"))
    assert np.shares_memory(v, a)
    v[0, 0] = 7.0                     # pixel (x=12, y=1)
    assert a[0, 11] == 7.0


def test_apply_section_on_dask_and_stacks():
    a = _grid(30, 40)
    s = parse_section("[40:11,5:20]")
    d = da.from_array(a, chunks=(7, 9))
    np.testing.assert_array_equal(apply_section(d, s).compute(), apply_section(a, s))
    stack = np.stack([a, a + 1])
    np.testing.assert_array_equal(apply_section(stack, s)[1], apply_section(a, s) + 1)


@given(st.data())
def test_roundtrip_and_reference_indexing(data):
    ny = data.draw(st.integers(1, 40), label="ny")
    nx = data.draw(st.integers(1, 40), label="nx")
    x1, x2 = (data.draw(st.integers(1, nx)) for _ in range(2))
    y1, y2 = (data.draw(st.integers(1, ny)) for _ in range(2))
    tokens = ["[", x1, ":", x2, ",", y1, ":", y2, "]"]
    gaps = data.draw(st.lists(st.sampled_from(["", " ", "  ", "\t"]),
                              min_size=len(tokens) + 1, max_size=len(tokens) + 1))
    text = gaps[0] + "".join(f"{t}{g}" for t, g in zip(tokens, gaps[1:]))
    s = parse_section(text, shape=(ny, nx))
    assert (s.x1, s.x2, s.y1, s.y2) == (x1, x2, y1, y2)
    assert parse_section(str(s)) == s
    assert s.flip_x == (x1 > x2) and s.flip_y == (y1 > y2)
    a = _grid(ny, nx)
    ys = [y - 1 for y in _fits_range(y1, y2)]
    xs = [x - 1 for x in _fits_range(x1, x2)]
    expected = a[np.ix_(ys, xs)]
    got = apply_section(a, s)
    np.testing.assert_array_equal(got, expected)
    assert got.shape == s.shape
    assert np.shares_memory(got, a)


# ---------------------------------------------------------------------------
# errors


def test_malformed_message_is_one_line_naming_file_hdu_keyword():
    with pytest.raises(SectionError) as e:
        parse_section("[1:50,1:]", where="raw/b1.fits[0] BIASSEC")
    assert str(e.value) == ("raw/b1.fits[0] BIASSEC: malformed section '[1:50,1:]' "
                            "(expected [x1:x2,y1:y2], 1-based)")
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("text", [
    "", "[]", "1:50,1:100", "[1:50;1:100]", "[1:50,1:100", "[1-50,1:100]",
    "[1:50:2,1:100]", "[a:b,1:2]", "[1.5:50,1:100]", "[1:50,1:100,1:2]",
    "[1:50] ", "[1:50,1:100]x", "[**,1:2]",
])
def test_malformed(text):
    with pytest.raises(SectionError, match="malformed section"):
        parse_section(text)


@pytest.mark.parametrize("text", ["[0:50,1:100]", "[1:50,-3:100]", "[1:0,1:2]"])
def test_pixel_numbers_are_one_based(text):
    with pytest.raises(SectionError, match=r"pixel number < 1 .*1-based"):
        parse_section(text)


@pytest.mark.parametrize("value", [None, 5, 1.5, b"[1:2,1:2]"])
def test_non_string_values(value):
    with pytest.raises(SectionError, match="must be a string"):
        parse_section(value, where="f.fits[0] DATASEC")


@pytest.mark.parametrize("text,axis", [("[1:1025,1:254]", "x"), ("[1:1024,300:1]", "y"),
                                       ("[1025:1,1:254]", "x")])
def test_bounds_are_checked_against_shape(text, axis):
    with pytest.raises(SectionError) as e:
        parse_section(text, shape=(254, 1024), where="v.fits[0] TRIMSEC")
    msg = str(e.value)
    assert msg.startswith("v.fits[0] TRIMSEC: section ") and "\n" not in msg
    assert f"{axis} range" in msg and "1024 x 254" in msg


def test_apply_section_checks_the_array():
    with pytest.raises(SectionError, match="exceeds the array"):
        apply_section(np.zeros((5, 5)), parse_section("[1:6,1:5]"))


def test_errors_pickle_for_dask_workers():
    err = SectionError("malformed section 'x'", "a.fits[0] DATASEC")
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) and back.where == err.where


def test_section_validates_its_fields():
    with pytest.raises(SectionError):
        Section(0, 5, 1, 2)
    with pytest.raises(SectionError):
        Section(None, 5, 1, 2)


# ---------------------------------------------------------------------------
# sections in headers


def _header(**cards):
    h = fits.Header()
    h["NAXIS"], h["NAXIS1"], h["NAXIS2"] = 2, 1124, 226
    for k, v in cards.items():
        h[k] = v
    return h


def test_header_section_checks_against_naxis_and_names_the_keyword():
    h = _header(DATASEC="[51:1074,1:226]", BIASSEC="[1075:1124,1:227]",
                CCDSEC="[1:3072,1:678]")
    assert header_section(h, "DATASEC").shape == (226, 1024)
    assert header_section(h, "TRIMSEC") is None          # absent keyword
    with pytest.raises(SectionError) as e:
        header_section(h, "BIASSEC", path="raw/w.fits", hdu=0)
    assert str(e.value).startswith("raw/w.fits[0] BIASSEC: section '[1075:1124,1:227]'")
    # CCDSEC is in unbinned detector pixels: not checked against NAXIS
    assert header_section(h, "CCDSEC").shape == (678, 3072)
    assert header_section(h, "BIASSEC", shape=None).shape == (227, 50)


def test_header_section_on_a_real_header_with_an_added_datasec():
    # wht070.fits: prescan columns 1-50, imaging from CCDXIMST = 51 (README)
    h = read_header(SHARED / REAL_FRAMES["wht"])
    h = h.copy()
    start = h["CCDXIMST"]
    h["DATASEC"] = f"[{start}:{h['NAXIS1']},1:{h['NAXIS2']}]"
    s = header_section(h, "DATASEC", path="wht070.fits", hdu=0)
    assert s.slices == (slice(0, h["NAXIS2"]), slice(start - 1, h["NAXIS1"]))


def test_header_section_with_hierarch_names_and_the_hdu_read(tmp_path):
    h = fits.Header()
    h["HIERARCH ESO DET OUT1 DATASEC"] = "[1:4,1:6]"
    h["HIERARCH ESO DET OUT1 BIASSEC"] = "[5:9,1:6]"
    path = tmp_path / "eso.fits"
    fits.HDUList([fits.PrimaryHDU(header=h),
                  fits.ImageHDU(np.zeros((6, 8), np.uint16), name="CCD1")]).writeto(path)
    merged = read_header(path)
    for name in ("ESO DET OUT1 DATASEC", "HIERARCH ESO DET OUT1 DATASEC",
                 "eso det out1 datasec"):
        assert header_section(merged, name).shape == (6, 4)
    with pytest.raises(SectionError) as e:          # x = 9 > NAXIS1 = 8 of the extension
        header_section(merged, "ESO DET OUT1 BIASSEC")
    assert str(e.value).startswith(f"{path}[1] ESO DET OUT1 BIASSEC: section '[5:9,1:6]' "
                                   "exceeds the image")
