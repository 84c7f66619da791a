"""Output naming, the output-root gate, and write errors (disk full on a real tmpfs)."""

import errno
import os
import pickle
import subprocess

import numpy as np
import pytest
from astropy.io import fits

from crdask.io.atomic import (OutputExistsError, OutputRoot, OutputWriteError,
                              UnsafeOutputError, atomic_open, check_output_root, is_inside,
                              write_error)
from crdask.io.fits import write_fits_atomic
from crdask.io.naming import StemCollisionError, check_stems, output_stem
from crdask.io.products import write_calibrated, write_master
from crdask.pipeline.clean_files import output_name
from tmpfs import small_tmpfs


# ------------------------------------------------------------------------ naming
@pytest.mark.parametrize("name, stem", [
    ("m51.0001.fits.gz", "m51.0001"), ("/a/b/m51.0001.fits", "m51.0001"),
    ("R0042.FITS", "R0042"), ("x.fit", "x"), ("x.FTS.FZ", "x"), ("x.fits.bz2", "x"),
    ("obs.2024-03-15.r.fits", "obs.2024-03-15.r"), ("raw.001", "raw.001"),
    ("x.gz", "x"), (".fits", ".fits"), ("a.tar.gz", "a.tar"), ("a.fits.fits", "a.fits"),
])
def test_output_stem(name, stem):
    assert output_stem(name) == stem


def test_dotted_names_stay_apart():
    names = [f"/night/m51.{i:04d}.fits" for i in range(1, 5)]
    assert list(check_stems(names)) == [f"m51.{i:04d}" for i in range(1, 5)]
    assert [output_name(n, "_cal") for n in names] == [f"m51.{i:04d}_cal.fits"
                                                       for i in range(1, 5)]


def test_collision_names_both_inputs(tmp_path):
    a, b = tmp_path / "a.fits", tmp_path / "a.fits.gz"
    with pytest.raises(StemCollisionError) as err:
        check_stems([a, b])
    msg = str(err.value)
    assert "\n" not in msg and str(a) in msg and str(b) in msg and "'a'" in msg
    with pytest.raises(StemCollisionError):
        check_stems(["n1/r1.fits", "n2/r1.fits"])           # same name, two folders
    assert check_stems([a, a]) == {"a": str(a)}              # the same file twice is fine


# ------------------------------------------------------------------ output root
@pytest.fixture
def tree(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "master_bias.fits").write_bytes(b"raw bias")
    (raw / "r1.fits").write_bytes(b"raw r1")
    out = tmp_path / "out"
    out.mkdir()
    return raw, out


def test_check_output_root(tree, tmp_path):
    raw, out = tree
    assert check_output_root(out, [raw]) == str(out)
    assert check_output_root(tmp_path / "new" / "out", [raw]) == str(tmp_path / "new" / "out")
    assert check_output_root(tmp_path, [raw]) == str(tmp_path)   # parent of inputs is fine
    with pytest.raises(UnsafeOutputError, match=r"^output: .*raw is the input folder"):
        check_output_root(raw, [raw])
    with pytest.raises(UnsafeOutputError, match="input folder"):
        check_output_root(str(raw) + "/", [raw])              # spelled differently
    (tmp_path / "link").symlink_to(raw)
    with pytest.raises(UnsafeOutputError, match="input folder"):
        check_output_root(tmp_path / "link", [raw])           # through a symlink
    with pytest.raises(UnsafeOutputError, match="holds input file r1.fits"):
        check_output_root(raw, [raw / "r1.fits"])              # inputs given as files
    with pytest.raises(UnsafeOutputError, match=r"^output: .* is an existing file"):
        check_output_root(raw / "r1.fits", [tmp_path / "elsewhere"])
    with pytest.raises(UnsafeOutputError, match=r"^workflow key output: "):
        check_output_root(raw, [raw], what="workflow key output")


def test_output_root_path_refuses_escapes(tree, tmp_path):
    raw, out = tree
    root = OutputRoot(out, inputs=[raw])
    assert root.path("r1_cal.fits") == str(out / "r1_cal.fits")
    assert root.path("previews/r1.png") == str(out / "previews" / "r1.png")
    assert root.path("a/../b.fits") == str(out / "b.fits")
    for bad, why in [("../raw/r1.fits", "outside the output folder"),
                     (str(out / "x.fits"), "relative"), ("", "relative"),
                     ("..", "outside"), ("a/../../x", "outside")]:
        with pytest.raises(UnsafeOutputError, match=why) as err:
            root.path(bad)
        assert "\n" not in str(err.value)
    (out / "escape").symlink_to(raw)                            # a symlinked folder out
    with pytest.raises(UnsafeOutputError, match="outside the output folder"):
        root.path("escape/master_bias.fits")
    (out / "master_bias.fits").symlink_to(raw / "master_bias.fits")
    with pytest.raises(UnsafeOutputError):
        root.path("master_bias.fits")
    os.link(raw / "r1.fits", out / "r1.fits")                    # a hard link is the raw file
    root = OutputRoot(out, inputs=[raw, raw / "r1.fits"])      # (known by its input files)
    with pytest.raises(UnsafeOutputError, match="hard link"):
        root.path("r1.fits")


