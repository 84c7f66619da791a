"""``crdask lacosmic`` / ``crdask demo``: CLI, outputs, errors, Dask cluster runs."""

import hashlib
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from shared_data import SHARED
from astropy.io import fits
from click.testing import CliRunner

import crdask
from crdask import lacosmic
from crdask.cli import cli
from crdask.io import is_temp_name
from crdask.pipeline import local_cluster_size, output_name
from crdask.simulate import simulate_frame

DATA = SHARED
M51 = DATA / "kpno-m51" / "dev_pix_m51_B_600s.fits"
SPRAT = DATA / "sprat-lhs6328" / "v_e_20180810_12_1_0_0.fits.gz"


def sha256(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def make_frame(path, seed=0, shape=(256, 256), gain=2.0, rdnoise=5.0, **extra):
    """A simulated frame with CRs, stored as BZERO-scaled uint16 with WCS."""
    f = simulate_frame(shape=shape, seed=seed)
    data = np.clip(np.round(f.data), 0, 65535).astype(np.uint16)
    hdu = fits.PrimaryHDU(data)
    h = hdu.header
    if gain is not None:
        h["GAIN"] = gain
    if rdnoise is not None:
        h["RDNOISE"] = rdnoise
    h["OBJECT"] = f"sim {seed}"
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = 150.0, 2.2
    h["CRPIX1"], h["CRPIX2"] = 128.0, 128.0
    h["CDELT1"], h["CDELT2"] = -1e-4, 1e-4
    for k, v in extra.items():
        h[k] = v
    hdu.writeto(path)
    return pathlib.Path(path)


def run(args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def stderr_lines(result):
    return [ln for ln in result.stderr.splitlines() if ln.strip()]


def check_output(out, inp, **params):
    """Output structure, provenance, and pixels == lacosmic on the same data."""
    with fits.open(out) as h:
        assert [x.name for x in h] == ["PRIMARY", "MASK"]
        data, mask, hdr = h[0].data, h["MASK"].data, h[0].header
        assert data.dtype == np.dtype(">f4") and mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 1}
        assert hdr["CRNFIX"] == int(mask.sum()) > 0
        for k in ("BZERO", "BSCALE", "BLANK"):
            assert k not in hdr
        history = "\n".join(hdr["HISTORY"])
        assert f"crdask {crdask.__version__} lacosmic" in history
        assert os.path.basename(inp) in history
        for name in ("sigclip", "sigfrac", "objlim", "gain", "readnoise", "satlevel",
                     "niter", "sepmed", "cleantype", "fsmode", "psfmodel", "psffwhm",
                     "psfsize", "psfbeta", "padwidth"):
            assert f"{name}=" in history, name
        crmask, clean = lacosmic(fits.getdata(inp), **params)
        np.testing.assert_array_equal(mask, crmask.astype(np.uint8))
        np.testing.assert_array_equal(data, clean)
        return hdr, history


# ---------------------------------------------------------------------------
# single files (in-process)


def test_single_file(tmp_path):
    inp = make_frame(tmp_path / "sim.fits", seed=1)
    before = sha256(inp)
    r = run(["lacosmic", inp, "--out-dir", tmp_path / "out", "--gain", 2, "--readnoise", 5])
    assert r.exit_code == 0, r.output
    out = tmp_path / "out" / "sim_crclean.fits"
    hdr, history = check_output(out, inp, gain=2.0, readnoise=5.0)
    assert hdr["CTYPE1"] == "RA---TAN" and hdr["CRVAL2"] == 2.2 and hdr["OBJECT"] == "sim 1"
    assert "gain=2.0" in history and "readnoise=5.0" in history and "sigclip=4.5" in history
    assert f"sim.fits[0] -> {out}: {hdr['CRNFIX']} CR pixels" in r.stdout
    assert sha256(inp) == before
    assert os.listdir(tmp_path / "out") == ["sim_crclean.fits"]


def test_real_m51_nondefault_params(tmp_path):
    before = sha256(M51)
    r = run(["lacosmic", M51, "-o", tmp_path, "--sigclip", 5, "--objlim", 4,
             "--cleantype", "medmask", "--no-sepmed", "--niter", 2, "--padwidth", 3])
    assert r.exit_code == 0, r.output
    _, history = check_output(tmp_path / "dev_pix_m51_B_600s_crclean.fits", M51,
                              sigclip=5.0, objlim=4.0, cleantype="medmask", sepmed=False,
                              niter=2, padwidth=3)
    for word in ("sigclip=5.0", "objlim=4.0", "cleantype='medmask'", "sepmed=False",
                 "niter=2", "padwidth=3", "dev_pix_m51_B_600s.fits[0]"):
        assert word in history, word
    assert sha256(M51) == before


def test_real_sprat_gzip_bzero_gain_key(tmp_path):
    before = sha256(SPRAT)
    r = run(["lacosmic", SPRAT, "-o", tmp_path, "--gain-key", "GAIN", "--readnoise", 7])
    assert r.exit_code == 0, r.output
    out = tmp_path / "v_e_20180810_12_1_0_0_crclean.fits"
    hdr, history = check_output(out, SPRAT, gain=2.45, readnoise=7.0)
    assert "gain=2.45(GAIN)" in history
    # physical values (bias ~917 ADU), not the stored int16 (~917 - 32768)
    assert 800 < np.median(fits.getdata(out)) < 1200
    assert sha256(SPRAT) == before


def test_gain_and_readnoise_keys_from_header(tmp_path):
    inp = make_frame(tmp_path / "k.fits", seed=2, gain=1.5, rdnoise=4.0)
    r = run(["lacosmic", inp, "-o", tmp_path / "o", "--gain-key", "GAIN",
             "--readnoise-key", "RDNOISE"])
    assert r.exit_code == 0, r.output
    _, history = check_output(tmp_path / "o" / "k_crclean.fits", inp, gain=1.5,
                              readnoise=4.0)
    assert "gain=1.5(GAIN)" in history and "readnoise=4.0(RDNOISE)" in history


def test_mef_hdu_and_mask_hdu(tmp_path):
    f = simulate_frame(shape=(128, 128), seed=3)
    bpm = np.zeros(f.data.shape, np.uint8)
    bpm[f.crmask] = 1                                   # mask every true CR pixel
    p = tmp_path / "mef.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(f.data, name="SCI"),
                  fits.ImageHDU(bpm, name="BPM")]).writeto(p)
    r = run(["lacosmic", p, "-o", tmp_path / "a"])      # default: first 2-D HDU
    assert r.exit_code == 0, r.output
    assert "mef.fits[1] ->" in r.stdout
    r = run(["lacosmic", p, "-o", tmp_path / "b", "--hdu", "SCI", "--mask-hdu", "BPM"])
    assert r.exit_code == 0, r.output
    with fits.open(tmp_path / "b" / "mef_crclean.fits") as h:
        crmask = h["MASK"].data.astype(bool)
        assert not (crmask & f.crmask).any()            # masked pixels never flagged
        assert "inmask=[BPM]" in "\n".join(h[0].header["HISTORY"])
        exp_mask, exp = lacosmic(f.data, inmask=bpm.astype(bool))
        np.testing.assert_array_equal(h[0].data, exp)


