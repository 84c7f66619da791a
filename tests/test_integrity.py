"""Issue 7, "Nothing lost, nothing stale": one test per numbered item (1-6, 8, 9, 11),
the property test of "Must show" and the disk-full pipeline test.

Every test reproduces its item as the issue writes it -- through the real
``crdask`` command in a subprocess, on small simulated nights (128 px, 3
biases, 2 darks, 3 flats in V, 4 science frames, written by ``crdask simulate
night``), on a real ``LocalCluster`` of worker processes -- and asserts the
FIXED behaviour described under "What to build".

Outputs are compared as pixels: SCI, UNCERT and MASK arrays and CRNFIX of
every ``*_cal.fits`` and the masters' arrays, byte for byte, against a clean
run on the same final inputs. Raw files are compared by SHA-256.

A few tests run a command that, before the fix, never returns (item 9); the
subprocess guard (``HANG_GUARD_S``, 8x the issue's 30 s bound) only turns such
a hang into a failure: it is not a speed requirement.
"""

import gzip
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.io import fits
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from tmpfs import small_tmpfs

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
           os.pathsep)}
HANG_GUARD_S = 240
NIGHT = ["--size", "128", "--bias", "3", "--darks", "2", "--dark-times", "60",
         "--filters", "V", "--flats", "3", "--science", "4", "--seed", "7"]
SCIENCE = [f"sci_field01_V_00{i}" for i in range(1, 5)]


# --------------------------------------------------------------------------- helpers

def crdask(*args, timeout=900, cwd=None):
    """``python -m crdask ARGS`` in a real subprocess (this worktree's crdask)."""
    try:
        return subprocess.run([sys.executable, "-m", "crdask", *map(str, args)], env=ENV,
                              cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"crdask {' '.join(map(str, args))} hung: no answer after {timeout} s "
                    f"(stderr so far: {e.stderr!r})")


def show(proc):
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def error_lines(proc):
    return [ln for ln in proc.stderr.splitlines() if ln.startswith("crdask: error:")]


def assert_one_line_error(proc, *needles, code=1):
    """Exit ``code``, no traceback, and one ``crdask: error:`` line naming every needle.

    A key is named as the workflow errors do (``FILE: output: problem``), so
    needles like ``": output: "`` cannot be matched by a temporary path."""
    assert proc.returncode == code, show(proc)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, show(proc)
    lines = error_lines(proc)
    hits = [ln for ln in lines if all(n in ln for n in needles)]
    assert len(hits) == 1, f"want one error line naming {needles}\n{show(proc)}"
    return hits[0]


def write_workflow(path, raw, out, *, cosmics=None, files=None, execution=None):
    doc = {"version": 1,
           "inputs": {"files": [str(f) for f in files]} if files else
           {"directory": str(raw)},
           "output": str(out),
           "execution": {"workers": 1, **(execution or {})}}
    if cosmics:
        doc["steps"] = {"cosmics": {"params": dict(cosmics)}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run(wf, *extra, ok=True):
    proc = crdask("run", wf, *extra)
    if ok:
        assert proc.returncode == 0, show(proc)
    return proc


def sha_tree(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(d).iterdir()) if p.is_file()}


def products(out):
    """Pixels of every output: {file: (arrays..., CRNFIX)} for *_cal.fits and masters."""
    got = {}
    for p in sorted(Path(out).glob("*.fits")):
        with fits.open(p) as hdul:
            arrays = tuple(h.data.tobytes() for h in hdul
                           if h.data is not None and not isinstance(h, fits.BinTableHDU))
            got[p.name] = arrays + (hdul[0].header.get("CRNFIX"),)
    return got


def science_products(out):
    return {k: v for k, v in products(out).items() if k.endswith("_cal.fits")}


def clean_run(raw, tmp, *, cosmics=None):
    """Outputs of a clean run on a copy of ``raw`` (the reference)."""
    tmp = Path(tmp)
    shutil.copytree(raw, tmp / "raw")
    wf = write_workflow(tmp / "night.yaml", tmp / "raw", tmp / "out", cosmics=cosmics)
    run(wf)
    return products(tmp / "out")


