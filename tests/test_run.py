"""``crdask run``: whole simulated nights through the workflow on real
``distributed.LocalCluster`` worker processes.

* end to end through ``python -m crdask run`` (outputs, report, ``--dry-run``);
* resume after the run is SIGKILLed (process group, workers included);
* a worker process killed mid-run;
* determinism over chunking and number of workers;
* reruns after a settings change, a changed raw file, ``--restart``;
* bad frames set aside (exit code 2), raw inputs untouched;
* ``crdask demo``.

Nights are small (160 px) and simulated once per module; the whole file takes
about two minutes on two cores.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.io import fits
from astropy.nddata import CCDData, VarianceUncertainty
from astropy.wcs import FITSFixedWarning

from crdask.calib import bits
from crdask.io import is_temp_name
from crdask.simulate import damage, write_night

pytestmark = pytest.mark.slow

SIZE = 160
CALIBS = dict(n_bias=5, dark_times=(60, 300), n_dark=3, filters=("V", "R"), n_flat=4)
N_SCIENCE_SMALL = 8      # night A: end to end, determinism, reruns, bad frames
N_SCIENCE_LONG = 20      # night B: long enough to be killed half-way

from cluster_helpers import ENV, assert_same_outputs  # noqa: E402  (shared helpers)


# --------------------------------------------------------------------------- helpers

def crdask_cli(*args, cwd=None, timeout=600):
    """``python -m crdask ARGS`` in a real subprocess."""
    return subprocess.run([sys.executable, "-m", "crdask", *map(str, args)], cwd=cwd,
                          env=ENV, capture_output=True, text=True, timeout=timeout)


def show(proc):
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def write_workflow(path, raw, out, truth, *, cosmics=None, execution=None):
    """A workflow YAML file (absolute paths) for a simulated night."""
    doc = {"version": 1, "inputs": {"directory": str(raw)}, "output": str(out),
           "truth": str(truth)}
    if cosmics:
        doc["steps"] = {"cosmics": {"params": dict(cosmics)}}
    if execution:
        doc["execution"] = dict(execution)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def science_stems(raw):
    return sorted(p.name.split(".")[0] for p in Path(raw).glob("sci_*.fits"))


def assert_same_masters(out, ref):
    names = sorted(p.name for p in Path(ref).glob("master_*.fits"))
    assert names and names == sorted(p.name for p in Path(out).glob("master_*.fits"))
    for name in names:
        with fits.open(Path(out) / name) as a, fits.open(Path(ref) / name) as b:
            assert len(a) == len(b)
            for ha, hb in zip(a, b):
                if ha.data is not None or hb.data is not None:
                    np.testing.assert_array_equal(ha.data, hb.data, err_msg=f"{name} differs")


def report(out):
    return json.loads((Path(out) / "report.json").read_text())


def science_frames(rec):
    return {f["file"].split(".")[0]: f for f in rec["frames"] if f.get("type") == "science"}


def ledger_entries(out):
    """{name: entry} of the science entries in ``out/ledger`` (masters left out)."""
    d = Path(out) / "ledger"
    res = {}
    for p in d.glob("*.json") if d.is_dir() else ():
        if p.name.startswith(".") or p.stem == "masters":
            continue
        try:
            res[p.stem] = json.loads(p.read_text())
        except (OSError, ValueError):  # cannot happen (atomic writes); ignore a race
            continue
    return res


def n_done(out):
    return sum(e.get("status") == "done" for e in ledger_entries(out).values())


def mtimes(out, stems):
    return {s: os.stat(Path(out) / f"{s}_cal.fits").st_mtime_ns for s in stems}


def temp_files(out):
    """Leftovers of interrupted atomic writes anywhere under ``out``."""
    found = []
    for d, dirs, files in os.walk(out):
        for name in dirs + files:
            if is_temp_name(name) or name.endswith(".partial") or name.startswith(".trash-"):
                found.append(os.path.relpath(os.path.join(d, name), out))
    return sorted(found)


def sha256_tree(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(d).iterdir()) if p.is_file()}


def group_alive(pgid):
    """Pids (not zombies) still in process group ``pgid``."""
    alive = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            alive.append(int(entry))
    return alive


# --------------------------------------------------------------------------- nights

@pytest.fixture(scope="module")
def client2():
    """A LocalCluster of two worker processes (one thread each), kept warm
    for the in-process ``run_night`` calls of this module."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        yield client


