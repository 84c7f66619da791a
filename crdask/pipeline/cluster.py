"""The one place that makes a Dask client (layer 4).

Every command (``crdask run``, ``lacosmic``, ``cr2images``, ``crmasks``,
``archive``) gets its client from :func:`connect`, which knows the cluster
kinds:

``local`` (the default)
    a ``LocalCluster`` of worker processes on this machine, sized by
    :func:`local_cluster_size` (never more workers than tasks, the cores
    shared out as threads, at least 2 GiB per worker), scheduler and
    dashboard bound to localhost;
``address`` / ``scheduler_file``
    a running scheduler (``tcp://host:8786``, or the JSON file a ``dask
    scheduler --scheduler-file`` writes), reached within a bounded
    ``timeout``; a scheduler with no workers is waited for with a message,
    then given up on with one line.

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

__all__ = ["ClusterError", "Cluster", "connect", "local_cluster_size", "KINDS"]

#: Cluster kinds :func:`connect` can make.
KINDS = ("local", "address", "scheduler_file")

_BYTES_PER_WORKER = 2 * 2**30
#: Dask resource that makes a worker of our own LocalCluster run one task at
#: a time with all its threads (the task uses them itself).
TASK_RESOURCE = "crdask_task"


class ClusterError(RuntimeError):
    """The Dask cluster could not be started or reached (one line)."""


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
        try:
            self.client.close()
        finally:
            for thing in reversed(self._owned):
                try:
                    thing.close()
                except Exception:  # pragma: no cover - closing is best effort
                    pass
            self._owned.clear()

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


def _check_address(address):
    from distributed.comm import parse_address

    text = str(address).strip()
    if "://" not in text and ":" not in text:
        raise ClusterError(f"scheduler {address!r}: not an address; "
                           "use tcp://HOST:PORT (e.g. tcp://127.0.0.1:8786)")
    try:
        scheme, _ = parse_address(text if "://" in text else f"tcp://{text}")
    except ValueError as e:
        raise ClusterError(f"scheduler {address!r}: not an address ({e})") from None
    if scheme not in ("tcp", "tls", "inproc", "ws", "wss", "ucx"):
        raise ClusterError(f"scheduler {address!r}: unknown protocol {scheme!r}; "
                           "use tcp:// (or tls:// with a security configuration)")
    return text, scheme


def _wait_for_workers(client, where, timeout, log):
    if client.scheduler_info().get("workers"):
        return
    log(f"crdask: {where} has no workers yet; waiting up to {timeout:g} s")
    try:
        client.wait_for_workers(1, timeout=timeout)
    except Exception:
        client.close()
        raise ClusterError(f"{where}: no worker joined within {timeout:g} s "
                           "(start workers with: dask worker ADDRESS)") from None


def connect(*, scheduler=None, scheduler_file=None, workers=None,
            threads_per_worker=None, memory_limit=None, ntasks=None, timeout=30.0,
            worker_wait=120.0, security=None, log=None):
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
    security : distributed.Security, optional
        TLS settings for ``tls://`` addresses.
    log : callable, optional
        ``log(line)`` for what is happening.

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
    threads = int(threads_per_worker or 1)
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
        address, scheme = _check_address(scheduler)
        if scheme in ("tls", "wss") and security is None:
            raise ClusterError(f"scheduler {scheduler}: {scheme}:// needs a security "
                               "configuration (distributed.comm.tls in Dask's config)")
        where = f"scheduler {address}"
        kind = "address"
    else:
        address = None
    if address is not None:
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
    try:
        cluster = LocalCluster(n_workers=n, threads_per_worker=threads, processes=True,
                               host="127.0.0.1", dashboard_address="127.0.0.1:0",
                               resources={TASK_RESOURCE: 1}, **kw)
    except Exception as e:
        raise ClusterError(f"cannot start a local Dask cluster: {type(e).__name__}: "
                           f"{e}".splitlines()[0]) from None
    client = Client(cluster)

    def _single_threaded_libraries(nthreads=threads):
        # Numba kernels run inside the tasks' own threads: no nested pools.
        os.environ.update(OMP_NUM_THREADS="1", NUMBA_NUM_THREADS=str(nthreads))

    client.run(_single_threaded_libraries)
    return Cluster(client=client, kind="local", threads=threads,
                   resources={TASK_RESOURCE: 1}, _owned=[cluster],
                   description=f"local cluster: {n} worker process(es) x {threads} "
                               "thread(s)")
