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

    {"name": "r0042", "kind": "frame",   # 'frame' | 'master' | 'group'
     "input": "/night/r0042.fits", "input_sha256": "...",
     "inputs": {"raw": "<sha>", "master:bias": "<sha>", ...},   # the input closure
     "outputs": {"/out/r0042_cal.fits": {"size": 1234, "sha256": "...", ...}},
     "config_hash": "...", "crdask_version": "0.1.0",
     "stage": "cleaned",          # last stage finished: None or one of STAGES
     "status": "running",         # 'running' | 'done' | 'failed'
     "error": None,               # one line, for 'failed'
     "started": "2024-03-16T08:00:01.5+00:00", "updated": "...",
     "seconds": 12.3,             # wall time of this attempt so far
     "attempts": 1, "info": {...}}

Typical use in a frame task::

    closure = ledger.closure(raw=path, masters={"bias": mb, "flat_V": mf})
    sha = closure["raw"]
    if ledger.is_current(name, sha, config_hash, inputs=closure):   # done, unchanged
        return
    ledger.start(name, path, sha, config_hash, inputs=closure)
    try:
        try:
            arrays = store.read_frame(name) if ledger.is_current(
                name, sha, config_hash, "calibrated", inputs=closure) else None
        except IncompleteError:              # IntermediateDamaged too: recompute
            arrays = None
        if arrays is None:
            store.write_frame(name, **calibrate(path))
            ledger.advance(name, "calibrated")
        ...
        write_calibrated(out_path, ...)
        ledger.finish(name, outputs=[out_path], ncr=123)
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

Provenance: the input closure and the outputs
    An entry is "done" only while everything it was computed from is
    unchanged and its own files are intact (DESIGN.md, Provenance):

    * ``inputs`` (:meth:`Ledger.closure`) maps a label to a SHA-256 for
      every file the result depends on: for a science frame its raw file
      (``raw``) and every master it was calibrated with, by *the master
      file's* checksum (``master:bias``, ``master:flat_V``...), so a rebuilt
      master with different pixels redoes every frame that used it; for a
      master its input frames (``input:<name>``); for an exposure group
      every member (``member:<name>``). :meth:`Ledger.start` records it,
      :meth:`Ledger.is_current` compares it (when given) exactly -- a
      member added, dropped or changed all count.
    * ``outputs``: :meth:`Ledger.finish` ``(name, outputs=[paths])`` records
      each output's size, SHA-256 and stat data at write time;
      :meth:`Ledger.is_current` (stage 'written') then requires every one
      intact (:meth:`Ledger.output_problems`). Trade-off chosen: the size is
      always checked; the SHA-256 is recomputed whenever the file's stat
      data (mtime ns, inode, size) differ from those recorded, and always
      with ``verify="full"``. An untouched output therefore costs one
      ``stat`` per rerun, not a read of every output byte (a 2048^2 night of
      hundreds of 50 MB frames); any truncation, rewrite, copy or
      replacement is caught, and only in-place surgery that restores the
      old mtime (the limit of the input cache below too) needs
      ``verify="full"``.

Creation is lazy
    ``Ledger(OUT)`` creates nothing: ``OUT/ledger/`` appears with the first
    entry or cached checksum written, so ``crdask run --dry-run`` leaves no
    trace. ``Ledger(OUT, readonly=True)`` never writes at all (checksums are
    computed, not cached; updates raise).

Checksum cache
    :meth:`Ledger.file_sha256` hashes an input once and caches the digest in
    ``OUT/ledger/sha256/`` (:func:`crdask.io.checksums.file_sha256`: keyed by
    real path, size, mtime, inode, device). :meth:`Ledger.reset` keeps the
    cache: it describes the inputs, not the run.
