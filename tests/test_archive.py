"""Archive mode: several simulated nights under one root, reduced by
``crdask archive`` (real subprocesses, real LocalCluster workers).

The nights are named by date relative to today (the day before yesterday,
yesterday's eve and yesterday) so the timer's ``--nights yesterday`` picks a
real one.
"""

import json
import os
import signal
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from cluster_helpers import (assert_same_outputs, crdask_cli, crdask_popen, ledger_entries,
                             n_done, science_stems, show, write_workflow)
from crdask.pipeline.archive import (ArchiveError, night_output, find_nights, run_archive,
                                     select_nights)
from crdask.pipeline.lock import LOCK_NAME

N_SCIENCE = 4
TODAY = date.today()
NIGHTS = [(TODAY - timedelta(days=d)).strftime("%Y%m%d") for d in (3, 2, 1)]
YESTERDAY = NIGHTS[-1]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from cluster_helpers import CALIBS, SIZE
    from crdask.simulate import write_night

    root = tmp_path_factory.mktemp("archive") / "raw"
    for i, name in enumerate(NIGHTS):
        write_night(root / name, shape=(SIZE, SIZE), n_science=N_SCIENCE, seed=50 + i,
                    **CALIBS)
    (root / "notes").mkdir()                      # not a night: no FITS
    (root / "notes" / "log.txt").write_text("clear sky")
    tpl = write_workflow(root.parent / "template.yaml", root / NIGHTS[0],
                         root.parent / "unused")
    doc = yaml.safe_load(tpl.read_text())
    doc["truth"] = str(root / "{night}_truth")    # each night's simulated truth
    tpl.write_text(yaml.safe_dump(doc, sort_keys=False))
    return root, tpl


def summary(out):
    return json.loads((Path(out) / "archive-summary.json").read_text())


def by_night(s):
    return {n["night"]: n for n in s["nights"]}


# --------------------------------------------------------------------------- selection

def test_find_and_select_nights(archive):
    root, _ = archive
    # write_night leaves a *_truth folder next to each night: FITS-free, not a night
    assert [n for n, _ in find_nights(root)] == NIGHTS
    assert [n for n, _ in find_nights(root, nights=f"{NIGHTS[1]}..")] == NIGHTS[1:]
    assert [n for n, _ in find_nights(root, nights=f"..{NIGHTS[0]}")] == NIGHTS[:1]
    assert [n for n, _ in find_nights(root, nights="yesterday")] == [YESTERDAY]
    assert [n for n, _ in find_nights(root, nights=f"{NIGHTS[0]},{NIGHTS[2]}")] == \
        [NIGHTS[0], NIGHTS[2]]
    assert find_nights(root, pattern="1999*") == []
    assert select_nights(["b", "a"], None) == ["a", "b"]


def test_bad_roots_and_names(tmp_path, archive):
    _, tpl = archive
    with pytest.raises(ArchiveError, match="not a folder"):
        find_nights(tmp_path / "nope")
    with pytest.raises(OSError, match=r"nosuchscheme://b/raw: Protocol not known"):
        find_nights("nosuchscheme://b/raw")   # one line naming the URL
    for name in ("..", "a/b", "archive"):
        with pytest.raises(ArchiveError):
            night_output(tmp_path, name)
    res = crdask_cli("archive", tmp_path, "--workflow", tpl, "--output", tmp_path / "o")
    assert res.returncode == 1 and res.stderr.strip().count("\n") == 0, show(res)
    assert "no night folder matches" in res.stderr


# --------------------------------------------------------------------------- runs

@pytest.fixture(scope="module")
def first_run(archive, tmp_path_factory):
    root, tpl = archive
    out = tmp_path_factory.mktemp("archive_out") / "reduced"
    res = crdask_cli("archive", root, "--workflow", tpl, "--output", out,
                     "--max-nights-in-flight", "2", "--workers", "2", cwd=out.parent)
    return root, tpl, out, res


@pytest.mark.slow
def test_archive_reduces_every_night(first_run, tmp_path):
    root, tpl, out, res = first_run
    assert res.returncode == 0, show(res)
    s = summary(out)
    assert s["nights_total"] == 3 and s["nights_done"] == 3, s
    assert s["science_frames"] == 3 * N_SCIENCE and s["failures"] == 0
    for name in NIGHTS:
        n = by_night(s)[name]
        assert n["status"] == "done" and n["reduced"] == N_SCIENCE, n
        assert n["cr_pixels_total"] > 0 and 0.5 < n["recall"] <= 1.0, n
        assert (out / name / "report.json").is_file()
        assert sorted(ledger_entries(out / name)) == science_stems(root / name)
        assert not (out / name / LOCK_NAME).exists()
        assert (out / "archive" / f"{name}.json").is_file()
    md = (out / "archive-summary.md").read_text()
    assert all(f"| {name} | done | {N_SCIENCE} |" in md for name in NIGHTS), md
    # a night reduced in the archive equals the same night reduced alone
    alone = write_workflow(tmp_path / "alone.yaml", root / NIGHTS[1], tmp_path / "alone")
    ref = crdask_cli("run", alone, "--workers", "1", cwd=tmp_path)
    assert ref.returncode == 0, show(ref)
    assert_same_outputs(out / NIGHTS[1], tmp_path / "alone", science_stems(root / NIGHTS[1]))


