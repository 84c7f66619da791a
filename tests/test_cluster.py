"""The one place that makes Dask clients: cluster kinds and clear errors
for a wrong scheduler, tested against real servers and processes.

* a real multi-process cluster: ``dask scheduler --scheduler-file`` and two
  ``dask worker`` processes (the command-line programs), ``crdask run
  --scheduler-file`` on a simulated night, one worker SIGKILLed mid-run: the
  night completes, outputs identical to a local run;
* wrong schedulers: nothing listening, an HTTP server, a scheduler's
  dashboard port, ``notaurl``, ``tls://`` without security, a missing or
  unreadable scheduler file, a scheduler without workers: one line each;
* the batch kinds through the real dask-jobqueue / dask-kubernetes classes
  (what can run without a batch system or a Kubernetes API), and a missing
  extra;
* security defaults: the local cluster listens on 127.0.0.1 only; TLS with
  a temporary certificate works end to end.
"""

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from cluster_helpers import (ENV, assert_same_outputs, crdask_cli, crdask_popen,
                             ledger_entries, n_done, science_stems, show, simulate,
                             write_workflow)
from crdask.pipeline.cluster import (TASK_RESOURCE, ClusterError, connect, deployer_class,
                                     make_deployer, security_from_config)

DASK = shutil.which("dask")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_line(err):
    text = str(err)
    assert text and "\n" not in text, repr(text)
    return text


def start_scheduler(tmp_path):
    """A real ``dask scheduler`` process writing a scheduler file."""
    sched_file = tmp_path / "scheduler.json"
    proc = subprocess.Popen([DASK, "scheduler", "--scheduler-file", str(sched_file),
                             "--host", "127.0.0.1", "--port", "0",
                             "--dashboard-address", "127.0.0.1:0"],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while True:      # the file appears once the scheduler listens (no sleep-and-hope)
        if sched_file.exists():
            try:
                info = json.loads(sched_file.read_text())
                break
            except ValueError:      # being written
                pass
        assert proc.poll() is None, "dask scheduler exited"
        assert time.monotonic() < deadline, "no scheduler file within 120 s"
        time.sleep(0.05)
    return proc, sched_file, info


def start_worker(sched_file, name):
    return subprocess.Popen([DASK, "worker", "--scheduler-file", str(sched_file),
                             "--nthreads", "1", "--nworkers", "1", "--host", "127.0.0.1",
                             "--no-dashboard", "--name", name],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(30)


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("clusternight"), n_science=10, seed=41)


# --------------------------------------------------------------------------- real cluster

@pytest.mark.slow
def test_real_scheduler_and_workers_survive_a_killed_worker(night, tmp_path):
    from distributed import Client

    raw, _ = night
    stems = science_stems(raw)
    ref = write_workflow(tmp_path / "ref.yaml", raw, tmp_path / "ref")
    local = crdask_cli("run", ref, "--workers", "1", cwd=tmp_path)
    assert local.returncode == 0, show(local)

    sched, sched_file, info = start_scheduler(tmp_path)
    workers = [start_worker(sched_file, f"w{i}") for i in range(2)]
    run = None
    try:
        with Client(scheduler_file=str(sched_file), timeout="60s") as client:
            client.wait_for_workers(2, timeout=300)
            pids = client.run(os.getpid)
        assert len(pids) == 2
        out = tmp_path / "out"
        wf = write_workflow(tmp_path / "night.yaml", raw, out)
        log = open(tmp_path / "run.log", "w")
        run = crdask_popen("run", wf, "--scheduler-file", sched_file, cwd=tmp_path, log=log)
        deadline = time.monotonic() + 600
        while n_done(out) < 2:
            assert run.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, "no frames done within 600 s"
            time.sleep(0.01)
        done_at_kill = n_done(out)
        os.killpg(workers[0].pid, signal.SIGKILL)        # nanny and worker: a lost node
        workers[0].wait(30)
        assert run.wait(900) == 0, (tmp_path / "run.log").read_text()
        log.close()
        text = (tmp_path / "run.log").read_text()
    finally:
        if run is not None and run.poll() is None:
            stop(run)
        for p in workers + [sched]:
            stop(p)
    assert done_at_kill < len(stems), "the worker was killed too late to matter"
    assert f"{len(stems)} science frame(s) reduced" in text, text
    entries = ledger_entries(out)
    assert sorted(entries) == stems and all(e["status"] == "done" for e in entries.values())
    assert_same_outputs(out, tmp_path / "ref", stems)
    rec = json.loads((out / "report.json").read_text())
    assert rec["scheduler"]["kind"] == "external" and rec["scheduler"]["workers"] == 2


# --------------------------------------------------------------------------- wrong schedulers

def test_nothing_listening(tmp_path):
    port = free_port()
    with pytest.raises(ClusterError) as err:
        connect(scheduler=f"tcp://127.0.0.1:{port}", timeout=2)
    line = one_line(err.value)
    assert f"tcp://127.0.0.1:{port}" in line and "within 2 s" in line


def test_cli_nothing_listening_one_line(tmp_path, night):
    raw, _ = night
    port = free_port()
    wf = write_workflow(tmp_path / "night.yaml", raw, tmp_path / "out",
                        execution={"scheduler": f"tcp://127.0.0.1:{port}"})
    res = crdask_cli("run", wf, cwd=tmp_path)
    assert res.returncode == 1, show(res)
    err = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("crdask: error: scheduler tcp://127.0.0.1:"), \
        show(res)
    assert not (tmp_path / "out" / "report.json").exists()
    assert not list((tmp_path / "out").glob("*_cal.fits"))


@pytest.fixture
def http_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                          http.server.SimpleHTTPRequestHandler)
    srv.RequestHandlerClass.log_message = lambda *a: None
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_http_server_is_not_a_scheduler(http_server):
    with pytest.raises(ClusterError) as err:
        connect(scheduler=f"tcp://127.0.0.1:{http_server}", timeout=2)
    line = one_line(err.value)
    assert f"127.0.0.1:{http_server}" in line and "not the dashboard" in line