"""

import contextlib
import datetime as _dt
import json
import os

from .._version import __version__
from ..io.atomic import atomic_open, is_temp_name
from ..io.checksums import (closure_digest, describe_output, file_sha256, output_problems,
                             remember)
from .threads import thread_map

__all__ = ["Ledger", "STAGES", "STATUSES", "KINDS", "VERIFY", "file_sha256",
           "closure_digest"]

#: Pipeline stages, in order. ``stage`` records the last one finished.
STAGES = ("calibrated", "cleaned", "written")
STATUSES = ("running", "done", "failed")
#: What an entry describes.
KINDS = ("frame", "master", "group")
#: How :meth:`Ledger.is_current` checks recorded outputs (see module notes).
VERIFY = ("stat", "full", "size")

_SHA_DIR = "sha256"
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


class Ledger:
    """Per-frame, per-master and per-group records under ``out_dir/ledger/``.

    Parameters
    ----------
    out_dir : str or os.PathLike
        The night's output folder; entries live in ``out_dir/ledger/``,
        created lazily by the first write (see module notes).
    readonly : bool
        Never write (for ``--dry-run``): updates raise ``RuntimeError`` and
        checksums are not cached.

    Examples
    --------
    >>> import tempfile
    >>> led = Ledger(tempfile.mkdtemp())
    >>> e = led.start("r1", "r1.fits", "a" * 64, "cfg", inputs={"raw": "a" * 64})
    >>> e = led.finish("r1")
    >>> led.is_current("r1", "a" * 64, "cfg", inputs={"raw": "a" * 64})
    True
    >>> led.is_current("r1", "a" * 64, "cfg", inputs={"raw": "a" * 64, "master:bias": "b"})
    False
    """

    def __init__(self, out_dir, *, readonly=False):
        self.out_dir = os.path.abspath(os.fspath(out_dir))
        self.path = os.path.join(self.out_dir, "ledger")
        self.readonly = bool(readonly)
        # digests of this run's files by stat data (see io.checksums.file_sha256)
        self._sha_memo = {}

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
        if self.readonly:
            raise RuntimeError(f"{self.path}: ledger opened read-only (dry run); "
                               f"cannot record {entry.get('name')!r}")
        entry = _jsonable(entry)
        os.makedirs(self.path, exist_ok=True)
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
    def start(self, name, input, input_sha256, config_hash, *, kind="frame", inputs=None,
              **info):
        """Begin an attempt at ``name``: status 'running', ``attempts`` + 1.

        Parameters
        ----------
        name : str
            Entry name (the output stem, ``"masters"``, a group label...).
        input : str or None
            The main input file, for the report (None for a master or group).
        input_sha256 : str or None
            Its SHA-256; None with ``inputs`` given: :func:`closure_digest`.
        config_hash : str
            Hash of the settings that shape the result.
        kind : {'frame', 'master', 'group'}
        inputs : dict, optional
            The input closure ``{label: sha256}`` (:meth:`closure`).
        **info
            Extra JSON-able fields kept in ``info``.

        The stage reached by the previous attempt is kept if the input
        checksum, closure, config hash and crdask version are unchanged, so
        finished stages can be skipped; otherwise it is cleared (and
        ``info`` and the recorded outputs too).
        """
        if kind not in KINDS:
            raise ValueError(f"unknown ledger entry kind {kind!r}; allowed: "
                             f"{', '.join(KINDS)}")
        inputs = None if inputs is None else {str(k): str(v) for k, v in dict(inputs).items()}
        if input_sha256 is None and inputs is not None:
            input_sha256 = closure_digest(inputs)
        old = self.get(name) or {}
        same = (old.get("input_sha256") == input_sha256
                and old.get("config_hash") == config_hash
                and old.get("crdask_version") == __version__
                and (inputs is None or old.get("inputs") == inputs))
        now = _now()
        entry = {
            "name": name,
            "kind": kind,
            "input": os.fspath(input) if input is not None else None,
            "input_sha256": input_sha256,
            "inputs": inputs if inputs is not None else (old.get("inputs") if same else None),
            "outputs": dict(old.get("outputs") or {}) if same else {},
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

    def finish(self, name, *, outputs=None, **info):
        """The entry is done: status 'done', stage 'written'.

        Parameters
        ----------
        name : str
        outputs : iterable of str or os.PathLike, optional
            The files this entry wrote, just written: their size, SHA-256
            and stat data are recorded and verified by :meth:`is_current`
            on reruns. Replaces the outputs recorded before.
        **info
            Extra JSON-able fields kept in ``info``.
        """
        entry = self._require(name)
        if outputs is not None:
            entry["outputs"] = {os.path.abspath(os.fspath(p)): describe_output(p)
                                for p in outputs}
            for p, rec in entry["outputs"].items():
                remember(self._sha_memo, p, rec)
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
            entry = {"name": name, "kind": "frame", "input": None, "input_sha256": None,
                     "inputs": None, "outputs": {}, "config_hash": None,
                     "crdask_version": __version__, "stage": None,
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

    def is_current(self, name, input_sha256, config_hash, stage="written", *, inputs=None,
                   verify="stat"):
        """True if ``name`` need not be redone up to ``stage``.

        Parameters
        ----------
        name : str
        input_sha256 : str or None
            The main input's checksum now (None with ``inputs``: their
            :func:`closure_digest`).
        config_hash : str
        stage : one of :data:`STAGES`
        inputs : dict, optional
            The input closure now (:meth:`closure`); must equal the recorded
            one exactly. Omitted: only ``input_sha256`` is compared (old
            callers).
        verify : one of :data:`VERIFY`
            How recorded outputs are checked for stage 'written' (module
            notes): 'stat' (default), 'full' (always SHA-256) or 'size'.

        Same input checksum (and closure), config hash and crdask version,
        and the recorded stage is at least ``stage``; for the last stage
        ('written') the status must also be 'done' and every recorded output
        intact.
        """
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; allowed: {', '.join(STAGES)}")
        if verify not in VERIFY:
            raise ValueError(f"unknown verify mode {verify!r}; allowed: {', '.join(VERIFY)}")
        if inputs is not None:
            inputs = {str(k): str(v) for k, v in dict(inputs).items()}
            if input_sha256 is None:
                input_sha256 = closure_digest(inputs)
        entry = self.get(name)
        if entry is None:
            return False
        if (entry.get("input_sha256") != input_sha256 or input_sha256 is None
                or entry.get("config_hash") != config_hash
                or entry.get("crdask_version") != __version__
                or (inputs is not None and entry.get("inputs") != inputs)):
            return False
        reached = entry.get("stage")
        if reached not in STAGES or STAGES.index(reached) < STAGES.index(stage):
            return False
        if stage != STAGES[-1]:
            return True
        return entry.get("status") == "done" and not output_problems(entry.get("outputs"), verify)

    def output_problems(self, name, verify="stat"):
        """Why the recorded outputs of ``name`` are not intact: a list of lines.

        ``[]`` when every output recorded by :meth:`finish` has its size and
        SHA-256 (checked as ``verify`` says, see :meth:`is_current`); one
        line per problem otherwise, e.g. ``'/out/r1_cal.fits: size 2880,
        recorded 31680'``. An entry without recorded outputs has none.
        """
        entry = self.get(name)
        if entry is None:
            return [f"{name}: no ledger entry"]
        return output_problems(entry.get("outputs"), verify)

    def outputs(self, name):
        """``{path: sha256}`` of the outputs ``name`` recorded (empty if none)."""
        entry = self.get(name) or {}
        return {p: r.get("sha256") for p, r in (entry.get("outputs") or {}).items()}

    def closure(self, *, raw=None, masters=None, members=None, files=None):
        """An input closure ``{label: sha256}``, hashed through the cache.

        Parameters
        ----------
        raw : path, optional
            A frame's raw file -> label ``raw``.
        masters : dict, optional
            ``{key: path}`` of the masters used (``bias``, ``dark``,
            ``flat_V``, ``bpm``) -> labels ``master:<key>``, by the master
            file's checksum.
        members : iterable of paths, optional
            A group's member raw files -> ``member:<basename>``.
        files : iterable of paths, optional
            A master's input frames -> ``input:<basename>``.

        Returns
        -------
        dict
            Pass it as ``inputs=`` to :meth:`start` and :meth:`is_current`.
        """
        todo = []
        if raw is not None:
            todo.append(("raw", raw))
        for key, p in sorted((masters or {}).items()):
            if p is not None:
                todo.append((f"master:{key}", p))
        for label, group in (("member", members), ("input", files)):
            for p in group or ():
                todo.append((f"{label}:{os.path.basename(os.fspath(p))}", p))
        # hashlib releases the GIL: a master's few dozen inputs side by side
        digests = thread_map(self.file_sha256, [p for _, p in todo])
        return {label: d for (label, _), d in zip(todo, digests)}

    def reset(self):
        """Remove every entry (``crdask run --restart``); returns how many.

        The checksum cache is kept (it describes the inputs, not the run).
        Leftover temporary files of killed writers are removed too.
        """
        n = 0
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return 0
        for fname in names:
            p = os.path.join(self.path, fname)
            if fname.endswith(".json") and not fname.startswith("."):
                try:
                    os.unlink(p)
                except (FileNotFoundError, IsADirectoryError):
                    continue
                n += 1
        self.cleanup()
        return n

    def cleanup(self):
        """Remove hidden ``.*.tmp`` leftovers of killed writers in ``ledger/`` and
        ``ledger/sha256/``; returns how many. Call only while no writer runs
        (before a run's tasks start)."""
        removed = 0
        for d in (self.path, os.path.join(self.path, _SHA_DIR)):
            try:
                names = os.listdir(d)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for fname in names:
                if is_temp_name(fname):
                    try:
                        os.unlink(os.path.join(d, fname))
                    except (FileNotFoundError, IsADirectoryError):
                        continue
                    removed += 1
        return removed

    def prefetch(self, paths):
        """Hash ``paths`` through the cache on a background thread; returns
        its ``concurrent.futures.Future`` (wait on it before the closures).
        A run does this for the science frames it will submit while the
        masters build (hashing releases the GIL), so that submitting them
        does not wait for every raw file's SHA-256 (0.7 s for 20 frames of
        2048^2). Errors (a file gone) are left for the real call."""
        from concurrent.futures import ThreadPoolExecutor

        def run(todo):
            for p in todo:
                with contextlib.suppress(OSError):
                    self.file_sha256(p)
        pool = ThreadPoolExecutor(1, thread_name_prefix="crdask-sha256")
        fut = pool.submit(run, list(paths))
        pool.shutdown(wait=False)
        return fut

    def file_sha256(self, path):
        """SHA-256 of ``path``, cached in ``ledger/sha256/`` (see module notes)."""
        return file_sha256(path, cache_dir=os.path.join(self.path, _SHA_DIR),
                           write_cache=not self.readonly, memo=self._sha_memo)