def quiet(*args):
    pass


@pytest.fixture(scope="module")
def night_a(tmp_path_factory):
    """8 science frames in two filters: end to end, reruns, bad frames."""
    root = tmp_path_factory.mktemp("night_a")
    m = write_night(root / "raw", shape=(SIZE, SIZE), n_science=N_SCIENCE_SMALL, seed=11,
                    **CALIBS)
    return Path(m.directory), Path(m.truth_dir)


@pytest.fixture(scope="module")
def night_b(tmp_path_factory):
    """20 science frames: a run of a few seconds that can be killed half-way."""
    root = tmp_path_factory.mktemp("night_b")
    m = write_night(root / "raw", shape=(SIZE, SIZE), n_science=N_SCIENCE_LONG, seed=12,
                    **CALIBS)
    return Path(m.directory), Path(m.truth_dir)


@pytest.fixture(scope="module")
def e2e(night_a, tmp_path_factory):
    """Night A through ``crdask run`` (with dry runs before and after).

    Everything the tests look at is captured here, before any other test
    can touch the output folder."""
    raw, truth = night_a
    root = tmp_path_factory.mktemp("e2e")
    out = root / "out"
    wf = write_workflow(root / "night.yaml", raw, out, truth)
    dry_before = crdask_cli("run", wf, "--dry-run", cwd=root)
    files_after_dry = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) \
        if out.exists() else []
    run = crdask_cli("run", wf, "--workers", "2", cwd=root)
    assert run.returncode == 0, show(run)
    dry_after = crdask_cli("run", wf, "--dry-run", cwd=root)
    return {"raw": raw, "truth": truth, "out": out, "wf": wf, "run": run,
            "dry_before": dry_before, "dry_after": dry_after,
            "files_after_dry": files_after_dry, "report": report(out),
            "stems": science_stems(raw)}


@pytest.fixture(scope="module")
def ref_b(night_b, client2, tmp_path_factory):
    """Night B, uninterrupted (the reference for the kill tests)."""
    from crdask.pipeline.night import run_night

    raw, truth = night_b
    root = tmp_path_factory.mktemp("ref_b")
    wf = write_workflow(root / "night.yaml", raw, root / "out", truth)
    result = run_night(str(wf), client=client2, log=quiet)
    assert result.exit_code == 0, result.record["failures"]
    return root / "out"


# --------------------------------------------------------------------------- 1. end to end

def test_end_to_end_outputs(e2e):
    out, stems = e2e["out"], e2e["stems"]
    assert len(stems) == N_SCIENCE_SMALL
    assert sorted(p.name for p in out.glob("*_cal.fits")) == [f"{s}_cal.fits" for s in stems]
    for s in stems:
        path = out / f"{s}_cal.fits"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)  # DATE-OBS -> MJD-OBS
            ccd = CCDData.read(path)
        assert ccd.shape == (SIZE, SIZE)
        assert ccd.unit == "electron"
        assert np.isfinite(ccd.data).mean() > 0.99
        assert isinstance(ccd.uncertainty, VarianceUncertainty)
        assert ccd.uncertainty.array.shape == ccd.shape
        assert np.all(ccd.uncertainty.array[np.isfinite(ccd.uncertainty.array)] >= 0)
        assert ccd.mask is not None and ccd.mask.shape == ccd.shape
        hdr = fits.getheader(path)
        assert hdr["CRNFIX"] > 0
        history = "\n".join(str(h) for h in hdr["HISTORY"])
        assert "crdask" in history and f"input={s}.fits" in history
        crs = (fits.getdata(path, "MASK") & bits.COSMIC_RAY) != 0
        assert int(crs.sum()) == hdr["CRNFIX"]
    for name in ("master_bias.fits", "master_dark.fits", "master_flat_V.fits",
                 "master_flat_R.fits"):
        assert (out / name).is_file(), name
    assert (out / "report.md").is_file()
    md = (out / "report.md").read_text()
    for s in stems:
        assert s in md
    assert temp_files(out) == []