def add_adu(path, value):
    """Add ``value`` ADU to the imaging area (DATASEC) of a raw frame, in place
    (what a user re-writing a calibration frame does; the pipeline never may)."""
    with fits.open(path, mode="update", do_not_scale_image_data=True) as hdul:
        h = hdul[0]
        x, y = h.header["DATASEC"].strip("[]").split(",")
        x1, x2 = map(int, x.split(":"))
        y1, y2 = map(int, y.split(":"))
        h.data[y1 - 1:y2, x1 - 1:x2] += np.int16(value)


def chunk_files(out, frame, key):
    root = Path(out) / "intermediate.zarr" / "frames" / frame / key / "c"
    return sorted(p for p in root.rglob("*") if p.is_file())


def all_fits_readable(out):
    for p in Path(out).rglob("*.fits"):
        with fits.open(p) as hdul:
            for h in hdul:
                _ = h.data                                   # truncation would raise here


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def base_raw(tmp_path_factory):
    d = tmp_path_factory.mktemp("base") / "raw"
    proc = crdask("simulate", "night", d, *NIGHT)
    assert proc.returncode == 0, show(proc)
    assert sorted(p.name for p in d.glob("sci_*.fits")) == [f"{s}.fits" for s in SCIENCE]
    return d


@pytest.fixture(scope="module")
def reference(base_raw, tmp_path_factory):
    """Outputs of a clean run on the base night with the default settings."""
    return clean_run(base_raw, tmp_path_factory.mktemp("ref"))


