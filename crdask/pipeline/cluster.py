"""The one place that makes a Dask client (layer 4).

Every command (``crdask run``, ``lacosmic``, ``cr2images``, ``crmasks``,
``archive``) gets its client from :func:`connect`, which knows the cluster
kinds:

``local`` (the default)
    a ``LocalCluster`` on this machine (worker processes, or with
    ``processes=False`` one threaded worker in this process), sized by
    :func:`local_cluster_size` (never more workers than tasks, the cores
    shared out as threads, at least 2 GiB per worker), scheduler and
    dashboard bound to localhost;
``address`` / ``scheduler_file``
    a running scheduler (``tcp://host:8786``, or the JSON file a ``dask
    scheduler --scheduler-file`` writes), reached within a bounded
    ``timeout``; a scheduler with no workers is waited for with a message,
    then given up on with one line;
``slurm`` / ``pbs``
    dask-jobqueue's ``SLURMCluster`` / ``PBSCluster``, built from Dask's own
    configuration (``~/.config/dask/jobqueue.yaml`` or ``DASK_JOBQUEUE__...``
    variables: cores, memory, processes, walltime, queue, account,
    local-directory, worker lifetime ...; ``deploy/slurm/jobqueue.yaml`` is an
    example), the scheduler in this process and the workers as batch jobs
    (extra ``crdask[slurm]`` / ``crdask[pbs]``);
``kubernetes``
    dask-kubernetes' operator ``KubeCluster`` built from the ``kubernetes``
    section of Dask's configuration (image, namespace, resources, env; extra
    ``crdask[kubernetes]``; the operator must be installed in the cluster).

Batch and Kubernetes clusters are scaled to ``workers`` (default 1) or made
adaptive (``adapt={"minimum": m, "maximum": n}``), waited on for a first
worker, and closed (jobs cancelled, pods deleted) by :meth:`Cluster.close`.
A missing extra is one line naming what to install.

Security defaults: the local cluster's scheduler and dashboard listen on
127.0.0.1 only; a jobqueue scheduler must be reachable from the compute
nodes (its ``interface``/``scheduler-options`` in ``jobqueue.yaml``) but its
dashboard is bound to 127.0.0.1 unless ``scheduler-options`` names a
``dashboard_address`` (reach it through ``ssh -L``). TLS: pass
``security=`` a ``distributed.Security``, or ``"temporary"`` (a self-signed
certificate made for this run: encrypted, not authenticated against a CA), or
configure ``distributed.comm.tls`` (``ca-file``, ``scheduler.cert``/``key``,
``worker.*``, ``client.*``) and ``distributed.comm.require-encryption`` in
Dask's configuration, which :func:`security_from_config` picks up. No
credentials are ever logged: descriptions name addresses and kinds only.

Errors are :class:`ClusterError` with one line naming the address or file
and a hint (exit code 1 in the CLI).

Example
-------
>>> from crdask.pipeline.cluster import connect
>>> with connect(workers=1, threads_per_worker=1) as cl:   # doctest: +SKIP
...     cl.client.submit(sum, [1, 2]).result()
3
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .scheduler_probe import ClusterError, check_address, probe_scheduler

__all__ = ["ClusterError", "Cluster", "connect", "local_cluster_size", "KINDS",
           "CLUSTER_CHOICES", "deployer_class", "security_from_config", "make_deployer"]

#: Cluster kinds :func:`connect` can make.
KINDS = ("local", "address", "scheduler_file", "slurm", "pbs", "kubernetes",
         "slurm-runner")
#: Kinds a user chooses with ``--cluster`` / ``execution.cluster`` (the other
#: two follow from ``--scheduler`` / ``--scheduler-file``).
CLUSTER_CHOICES = ("local", "slurm", "pbs", "kubernetes", "slurm-runner")
#: Kinds where every task of a batch step runs crdask and dask-jobqueue's
#: runner gives each its role (rank 0 scheduler, rank 1 client, others
#: workers): ``srun -n N python -m crdask run night.yaml --cluster slurm-runner``.
RUNNERS = {"slurm-runner": ("dask_jobqueue.slurm", "SLURMRunner", "slurm", "dask-jobqueue")}
#: kind -> (module, class, extra, pip package) of the deployers we build on.
DEPLOYERS = {
    "slurm": ("dask_jobqueue", "SLURMCluster", "slurm", "dask-jobqueue"),
    "pbs": ("dask_jobqueue", "PBSCluster", "pbs", "dask-jobqueue"),
    "kubernetes": ("dask_kubernetes.operator", "KubeCluster", "kubernetes",
                   "dask-kubernetes"),
}

_BYTES_PER_WORKER = 2 * 2**30
#: Dask resource that makes a worker of our own LocalCluster run one task at
#: a time with all its threads (the task uses them itself).
TASK_RESOURCE = "crdask_task"


@dataclass
class Cluster:
    """A connected client and what it needs to be closed.

    client : distributed.Client
    kind : str, one of :data:`KINDS`
    threads : int, threads each task may use itself (Numba kernels)
    resources : dict or None, what to pass to ``client.submit`` so that a
        task has its worker to itself (local clusters)
    description : str, one line for the log
    """

    client: object
    kind: str
    threads: int = 1
    resources: dict | None = None
    description: str = ""
    _owned: list = field(default_factory=list, repr=False)

    @property
    def dashboard(self):
        return getattr(self.client, "dashboard_link", None)

    def n_workers(self):
        return len(self.client.scheduler_info().get("workers", {}))

    def close(self):
        """Close the client and anything :func:`connect` started."""
        import logging

        # A worker process of our own cluster still exiting after the nanny's
        # 4 s (just after a cold numba compile the interpreter's exit takes
        # seconds on a busy machine) is killed: that is the intent, not news.
        nanny = logging.getLogger("distributed.nanny")
        level = nanny.level
        if self.kind == "local":
            nanny.setLevel(logging.ERROR)
        try:
            self.client.close()
        finally:
            for thing in reversed(self._owned):
                try:
                    thing.close()
                except Exception:  # pragma: no cover - closing is best effort
                    pass
            self._owned.clear()
            nanny.setLevel(level)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def local_cluster_size(ntasks, workers=None, threads_per_worker=None, cores=None,
                       memory=None):
    """``(n_workers, threads_per_worker)`` for a local cluster.

    Never more workers than tasks; unset values share the machine's cores,
    with at least 2 GiB of memory per worker.

    Example
    -------
    >>> local_cluster_size(10, cores=8, memory=64 * 2**30)
    (8, 1)
    >>> local_cluster_size(1, cores=8, memory=64 * 2**30)
    (1, 8)
    """
    cores = cores or os.cpu_count() or 1
    if memory is None:
        from distributed.system import MEMORY_LIMIT as memory
    ntasks = max(1, int(ntasks))
    if workers is None and threads_per_worker is None:
        n = max(1, min(ntasks, cores, int(memory // _BYTES_PER_WORKER)))
        return n, max(1, cores // n)
    if workers is None:
        return max(1, min(ntasks, cores // threads_per_worker)), threads_per_worker
    n = max(1, min(ntasks, workers))
    if threads_per_worker is None:
        return n, max(1, cores // n)
    return n, threads_per_worker


def _wait_for_workers(client, where, timeout, log, n=1):
    """Wait until ``n`` workers have joined. When only some joined within
    ``timeout`` (seconds) the run goes on with those, saying so: a batch job
    whose last worker task is slow to start should not lose the night."""
    have = len(client.scheduler_info().get("workers", {}))
    if have >= n:
        return
    log(f"crdask: {where} has " + (f"{have} of {n} workers" if have else "no workers yet")
        + f"; waiting up to {timeout:g} s")
    try:
        client.wait_for_workers(n, timeout=timeout)
    except Exception:
        have = len(client.scheduler_info().get("workers", {}))
        if have:
            log(f"crdask: {where}: only {have} of {n} worker(s) joined within "
                f"{timeout:g} s; going on with them")
            return
        client.close()
        raise ClusterError(f"{where}: no worker joined within {timeout:g} s "
                           "(start workers with: dask worker ADDRESS)") from None


def deployer_class(kind):
    """The cluster class of a batch or Kubernetes ``kind`` (imported on demand).

    Raises :class:`ClusterError` naming the extra to install when the
    deployer package is missing.

    Example
    -------
    >>> deployer_class("slurm").__name__                     # doctest: +SKIP
    'SLURMCluster'
    """
    import importlib

    table = {**DEPLOYERS, **RUNNERS}
    if kind not in table:
        raise ClusterError(f"cluster kind {kind!r}: unknown; use one of "
                           f"{', '.join(CLUSTER_CHOICES)}")
    module, name, extra, package = table[kind]
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as e:
        raise ClusterError(f"cluster kind {kind!r} needs {package} ({e.name or module} is "
                           f"not installed): pip install 'crdask[{extra}]'") from None


def security_from_config(security=None):
    """A ``distributed.Security`` or None.

    ``security`` may be a ``Security`` (returned as is), ``"temporary"`` (a
    self-signed certificate for this run; needs the ``cryptography``
    package), or None: then Dask's configuration decides
    (``distributed.comm.tls.*`` files or ``require-encryption``); None when it
    configures no TLS at all.

    Example
    -------
    >>> security_from_config() is None       # no TLS in Dask's configuration
    True
    """
    from distributed import Security

    if security is None:
        sec = Security()
        tls = [sec.tls_ca_file, sec.tls_client_cert, sec.tls_scheduler_cert,
               sec.tls_worker_cert]
        return sec if sec.require_encryption or any(tls) else None
    if isinstance(security, str):
        if security != "temporary":
            raise ClusterError(f"security {security!r}: unknown; use 'temporary' or a "
                               "distributed.Security")
        try:
            return Security.temporary()
        except ImportError:
            raise ClusterError("security 'temporary' needs the cryptography package: "
                               "pip install cryptography") from None
    return security


def make_deployer(kind, *, security=None, **overrides):
    """Build (not scale) a ``kind`` cluster from Dask's configuration.

    ``overrides`` are passed to the deployer class on top of its
    configuration (e.g. ``cores=4`` for dask-jobqueue). The dashboard of a
    jobqueue scheduler is bound to 127.0.0.1 unless the configuration's
    ``scheduler-options`` name a ``dashboard_address``.

    Example
    -------
    >>> cl = make_deployer("slurm", cores=4, memory="16GiB")  # doctest: +SKIP
    >>> print(cl.job_script())                               # doctest: +SKIP
    #!/usr/bin/env bash
    #SBATCH -J dask-worker ...
    """
    import dask

    cls = deployer_class(kind)
    kw = dict(overrides)
    if kind in ("slurm", "pbs"):
        opts = dict(dask.config.get(f"jobqueue.{kind}.scheduler-options", None) or {})
        opts.update(kw.pop("scheduler_options", None) or {})
        opts.setdefault("dashboard_address", "127.0.0.1:0")
        kw["scheduler_options"] = opts
        if security is not None:
            kw.update(security=security, protocol="tls://")
    elif security is not None:
        # the operator's pods get TLS from the Dask configuration in the image
        raise ClusterError("cluster kind 'kubernetes': TLS is configured in the image "
                           "(distributed.comm.tls, see deploy/README.md), not here")
    registry = getattr(cls, "_instances", None)   # deployers track live clusters
    before = set(registry) if registry is not None else set()
    try:
        return cls(**kw)
    except ClusterError:
        raise
    except Exception as e:
        # a half-made cluster must not be "closed" again at exit (KubeCluster
        # would retry its credentials and print a traceback)
        for inst in set(registry or ()) - before:
            registry.discard(inst)
        first = (str(e).splitlines() or [""])[0]
        where = "jobqueue.yaml" if kind in ("slurm", "pbs") else \
            "the 'kubernetes' section of Dask's configuration (and kubeconfig)"
        raise ClusterError(f"cannot start a {kind} cluster from {where}: "
                           f"{type(e).__name__}: {first}") from None


def _connect_deployer(kind, *, workers, adapt, threads, security, worker_wait, log):
    from distributed import Client

    cluster = make_deployer(kind, security=security)
    try:
        if adapt:
            cluster.adapt(minimum=int(adapt.get("minimum", 0)),
                          maximum=int(adapt["maximum"]))
            size = f"adaptive {adapt.get('minimum', 0)}..{adapt['maximum']} workers"
        else:
            cluster.scale(int(workers or 1))
            size = f"{int(workers or 1)} worker(s)"
        client = Client(cluster, security=security)
    except Exception as e:
        cluster.close()
        raise ClusterError(f"{kind} cluster: cannot scale or connect: {type(e).__name__}: "
                           f"{(str(e).splitlines() or [''])[0]}") from None
    where = f"{kind} cluster (scheduler {cluster.scheduler_address})"
    try:
        _wait_for_workers(client, where, worker_wait, log)
    except ClusterError:
        cluster.close()
        raise
    return Cluster(client=client, kind=kind, threads=threads, resources=None,
                   _owned=[cluster], description=f"{where}: {size}, {threads} thread(s) "
                                                 "per task")


def _await_scheduler_file(path, timeout):
    """Wait (up to ``timeout`` s) until the scheduler rank's file holds
    complete JSON. dask-jobqueue's runner reads it as soon as it exists,
    and the scheduler writes it in place: a client rank that reads it half
    written dies of a JSON error and leaves the scheduler and worker ranks
    waiting for it until the job's walltime (seen on a loaded 2-core
    machine). A missing file after ``timeout`` is left to the runner."""
    import json
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(path, encoding="utf-8") as fh:
                if isinstance(json.load(fh).get("address"), str):
                    return
        except (OSError, ValueError, AttributeError):
            pass
        time.sleep(0.1)


def _connect_runner(kind, *, scheduler_file, threads, memory_limit, worker_wait, log):
    """Only the client rank returns; the scheduler and worker ranks serve
    until the client closes the runner, then exit (status 0)."""
    import socket

    from distributed import Client

    cls = deployer_class(kind)
    sched_file = os.fspath(scheduler_file or "scheduler-{job_id}.json")
    worker = {"nthreads": threads, "local_directory": os.environ.get("TMPDIR") or None}
    if memory_limit:
        worker["memory_limit"] = memory_limit
    if os.environ.get("SLURM_PROCID", "0") != "0":
        _await_scheduler_file(sched_file.format(job_id=os.environ.get("SLURM_JOB_ID", "")),
                              worker_wait)
    try:
        runner = cls(scheduler_file=sched_file, worker_options=worker,
                     scheduler_options={"dashboard_address": "127.0.0.1:0"})
    except Exception as e:   # e.g. not inside srun (no SLURM_PROCID)
        raise ClusterError(f"cluster kind {kind!r}: {type(e).__name__}: "
                           f"{(str(e).splitlines() or [''])[0]}") from None
    try:
        client = Client(runner)
        where = f"{kind} (scheduler {client.scheduler.address}, on {socket.gethostname()})"
        # every worker rank of the job, so the night is spread over all of
        # them from its first task (and the report names the job's real size)
        _wait_for_workers(client, where, worker_wait, log, n=max(1, int(runner.n_workers)))
    except BaseException:
        # the scheduler and worker ranks serve until the client closes the
        # runner: without this they would hold the job until its walltime
        runner.close()
        raise
    return Cluster(client=client, kind=kind, threads=threads, resources=None,
                   _owned=[runner], description=f"{where}: {len(client.nthreads())} "
                                                f"worker(s)")


def connect(*, scheduler=None, scheduler_file=None, workers=None,
            threads_per_worker=None, memory_limit=None, ntasks=None, timeout=30.0,
            worker_wait=120.0, security=None, log=None, kind=None, adapt=None,
            set_as_default=True, processes=True):
    """Connect to a Dask cluster, or start a local one.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``).
    scheduler_file : path, optional
        JSON file written by ``dask scheduler --scheduler-file``; must exist.
    workers, threads_per_worker, memory_limit : optional
        Size of a local cluster (ignored for a running scheduler, except
        ``threads_per_worker``: how many threads each task uses there).
    ntasks : int, optional
        How many tasks the run has (a local cluster never has more workers).
    timeout : float
        Seconds to reach a running scheduler (30).
    worker_wait : float
        Seconds to wait for a first worker on a scheduler that has none.
    security : distributed.Security or "temporary", optional
        TLS settings (see :func:`security_from_config`; default: Dask's
        configuration, no TLS if it has none).
    log : callable, optional
        ``log(line)`` for what is happening.
    kind : {"local", "slurm", "pbs", "kubernetes", "slurm-runner"}, optional
        What to start when no scheduler is given (default ``local``); the
        batch kinds are scaled to ``workers`` (default 1) or ``adapt``.
        ``slurm-runner``: inside ``srun``, this process becomes the
        scheduler, the client or a worker by its rank (``scheduler_file``
        names the file they meet at, default ``scheduler-{job_id}.json``);
        only the client rank returns.
    adapt : dict, optional
        ``{"minimum": m, "maximum": n}`` workers: an adaptive batch cluster.
    processes : bool
        A local cluster's workers as processes (True, the default here and
        for the archive's long runs: a worker that dies is replaced and its
        tasks retried) or as threads of this process (False, the default of
        a night's workflow, ``execution.processes``: one worker with a task
        slot per would-be process, so the same number of frames run at
        once; the process is started and its numba cache loaded once
        instead of once per worker, which on a 2-core machine is a third of
        a short night's CPU).
    set_as_default : bool
        Make a local cluster's client Dask's default scheduler (True). The
        archive starts its LocalCluster in a thread while the first nights'
        masters run on threads, and passes False: a client made then must not
        take over ``dask.compute`` in the middle of those masters.

    Returns
    -------
    Cluster

    Raises
    ------
    ClusterError
        One line naming the address or file, with a hint.
    """
    from distributed import Client, LocalCluster

    log = log or (lambda text: None)
    if scheduler is not None and scheduler_file is not None:
        raise ClusterError("give a scheduler address or a scheduler file, not both")
    if kind not in (None, *CLUSTER_CHOICES):
        raise ClusterError(f"cluster kind {kind!r}: unknown; use one of "
                           f"{', '.join(CLUSTER_CHOICES)}")
    if kind not in (None, "local", *RUNNERS) and (scheduler is not None
                                                  or scheduler_file is not None):
        raise ClusterError(f"cluster kind {kind!r} starts its own scheduler: give it or a "
                           "scheduler address/file, not both")
    security = security_from_config(security)
    threads = int(threads_per_worker or 1)
    if kind in RUNNERS:
        return _connect_runner(kind, scheduler_file=scheduler_file, threads=threads,
                               memory_limit=memory_limit, worker_wait=worker_wait, log=log)
    if kind in DEPLOYERS:
        return _connect_deployer(kind, workers=workers, adapt=adapt, threads=threads,
                                 security=security, worker_wait=worker_wait, log=log)
    if scheduler_file is not None:
        path = os.fspath(scheduler_file)
        if not os.path.isfile(path):
            raise ClusterError(f"scheduler file {path}: does not exist (start the "
                               "scheduler with: dask scheduler --scheduler-file FILE)")
        import json
        try:
            with open(path, encoding="utf-8") as fh:
                address = json.load(fh)["address"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ClusterError(f"scheduler file {path}: unreadable "
                               f"({type(e).__name__}: {e})") from None
        where = f"scheduler {address} (from {path})"
        kind = "scheduler_file"
    elif scheduler is not None:
        address, scheme = check_address(scheduler)
        if scheme in ("tls", "wss") and security is None:
            raise ClusterError(f"scheduler {scheduler}: {scheme}:// needs a security "
                               "configuration (distributed.comm.tls in Dask's config)")
        where = f"scheduler {address}"
        kind = "address"
    else:
        address = None
    if address is not None:
        probe_scheduler(address, where, timeout, security)
        try:
            client = Client(address, timeout=f"{timeout}s", security=security)
        except Exception as e:
            raise ClusterError(f"{where}: cannot connect within {timeout:g} s "
                               f"({type(e).__name__}); is a Dask scheduler running "
                               "there, and is this its port (not the dashboard)?") from None
        _wait_for_workers(client, where, worker_wait, log)
        return Cluster(client=client, kind=kind, threads=threads, resources=None,
                       description=f"{where}: {len(client.nthreads())} worker(s), "
                                   f"{threads} thread(s) per task")
    n, threads = local_cluster_size(ntasks or 1, workers, threads_per_worker)
    kw = {"memory_limit": memory_limit} if memory_limit else {}
    if security is not None:
        kw.update(security=security, protocol="tls://")
    # Each task holds one TASK_RESOURCE: a worker process runs one frame at a
    # time (with ``threads`` threads inside it); a threaded worker gets the
    # slots and threads of all ``n``.
    size = (dict(n_workers=n, threads_per_worker=threads, resources={TASK_RESOURCE: 1})
            if processes else
            dict(n_workers=1, threads_per_worker=n * threads, resources={TASK_RESOURCE: n}))
    if not processes and security is None:
        # tcp on localhost, as with processes: Dask's in-process default
        # (inproc://) would start the workers' own servers on every interface
        kw["protocol"] = "tcp://"
    try:
        cluster = LocalCluster(processes=bool(processes), host="127.0.0.1",
                               dashboard_address="127.0.0.1:0", **size, **kw)
    except Exception as e:
        raise ClusterError(f"cannot start a local Dask cluster: {type(e).__name__}: "
                           f"{e}".splitlines()[0]) from None
    client = Client(cluster, security=security, set_as_default=set_as_default)

    def _single_threaded_libraries(nthreads=threads):
        # Numba kernels run inside the tasks' own threads: no nested pools.
        os.environ.update(OMP_NUM_THREADS="1", NUMBA_NUM_THREADS=str(nthreads))

    if processes:   # (threaded workers: this process's environment is the user's)
        client.run(_single_threaded_libraries)
    return Cluster(client=client, kind="local", threads=threads,
                   resources={TASK_RESOURCE: 1}, _owned=[cluster],
                   description=f"local cluster: {n} worker process(es) x {threads} "
                               "thread(s)" if processes else
                               f"local cluster: 1 threaded worker, {n} task slot(s) x "
                               f"{threads} thread(s)")