def test_end_to_end_report(e2e):
    rec, raw, stems = e2e["report"], e2e["raw"], e2e["stems"]
    assert rec["failures"] == []
    by_file = {f["file"]: f for f in rec["frames"]}
    assert sorted(by_file) == sorted(p.name for p in raw.glob("*.fits"))
    sci = science_frames(rec)
    assert sorted(sci) == stems
    for s, f in sci.items():
        assert f["status"] == "done", f
        assert f["output"] == str(e2e["out"] / f"{s}_cal.fits")
        assert f["cr_pixels"] > 0
        assert 0.2 <= f["recall"] <= 1.0, f          # truth configured: scored per frame
        assert f["false_positives"] >= 0 and f["n_true"] > 0 and f["n_found"] > 0
    for f in rec["frames"]:
        if f["type"] != "science":
            assert f["status"] == "used", f
    summary = rec["cr_summary"]
    assert summary["frames"] == N_SCIENCE_SMALL
    assert 0.5 <= summary["recall"] <= 1.0
    assert summary["n_true"] == sum(f["n_true"] for f in sci.values())
    assert summary["false_positives"] == sum(f["false_positives"] for f in sci.values())
    masters = rec["masters"]
    expected = {"bias": 5, "dark": 6, "flat_V": 4, "flat_R": 4}
    for key, n in expected.items():
        assert masters[key]["status"] == "done"
        assert len(masters[key]["inputs"]) == n, masters[key]
        assert Path(masters[key]["path"]).is_file()
    assert set(masters["dark"]["inputs"]) == {p.name for p in raw.glob("dark_*.fits")}
    # the default local cluster: one threaded worker, a task slot per --workers
    assert rec["scheduler"]["kind"] == "LocalCluster" and rec["scheduler"]["task_slots"] == 2
    assert rec["scheduler"]["workers"] == 1
    # the command line summary
    run = e2e["run"]
    assert f"{N_SCIENCE_SMALL} science frame(s) reduced" in run.stdout
    assert "CR recall" in run.stdout


def test_dry_run_plans_without_computing(e2e):
    before, after = e2e["dry_before"], e2e["dry_after"]
    assert before.returncode == 0, show(before)
    assert after.returncode == 0, show(after)
    # groups, masters to build, every science frame still to do
    assert "masters: build" in before.stdout
    for label in ("bias", "dark exptime=60s", "dark exptime=300s", "flat setup=V/",
                  "flat setup=R/", "science setup=V/", "science setup=R/"):
        assert label in before.stdout, label
    lines = before.stdout.splitlines()
    for s in e2e["stems"]:
        line = next(ln for ln in lines if ln.rstrip().endswith(f"{s}.fits"))
        assert line.split()[0] == "todo", line
    # nothing computed: no cluster, no products, no report, no intermediates
    assert "dashboard" not in before.stdout and "dashboard" not in after.stdout
    assert e2e["files_after_dry"] == [], e2e["files_after_dry"]
    # after the run: masters reused, every frame done
    assert "masters: reuse" in after.stdout
    lines = after.stdout.splitlines()
    for s in e2e["stems"]:
        line = next(ln for ln in lines if ln.rstrip().endswith(f"{s}.fits"))
        assert line.split()[0] == "done", line


def test_run_prints_report_path(e2e):
    line = next(ln for ln in e2e["run"].stdout.splitlines() if ln.startswith("crdask: report"))
    assert line.split("crdask: report", 1)[1].strip() == str(e2e["out"] / "report.md")


# --------------------------------------------------------------------------- 2. SIGKILL + resume