def test_dashboard_port_of_a_real_scheduler(tmp_path):
    sched, sched_file, info = start_scheduler(tmp_path)
    try:
        dash = info["services"]["dashboard"]
        with pytest.raises(ClusterError) as err:
            connect(scheduler=f"tcp://127.0.0.1:{dash}", timeout=2)
        assert "not the dashboard" in one_line(err.value)
    finally:
        stop(sched)


def test_scheduler_without_workers_waits_then_fails(tmp_path):
    sched, sched_file, info = start_scheduler(tmp_path)
    lines = []
    try:
        with pytest.raises(ClusterError) as err:
            connect(scheduler_file=sched_file, timeout=10, worker_wait=1.5, log=lines.append)
    finally:
        stop(sched)
    assert len(lines) == 1 and "no workers yet; waiting up to 1.5 s" in lines[0], lines
    line = one_line(err.value)
    assert info["address"] in line and "no worker joined within 1.5 s" in line
    assert str(sched_file) in line


@pytest.mark.parametrize("address,words", [
    ("notaurl", "not an address"),
    ("http://127.0.0.1:8787", "unknown protocol 'http'"),
    ("tls://127.0.0.1:8786", "needs a security configuration"),
])
def test_bad_addresses(address, words):
    with pytest.raises(ClusterError) as err:
        connect(scheduler=address, timeout=2)
    line = one_line(err.value)
    assert address in line and words in line


def test_scheduler_files(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ClusterError) as err:
        connect(scheduler_file=missing)
    assert f"scheduler file {missing}: does not exist" in one_line(err.value)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ClusterError) as err:
        connect(scheduler_file=bad)
    assert f"scheduler file {bad}: unreadable" in one_line(err.value)
    with pytest.raises(ClusterError, match="not both"):
        connect(scheduler="tcp://127.0.0.1:1", scheduler_file=bad)


# --------------------------------------------------------------------------- batch kinds

def test_unknown_kind_and_kind_with_scheduler():
    with pytest.raises(ClusterError, match="unknown; use one of local, slurm, pbs, kubernetes"):
        connect(kind="lsf")
    with pytest.raises(ClusterError, match="starts its own scheduler"):
        connect(kind="slurm", scheduler="tcp://127.0.0.1:1")


