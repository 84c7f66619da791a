"""The output lock: one run at a time per output folder.

Real processes throughout: lock holders are separate Python processes (so
their pids are real and can be SIGKILLed), runs are ``python -m crdask run``
subprocesses on a small simulated night.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from cluster_helpers import (ENV, crdask_cli, crdask_popen, ledger_entries, n_done,
                             science_stems, show, simulate, tree_state, write_workflow)
from crdask.pipeline.lock import LOCK_NAME, OutputLock, OutputLocked, lock_is_stale, read_lock

HOLD = textwrap.dedent("""
    import sys, time
    from crdask.pipeline.lock import OutputLock
    lock = OutputLock(sys.argv[1], command="holder " + sys.argv[1]).acquire()
    print("HELD", flush=True)
    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 3600)
    lock.release()
    print("RELEASED", flush=True)
""")


def start_holder(out, seconds=None):
    """A separate process holding the lock of ``out`` (waits until it does)."""
    args = [sys.executable, "-c", HOLD, str(out)] + ([str(seconds)] if seconds else [])
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    line = proc.stdout.readline()
    assert line.strip() == "HELD", line + proc.stdout.read()
    return proc


def kill(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait(30)


# --------------------------------------------------------------------------- the lock itself

def test_second_holder_refused_while_first_lives(tmp_path):
    holder = start_holder(tmp_path)
    try:
        with pytest.raises(OutputLocked) as err:
            OutputLock(tmp_path).acquire()
        line = str(err.value)
        assert "\n" not in line
        assert f"pid {holder.pid} on {socket.gethostname()}" in line
        assert f"holder {tmp_path}" in line
        assert read_lock(tmp_path / LOCK_NAME)["pid"] == holder.pid
    finally:
        kill(holder)


def test_lock_released_at_exit_and_reusable(tmp_path):
    holder = start_holder(tmp_path, seconds=0.5)
    assert holder.stdout.readline().strip() == "RELEASED"
    holder.wait(30)
    assert not (tmp_path / LOCK_NAME).exists()
    with OutputLock(tmp_path) as lock:
        assert lock.held
        assert read_lock(tmp_path / LOCK_NAME)["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()
    assert sorted(os.listdir(tmp_path)) == []   # nothing left behind


def test_stale_lock_of_sigkilled_holder_taken_over(tmp_path):
    holder = start_holder(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(30)
    assert read_lock(tmp_path / LOCK_NAME)["pid"] == holder.pid   # left behind
    lines = []
    with OutputLock(tmp_path, log=lines.append) as lock:
        assert lock.held
        assert read_lock(tmp_path / LOCK_NAME)["pid"] == os.getpid()
    assert len(lines) == 1 and f"stale lock of pid {holder.pid}" in lines[0], lines


def test_reused_pid_is_not_mistaken_for_the_holder(tmp_path):
    """Same host, a live pid, but another process (different start time)."""
    doc = {"host": socket.gethostname(), "pid": os.getpid(), "pid_start": 1, "token": "x"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(doc))
    with OutputLock(tmp_path) as lock:
        assert lock.held


def test_lock_of_another_host_stale_only_without_heartbeat(tmp_path):
    path = tmp_path / LOCK_NAME
    doc = {"host": "no-such-node-17", "pid": 1, "token": "other", "started": "then"}
    path.write_text(json.dumps(doc))
    with pytest.raises(OutputLocked, match="pid 1 on no-such-node-17"):
        OutputLock(tmp_path, stale_after=600).acquire()
    assert read_lock(path)["token"] == "other"            # untouched
    old = time.time() - 3600
    os.utime(path, (old, old))                            # that host stopped answering
    with OutputLock(tmp_path, stale_after=600) as lock:
        assert lock.held and read_lock(path)["host"] == socket.gethostname()


def test_heartbeat_refreshes_mtime(tmp_path):
    with OutputLock(tmp_path, heartbeat=0.2):
        path = tmp_path / LOCK_NAME
        old = time.time() - 1000
        os.utime(path, (old, old))
        deadline = time.monotonic() + 30
        while time.time() - path.stat().st_mtime > 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert time.time() - path.stat().st_mtime < 100


def test_is_stale_rules():
    me = socket.gethostname()
    assert lock_is_stale({"host": me, "pid": 2**22 + 7}, 0, 600)          # no such pid
    assert not lock_is_stale({"host": me, "pid": os.getpid()}, 1e6, 600)  # alive: age moot
    assert lock_is_stale({"host": me, "pid": os.getpid(), "boot_id": "an-earlier-boot"},
                         0, 600)
    assert not lock_is_stale({"host": "elsewhere", "pid": 5}, 599, 600)
    assert lock_is_stale({"host": "elsewhere", "pid": 5}, 601, 600)
    assert not lock_is_stale({}, 10, 600) and lock_is_stale({}, 700, 600)


RACE = textwrap.dedent("""
    import sys, time
    from crdask.pipeline.lock import OutputLock, OutputLocked
    t0 = float(sys.argv[2])
    while time.time() < t0:
        pass
    try:
        lock = OutputLock(sys.argv[1]).acquire()
    except OutputLocked:
        print("LOST", flush=True)
    else:
        print("WON", flush=True)
        time.sleep(3)
        lock.release()