def test_overwrite(tmp_path):
    inp = make_frame(tmp_path / "o.fits", seed=4)
    out = tmp_path / "o_crclean.fits"
    assert run(["lacosmic", inp, "-o", tmp_path]).exit_code == 0
    first = sha256(out)
    r = run(["lacosmic", inp, "-o", tmp_path, "--sigclip", 6])
    assert r.exit_code == 2
    assert stderr_lines(r)[0] == (f"crdask: error: {inp}: output {out} exists "
                                  "(use --overwrite to replace it)")
    assert sha256(out) == first
    r = run(["lacosmic", inp, "-o", tmp_path, "--sigclip", 6, "--overwrite"])
    assert r.exit_code == 0, r.output
    assert sha256(out) != first and "sigclip=6.0" in "\n".join(fits.getheader(out)["HISTORY"])
    assert sorted(os.listdir(tmp_path)) == ["o.fits", "o_crclean.fits"]


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    inp = make_frame(tmp_path / "f.fits", seed=5)

    def boom(self, fileobj, **kw):
        fileobj.write(b"SIMPLE  = " + b"x" * 5000)     # half-written, then killed
        raise OSError("No space left on device")

    monkeypatch.setattr(fits.HDUList, "writeto", boom)
    r = run(["lacosmic", inp, "-o", tmp_path / "out"])
    assert r.exit_code == 2
    assert "No space left on device" in r.stderr
    assert os.listdir(tmp_path / "out") == []
    assert not any(is_temp_name(n) for n in os.listdir(tmp_path))


