"""crdask.io.raw: raw frames as float32 physical values, lazily or in memory."""

import gzip
import hashlib
import pickle
import shutil
import tracemalloc
import warnings

import dask
import dask.array as da
import numpy as np
import pytest
from astropy.io import fits

from crdask.io import FitsInputError, open_lazy, read_header, read_raw
from crdask.io.raw import HeaderCards, locate_hdu

from shared_data import REAL_FRAMES, SHARED

REAL = sorted(str(p.relative_to(SHARED)) for p in SHARED.glob("*/*.fits*"))


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def reference(path, hdu=0):
    """astropy's physical values (default scaling), as float32."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # wht070.fits: one trailing byte
        with fits.open(path) as hdul:
            return np.asarray(hdul[hdu].data).astype(np.float32)


def assert_native_f32(a):
    assert a.dtype == np.float32 and a.dtype.isnative


# ---------------------------------------------------------------------------
# real frames


@pytest.mark.parametrize("rel", REAL)
def test_real_frames_equal_astropy_and_stay_untouched(rel):
    path = SHARED / rel
    before = sha256(path)
    ref = reference(path)
    frame = read_raw(path)
    assert_native_f32(frame.data)
    assert frame.data.shape == ref.shape and frame.hdu == 0 and frame.index == 0
    np.testing.assert_array_equal(frame.data, ref)     # bit for bit
    lazy = open_lazy(path, chunks=(100, -1))
    assert lazy.dtype == np.float32 and lazy.shape == ref.shape
    np.testing.assert_array_equal(lazy.compute(), ref)
    assert read_header(path)["NAXIS1"] == ref.shape[1]
    assert sha256(path) == before


def test_sprat_is_bzero_scaled_int16_and_comes_back_unsigned():
    path = SHARED / REAL_FRAMES["sprat"]
    with fits.open(path, do_not_scale_image_data=True) as h:
        assert h[0].data.dtype == ">i2" and h[0].header["BZERO"] == 32768
        stored = h[0].data.copy()
    d = read_raw(path).data
    np.testing.assert_array_equal(d, stored.astype(np.float32) + 32768)
    assert 800 < np.median(d) < 1100          # bias level ~917 ADU (README)


def test_wht_non_integer_bscale_and_trailing_byte():
    path = SHARED / REAL_FRAMES["wht"]
    f = read_raw(path)
    h = f.header
    assert h["BSCALE"] != 1 and h["BZERO"] % 1 != 0
    np.testing.assert_array_equal(f.data, reference(path))
    assert f.data.shape == (226, 1124)


def test_m51_plain_int16():
    path = SHARED / REAL_FRAMES["m51"]
    f = read_raw(path)
    assert "BZERO" not in f.header and f.header["BITPIX"] == 16
    np.testing.assert_array_equal(f.data, reference(path))


# ---------------------------------------------------------------------------
# encodings written here


def _write(path, data, **header):
    hdu = fits.PrimaryHDU(data)
    for k, v in header.items():
        hdu.header[k] = v
    hdu.writeto(path)
    return path


def test_uint16_full_range(tmp_path):
    phys = np.array([[0, 1, 32767, 32768], [65535, 917, 40000, 2]], np.uint16)
    p = _write(tmp_path / "u16.fits", phys)
    with fits.open(p, do_not_scale_image_data=True) as h:
        assert h[0].header["BZERO"] == 32768 and h[0].data.dtype == ">i2"
    d = read_raw(p).data
    assert_native_f32(d)
    np.testing.assert_array_equal(d, phys.astype(np.float32))


def test_uint32_is_rounded_once(tmp_path):
    rng = np.random.default_rng(3)
    phys = rng.integers(0, 2**32 - 1, (20, 30), dtype=np.uint32)
    p = _write(tmp_path / "u32.fits", phys)
    np.testing.assert_array_equal(read_raw(p).data, phys.astype(np.float32))


@pytest.mark.parametrize("dtype", [">f4", ">f8", "<f4", ">i4", "u1"])
def test_other_bitpix(tmp_path, dtype):
    rng = np.random.default_rng(4)
    a = (rng.normal(1000, 50, (17, 23)) * (1 if "f" in dtype else 1)).astype(dtype)
    p = _write(tmp_path / "x.fits", a)
    d = read_raw(p).data
    assert_native_f32(d)
    np.testing.assert_array_equal(d, reference(p))


def test_bscale_bzero_and_blank(tmp_path):
    raw = np.array([[10, 20], [-32768, 5]], np.int16)
    hdu = fits.PrimaryHDU(raw, do_not_scale_image_data=True)
    hdu.header["BSCALE"], hdu.header["BZERO"], hdu.header["BLANK"] = 0.5, 100.0, -32768
    p = tmp_path / "scaled.fits"
    hdu.writeto(p)
    d = read_raw(p).data
    assert d[0, 0] == 105 and d[0, 1] == 110 and d[1, 1] == 102.5 and np.isnan(d[1, 0])
    np.testing.assert_array_equal(d, reference(p))
    np.testing.assert_array_equal(open_lazy(p).compute(), d)


def test_gzip(tmp_path):
    phys = np.arange(300 * 70, dtype=np.uint16).reshape(300, 70)
    plain = _write(tmp_path / "g.fits", phys)
    gz = tmp_path / "g.fits.gz"
    with open(plain, "rb") as a, gzip.open(gz, "wb") as b:
        shutil.copyfileobj(a, b)
    assert locate_hdu(gz).storage == "gzip"
    np.testing.assert_array_equal(read_raw(gz).data, phys.astype(np.float32))
    lazy = open_lazy(gz, chunks=(64, 70))
    assert lazy.chunks[0][0] == 64
    np.testing.assert_array_equal(lazy.compute(), phys.astype(np.float32))


@pytest.mark.parametrize("kind", ["uint16", "float32"])
def test_fpack_compressed(tmp_path, kind):
    rng = np.random.default_rng(5)
    if kind == "uint16":
        data = rng.integers(0, 65535, (130, 90)).astype(np.uint16)
    else:
        data = rng.normal(1000, 10, (130, 90)).astype(np.float32)
    p = tmp_path / "c.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, name="SCI")]).writeto(p)
    ref = reference(p, 1)                 # float32 compression is lossy: compare
    if kind == "uint16":                  # with astropy's decoding, and exactly
        np.testing.assert_array_equal(ref, data.astype(np.float32))
    for hdu in (None, 1, "SCI"):
        f = read_raw(p, hdu)
        assert f.index == 1
        np.testing.assert_array_equal(f.data, ref)
    assert locate_hdu(p).storage == "compressed"
    h = read_header(p)
    assert (h["NAXIS1"], h["NAXIS2"]) == (90, 130)   # the image, not the table
    np.testing.assert_array_equal(open_lazy(p, chunks=(50, -1)).compute(), ref)


# ---------------------------------------------------------------------------
# choosing the HDU


@pytest.fixture
def mef(tmp_path):
    p = tmp_path / "mef.fits"
    a = np.full((4, 5), 1, np.int16)
    b = np.full((4, 5), 2, np.uint16)
    prim = fits.PrimaryHDU()
    prim.header["IMAGETYP"] = "object"
    fits.HDUList([prim,
                  fits.BinTableHDU.from_columns([fits.Column("x", "E", array=[1.0])],
                                                name="TAB"),
                  fits.ImageHDU(a, name="SCI", ver=1),
                  fits.ImageHDU(b, name="SCI", ver=2),
                  fits.ImageHDU(np.zeros((2, 3, 4), np.float32), name="CUBE")]).writeto(p)
    return p


def test_default_is_first_2d_image(mef):
    f = read_raw(mef)
    assert f.index == 2 and f.hdu == 2 and f.header["EXTNAME"] == "SCI"
    assert np.all(f.data == 1)
    info = locate_hdu(mef)
    assert info.primary["IMAGETYP"] == "object"


@pytest.mark.parametrize("spec,value,index", [(2, 1, 2), ("SCI", 1, 2), ("sci,2", 2, 3),
                                              (("SCI", 2), 2, 3), ("3", 2, 3)])
def test_named_and_numbered_hdus(mef, spec, value, index):
    f = read_raw(mef, spec)
    assert f.index == index and np.all(f.data == value)
    np.testing.assert_array_equal(open_lazy(mef, spec).compute(), f.data)


@pytest.mark.parametrize("spec,message", [
    (9, "no such HDU (file has 5"), ("NOPE", "no such HDU"),
    (1, "HDU is a BinTableHDU, not an image"), ("CUBE", "3-D data"),
    (0, "HDU has no data; need a 2-D image"),
])
def test_bad_hdu_choice(mef, spec, message):
    with pytest.raises(FitsInputError) as e:
        read_raw(mef, spec)
    msg = str(e.value)
    assert msg.startswith(f"{mef}[") and message in msg and "\n" not in msg


def test_no_image_at_all(tmp_path):
    p = tmp_path / "tab.fits"
    fits.HDUList([fits.PrimaryHDU(),
                  fits.BinTableHDU.from_columns([fits.Column("x", "E", array=[1.0])])]
                 ).writeto(p)
    with pytest.raises(FitsInputError, match=r"tab.fits: no HDU with 2-D image data"):
        read_raw(p)


# ---------------------------------------------------------------------------
# bad files


def _damaged(tmp_path):
    noise = np.random.default_rng(8).integers(0, 65535, (200, 100)).astype(np.uint16)
    good = _write(tmp_path / "good.fits", noise)
    raw = open(good, "rb").read()
    assert len(gzip.compress(raw)) > 20_000     # so cutting at 3000 bytes truncates data
    out = {"good": good}
    for name, content in [("empty.fits", b""), ("text.fits", b"hello, not FITS\n" * 300),
                          ("shorthead.fits", raw[:1000]), ("shortdata.fits", raw[:8000])]:
        (tmp_path / name).write_bytes(content)
        out[name] = tmp_path / name
    gz = tmp_path / "shortdata.fits.gz"
    gz.write_bytes(gzip.compress(raw)[:3000])
    out[gz.name] = gz
    return out


@pytest.mark.parametrize("name,message", [
    ("empty.fits", ": empty file"),
    ("text.fits", ": not a FITS file (does not start with a SIMPLE card)"),
    ("shorthead.fits", ": truncated FITS header (no END card in the first 1000 bytes)"),
    ("shortdata.fits", "[0]: file is truncated: image data end at byte 42880, "
                       "file has 8000 bytes"),
    ("shortdata.fits.gz", "[0]: cannot decompress image data"),
])
def test_bad_files_give_one_line(tmp_path, name, message):
    files = _damaged(tmp_path)
    p = files[name]
    with pytest.raises(FitsInputError) as e:
        read_raw(p)
    msg = str(e.value)
    assert msg.startswith(str(p)) and message in msg and "\n" not in msg
    if name.startswith("shortdata.fits"):
        assert read_header(p)["NAXIS1"] == 100   # the header alone is fine
    if name == "shortdata.fits":
        with pytest.raises(FitsInputError, match="truncated"):
            open_lazy(p)                          # fails at build time, not in a task


def test_missing_and_directory(tmp_path):
    with pytest.raises(FitsInputError, match=r"nope.fits: no such file$"):
        read_raw(tmp_path / "nope.fits")
    with pytest.raises(FitsInputError, match="is a directory"):
        read_header(tmp_path)


def test_bad_bzero_names_the_keyword(tmp_path):
    p = tmp_path / "b.fits"
    hdu = fits.PrimaryHDU(np.ones((3, 3), np.int16), do_not_scale_image_data=True)
    hdu.header["BZERO"] = "many"
    hdu.writeto(p)
    with pytest.raises(FitsInputError) as e:
        read_raw(p)
    assert e.value.keyword == "BZERO" and str(e.value) == (
        f"{p}[0]: keyword BZERO = 'many' is not a finite number")


def test_errors_pickle(tmp_path):
    with pytest.raises(FitsInputError) as e:
        read_raw(tmp_path / "nope.fits")
    assert str(pickle.loads(pickle.dumps(e.value))) == str(e.value)


# ---------------------------------------------------------------------------
# open_lazy


def _stack_files(tmp_path, n=5, shape=(300, 64)):
    rng = np.random.default_rng(7)
    frames = [rng.integers(900, 1100, shape).astype(np.uint16) for _ in range(n)]
    paths = [_write(tmp_path / f"s{i}.fits", f) for i, f in enumerate(frames)]
    return paths, np.array(frames, np.float32)


def test_stack_median_chunk_by_chunk(tmp_path):
    paths, frames = _stack_files(tmp_path)
    before = [sha256(p) for p in paths]
    stack = da.stack([open_lazy(p, chunks=(64, -1)) for p in paths])
    assert stack.chunks[1] == (64, 64, 64, 64, 44)
    med = stack.map_blocks(np.median, axis=0, drop_axis=0, dtype=np.float32)
    np.testing.assert_array_equal(med.compute(), np.median(frames, axis=0))
    np.testing.assert_array_equal(stack.mean(axis=0).compute(), frames.mean(axis=0))
    assert [sha256(p) for p in paths] == before


def test_tasks_pickle_only_the_path_not_the_header(tmp_path):
    p = tmp_path / "bighead.fits"
    hdu = fits.PrimaryHDU(np.ones((256, 32), np.uint16))
    for i in range(3000):
        hdu.header[f"HIERARCH KEY{i:05d}"] = "x" * 30
    hdu.writeto(p)
    assert len(str(read_header(p))) > 200_000
    arr = open_lazy(p, chunks=(64, -1))
    graph = dict(arr.__dask_graph__())
    size = len(pickle.dumps(graph))
    assert size < 5_000, size
    np.testing.assert_array_equal(arr.compute(), 1.0)


def _peak_bytes(fn):
    """Peak of traced (numpy included) allocations while ``fn`` runs."""
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()


def test_a_block_reads_only_its_rows(tmp_path):
    ny, nx = 4096, 1024
    p = _write(tmp_path / "big.fits", np.full((ny, nx), 7, np.uint16))
    arr = open_lazy(p, chunks=(256, -1))
    full_bytes = ny * nx * 4
    arr.blocks[0].compute(scheduler="sync")          # warm up imports and caches
    block, peak = _peak_bytes(lambda: arr.blocks[5].compute(scheduler="sync"))
    assert block.shape == (256, nx) and np.all(block == 7)
    assert peak < full_bytes / 4, (peak, full_bytes)
    whole, peak_whole = _peak_bytes(lambda: arr.compute(scheduler="sync"))
    assert peak_whole >= full_bytes                   # the measure sees whole frames


def test_keys_follow_the_file(tmp_path):
    paths, _ = _stack_files(tmp_path, n=2)
    a, b = open_lazy(paths[0]), open_lazy(paths[0])
    assert a.name == b.name
    assert open_lazy(paths[1]).name != a.name
    assert open_lazy(paths[0], chunks=(10, -1)).name != a.name


def test_lazy_runs_on_the_threaded_scheduler(tmp_path):
    paths, frames = _stack_files(tmp_path, n=3)
    stack = da.stack([open_lazy(p, chunks=(50, 32)) for p in paths])
    with dask.config.set(scheduler="threads", num_workers=2):
        np.testing.assert_array_equal(stack.sum(axis=0).compute(), frames.sum(axis=0))


# ---------------------------------------------------------------------------
# HeaderCards: the fast keyword lookup the catalogue uses


def _astropy_value(h, key):
    v = h[key]
    return None if isinstance(v, fits.card.Undefined) else v


@pytest.mark.parametrize("rel", REAL)
def test_header_cards_agree_with_astropy_on_real_headers(rel):
    info = locate_hdu(SHARED / rel)
    assert isinstance(info.cards, HeaderCards)
    h = info.header                               # astropy's parse of the same bytes
    keys = {c.keyword for c in h.cards} - {"COMMENT", "HISTORY", ""}
    assert len(keys) > 20
    for k in keys:
        got, want = info.cards[k], _astropy_value(h, k)
        assert got == want and type(got) is type(want), (k, got, want)
        assert k in info.cards and k.lower() in info.cards


def test_header_cards_read_eso_hierarch_cards_like_astropy():
    """EFOSC2 headers are mostly HIERARCH cards: indexed on the bytes, read
    without building the astropy header, and equal to astropy's values."""
    for path in sorted((SHARED / "efosc2-ntt").glob("*.fits"))[::6]:
        info = locate_hdu(path)
        cards = info.cards
        h = fits.Header.fromstring(cards.raw)     # astropy's parse, apart
        keys = [c.keyword for c in h.cards if " " in c.keyword]
        assert len(keys) > 100
        for k in keys:
            cards[k]
            assert not cards.parsed, k            # no full parse needed
        for k in keys:
            got, want = cards[k], _astropy_value(h, k)
            assert got == want and type(got) is type(want), (k, got, want)
            assert f"HIERARCH {k.lower()}" in cards
        assert cards["ESO DPR TYPE"] in ("DARK", "FLAT", "WAVE", "OBJECT", "SKY,FLAT", "STD")


