"""Frames larger than memory: ``crdask lacosmic`` streams them block by block
(``crdask.pipeline.large_frame``); the output is the in-memory path's, byte
for byte, and its mask equals tiles cleaned separately with the same overlap.

The threshold is lowered with ``CRDASK_LARGE_FRAME_PIXELS`` so a 3000x3000
frame takes the out-of-core path here (the benchmark
``bench_lacosmic_outofcore.py`` runs the real 20,000x20,000 case).
"""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

import crdask
from crdask import lacosmic
from crdask.cosmic.lacosmic import make_params
from crdask.cosmic.lacosmic_core import overlap_depth
from crdask.pipeline import large_frame
from crdask.pipeline.clean_files import clean_one, validate_params
from crdask.simulate import simulate_frame

ROOT = pathlib.Path(crdask.__file__).resolve().parent.parent


def tile_mask(data, y0, y1, x0, x1, depth, **kw):
    """CR mask of one tile cleaned on its own with ``depth`` pixels of halo."""
    ya, yb = max(0, y0 - depth), min(data.shape[0], y1 + depth)
    xa, xb = max(0, x0 - depth), min(data.shape[1], x1 + depth)
    m, _ = lacosmic(np.ascontiguousarray(data[ya:yb, xa:xb]), **kw)
    return m[y0 - ya:y1 - ya, x0 - xa:x1 - xa]


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("large")
    f = simulate_frame((3000, 3000), seed=8)
    path = tmp / "big.fits"
    hdu = fits.PrimaryHDU(f.data.astype(np.float32))
    hdu.header["GAIN"] = f.gain
    hdu.header["RDNOISE"] = f.readnoise
    hdu.header["OBJECT"] = "sim 8"
    hdu.writeto(path)
    return tmp, path, f


def test_cli_streams_a_large_frame_and_matches_the_in_memory_path(big):
    tmp, path, f = big
    env = dict(os.environ, CRDASK_LARGE_FRAME_PIXELS="1000000", PYTHONPATH=str(ROOT),
               PYTHONWARNINGS="ignore")
    out = tmp / "out"
    p = subprocess.run([sys.executable, "-m", "crdask", "lacosmic", str(path), "--out-dir",
                        str(out), "--gain-key", "GAIN", "--readnoise-key", "RDNOISE"],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    streamed = out / "big_crclean.fits"
    # the in-memory path (default threshold), in this process
    job = dict(input=str(path), output=str(tmp / "mem.fits"), hdu=None, mask_hdu=None,
               params=validate_params({}), gain_key="GAIN", readnoise_key="RDNOISE",
               overwrite=False, num_threads=2)
    assert not large_frame.is_large(job)
    summary = clean_one(job)
    assert summary["ok"], summary["error"]
    assert streamed.read_bytes() == (tmp / "mem.fits").read_bytes()

    with fits.open(streamed) as hdul:
        mask = hdul["MASK"].data.astype(bool)
        assert hdul[0].header["CRNFIX"] == mask.sum() > 1000
        assert any("lacosmic" in str(h) for h in hdul[0].header["HISTORY"])
    p = make_params(sigclip=4.5, sigfrac=0.3, objlim=5.0, gain=f.gain, readnoise=f.readnoise,
                    satlevel=65536.0, niter=4, sepmed=True, cleantype="meanmask",
                    fsmode="median", psfmodel="gauss", psffwhm=2.5, psfsize=7, psfk=None,
                    psfbeta=4.765)
    depth = overlap_depth(p)
    kw = dict(gain=f.gain, readnoise=f.readnoise)
    for y0, x0 in ((0, 0), (1400, 1700), (2600, 2500)):
        np.testing.assert_array_equal(mask[y0:y0 + 400, x0:x0 + 500],
                                      tile_mask(f.data, y0, y0 + 400, x0, x0 + 500, depth,
                                                **kw))


def test_threshold_from_environment(big, monkeypatch):
    _, path, _ = big
    job = dict(input=str(path), hdu=None)
    monkeypatch.setenv("CRDASK_LARGE_FRAME_PIXELS", str(3000 * 3000))
    assert not large_frame.is_large(job)  # "larger than" the threshold
    monkeypatch.setenv("CRDASK_LARGE_FRAME_PIXELS", str(3000 * 3000 - 1))
    assert large_frame.is_large(job)
    monkeypatch.setenv("CRDASK_LARGE_FRAME_PIXELS", "lots")
    with pytest.raises(ValueError, match="CRDASK_LARGE_FRAME_PIXELS"):
        large_frame.large_frame_pixels()


@pytest.mark.parametrize("kw", [dict(cleantype="median", niter=3),
                                dict(padwidth=3, sepmed=False)])
def test_blocks_with_mask_hdu_scaled_ints_and_options(tmp_path, monkeypatch, kw):
    """Many small blocks (rows and columns), an extension image stored as
    BZERO-scaled uint16 with a mask HDU: same file as the in-memory path."""
    f = simulate_frame((700, 900), seed=3)
    data = np.clip(np.round(f.data), 0, 65535).astype(np.uint16)
    bpm = np.zeros(data.shape, np.uint8)
    bpm[100:110, 200:260] = 1
    path = tmp_path / "mef.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, name="SCI"),
                  fits.ImageHDU(bpm, name="BPM")]).writeto(path)
    job = dict(input=str(path), hdu="SCI", mask_hdu="BPM", gain_key=None, readnoise_key=None,
               params=validate_params(dict(gain=f.gain, readnoise=f.readnoise, **kw)),
               overwrite=False, num_threads=2)
    mem = clean_one(dict(job, output=str(tmp_path / "mem.fits")))
    assert mem["ok"], mem["error"]
    monkeypatch.setattr(large_frame, "BLOCK_SHAPE", (150, 200))
    monkeypatch.setenv("CRDASK_LARGE_FRAME_PIXELS", "100")
    assert large_frame.is_large(job)
    got = clean_one(dict(job, output=str(tmp_path / "big.fits")))
    assert got["ok"], got["error"]
    assert got["ncr"] == mem["ncr"] > 0
    assert (tmp_path / "big.fits").read_bytes() == (tmp_path / "mem.fits").read_bytes()
    # the output is never replaced without overwrite, and no temporary is left
    again = clean_one(dict(job, output=str(tmp_path / "big.fits")))
    assert not again["ok"] and "exists" in again["error"]
    assert sorted(os.listdir(tmp_path)) == ["big.fits", "mef.fits", "mem.fits"]


def test_truncated_large_file_is_set_aside_with_one_line(tmp_path, monkeypatch):
    path = tmp_path / "cut.fits"
    fits.PrimaryHDU(np.ones((400, 400), np.float32)).writeto(path)
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])
    monkeypatch.setenv("CRDASK_LARGE_FRAME_PIXELS", "100")
    job = dict(input=str(path), output=str(tmp_path / "out.fits"), hdu=None,
               params=validate_params({}), overwrite=False, num_threads=1)
    s = clean_one(job)
    assert not s["ok"]
    assert str(path) in s["error"] and "\n" not in s["error"]
    assert not (tmp_path / "out.fits").exists()
    assert sorted(os.listdir(tmp_path)) == ["cut.fits"]