def test_resume_after_sigkill(night_b, ref_b, tmp_path):
    raw, truth = night_b
    stems = science_stems(raw)
    out = tmp_path / "out"
    wf = write_workflow(tmp_path / "night.yaml", raw, out, truth)
    log = open(tmp_path / "killed.log", "w")
    # worker processes: the kill must take them with the run (its process group)
    proc = subprocess.Popen([sys.executable, "-m", "crdask", "run", str(wf), "--workers", "1",
                             "--threads-per-worker", "1", "--processes"], cwd=tmp_path, env=ENV,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            done = n_done(out)
            if done >= 2:
                break
            if proc.poll() is not None:
                pytest.fail(f"crdask run ended (exit {proc.returncode}) before it could be "
                            f"killed:\n{(tmp_path / 'killed.log').read_text()}")
            if time.monotonic() > deadline:
                pytest.fail("no science frame finished within 300 s")
            time.sleep(0.005)
        group = group_alive(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()
    assert proc.returncode == -signal.SIGKILL
    assert len(group) >= 2, f"no worker processes in the run's process group: {group}"
    t_end = time.monotonic() + 20       # the workers (same process group) die too
    while group_alive(proc.pid) and time.monotonic() < t_end:
        time.sleep(0.1)
    assert group_alive(proc.pid) == [], "worker processes survived the kill"

    entries = ledger_entries(out)
    finished = sorted(s for s, e in entries.items() if e["status"] == "done")
    assert 2 <= len(finished) < len(stems), f"killed too late: {finished}"
    assert not (out / "report.json").exists()
    before = mtimes(out, finished)

    rerun = crdask_cli("run", wf, cwd=tmp_path)
    assert rerun.returncode == 0, show(rerun)
    rec = report(out)
    sci = science_frames(rec)
    assert sorted(sci) == stems
    for s, f in sci.items():
        assert f["status"] == ("skipped" if s in finished else "done"), (s, f)
    assert rec["masters"]["bias"]["status"] == "reused"
    entries = ledger_entries(out)
    for s in stems:
        assert entries[s]["status"] == "done" and entries[s]["stage"] == "written", entries[s]
    for s in finished:  # not recomputed
        assert entries[s]["attempts"] == 1, entries[s]
    assert mtimes(out, finished) == before
    assert f"{len(stems) - len(finished)} science frame(s) reduced, {len(finished)} already " \
           "done" in rerun.stdout
    assert_same_outputs(out, ref_b, stems)
    assert_same_masters(out, ref_b)
    assert not temp_files(out), f"the rerun left temporary files: {temp_files(out)}"


def test_rerun_removes_leftover_temp_files(night_a, client2, tmp_path):
    """A kill in the middle of an atomic write leaves a hidden temporary file;
    the next run should clear them (nothing else is running on OUT then).
    One science frame, no masters: only the clean-up is looked at."""
    from crdask.pipeline.night import run_night

    raw, truth = night_a
    stem = science_stems(raw)[0]
    out = tmp_path / "out"
    (out / "ledger").mkdir(parents=True)
    for p in (out / f".{stem}_cal.fits.0123456789ab.tmp",
              out / "ledger" / f".{stem}.json.0123456789ab.tmp"):
        p.write_bytes(b"half written")
    doc = {"version": 1, "inputs": {"files": [str(raw / f"{stem}.fits")]},
           "output": str(out), "steps": {"masters": {"enabled": False}}}
    result = run_night(doc, client=client2, log=quiet)
    assert result.exit_code == 0, result.record["failures"]
    assert (out / f"{stem}_cal.fits").is_file()
    assert temp_files(out) == []


# --------------------------------------------------------------------------- 3. worker loss

def test_worker_killed_mid_run(night_b, ref_b, tmp_path):
    from distributed import Client, LocalCluster

    from crdask.pipeline.night import run_night

    raw, truth = night_b
    stems = science_stems(raw)
    out = tmp_path / "out"
    wf = write_workflow(tmp_path / "night.yaml", raw, out, truth,
                        execution={"threads_per_worker": 1})
    killed, errors = {}, []

    def killer(client):
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not stop.is_set():
                done = n_done(out)
                if done >= 1:
                    pids = client.run(os.getpid)
                    processing = client.processing()
                    busy = [a for a, keys in processing.items() if keys and a in pids]
                    addr = (busy or sorted(pids))[0]
                    os.kill(pids[addr], signal.SIGKILL)
                    killed.update(addr=addr, pid=pids[addr], done=done,
                                  keys=list(processing.get(addr, ())))
                    return
                time.sleep(0.005)
        except Exception as e:  # reported by the test below
            errors.append(e)

    stop = threading.Event()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        thread = threading.Thread(target=killer, args=(client,), daemon=True)
        thread.start()
        try:
            result = run_night(str(wf), client=client, log=quiet)
        finally:
            stop.set()
            thread.join(30)
    assert not errors, errors
    assert killed, "no worker was killed"
    assert killed["done"] < len(stems) and killed["keys"], killed  # mid-run, while busy
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)
    assert result.exit_code == 0, result.record["failures"]
    sci = science_frames(result.record)
    assert sorted(sci) == stems
    assert all(f["status"] == "done" for f in sci.values()), sci
    entries = ledger_entries(out)
    assert all(entries[s]["status"] == "done" for s in stems), entries
    assert_same_outputs(out, ref_b, stems)
    assert temp_files(out) == []


# --------------------------------------------------------------------------- 4. determinism

@pytest.mark.parametrize("chunk_rows, workers", [(64, 2), (512, 1)])
def test_determinism_chunking_and_workers(e2e, client2, tmp_path, chunk_rows, workers):
    """Compared with the end-to-end run (chunk_rows 512, 2 workers): the
    frames cut into 3 strips of 64 rows, or all tasks on one worker process."""
    from crdask.pipeline.night import run_night

    out = tmp_path / "out"
    wf = write_workflow(tmp_path / "night.yaml", e2e["raw"], out, e2e["truth"],
                        execution={"chunk_rows": chunk_rows, "workers": workers,
                                   "threads_per_worker": 1})
    # two workers: the module's warm cluster; one worker: a LocalCluster of its own
    result = run_night(str(wf), client=client2 if workers == 2 else None, log=quiet)
    assert result.exit_code == 0, result.record["failures"]
    assert result.record["scheduler"]["workers"] == workers
    assert_same_outputs(out, e2e["out"], e2e["stems"])
    assert_same_masters(out, e2e["out"])


# --------------------------------------------------------------------------- 5. changes

def _modify_raw(path):
    """Rewrite ``path`` (same name) with a few pixel values changed."""
    path = Path(path)
    tmp = path.with_name(".modified.fits")
    with fits.open(path, do_not_scale_image_data=True, memmap=False) as hdul:
        data = hdul[0].data
        data[40:44, 40:44] = data[40:44, 40:44] + 50
        hdul.writeto(tmp)
    os.replace(tmp, path)


def test_reruns_after_changes(night_a, client2, tmp_path):
    from crdask.pipeline.config import load_workflow
    from crdask.pipeline.night import plan_night, run_night

    src_raw, truth = night_a
    raw = tmp_path / "raw"
    shutil.copytree(src_raw, raw)
    stems = science_stems(raw)
    out = tmp_path / "out"
    wf = tmp_path / "night.yaml"

    write_workflow(wf, raw, out, truth)
    first = run_night(str(wf), client=client2, log=quiet)
    assert first.exit_code == 0, first.record["failures"]
    masters_mtime = {p.name: p.stat().st_mtime_ns for p in out.glob("master_*.fits")}
    hash_before = ledger_entries(out)[stems[0]]["config_hash"]

    # a cosmics parameter changes: every science frame again, masters reused
    write_workflow(wf, raw, out, truth, cosmics={"sigclip": 5.0})
    plan = plan_night(load_workflow(wf))
    assert plan["masters"] == "reuse"
    assert [s["state"] for s in plan["science"]] == ["changed"] * len(stems)
    second = run_night(str(wf), client=client2, log=quiet)
    assert second.exit_code == 0, second.record["failures"]
    rec = report(out)
    assert all(f["status"] == "done" for f in science_frames(rec).values())
    assert {m["status"] for m in rec["masters"].values()} == {"reused"}
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("master_*.fits")} == masters_mtime
    entries = ledger_entries(out)
    assert all(entries[s]["attempts"] == 2 for s in stems)
    assert entries[stems[0]]["config_hash"] != hash_before
    history = "\n".join(str(h) for h in fits.getheader(out / f"{stems[0]}_cal.fits")["HISTORY"])
    assert "sigclip=5.0" in history

    # one raw science file rewritten with other pixel values: only that frame again
    changed = stems[2]
    before = mtimes(out, stems)
    _modify_raw(raw / f"{changed}.fits")
    third = run_night(str(wf), client=client2, log=quiet)
    assert third.exit_code == 0, third.record["failures"]
    rec = report(out)
    sci = science_frames(rec)
    for s in stems:
        assert sci[s]["status"] == ("done" if s == changed else "skipped"), (s, sci[s])
    assert {m["status"] for m in rec["masters"].values()} == {"reused"}
    after = mtimes(out, stems)
    assert [s for s in stems if after[s] != before[s]] == [changed]
    entries = ledger_entries(out)
    assert entries[changed]["attempts"] == 3
    assert all(entries[s]["attempts"] == 2 for s in stems if s != changed)

    # crdask run --restart: everything again, masters rebuilt
    before = mtimes(out, stems)
    fourth = crdask_cli("run", wf, "--restart", cwd=tmp_path)
    assert fourth.returncode == 0, show(fourth)
    rec = report(out)
    assert all(f["status"] == "done" for f in science_frames(rec).values())
    assert {m["status"] for m in rec["masters"].values()} == {"done"}
    after = mtimes(out, stems)
    assert all(after[s] != before[s] for s in stems)
    assert all(e["attempts"] == 1 for e in ledger_entries(out).values())
    assert temp_files(out) == []