@pytest.mark.slow
def test_rerun_skips_finished_nights(first_run):
    root, tpl, out, res = first_run
    assert res.returncode == 0, show(res)
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/*_cal.fits")}
    again = crdask_cli("archive", root, "--workflow", tpl, "--output", out, cwd=out.parent)
    assert again.returncode == 0, show(again)
    assert "3 night(s) under" in again.stdout and "0 to reduce, 3 finished already" \
        in again.stdout, show(again)
    s = summary(out)
    assert s["nights_skipped"] == 3 and s["nights_done"] == 0
    assert all(n["science"] == N_SCIENCE for n in s["nights"])  # kept from the first run
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*_cal.fits")} == before


@pytest.mark.slow
def test_night_in_use_is_left_alone(archive, tmp_path):
    import subprocess
    import sys
    import textwrap

    from cluster_helpers import ENV

    root, tpl = archive
    out = tmp_path / "reduced"
    hold = textwrap.dedent("""
        import sys, time
        from crdask.pipeline.lock import OutputLock
        OutputLock(sys.argv[1]).acquire(); print("HELD", flush=True); time.sleep(3600)
    """)
    holder = subprocess.Popen([sys.executable, "-c", hold, str(out / NIGHTS[0])], env=ENV,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "HELD"
        res = crdask_cli("archive", root, "--workflow", tpl, "--output", out,
                         "--nights", NIGHTS[0], "--workers", "1", cwd=tmp_path)
    finally:
        holder.kill()
        holder.wait(30)
    assert res.returncode == 0, show(res)
    n = by_night(summary(out))[NIGHTS[0]]
    assert n["status"] == "in use" and f"pid {holder.pid}" in n["error"], n
    assert sorted(os.listdir(out / NIGHTS[0])) == [LOCK_NAME]        # nothing touched
    assert not (out / "archive" / f"{NIGHTS[0]}.json").exists()


@pytest.mark.slow
def test_timer_rerun_after_a_crash_resumes_from_the_ledger(archive, tmp_path):
    """What the systemd timer / cron line runs, killed mid-night, run again."""
    root, tpl = archive
    out = tmp_path / "reduced"
    night_out = out / YESTERDAY
    log = open(tmp_path / "killed.log", "w")
    proc = crdask_popen("archive", root, "--workflow", tpl, "--output", out, "--nights",
                        "yesterday", "--workers", "1", cwd=tmp_path, log=log)
    try:
        deadline = time.monotonic() + 600
        while n_done(night_out) < 1:
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        log.close()
    finished = sorted(s for s, e in ledger_entries(night_out).items() if e["status"] == "done")
    assert 1 <= len(finished) < N_SCIENCE
    assert not (out / "archive" / f"{YESTERDAY}.json").exists()
    rerun = crdask_cli("archive", root, "--workflow", tpl, "--output", out, "--nights",
                       "yesterday", "--workers", "1", cwd=tmp_path)
    assert rerun.returncode == 0, show(rerun)
    assert f"stale lock of pid {proc.pid}" in rerun.stdout, show(rerun)
    n = by_night(summary(out))[YESTERDAY]
    assert n["status"] == "done" and n["skipped"] == len(finished), n
    assert n["reduced"] == N_SCIENCE - len(finished), n
    entries = ledger_entries(night_out)
    assert all(entries[s]["attempts"] == 1 for s in finished)   # not redone


def test_run_archive_in_process_with_a_client(archive, tmp_path):
    """The Python entry point on a given client, one night, two at a time."""
    from distributed import Client, LocalCluster

    root, tpl = archive
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        result = run_archive(root, str(tpl), output=tmp_path / "r", nights=NIGHTS[0],
                             client=client, log=lambda line: None)
    assert result.exit_code == 0
    assert [n["night"] for n in result.summary["nights"]] == [NIGHTS[0]]
    assert result.summary["nights"][0]["reduced"] == N_SCIENCE
    assert result.paths["md"].is_file()


# Eight threads alive at once, each allocating through malloc; then count
# glibc's arenas (malloc_info lists one <heap> per arena).
ARENAS = r"""
import ctypes, json, os, sys, tempfile, threading
from crdask.pipeline.archive import limit_malloc_arenas
applied = limit_malloc_arenas() if sys.argv[1] == "limit" else None
barrier = threading.Barrier(8)
def work():
    blocks = [bytearray(8192) for _ in range(100)]
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
fd, path = tempfile.mkstemp()
os.close(fd)
fp = ctypes.c_void_p(libc.fopen(path.encode(), b"w"))
libc.malloc_info(0, fp)
libc.fclose(fp)
print(json.dumps({"applied": applied, "arenas": open(path).read().count("<heap nr=")}))
os.unlink(path)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc arenas: Linux only")
def test_client_malloc_arenas_are_limited():
    """The archive's client holds glibc to MALLOC_ARENAS arenas (the cause of
    its night-by-night growth); without the limit the same threads get more."""
    import subprocess

    from cluster_helpers import ENV
    from crdask.pipeline.archive import MALLOC_ARENAS

    env = {k: v for k, v in ENV.items() if k != "MALLOC_ARENA_MAX"}
    res = {}
    for mode in ("limit", "default"):
        out = subprocess.run([sys.executable, "-c", ARENAS, mode], env=env,
                             capture_output=True, text=True, check=True)
        res[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["limit"]["applied"] == MALLOC_ARENAS, res
    assert 1 <= res["limit"]["arenas"] <= MALLOC_ARENAS, res
    assert res["default"]["arenas"] > MALLOC_ARENAS, res
    # an explicit MALLOC_ARENA_MAX in the environment wins
    out = subprocess.run([sys.executable, "-c", ARENAS, "limit"],
                         env={**env, "MALLOC_ARENA_MAX": "4"}, capture_output=True,
                         text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1])["applied"] is None