@pytest.fixture
def night(base_raw, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(base_raw, raw)
    out = tmp_path / "out"
    return raw, out, write_workflow(tmp_path / "night.yaml", raw, out)


# ------------------------------------------------------------------------ item 1

def test_item1_master_input_changed_redoes_science(night, tmp_path):
    """+50 ADU on one bias after a run: masters rebuilt AND every science frame
    redone; outputs equal a clean run on the edited night."""
    raw, out, wf = night
    run(wf)
    add_adu(raw / "bias_002.fits", 50)
    edited = sha_tree(raw)
    proc = run(wf)
    assert "masters built" in proc.stdout, show(proc)
    assert "0 already done" in proc.stdout and "4 science frame(s) reduced" in proc.stdout, \
        show(proc)
    assert sha_tree(raw) == edited
    assert products(out) == clean_run(raw, tmp_path / "clean")


# ------------------------------------------------------------------------ item 2

def test_item2_dotted_names_are_not_lost(night, tmp_path):
    """m51.0001.fits ... m51.0004.fits: four outputs and four ledger entries
    (run and calibrate), and a true collision is refused before anything runs."""
    raw, out, wf = night
    for i, s in enumerate(SCIENCE, 1):
        (raw / f"{s}.fits").rename(raw / f"m51.{i:04d}.fits")
    want = [f"m51.{i:04d}_cal.fits" for i in range(1, 5)]
    proc = run(wf)
    assert "4 science frame(s) reduced, 0 already done" in proc.stdout, show(proc)
    assert sorted(p.name for p in out.glob("m51*")) == want
    assert sorted(p.stem for p in (out / "ledger").glob("m51*.json")) == \
        [w[:-len("_cal.fits")] for w in want]
    proc = run(wf)
    assert "0 science frame(s) reduced, 4 already done" in proc.stdout, show(proc)

    proc = crdask("calibrate", raw, "-o", tmp_path / "cal")
    assert proc.returncode == 0, show(proc)
    assert sorted(p.name for p in (tmp_path / "cal").glob("m51*")) == want

    # a.fits and a.fits.gz would both be written as 'a': refused, nothing written
    with open(raw / "m51.0001.fits", "rb") as src, gzip.open(raw / "m51.0001.fits.gz",
                                                             "wb") as dst:
        shutil.copyfileobj(src, dst)
    out2 = tmp_path / "out2"
    proc = crdask("run", write_workflow(tmp_path / "n2.yaml", raw, out2))
    assert_one_line_error(proc, "m51.0001.fits", "m51.0001.fits.gz")
    assert not out2.exists() or not any(out2.iterdir())


# ------------------------------------------------------------------------ item 3

def test_item3_raw_files_cannot_be_written(night, tmp_path):
    """output: equal to the input folder is refused before anything runs (a raw
    file named master_bias.fits survives); outputs inside a recursively globbed
    input tree are never catalogued as inputs."""
    raw, _, _ = night
    shutil.copy(raw / "bias_001.fits", raw / "master_bias.fits")
    before = sha_tree(raw)
    proc = crdask("run", write_workflow(tmp_path / "same.yaml", raw, raw))
    assert_one_line_error(proc, ": output: ", str(raw))
    assert sha_tree(raw) == before
    assert sorted(p.name for p in raw.iterdir()) == sorted(before)   # no ledger, no zarr

    (raw / "master_bias.fits").unlink()
    before = sha_tree(raw)
    out = raw / "reduced"
    wf = write_workflow(tmp_path / "inside.yaml", raw, out, files=[raw / "**" / "*.fits"])
    run(wf)
    proc = run(wf)                           # the first run's outputs now match the glob
    assert "0 science frame(s) reduced, 4 already done" in proc.stdout, show(proc)
    report = json.loads((out / "report.json").read_text())
    catalogued = {f["file"] for f in report["frames"]}
    assert catalogued == set(before), catalogued - set(before)
    assert sha_tree(raw) == before


# ------------------------------------------------------------------------ item 4

def test_item4_damaged_intermediates_are_recomputed(night, tmp_path, base_raw):
    """Delete a mask chunk / flip a bit in a float chunk / truncate a chunk, rerun
    with a changed cosmics parameter: those frames are recomputed from raw (said
    so in the report), outputs equal a clean run with the new parameter."""
    raw, out, wf = night
    keep = {"intermediates": True}   # every calibrated frame kept (not the default)
    wf = write_workflow(wf, raw, out, execution=keep)
    run(wf)
    chunk_files(out, SCIENCE[0], "mask")[0].unlink()
    sci = chunk_files(out, SCIENCE[1], "sci")[0]
    data = bytearray(sci.read_bytes())
    data[len(data) // 3] ^= 0x01
    sci.write_bytes(bytes(data))
    var = chunk_files(out, SCIENCE[2], "var")[0]
    var.write_bytes(var.read_bytes()[:1000])
    wf = write_workflow(wf, raw, out, cosmics={"sigclip": 5.0}, execution=keep)
    proc = run(wf)
    assert "4 science frame(s) reduced" in proc.stdout, show(proc)
    report = (out / "report.json").read_text() + (out / "report.md").read_text()
    for s in SCIENCE[:3]:
        assert re.search(rf"{s}: (mask|sci|var) (chunk|cannot)", report), \
            f"report does not say {s} was recomputed from damaged intermediates"
    assert products(out) == clean_run(base_raw, tmp_path / "clean", cosmics={"sigclip": 5.0})


# ------------------------------------------------------------------------ item 5

def test_item5_truncated_output_is_redone(night, reference):
    raw, out, wf = night
    run(wf)
    victim = out / f"{SCIENCE[1]}_cal.fits"
    with open(victim, "r+b") as fh:
        fh.truncate(2880 * 3)
    proc = run(wf)
    assert "1 science frame(s) reduced, 3 already done" in proc.stdout, show(proc)
    assert products(out) == reference
    proc = run(wf)                           # and it stays fixed
    assert "0 science frame(s) reduced, 4 already done" in proc.stdout, show(proc)


# ------------------------------------------------------------------------ item 6

def test_item6_all_nan_science_frame_is_set_aside(night):
    raw, out, wf = night
    bad = raw / f"{SCIENCE[3]}.fits"
    with fits.open(bad) as hdul:
        hdr = hdul[0].header.copy()
        shape = hdul[0].data.shape
    for k in ("BZERO", "BSCALE"):
        hdr.remove(k, ignore_missing=True)
    fits.PrimaryHDU(np.full(shape, np.nan, np.float32), header=hdr).writeto(bad,
                                                                            overwrite=True)
    proc = run(wf, ok=False)
    assert proc.returncode == 2, show(proc)
    assert any(bad.name in ln for ln in error_lines(proc)), show(proc)
    report = json.loads((out / "report.json").read_text())
    status = {f["file"]: f["status"] for f in report["frames"]}
    assert status[bad.name] == "set aside", status
    assert all(status[f"{s}.fits"] == "done" for s in SCIENCE[:3]), status
    assert not (out / f"{SCIENCE[3]}_cal.fits").exists()


# ------------------------------------------------------------------------ item 8

@pytest.mark.parametrize("case", ["missing", "empty", "glob"])
def test_item8_bad_inputs_one_line_no_ledger(tmp_path, case):
    out = tmp_path / "out"
    if case == "missing":
        wf = write_workflow(tmp_path / "n.yaml", tmp_path / "nowhere", out)
        needle = "nowhere"
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        wf = write_workflow(tmp_path / "n.yaml", tmp_path / "empty", out)
        needle = "empty"
    else:
        wf = write_workflow(tmp_path / "n.yaml", None, out, files=[tmp_path / "x*.fits"])
        needle = "x*.fits"
    proc = crdask("run", wf)
    assert_one_line_error(proc, ": inputs.", needle)
    assert not (out / "ledger").exists()


def test_item8_calibrate_gzip_truncated_frame(night, tmp_path):
    raw, _, _ = night
    src = raw / f"{SCIENCE[0]}.fits"
    blob = gzip.compress(src.read_bytes())
    (raw / f"{SCIENCE[0]}.fits.gz").write_bytes(blob[:len(blob) // 2])
    src.unlink()
    proc = crdask("calibrate", raw, "-o", tmp_path / "cal")
    assert_one_line_error(proc, f"{SCIENCE[0]}.fits.gz", code=2)
    assert sorted(p.name for p in (tmp_path / "cal").glob("sci_*")) == \
        [f"{s}_cal.fits" for s in SCIENCE[1:]]


@pytest.mark.parametrize("address", ["notaurl", "tls://127.0.0.1:9"])
def test_item8_bad_scheduler_address(night, address):
    _, _, wf = night
    proc = crdask("run", wf, "--scheduler", address, timeout=HANG_GUARD_S)
    assert_one_line_error(proc, address)


# ------------------------------------------------------------------------ item 9

def test_item9_missing_scheduler_file(night, tmp_path):
    _, _, wf = night
    missing = tmp_path / "nope" / "scheduler.json"
    proc = crdask("run", wf, "--scheduler-file", missing, timeout=HANG_GUARD_S)
    assert_one_line_error(proc, str(missing))


def test_item9_scheduler_address_is_an_http_server(night):
    _, _, wf = night
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"tcp://127.0.0.1:{server.server_address[1]}"
        proc = crdask("run", wf, "--scheduler", address, timeout=HANG_GUARD_S)
    finally:
        server.shutdown()
    assert_one_line_error(proc, address)


def test_item9_scheduler_without_workers(night, tmp_path):
    _, _, wf = night
    sfile = tmp_path / "scheduler.json"
    sched = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler",
                              "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                              "--scheduler-file", str(sfile)], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    try:
        for _ in range(600):
            if sfile.exists() and sfile.stat().st_size:
                break
            time.sleep(0.1)
        address = json.loads(sfile.read_text())["address"]
        proc = crdask("run", wf, "--scheduler-file", sfile, timeout=HANG_GUARD_S)
    finally:
        os.killpg(sched.pid, signal.SIGTERM)
        sched.wait(60)
    line = assert_one_line_error(proc, address)
    assert "worker" in line, line
    said = [ln for ln in (proc.stdout + proc.stderr).splitlines()
            if "worker" in ln and ln != line]
    assert said, f"no message while waiting for workers\n{show(proc)}"


# ----------------------------------------------------------------------- item 11

def test_item11_gain_with_one_all_nan_flat(night):
    raw, _, _ = night
    flat = raw / "flat_V_002.fits"
    with fits.open(flat) as hdul:
        hdr = hdul[0].header.copy()
        shape = hdul[0].data.shape
    for k in ("BZERO", "BSCALE"):
        hdr.remove(k, ignore_missing=True)
    fits.PrimaryHDU(np.full(shape, np.nan, np.float32), header=hdr).writeto(flat,
                                                                             overwrite=True)
    proc = crdask("gain", raw)
    assert_one_line_error(proc, "flat_V_002.fits", code=2)
    assert re.search(r"^gain\s+\d", proc.stdout, re.M), show(proc)


def test_item11_bad_gain_and_exptime_name_the_keyword(night, tmp_path):
    raw, _, _ = night
    fits.setval(raw / f"{SCIENCE[0]}.fits", "GAIN", value=0.0)
    fits.setval(raw / f"{SCIENCE[1]}.fits", "EXPTIME", value=-5.0)
    proc = crdask("calibrate", raw, "-o", tmp_path / "cal")
    assert proc.returncode == 2, show(proc)
    assert "Traceback" not in proc.stderr, show(proc)
    lines = error_lines(proc)
    assert any(f"{SCIENCE[0]}.fits" in ln and "GAIN" in ln for ln in lines), show(proc)
    assert any(f"{SCIENCE[1]}.fits" in ln and "EXPTIME" in ln for ln in lines), show(proc)


def test_item11_missing_bzero_on_uint16_is_not_silent(night, tmp_path):
    raw, _, _ = night
    p = raw / f"{SCIENCE[0]}.fits"
    with fits.open(p, mode="update", do_not_scale_image_data=True) as hdul:
        del hdul[0].header["BZERO"]          # stored int16 bytes now read as signed
        del hdul[0].header["BSCALE"]
    proc = crdask("calibrate", raw, "-o", tmp_path / "cal")
    assert "Traceback" not in proc.stderr, show(proc)
    assert any(p.name in ln and "BZERO" in ln for ln in proc.stderr.splitlines()), show(proc)


def test_item11_duplicate_raw_files_warn(night):
    raw, _, wf = night
    shutil.copy(raw / f"{SCIENCE[0]}.fits", raw / "copy_of_first.fits")
    proc = crdask("run", wf)
    warn = [ln for ln in proc.stderr.splitlines() + proc.stdout.splitlines()
            if "warning" in ln and f"{SCIENCE[0]}.fits" in ln and "copy_of_first.fits" in ln]
    assert len(warn) == 1, show(proc)


def test_item11_dry_run_creates_no_ledger(night):
    _, out, wf = night
    proc = crdask("run", wf, "--dry-run")
    assert proc.returncode == 0, show(proc)
    assert not (out / "ledger").exists()


def test_item11_leftover_checksum_tmp_is_cleaned(night):
    _, out, wf = night
    run(wf)
    leftover = out / "ledger" / "sha256" / ".0123abcd.json.5f5f5f5f5f5f.tmp"
    leftover.write_text('{"key": ')          # what a SIGKILL mid-write leaves
    run(wf)
    assert not leftover.exists()


def test_item11_output_is_an_existing_file(night, tmp_path):
    raw, _, _ = night
    target = tmp_path / "a_file"
    target.write_text("not a folder")
    proc = crdask("run", write_workflow(tmp_path / "n.yaml", raw, target))
    assert_one_line_error(proc, ": output: ", str(target))
    assert target.read_text() == "not a folder"


# ---------------------------------------------------------------- disk full (issue 8)

def test_disk_full_one_line_no_partial_outputs_rerun_identical(night, reference, tmp_path):
    """Output folder on a 3 MiB tmpfs nearly filled first: the run stops with one
    line naming the file being written, leaves no partial file (no .tmp, every
    FITS readable), and a rerun with space finishes identically."""
    raw, _, _ = night
    mnt = tmp_path / "fs"
    with small_tmpfs(mnt, "3m") as fs:
        out = mnt / "out"
        fs.fill(leave=400 * 1024)
        wf = write_workflow(tmp_path / "full.yaml", raw, out)
        proc = crdask("run", wf)
        assert proc.returncode in (1, 2), show(proc)
        assert "Traceback" not in proc.stderr, show(proc)
        full = [ln for ln in error_lines(proc)
                if re.search(rf"{re.escape(str(out))}/\S+: no space left on device", ln)]
        assert full, show(proc)
        assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
        all_fits_readable(out)
        fs.free()
        run(wf)
        assert products(out) == reference


# ------------------------------------------------------------------ property test

EDITS = st.sampled_from(["touch_raw", "rewrite_master_input", "delete_output",
                         "truncate_output", "damage_chunk", "change_param", "sigkill"])


def _sigkill_mid_run(wf, delay):
    proc = subprocess.Popen([sys.executable, "-m", "crdask", "run", str(wf)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        proc.wait(delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@settings(max_examples=3, deadline=None, phases=(Phase.explicit, Phase.generate),
          suppress_health_check=list(HealthCheck))
@given(edits=st.lists(st.tuples(EDITS, st.integers(0, 3), st.floats(1.0, 20.0)),
                      min_size=1, max_size=3))
def test_property_any_edits_then_rerun_equal_a_clean_run(base_raw, tmp_path_factory, edits):
    """Random edits, then a rerun: outputs byte-identical (pixels and masks) to a
    clean run on the final inputs; the pipeline never changes a raw file."""
    tmp = tmp_path_factory.mktemp("prop")
    raw, out = tmp / "raw", tmp / "out"
    shutil.copytree(base_raw, raw)
    sigclip = 4.5
    wf = write_workflow(tmp / "night.yaml", raw, out)
    run(wf)
    for what, k, x in edits:
        expected_raw = sha_tree(raw)
        if what == "touch_raw":
            p = raw / f"{SCIENCE[k]}.fits"
            os.utime(p, ns=(time.time_ns(), time.time_ns()))
        elif what == "rewrite_master_input":
            add_adu(sorted(raw.glob("bias_*.fits") if k % 2 else raw.glob("flat_*.fits"))[0],
                    int(x) + 1)
        elif what == "delete_output":
            (out / f"{SCIENCE[k]}_cal.fits").unlink(missing_ok=True)
        elif what == "truncate_output":
            p = out / f"{SCIENCE[k]}_cal.fits"
            if p.exists():
                with open(p, "r+b") as fh:
                    fh.truncate(int(p.stat().st_size * x / 21))
        elif what == "damage_chunk":
            chunks = chunk_files(out, SCIENCE[k], ("sci", "var", "mask")[k % 3])
            if chunks:
                b = bytearray(chunks[0].read_bytes())
                b[int(len(b) * x / 21)] ^= 0x20
                chunks[0].write_bytes(bytes(b))
        elif what == "change_param":
            sigclip = 4.0 + k * 0.5
            wf = write_workflow(wf, raw, out, cosmics={"sigclip": sigclip})
        elif what == "sigkill":
            _sigkill_mid_run(wf, x)
            assert sha_tree(raw) == expected_raw, "a killed run changed a raw file"
    final_raw = sha_tree(raw)
    run(wf)
    assert sha_tree(raw) == final_raw, "the rerun changed a raw file"
    want = clean_run(raw, tmp / "clean", cosmics={"sigclip": sigclip})
    assert products(out) == want, edits