def test_output_root_refuses_input_files_inside_it(tmp_path):
    night = tmp_path / "night"
    (night / "raw").mkdir(parents=True)
    (night / "raw" / "r1.fits").write_bytes(b"raw")
    (night / "extra.fits").write_bytes(b"raw too")
    root = OutputRoot(night, inputs=[night / "raw", night / "extra.fits"])
    with pytest.raises(UnsafeOutputError, match="into the input folder"):
        root.path("raw/new.fits")
    with pytest.raises(UnsafeOutputError, match="is the input file"):
        root.path("extra.fits")
    assert root.contains(night / "raw" / "r1.fits") and not root.contains(tmp_path)
    root2 = pickle.loads(pickle.dumps(root))                    # shipped to Dask workers
    with pytest.raises(UnsafeOutputError):
        root2.path("extra.fits")
    assert root2.path("ok.fits") == str(night / "ok.fits")


def test_output_root_atomic_open_and_raw_untouched(tree):
    raw, out = tree
    before = (raw / "master_bias.fits").read_bytes()
    root = OutputRoot(out, inputs=[raw])
    with root.atomic_open("sub/master_bias.fits") as fh:
        fh.write(b"a master")
    assert (out / "sub" / "master_bias.fits").read_bytes() == b"a master"
    with pytest.raises(UnsafeOutputError):
        root.atomic_open("../raw/master_bias.fits")
    assert (raw / "master_bias.fits").read_bytes() == before


def test_is_inside(tmp_path):
    (tmp_path / "out").mkdir()
    assert is_inside(tmp_path / "out" / "x.fits", tmp_path / "out")
    assert is_inside(tmp_path / "out", tmp_path / "out")
    assert not is_inside(tmp_path / "outside.fits", tmp_path / "out")
    assert not is_inside(tmp_path / "out2" / "x.fits", tmp_path / "out")   # prefix, not parent


# ----------------------------------------------------------------- write errors
def test_write_error_follows_the_chain():
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError:
            raise AttributeError("'list' object has no attribute '_file'")
    except AttributeError as e:
        err = write_error("out/x_cal.fits", e)
    assert isinstance(err, OutputWriteError) and err.errno == errno.EDQUOT
    assert str(err) == "out/x_cal.fits: disk quota exceeded"
    assert write_error("x", ValueError("no")) is None
    assert write_error("x", OutputExistsError("x")) is None
    short = write_error("o.fits", OSError("360000 requested and 261424 written"))
    assert str(short).startswith("o.fits: short write")
    e2 = pickle.loads(pickle.dumps(err))
    assert str(e2) == str(err) and e2.errno == errno.EDQUOT


def _hdul(n=600):
    return fits.HDUList([fits.PrimaryHDU(np.arange(n * n, dtype="f4").reshape(n, n)),
                         fits.ImageHDU(np.ones((n, n), "u1"), name="MASK")])


def _leftovers(d):
    return sorted(os.listdir(d))


def test_disk_full_fits_one_line_no_partial_file(tmp_path):
    mnt = tmp_path / "fs"
    with small_tmpfs(mnt, "1m") as fs:
        path = mnt / "x_cal.fits"
        with pytest.raises(OutputWriteError) as err:
            write_fits_atomic(_hdul(), path)                   # 1.8 MB into 1 MiB
        assert str(err.value) == f"{path}: no space left on device"
        assert err.value.errno == errno.ENOSPC
        assert _leftovers(mnt) == []                           # no partial, no .tmp
        write_fits_atomic(_hdul(100), path)                    # small enough: fine
        with pytest.raises(OutputWriteError, match="no space left on device"):
            write_fits_atomic(_hdul(), path, overwrite=True)
        assert fits.getdata(path).shape == (100, 100)          # the old file is intact
        fs.fill()
        sci = np.zeros((128, 128), "f4")
        with pytest.raises(OutputWriteError, match=r"/r1_cal\.fits: no space left"):
            write_calibrated(mnt / "r1_cal.fits", sci, sci, sci.astype("u1"),
                             header=fits.Header())
        inp = tmp_path / "in.fits"
        inp.write_bytes(b"x")
        with pytest.raises(OutputWriteError, match=r"/master_bias\.fits: no space left"):
            write_master(mnt / "master_bias.fits", sci, kind="bias", unit="electron",
                         inputs=[inp])
        with pytest.raises(OutputWriteError, match=r"/a\.json: no space left"):
            with atomic_open(mnt / "a.json", mode="w") as fh:
                fh.write("x" * 100000)
        assert sorted(_leftovers(mnt)) == [".filler", "x_cal.fits"]
        fs.free()
        write_calibrated(mnt / "r1_cal.fits", sci, sci, sci.astype("u1"),
                         header=fits.Header())
        assert fits.getdata(mnt / "r1_cal.fits", "MASK").shape == (128, 128)


def test_read_only_filesystem_names_the_file(tmp_path):
    mnt = tmp_path / "fs"
    with small_tmpfs(mnt, "1m"):
        proc = subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot remount the tmpfs read-only: {proc.stderr.strip()}")
        with pytest.raises(OutputWriteError) as err:
            write_fits_atomic(_hdul(10), mnt / "x.fits")
        assert str(err.value) == f"{mnt / 'x.fits'}: read-only file system"
        assert err.value.errno == errno.EROFS