MISSING = textwrap.dedent("""
    import sys
    sys.modules[sys.argv[1]] = None        # the extra is not installed
    from crdask.pipeline.cluster import ClusterError, connect
    try:
        connect(kind=sys.argv[2])
    except ClusterError as e:
        print(e)
""")


@pytest.mark.parametrize("module,kind,extra", [("dask_jobqueue", "slurm", "slurm"),
                                                ("dask_jobqueue", "pbs", "pbs"),
                                                ("dask_kubernetes", "kubernetes",
                                                 "kubernetes")])
def test_missing_extra_one_line(module, kind, extra):
    res = subprocess.run([sys.executable, "-c", MISSING, module, kind], env=ENV,
                         capture_output=True, text=True, timeout=300)
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1, res.stdout + res.stderr
    assert f"pip install 'crdask[{extra}]'" in lines[0] and kind in lines[0]


def test_deployer_classes_are_the_real_ones():
    from dask_jobqueue import PBSCluster, SLURMCluster
    from dask_kubernetes.operator import KubeCluster

    assert deployer_class("slurm") is SLURMCluster
    assert deployer_class("pbs") is PBSCluster
    assert deployer_class("kubernetes") is KubeCluster


@pytest.mark.parametrize("kind,directive", [("slurm", "#SBATCH"), ("pbs", "#PBS")])
def test_jobqueue_cluster_from_dask_config(kind, directive):
    """Built from Dask's configuration (the ``jobqueue.<kind>`` keys), the
    dashboard on localhost; nothing is submitted until it is scaled."""
    import dask

    deployer_class(kind)   # importing dask_jobqueue adds its defaults to Dask's config
    conf = {f"jobqueue.{kind}.cores": 3, f"jobqueue.{kind}.memory": "6GiB",
            f"jobqueue.{kind}.processes": 1, f"jobqueue.{kind}.walltime": "01:30:00",
            f"jobqueue.{kind}.interface": None}
    with dask.config.set(conf):
        cluster = make_deployer(kind)
        try:
            script = cluster.job_script()
            assert directive in script and "01:30:00" in script
            assert "--nthreads 3" in script and "--memory-limit 6.00GiB" in script
            assert cluster.scheduler_address.startswith("tcp://")
            dash = cluster.scheduler.services["dashboard"]
            hosts = {s.getsockname()[0] for s in dash._sockets.values()}
            assert hosts == {"127.0.0.1"}, hosts
        finally:
            cluster.close()


def test_kubernetes_without_an_api_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    with pytest.raises(ClusterError) as err:
        connect(kind="kubernetes", worker_wait=5)
    assert one_line(err.value).startswith("cannot start a kubernetes cluster")


# --------------------------------------------------------------------------- security

def test_local_cluster_listens_on_localhost_only():
    with connect(workers=1, threads_per_worker=1) as cl:
        info = cl.client.scheduler_info()
        assert info["address"].startswith("tcp://127.0.0.1:")
        assert all(a.startswith("tcp://127.0.0.1:") for a in info["workers"])
        assert cl.dashboard.startswith("http://127.0.0.1:")
        assert cl.client.submit(sum, [1, 2]).result() == 3