def test_input_as_output_and_listed_twice(tmp_path):
    inp = make_frame(tmp_path / "d.fits", seed=6)
    before = sha256(inp)
    r = run(["lacosmic", inp, "-o", tmp_path, "--suffix", ""])
    assert r.exit_code == 2
    assert stderr_lines(r)[0] == (f"crdask: error: {inp}: output {inp} would overwrite "
                                  "an input (choose another --out-dir or --suffix)")
    assert sha256(inp) == before


def test_listed_twice(tmp_path, monkeypatch):
    inp = make_frame(tmp_path / "t.fits", seed=7)
    monkeypatch.chdir(tmp_path)
    r = run(["lacosmic", inp, "t.fits", "-o", "out"])   # one file left: in-process
    assert r.exit_code == 2
    assert stderr_lines(r)[0] == (f"crdask: error: t.fits: output out/t_crclean.fits is "
                                  f"also the output of {inp} (listed twice, or same name "
                                  "in two folders?)")
    assert os.listdir("out") == ["t_crclean.fits"]
    assert f"{inp}[0] -> out/t_crclean.fits" in r.stdout


# ---------------------------------------------------------------------------
# usage errors: exit 1


@pytest.mark.parametrize("args, text", [
    (["lacosmic", "x.fits"], "--out-dir"),
    (["lacosmic", "x.fits", "-o", "d", "--cleantype", "best"], "'median', 'medmask'"),
    (["lacosmic", "x.fits", "-o", "d", "--sigclip", "-1"],
     "sigclip: -1.0 is not allowed; allowed: a number > 0"),
    (["lacosmic", "x.fits", "-o", "d", "--psfsize", "4", "--fsmode", "convolve"],
     "psfsize: 4 is not allowed; allowed: an odd integer"),
    (["lacosmic", "x.fits", "-o", "d", "--gain", "2", "--gain-key", "GAIN"],
     "either --gain or --gain-key"),
    (["lacosmic", "x.fits", "-o", "d", "--scheduler", "tcp://x:1", "--workers", "2"],
     "--scheduler"),
    (["lacosmic", "x.fits", "-o", "d", "--no-such-option"], "No such option"),
    (["lacosmic", "-o", "d"], "Missing argument"),
    (["nonsense"], "No such command"),
])
def test_usage_errors_exit_1(tmp_path, args, text):
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1, r.output
    assert text in r.output


def test_unreachable_scheduler_exit_1(tmp_path):
    import dask
    import distributed  # noqa: F401  its config section must exist before the set below,
    # or leaving the ``with`` removes the whole "distributed" section

    a, b = make_frame(tmp_path / "a.fits", 0), make_frame(tmp_path / "b.fits", 1)
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        r = run(["lacosmic", a, b, "-o", tmp_path / "o", "--scheduler",
                 "tcp://127.0.0.1:9"])
    assert r.exit_code == 1
    assert r.stderr.startswith("crdask: error: scheduler tcp://127.0.0.1:9: cannot connect")


def test_local_cluster_size():
    assert local_cluster_size(10, cores=8, memory=64 * 2**30) == (8, 1)
    assert local_cluster_size(2, cores=8, memory=64 * 2**30) == (2, 4)
    assert local_cluster_size(10, cores=8, memory=4 * 2**30) == (2, 4)
    assert local_cluster_size(10, workers=3, cores=8) == (3, 2)
    assert local_cluster_size(10, threads_per_worker=4, cores=8) == (2, 4)
    assert local_cluster_size(1, workers=4, threads_per_worker=2, cores=8) == (1, 2)