# --------------------------------------------------------------------------- 6. bad frames

def test_bad_frames_set_aside(night_a, tmp_path):
    src_raw, truth = night_a
    raw = tmp_path / "raw"
    shutil.copytree(src_raw, raw)
    stems = science_stems(raw)
    bad = {
        damage.truncate(raw / f"{stems[1]}.fits").name: "truncated",
        damage.wrong_shape(raw / f"{stems[-1]}.fits").name: "shape",
        damage.drop_keyword(raw / "flat_V_001.fits", "EXPTIME").name: "EXPTIME",
    }
    sums = sha256_tree(raw)
    out = tmp_path / "out"
    wf = write_workflow(tmp_path / "night.yaml", raw, out, truth)
    run = crdask_cli("run", wf, cwd=tmp_path)
    assert run.returncode == 2, show(run)
    assert sha256_tree(raw) == sums  # raw inputs untouched, nothing added

    rec = report(out)
    failures = {f["file"]: f["reason"] for f in rec["failures"]}
    assert sorted(failures) == sorted(bad), failures
    for name, word in bad.items():
        reason = failures[name]
        assert "\n" not in reason and name in reason and word in reason, reason
        assert f"crdask: error: {reason}" in run.stderr
    frames = {f["file"]: f for f in rec["frames"]}
    for name in bad:
        assert frames[name]["status"] == "set aside" and frames[name]["error"], frames[name]
    sci = science_frames(rec)
    for s in stems:
        assert sci[s]["status"] == "done", sci[s]
        assert (out / f"{s}_cal.fits").is_file()
    assert "flat_V_001_noEXPTIME.fits" not in rec["masters"]["flat_V"]["inputs"]
    assert len(rec["masters"]["flat_V"]["inputs"]) == 4
    md = (out / "report.md").read_text()
    for name in bad:
        assert name in md


# --------------------------------------------------------------------------- 7. demo

def test_demo(tmp_path):
    d = tmp_path / "demo"
    run = crdask_cli("demo", d, "--size", 128, "--science", 3, cwd=tmp_path)
    assert run.returncode == 0, show(run)
    assert "recall" in run.stdout
    recall = next(ln for ln in run.stdout.splitlines() if "recall" in ln)
    assert "%" in recall
    paths = [ln.split(": ", 1)[1] for ln in run.stdout.splitlines() if ln.startswith("report (")]
    assert any(p.endswith("report.md") for p in paths), run.stdout
    assert all(Path(p).is_file() for p in paths)
    assert len(list((d / "out").glob("*_cal.fits"))) == 3
