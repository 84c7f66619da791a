"""One run at a time per output folder: ``OUT/.crdask.lock`` (layer 4).

:class:`OutputLock` is taken by ``run_night`` before it looks at anything in
the output folder (``--restart`` included) and released at the end. A second
run on the same folder while the first is alive raises :exc:`OutputLocked`,
whose message is one line naming the running process; ``crdask run`` prints
it and exits 0 without touching the ledger, the outputs or the
intermediates.

The lock file is a small JSON document::

    {"host": "node12", "pid": 4711, "pid_start": 123456, "boot_id": "...",
     "token": "9f0c...", "started": "2026-12-01T19:30:00Z",
     "command": "crdask run night.yaml"}

and while the run lives a thread refreshes its modification time every
``heartbeat`` seconds (30 s by default).

Stale locks
    A lock is *stale*, and is taken over, when

    * it was written on this host and its process is gone: no process with
      that pid, or one with a different start time (the pid was reused), or
      the host has rebooted since (different ``boot_id``) -- e.g. a run that
      was SIGKILLed or lost with its node;
    * it was written on another host and its heartbeat is older than
      ``stale_after`` seconds (600 by default): that host no longer answers
      (crashed, powered off, cut off from the filesystem);
    * it is unreadable or empty and older than ``stale_after`` (a writer
      killed between creating and filling it -- cannot happen with the
      hard-link create below, kept for filesystems without hard links).

    Taking over is serialised by a second, short-lived file
    ``OUT/.crdask.lock.break``: only the process that creates it re-reads the
    lock, checks it is still the same stale lock (same token) and replaces
    it, so two runs that find the same stale lock cannot both take it.

Guarantees relied on (local filesystems; NFSv3/v4, Lustre, GPFS/Spectrum
Scale, CephFS and BeeGFS provide them)
    * creating a hard link to a name that exists fails (``EEXIST``) and is
      atomic across clients -- the classic NFS-safe lock; where hard links are
      not supported, ``open(O_CREAT | O_EXCL)`` is used, which is atomic on
      local filesystems and NFSv3+ but not on NFSv2;
    * ``unlink`` and ``rename`` are atomic;
    * a modification time set with ``utime`` becomes visible to other
      clients within the attribute-cache time (``acregmax``, 60 s by default
      on NFS), well within ``stale_after``; and the hosts' clocks agree to
      within a minute or so (NTP), since another host's heartbeat is judged
      against this host's clock.

    Object stores (``s3://``) give none of these: outputs there must be
    locked by the scheduler of the jobs (one job per output prefix).

Example
-------
>>> import tempfile
>>> from crdask.pipeline.lock import OutputLock, OutputLocked
>>> out = tempfile.mkdtemp()
>>> with OutputLock(out, command="example") as lock:
...     try:
...         OutputLock(out).acquire()
...     except OutputLocked as e:
...         print("second:", str(e).split(":")[0])
second: crdask
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone

__all__ = ["OutputLock", "OutputLocked", "LOCK_NAME", "read_lock", "lock_is_stale"]

#: Name of the lock file inside the output folder.
LOCK_NAME = ".crdask.lock"
_BREAK_SUFFIX = ".break"


class OutputLocked(RuntimeError):
    """The output folder is being written by another live run (one line)."""

    def __init__(self, path, holder):
        self.path = os.fspath(path)
        self.holder = dict(holder or {})
        super().__init__(self._line())

    def _line(self):
        h = self.holder
        who = f"pid {h.get('pid', '?')} on {h.get('host', '?')}"
        cmd = f" ({h['command']})" if h.get("command") else ""
        return (f"crdask: {self.path} is in use by a running crdask, {who} since "
                f"{h.get('started', '?')}{cmd}; nothing done (the lock is "
                f"{os.path.join(self.path, LOCK_NAME)})")


def _boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:  # not Linux: pid checks only
        return None


def _pid_start(pid):
    """Start time of process ``pid`` in clock ticks since boot (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    # the command name may contain spaces and parentheses: split after the last ')'
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[19])


def _pid_alive(pid):
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except (OverflowError, ValueError, TypeError):
        return False
    return True