def test_header_cards_on_awkward_cards(tmp_path):
    h = fits.Header()
    h["QUOTED"] = "it's  "                        # '' inside, trailing blanks
    h["LEADING"] = "  x"
    h["EMPTY"] = ""
    h["UNDEF"] = None
    h["BOOLT"], h["BOOLF"] = True, False
    h["BIGINT"] = 2**40
    h["NEG"] = -3.5e-12
    h["CPLX"] = 1 + 2j
    h["LONGSTR"] = "a long string " * 10          # CONTINUE cards
    h["HIERARCH ESO DET GAIN"] = 1.7
    h.append(("DUP", 1))
    h.append(("DUP", 2))
    h.add_history("made for a test")
    raw = h.tostring().encode("ascii").replace(b"-3.5E-12", b"-3.5D-12")
    cards = HeaderCards(raw)
    ref = fits.Header.fromstring(raw)
    for k in ("QUOTED", "LEADING", "EMPTY", "UNDEF", "BOOLT", "BOOLF", "BIGINT", "NEG",
              "CPLX", "LONGSTR", "ESO DET GAIN", "DUP"):
        assert cards[k] == _astropy_value(ref, k), k
    assert cards["quoted"] == "it's" and cards["NEG"] == -3.5e-12 and cards["DUP"] == 1
    assert cards["LONGSTR"] == "a long string " * 9 + "a long string"
    assert "HISTORY" in cards and "NOPE" not in cards and cards.get("NOPE", 7) == 7
    with pytest.raises(KeyError):
        cards["NOPE"]
