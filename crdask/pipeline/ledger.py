"""The run ledger: what was done to each frame, so a rerun finishes only what is missing.

``Ledger(OUT)`` keeps one small JSON file per frame (and per master) in
``OUT/ledger/<name>.json``. Each file is written atomically (temporary file in
the same directory, ``fsync``, ``os.replace``, directory ``fsync``; see
:mod:`crdask.io.atomic`), so

* a process killed at any moment leaves every entry either as it was or as
  newly written -- never torn (a leftover hidden ``.*.tmp`` file is ignored);
* worker processes updating *different* frames at the same time never touch
  the same file. (One frame is updated by one task at a time; two processes
  updating the *same* entry concurrently would be last-writer-wins.)

An entry::

    {"name": "r0042", "input": "/night/r0042.fits", "input_sha256": "...",
     "config_hash": "...", "crdask_version": "0.1.0",
     "stage": "cleaned",          # last stage finished: None or one of STAGES
     "status": "running",         # 'running' | 'done' | 'failed'
     "error": None,               # one line, for 'failed'
     "started": "2024-03-16T08:00:01.5+00:00", "updated": "...",
     "seconds": 12.3,             # wall time of this attempt so far
     "attempts": 1, "info": {...}}

Typical use in a frame task::

    sha = ledger.file_sha256(path)
    if ledger.is_current(name, sha, config_hash):            # done, unchanged
        return
    ledger.start(name, path, sha, config_hash)
    try:
        if not (ledger.is_current(name, sha, config_hash, "calibrated")
                and store.has_frame(name, ("sci", "var", "mask"))):
            store.write_frame(name, **calibrate(path))
            ledger.advance(name, "calibrated")
        ...
        ledger.finish(name, ncr=123, output=out_path)
    except Exception as err:
        ledger.fail(name, err)

Stages and :meth:`Ledger.is_current`
    ``stage`` is the last stage *finished*; a stage's output is valid once it
    is recorded, whatever happened afterwards. ``is_current(..., "written")``
    (the default) requires status ``'done'``; for an earlier stage it requires
    that the stage was reached -- an attempt that was killed, or failed in a
    later stage, does not undo finished earlier stages. Both also require the
    same input checksum, the same configuration hash and the same crdask
    version. :meth:`Ledger.start` keeps the stage reached by the previous
    attempt when those three are unchanged, and clears it otherwise.

Checksum cache
    :meth:`Ledger.file_sha256` hashes an input once: the result is cached in
    ``OUT/ledger/sha256/<key>.json``, one small file per input (so concurrent
    workers never conflict), keyed by the file's real path, size,
    modification time (ns), inode and device. A rerun over unchanged inputs
    therefore reads one small JSON file per input instead of every raw byte;
    any change to the file (content rewritten, replaced by a copy or by
    rsync even with the old mtime kept) changes the key and triggers a new
    hash. (Like make and git, it trusts the stat data: a file rewritten in
    place with the same size and its old mtime put back is not noticed;
    delete ``OUT/ledger/sha256/`` after such surgery.) A file modified less
    than two seconds before it is hashed is hashed
    but not cached (it may still be being written within the same timestamp
    tick). :meth:`Ledger.reset` keeps the cache: it describes the inputs, not
    the run.
"""

import datetime as _dt
import hashlib
import json
import os
import time

from .._version import __version__
from ..io.atomic import atomic_open, is_temp_name

__all__ = ["Ledger", "STAGES", "STATUSES", "file_sha256"]

#: Pipeline stages, in order. ``stage`` records the last one finished.
STAGES = ("calibrated", "cleaned", "written")
STATUSES = ("running", "done", "failed")

_SHA_DIR = "sha256"
_CHUNK = 1 << 20
_RACY_SECONDS = 2.0
_MAX_ERROR = 500


def _now():
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _seconds_since(iso):
    try:
        then = _dt.datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return None
    return round((_dt.datetime.now(_dt.timezone.utc) - then).total_seconds(), 3)