def test_output_name():
    assert output_name("/a/b/x.fits.gz") == "x_crclean.fits"
    assert output_name("x.FIT", "_c") == "x_c.fits"
    assert output_name("x.fits.fz", "") == "x.fits"
    # every dot but the FITS/compression suffix is kept: raw.001 and raw.002 stay apart
    assert output_name("raw.001") == "raw.001_crclean.fits"
    assert output_name("m51.0001.fits.gz") == "m51.0001_crclean.fits"


# ---------------------------------------------------------------------------
# many files on a real distributed LocalCluster


@pytest.fixture(scope="module")
def cluster():
    import distributed
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=":0") as c:
        yield c


def test_many_files_on_cluster_with_bad_ones(tmp_path, cluster):
    good = [make_frame(tmp_path / f"g{i}.fits", seed=10 + i) for i in range(2)]
    nokey = make_frame(tmp_path / "nokey.fits", seed=12, gain=None)
    badkey = make_frame(tmp_path / "badkey.fits", seed=13, gain="high")
    trunc = make_frame(tmp_path / "trunc.fits", seed=14)
    blob = trunc.read_bytes()
    trunc.write_bytes(blob[:len(blob) // 2])
    missing = tmp_path / "missing.fits"
    inputs = [good[0], nokey, trunc, badkey, missing, good[1]]
    hashes = {p: sha256(p) for p in inputs if p.exists()}
    out = tmp_path / "out"

    r = run(["lacosmic", *inputs, "-o", out, "--gain-key", "GAIN",
             "--scheduler", cluster.scheduler_address])
    assert r.exit_code == 2, r.output
    errors = [ln for ln in stderr_lines(r) if ln.startswith("crdask: error:")]
    assert sorted(errors) == sorted([
        f"crdask: error: {nokey}[0]: keyword GAIN not found",
        f"crdask: error: {badkey}[0]: keyword GAIN = 'high' is not a finite number",
        f"crdask: error: {missing}: no such file",
        next(e for e in errors if e.startswith(f"crdask: error: {trunc}[0]: cannot read "
                                               "image data")),
    ])
    assert "crdask: 4 file(s) set aside:" in r.stderr
    assert "crdask: 2 of 6 file(s) cleaned" in r.stdout
    assert sorted(os.listdir(out)) == ["g0_crclean.fits", "g1_crclean.fits"]
    for g in good:
        check_output(out / output_name(g), g, gain=2.0)
    assert {p: sha256(p) for p in hashes} == hashes


def test_subprocess_python_m_crdask(tmp_path):
    """A real process: `python -m crdask`, a default-style LocalCluster for two
    files, and a single file in-process; both give identical outputs."""
    a, b = make_frame(tmp_path / "a.fits", 20), make_frame(tmp_path / "b.fits", 21)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "crdask", "lacosmic", "--gain-key", "GAIN",
           "--readnoise-key", "RDNOISE"]
    p = subprocess.run(cmd + [str(a), str(b), "-o", str(tmp_path / "two"), "--workers", "2",
                              "--threads-per-worker", "1"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    assert "local cluster: 2 worker process(es) x 1 thread(s)" in p.stdout
    assert p.stdout.count("CR pixels") == 2
    p1 = subprocess.run(cmd + [str(a), "-o", str(tmp_path / "one")],
                        capture_output=True, text=True, timeout=120, env=env)
    assert p1.returncode == 0, p1.stderr
    assert sha256(tmp_path / "one" / "a_crclean.fits") == \
        sha256(tmp_path / "two" / "a_crclean.fits")        # deterministic, byte for byte
    check_output(tmp_path / "two" / "b_crclean.fits", b, gain=2.0, readnoise=5.0)
    p2 = subprocess.run([sys.executable, "-m", "crdask", "lacosmic", str(a)],
                        capture_output=True, text=True, timeout=60, env=env)
    assert p2.returncode == 1 and "--out-dir" in p2.stderr


# ---------------------------------------------------------------------------
# demo


def test_demo():
    r = run(["demo", "--frame", "--size", 128, "--seed", 3])
    assert r.exit_code == 0, r.output
    assert "simulated 128x128 frame (seed 3)" in r.stdout
    assert r.stdout.count("recall") >= 1 and "false positives" in r.stdout