""")


def test_racing_takeover_of_a_stale_lock_has_one_winner(tmp_path):
    holder = start_holder(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(30)
    t0 = time.time() + 4      # all contenders start together, after their imports
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path), str(t0)], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(4)]
    results = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert results == ["LOST", "LOST", "LOST", "WON"], results
    assert not (tmp_path / LOCK_NAME).exists()
    assert not (tmp_path / (LOCK_NAME + ".break")).exists()


# --------------------------------------------------------------------------- crdask run

@pytest.fixture(scope="module")
def night(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("locknight"), n_science=6, seed=31)


@pytest.fixture(scope="module")
def finished(night, tmp_path_factory):
    """A workflow whose output folder holds a finished run (ledger, outputs,
    intermediates: everything a second run could touch)."""
    raw, _ = night
    root = tmp_path_factory.mktemp("finished")
    wf = write_workflow(root / "night.yaml", raw, root / "out",
                        execution={"intermediates": True})
    run = crdask_cli("run", wf, "--workers", "1", cwd=root)
    assert run.returncode == 0, show(run)
    assert (root / "out" / "intermediate.zarr").is_dir() and n_done(root / "out") == 6
    assert not (root / "out" / LOCK_NAME).exists()
    return wf, root / "out"


@pytest.mark.slow
@pytest.mark.parametrize("restart", [False, True], ids=["run", "restart"])
def test_run_on_locked_output_touches_nothing(finished, restart, tmp_path):
    wf, out = finished
    holder = start_holder(out)
    try:
        # the holder's own lock file aside (its heartbeat may refresh it)
        before = {k: v for k, v in tree_state(out).items() if k != LOCK_NAME}
        args = ["run", wf, "--workers", "1"] + (["--restart"] if restart else [])
        second = crdask_cli(*args, cwd=tmp_path)
        after = {k: v for k, v in tree_state(out).items() if k != LOCK_NAME}
    finally:
        kill(holder)
    assert second.returncode == 0, show(second)
    lines = [ln for ln in (second.stdout + second.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1, show(second)
    assert f"pid {holder.pid}" in lines[0] and "in use" in lines[0], lines
    assert after == before     # ledger, outputs, intermediates: not a byte, not an mtime


@pytest.mark.slow
def test_two_runs_started_together(night, tmp_path):
    raw, _ = night
    out = tmp_path / "out"
    wf = write_workflow(tmp_path / "night.yaml", raw, out)
    procs = [crdask_popen("run", wf, "--workers", "1", cwd=tmp_path) for _ in range(2)]
    res = [p.communicate(timeout=900)[0] for p in procs]
    codes = [p.returncode for p in procs]
    assert codes == [0, 0], res
    refused = [r for r in res if "in use by a running crdask" in r]
    worked = [r for r in res if "science frame(s) reduced" in r]
    assert len(refused) == 1 and len(worked) == 1, res
    assert len(refused[0].strip().splitlines()) == 1, refused[0]
    other = procs[res.index(worked[0])].pid
    assert f"pid {other} " in refused[0]
    assert "6 science frame(s) reduced" in worked[0]
    entries = ledger_entries(out)
    assert sorted(entries) == science_stems(raw)
    assert all(e["status"] == "done" and e["attempts"] == 1 for e in entries.values())
    assert not (out / LOCK_NAME).exists()


@pytest.mark.slow
def test_stale_lock_of_sigkilled_run_taken_over(night, tmp_path):
    raw, _ = night
    out = tmp_path / "out"
    wf = write_workflow(tmp_path / "night.yaml", raw, out)
    log = open(tmp_path / "killed.log", "w")
    proc = crdask_popen("run", wf, "--workers", "1", cwd=tmp_path, log=log)
    try:
        deadline = time.monotonic() + 600
        while n_done(out) < 1:
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline, "no frame finished within 600 s"
            time.sleep(0.01)
        held = read_lock(out / LOCK_NAME)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        log.close()
    assert held["pid"] == proc.pid
    assert read_lock(out / LOCK_NAME)["pid"] == proc.pid      # the kill left it behind
    finished = sorted(s for s, e in ledger_entries(out).items() if e["status"] == "done")
    assert 1 <= len(finished) < 6
    rerun = crdask_cli("run", wf, "--workers", "1", cwd=tmp_path)
    assert rerun.returncode == 0, show(rerun)
    assert f"taking over the stale lock of pid {proc.pid}" in rerun.stdout, show(rerun)
    assert f"{6 - len(finished)} science frame(s) reduced, {len(finished)} already done" \
        in rerun.stdout, show(rerun)
    assert not (out / LOCK_NAME).exists()