def _check_name(name):
    if not isinstance(name, str) or not name:
        raise ValueError(f"ledger entry name must be a non-empty string, got {name!r}")
    if any(c in name for c in ("/", "\\", "\x00")) or name.startswith(".") \
            or len(name) > 200:
        raise ValueError(f"invalid ledger entry name {name!r}: must not contain '/', "
                         "'\\' or NUL, start with '.', or be longer than 200 characters")
    return name


def _one_line(error):
    """``'ValueError: bad header'`` from an exception; first line of a string."""
    if error is None:
        return None
    if isinstance(error, BaseException):
        msg = str(error)
        text = f"{type(error).__name__}: {msg}" if msg else type(error).__name__
    else:
        text = str(error)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= _MAX_ERROR else line[:_MAX_ERROR - 3] + "..."


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=_json_default))


def _json_default(o):
    try:
        return o.item()          # numpy scalars
    except AttributeError:
        pass
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return os.fspath(o) if isinstance(o, os.PathLike) else str(o)


def _hash_file(path):
    with open(path, "rb") as fh:
        if hasattr(hashlib, "file_digest"):      # Python >= 3.11
            return hashlib.file_digest(fh, "sha256").hexdigest()
        h = hashlib.sha256()
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path, cache_dir=None):
    """SHA-256 (hex) of the file at ``path``.

    With ``cache_dir``, the digest is cached there per file (see the module
    notes): an unchanged file is not read again.
    """
    path = os.fspath(path)
    if cache_dir is None:
        return _hash_file(path)
    real = os.path.realpath(path)
    st = os.stat(real)
    key = {"path": real, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
           "ino": st.st_ino, "dev": st.st_dev}
    fname = os.path.join(os.fspath(cache_dir),
                         hashlib.sha256(real.encode("utf-8", "surrogateescape"))
                         .hexdigest()[:32] + ".json")
    try:
        with open(fname, encoding="utf-8") as fh:
            cached = json.load(fh)
        if isinstance(cached, dict) and cached.get("key") == key:
            return cached["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = _hash_file(real)
    st2 = os.stat(real)
    unchanged = (st2.st_size, st2.st_mtime_ns, st2.st_ino) == (st.st_size, st.st_mtime_ns,
                                                                st.st_ino)
    if unchanged and time.time() - st.st_mtime_ns / 1e9 >= _RACY_SECONDS:
        try:
            os.makedirs(cache_dir, exist_ok=True)
            with atomic_open(fname, overwrite=True, mode="w") as fh:
                json.dump({"key": key, "sha256": digest}, fh)
        except OSError:  # a read-only output dir only costs a re-hash next time
            pass
    return digest


class Ledger:
    """Per-frame progress records under ``out_dir/ledger/`` (see module notes)."""

    def __init__(self, out_dir):
        self.out_dir = os.path.abspath(os.fspath(out_dir))
        self.path = os.path.join(self.out_dir, "ledger")
        os.makedirs(self.path, exist_ok=True)

    def __repr__(self):
        return f"Ledger({self.out_dir!r})"

    # ------------------------------------------------------------- file level
    def _file(self, name):
        return os.path.join(self.path, _check_name(name) + ".json")

    def get(self, name):
        """The entry for ``name`` (a dict), or None if there is none."""
        try:
            with open(self._file(name), encoding="utf-8") as fh:
                entry = json.load(fh)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            # Cannot happen through this class (atomic writes); a hand-edited
            # or foreign file counts as "no record", so the frame is redone.
            return None
        return entry if isinstance(entry, dict) else None

    def _put(self, entry):
        entry = _jsonable(entry)
        with atomic_open(self._file(entry["name"]), overwrite=True, mode="w") as fh:
            json.dump(entry, fh, indent=1, sort_keys=True)
            fh.write("\n")
        return entry

    def _require(self, name):
        entry = self.get(name)
        if entry is None:
            raise KeyError(f"{self._file(name)}: no ledger entry for {name!r} "
                           "(call start() first)")
        return entry

    def _touch(self, entry, info):
        entry["updated"] = _now()
        entry["seconds"] = _seconds_since(entry.get("started"))
        if info:
            entry.setdefault("info", {}).update(info)
        return entry

    # ---------------------------------------------------------------- updates
    def start(self, name, input, input_sha256, config_hash, **info):
        """Begin an attempt at ``name``: status 'running', ``attempts`` + 1.

        The stage reached by the previous attempt is kept if the input
        checksum, config hash and crdask version are unchanged, so finished
        stages can be skipped; otherwise it is cleared (and ``info`` too).
        """
        old = self.get(name) or {}
        same = (old.get("input_sha256") == input_sha256
                and old.get("config_hash") == config_hash
                and old.get("crdask_version") == __version__)
        now = _now()
        entry = {
            "name": name,
            "input": os.fspath(input) if input is not None else None,
            "input_sha256": input_sha256,
            "config_hash": config_hash,
            "crdask_version": __version__,
            "stage": old.get("stage") if same else None,
            "status": "running",
            "error": None,
            "started": now,
            "updated": now,
            "seconds": 0.0,
            "attempts": int(old.get("attempts") or 0) + 1,
            "info": dict(old.get("info") or {}) if same else {},
        }
        entry["info"].update(info)
        return self._put(entry)

    def advance(self, name, stage, **info):
        """Record that ``stage`` (one of :data:`STAGES`) is finished."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; allowed: {', '.join(STAGES)}")
        entry = self._require(name)
        entry["stage"] = stage
        return self._put(self._touch(entry, info))

    def finish(self, name, **info):
        """The frame is done: status 'done', stage 'written'."""
        entry = self._require(name)
        entry.update(stage=STAGES[-1], status="done", error=None)
        return self._put(self._touch(entry, info))

    def fail(self, name, error, **info):
        """The attempt failed: status 'failed', ``error`` as one line.

        ``error`` may be an exception (recorded as ``"Type: message"``) or a
        string. The stage already reached is kept. Works without a prior
        :meth:`start` (e.g. the input could not even be hashed).
        """
        entry = self.get(name)
        if entry is None:
            now = _now()
            entry = {"name": name, "input": None, "input_sha256": None,
                     "config_hash": None, "crdask_version": __version__, "stage": None,
                     "started": now, "attempts": 1, "info": {}}
        entry.update(status="failed", error=_one_line(error))
        return self._put(self._touch(entry, info))

    # ---------------------------------------------------------------- queries
    def entries(self):
        """All entries, sorted by name."""
        out = []
        try:
            names = sorted(os.listdir(self.path))
        except FileNotFoundError:
            return out
        for fname in names:
            if not fname.endswith(".json") or is_temp_name(fname) or fname.startswith("."):
                continue
            entry = self.get(fname[:-len(".json")])
            if entry is not None:
                out.append(entry)
        return out

    def is_current(self, name, input_sha256, config_hash, stage="written"):
        """True if ``name`` need not be redone up to ``stage``.

        Same input checksum, config hash and crdask version, and the recorded
        stage is at least ``stage``; for the last stage ('written') the status
        must also be 'done'.
        """
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; allowed: {', '.join(STAGES)}")
        entry = self.get(name)
        if entry is None:
            return False
        if (entry.get("input_sha256") != input_sha256 or input_sha256 is None
                or entry.get("config_hash") != config_hash
                or entry.get("crdask_version") != __version__):
            return False
        reached = entry.get("stage")
        if reached not in STAGES or STAGES.index(reached) < STAGES.index(stage):
            return False
        return stage != STAGES[-1] or entry.get("status") == "done"

    def reset(self):
        """Remove every entry (``crdask run --restart``); returns how many.

        The checksum cache is kept (it describes the inputs, not the run).
        Leftover temporary files of killed writers are removed too.
        """
        n = 0
        for fname in os.listdir(self.path):
            p = os.path.join(self.path, fname)
            if (fname.endswith(".json") and not fname.startswith(".")) or is_temp_name(fname):
                try:
                    os.unlink(p)
                except (FileNotFoundError, IsADirectoryError):
                    continue
                n += not is_temp_name(fname)
        return n

    def file_sha256(self, path):
        """SHA-256 of ``path``, cached in ``ledger/sha256/`` (see module notes)."""
        return file_sha256(path, cache_dir=os.path.join(self.path, _SHA_DIR))