def read_lock(path):
    """The holder recorded in lock file ``path`` (a dict), ``{}`` if it is
    unreadable, or None if there is no lock."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def lock_is_stale(holder, age, stale_after):
    """Whether a lock whose content is ``holder`` (see :func:`read_lock`) and
    whose heartbeat is ``age`` seconds old belongs to no live run.

    Example
    -------
    >>> lock_is_stale({"host": socket.gethostname(), "pid": 2**22 + 1}, 0.0, 600)
    True
    >>> lock_is_stale({"host": "elsewhere", "pid": 1}, 5.0, 600)
    False
    """
    if not holder:
        return age > stale_after
    if holder.get("host") == socket.gethostname():
        boot = _boot_id()
        if boot and holder.get("boot_id") and holder["boot_id"] != boot:
            return True  # rebooted since: no process of then survives
        pid = holder.get("pid")
        if not _pid_alive(pid):
            return True
        start = holder.get("pid_start")
        return start is not None and _pid_start(pid) not in (None, start)
    return age > stale_after


class OutputLock:
    """The lock of one output folder.

    Parameters
    ----------
    output : path
        The output folder (created if missing; nothing else is written there
        before the lock is held).
    command : str, optional
        What holds the lock, for the message a second run prints.
    heartbeat : float
        Seconds between refreshes of the lock's modification time (30).
    stale_after : float
        Seconds without a heartbeat after which a lock from another host is
        taken over (600). Must be well above ``heartbeat`` plus the
        filesystem's attribute-cache time.
    log : callable, optional
        ``log(line)``, e.g. when a stale lock is taken over.

    Raises
    ------
    OutputLocked
        From :meth:`acquire` (and ``with``) while another live run holds it.
    """

    def __init__(self, output, *, command=None, heartbeat=30.0, stale_after=600.0,
                 log=None):
        self.output = os.fspath(output)
        self.path = os.path.join(self.output, LOCK_NAME)
        self.command = command
        self.heartbeat = float(heartbeat)
        self.stale_after = float(stale_after)
        self.log = log or (lambda line: None)
        self.token = None
        self._stop = threading.Event()
        self._thread = None

    # -- taking ---------------------------------------------------------------------
    def _content(self):
        return {"host": socket.gethostname(), "pid": os.getpid(),
                "pid_start": _pid_start(os.getpid()), "boot_id": _boot_id(),
                "token": self.token,
                "started": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "command": self.command}

    def _create(self):
        """Create the lock file with its content in one step; False if it exists."""
        data = json.dumps(self._content()).encode()
        tmp = f"{self.path}.{self.token}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, self.path)  # atomic and fails if the lock exists, NFS included
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            return True
        finally:
            os.unlink(tmp)

    def _age(self):
        try:
            return time.time() - os.stat(self.path).st_mtime
        except FileNotFoundError:
            return None

    def _break_stale(self, holder):
        """Remove the lock if it is still the stale one we read; True if removed."""
        brk = self.path + _BREAK_SUFFIX
        try:
            fd = os.open(brk, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            # another run is taking over right now; a breaker killed in the
            # middle leaves its file behind: old ones are removed
            try:
                if time.time() - os.stat(brk).st_mtime > 60:
                    os.unlink(brk)
            except FileNotFoundError:
                pass
            return False
        os.close(fd)
        try:
            again = read_lock(self.path)
            if again is None:
                return True
            if (again or {}).get("token") != (holder or {}).get("token"):
                return False  # replaced meanwhile: judge the new one afresh
            os.unlink(self.path)
            return True
        finally:
            os.unlink(brk)

    def acquire(self):
        """Take the lock (taking over a stale one). Returns self."""
        os.makedirs(self.output, exist_ok=True)
        self.token = uuid.uuid4().hex
        for _ in range(50):
            if self._create():
                self._start_heartbeat()
                return self
            holder = read_lock(self.path)
            age = self._age()
            if holder is None or age is None:
                continue  # released meanwhile: try again
            if not lock_is_stale(holder, age, self.stale_after):
                raise OutputLocked(self.output, holder)
            if self._break_stale(holder):
                self.log(f"crdask: taking over the stale lock of pid "
                         f"{holder.get('pid', '?')} on {holder.get('host', '?')} "
                         f"(since {holder.get('started', '?')}) in {self.output}")
            else:
                time.sleep(0.05)
        raise OutputLocked(self.output, read_lock(self.path) or {})

    def _start_heartbeat(self):
        def beat():
            while not self._stop.wait(self.heartbeat):
                try:
                    os.utime(self.path)
                except OSError:  # the folder went away: nothing left to guard
                    return
        self._stop.clear()
        self._thread = threading.Thread(target=beat, name="crdask-lock-heartbeat",
                                        daemon=True)
        self._thread.start()

    # -- releasing ----------------------------------------------------------------
    def release(self):
        """Stop the heartbeat and remove the lock if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self.token and (read_lock(self.path) or {}).get("token") == self.token:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        self.token = None

    @property
    def held(self):
        """True while this object holds the lock."""
        return bool(self.token) and (read_lock(self.path) or {}).get("token") == self.token

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def locked_output(run):
    """Decorator for ``run(config, *args, **kw)`` (``run_night``): load the
    workflow, hold the lock of its output folder for the whole call.

    The wrapped function receives the validated
    :class:`~crdask.pipeline.config.Workflow` in place of ``config``; its
    ``log`` keyword (if given) hears about a stale lock taken over.

    Example
    -------
    >>> @locked_output
    ... def run(wf, log=print):
    ...     return os.path.exists(os.path.join(wf.output, LOCK_NAME))
    >>> out = __import__("tempfile").mkdtemp()
    >>> run({"version": 1, "inputs": {"directory": out}, "output": out})
    True
    """
    import functools

    from .config import Workflow, load_workflow

    @functools.wraps(run)
    def wrapper(config, *args, **kw):
        wf = config if isinstance(config, Workflow) else load_workflow(config)
        with OutputLock(wf.output, command=f"crdask run {wf.source}",
                        log=kw.get("log") or None):
            return run(wf, *args, **kw)

    return wrapper