def _listening(pid):
    import psutil
    return {c.laddr for c in psutil.Process(pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN}


def test_threaded_local_cluster_listens_on_localhost_only():
    """``processes=False``: one worker in this process with a task slot per
    would-be process; every port it opens (scheduler, dashboard, the
    worker's own servers) is on 127.0.0.1."""
    before = _listening(os.getpid())
    with connect(workers=2, threads_per_worker=1, processes=False, ntasks=4) as cl:
        opened = _listening(os.getpid()) - before
        info = cl.client.scheduler_info()
        assert len(info["workers"]) == 1
        (w,) = info["workers"].values()
        assert w["nthreads"] == 2 and w["resources"] == {TASK_RESOURCE: 2}
        assert cl.client.run(os.getpid) == {next(iter(info["workers"])): os.getpid()}
        assert opened and {a.ip for a in opened} == {"127.0.0.1"}, opened
        assert cl.dashboard.startswith("http://127.0.0.1:")


@pytest.mark.slow
def test_threaded_local_night_equals_worker_processes(night, tmp_path):
    """``crdask run`` (threaded workers, the default): the same outputs, bit
    for bit, as ``--processes`` (worker processes); the reports name the
    workers and task slots of each."""
    raw, _ = night
    stems = science_stems(raw)
    ref = write_workflow(tmp_path / "ref.yaml", raw, tmp_path / "ref")
    done = crdask_cli("run", ref, "--workers", "2", "--processes", cwd=tmp_path)
    assert done.returncode == 0, show(done)
    wf = write_workflow(tmp_path / "night.yaml", raw, tmp_path / "out")
    done = crdask_cli("run", wf, "--workers", "2", cwd=tmp_path)
    assert done.returncode == 0, show(done)
    assert_same_outputs(tmp_path / "out", tmp_path / "ref", stems)
    rec = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rec["scheduler"]["workers"] == 1 and rec["scheduler"]["task_slots"] == 2
    assert "2 frames at a time" in (tmp_path / "out" / "report.md").read_text()
    rec = json.loads((tmp_path / "ref" / "report.json").read_text())
    assert rec["scheduler"]["workers"] == 2 and rec["scheduler"]["task_slots"] == 2


def test_tls_local_cluster_with_temporary_certificate():
    assert security_from_config() is None
    with connect(workers=1, threads_per_worker=1, security="temporary") as cl:
        assert cl.client.scheduler.address.startswith("tls://127.0.0.1:")
        assert cl.client.submit(sum, [2, 3]).result() == 5
    with pytest.raises(ClusterError, match="security 'bogus': unknown"):
        connect(security="bogus")


# --------------------------------------------------------------------------- SLURMRunner

@pytest.mark.slow
@pytest.mark.parametrize("half_written", [False, True])
def test_slurm_runner_ranks(night, tmp_path, half_written):
    """``srun -n 4 python -m crdask run night.yaml --cluster slurm-runner``
    without SLURM: the four tasks are started here with the variables srun
    gives each (SLURM_PROCID, SLURM_NTASKS, SLURM_JOB_ID); dask-jobqueue's
    real SLURMRunner gives them their roles. Every rank exits with the
    night's status; the client rank reduced the night.

    ``half_written``: the scheduler file exists but is still empty when the
    other ranks start (the scheduler rank writes it in place, and starts
    last here). dask-jobqueue's client rank reads it as soon as it exists:
    without crdask's wait it died of a JSON error and the other three ranks
    waited for it forever (seen once in CI on this 2-core machine)."""
    raw, _ = night
    stems = science_stems(raw)
    out = tmp_path / "out"
    wf = write_workflow(tmp_path / "night.yaml", raw, out,
                        execution={"threads_per_worker": 1})
    if half_written:
        (tmp_path / "scheduler-4242.json").write_text("")
    procs = {}
    for rank in ((1, 2, 3, 0) if half_written else range(4)):
        if rank == 0 and half_written:
            time.sleep(2.0)                 # the others are waiting on the file by now
        env = {**ENV, "SLURM_PROCID": str(rank), "SLURM_NTASKS": "4", "SLURM_JOB_ID": "4242"}
        procs[rank] = subprocess.Popen([sys.executable, "-m", "crdask", "run", str(wf),
                                        "--cluster", "slurm-runner"], cwd=tmp_path, env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, start_new_session=True)
    procs = [procs[rank] for rank in range(4)]
    try:
        texts = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            stop(p)
    codes = [p.returncode for p in procs]
    assert codes == [0, 0, 0, 0], list(zip(codes, texts))
    assert f"{len(stems)} science frame(s) reduced" in texts[1], texts[1]
    assert all("science frame(s) reduced" not in t for i, t in enumerate(texts) if i != 1)
    assert not (tmp_path / "scheduler-4242.json").exists()   # removed by the scheduler
    rec = json.loads((out / "report.json").read_text())
    assert rec["scheduler"]["workers"] == 2
    assert sorted(ledger_entries(out)) == stems
