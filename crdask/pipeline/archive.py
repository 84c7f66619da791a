"""Archive mode: many nights, one cluster, bounded concurrency (layer 4).

``run_archive(ROOT, workflow)`` finds the nights under ``ROOT`` (one folder
per night, matched by a glob ``pattern``, default ``*``, holding FITS
files), and reduces each with :func:`~crdask.pipeline.night.run_night` on
one shared Dask client, at most ``max_nights_in_flight`` nights at a time.
Every night gets its own output folder ``OUTPUT/<night>`` with its own
ledger, lock and report; ``OUTPUT/archive/<night>.json`` records a finished
night (its input listing and settings), so a rerun skips nights that are
finished and unchanged, resumes the others from their ledgers, and retries
nights that had frames set aside. ``OUTPUT/archive-summary.json`` and
``.md`` sum up every night: status, frames, failures, CR statistics.

* The client keeps only a small summary per night (never a night's frame
  list or record once the night is done), and its allocator is held to
  :data:`MALLOC_ARENAS` arenas (:func:`limit_malloc_arenas`), so its memory
  stays flat as the number of nights grows.
* Nothing from the archive is unpickled: nights are FITS files and the
  state is JSON.
* Night names come from folder names and are checked to stay inside
  ``OUTPUT`` (no ``..``, no separators); each night's frames are written
  under its folder by ``run_night``, by their file stems.
* Inputs and outputs may be local (or shared-filesystem) paths, ``file://``
  URLs, or fsspec URLs (``s3://`` with ``pip install 'crdask[s3]'``): a
  night behind a URL is staged to a local scratch folder (checksummed, the
  source only read), reduced there with the usual ledger and lock, and its
  outputs uploaded object by object (temporary key, read back, moved) with
  the night's marker ``archive/<night>.json`` written last
  (:mod:`crdask.pipeline.archive_store`, :mod:`crdask.io.remote`).
  Storage options and secret environment values never appear in the log,
  the reports or the summary.

Example
-------
>>> from crdask.pipeline.archive import select_nights
>>> select_nights(["20261128", "20261129", "20261130"], "20261129..20261130")
['20261129', '20261130']
"""

from __future__ import annotations

import importlib
import os
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from datetime import date, timedelta
from pathlib import Path

import dask
import yaml

from ..io.atomic import atomic_open
from ..io.remote import is_url, redact, scrub
from .archive_store import (STATE_DIR, archive_inputs, archive_outputs, default_scratch,
                            write_json)
from .config import WorkflowError, config_hash, load_workflow
from .lock import OutputLocked

__all__ = ["run_archive", "find_nights", "select_nights", "night_output", "ArchiveRun",
           "ArchiveError", "release_memory", "limit_malloc_arenas", "MALLOC_ARENAS",
           "STATE_DIR", "SUMMARY_NAME"]

SUMMARY_NAME = "archive-summary"
#: glibc malloc arenas the archive's client process may use (see
#: :func:`limit_malloc_arenas`).
MALLOC_ARENAS = 2


class ArchiveError(ValueError):
    """A bad archive root, night range or output root (one line)."""


def select_nights(names, nights=None, today=None):
    """The names in ``names`` that ``nights`` selects, sorted.

    ``nights``: None (all), ``"FROM..TO"`` (inclusive, by name: ``YYYYMMDD``
    names sort by date; either end may be empty), ``"yesterday"`` /
    ``"today"`` (the date as ``YYYYMMDD``, local time), or names separated
    by commas.

    Example
    -------
    >>> select_nights(["a", "b", "c"], "b..")
    ['b', 'c']
    >>> select_nights(["20240102"], "yesterday", today=date(2024, 1, 3))
    ['20240102']
    """
    names = sorted(names)
    if nights is None or str(nights).strip() in ("", "all"):
        return names
    text = str(nights).strip()
    today = today or date.today()
    words = {"yesterday": (today - timedelta(days=1)).strftime("%Y%m%d"),
             "today": today.strftime("%Y%m%d")}
    if ".." in text:
        lo, hi = (words.get(p.strip(), p.strip()) for p in text.split("..", 1))
        return [n for n in names if (not lo or n >= lo) and (not hi or n <= hi)]
    wanted = {words.get(p.strip(), p.strip()) for p in text.split(",") if p.strip()}
    return [n for n in names if n in wanted]


def find_nights(root, pattern="*", nights=None, today=None, *, storage_options=None):
    """``[(name, folder)]`` of the nights under ``root``: sub-folders whose
    name matches the glob ``pattern`` and that hold at least one FITS file,
    restricted by ``nights`` (see :func:`select_nights`), sorted by name.
    ``root`` may be an fsspec URL (``folder`` is then the night's URL).

    Raises :class:`ArchiveError` if ``root`` is not a folder.
    """
    return _find(archive_inputs(root, storage_options), root, pattern, nights, today)


def _find(inputs, root, pattern, nights, today):
    try:
        found = inputs.nights(pattern)
    except NotADirectoryError as e:
        raise ArchiveError(str(e)) from None
    return [(n, found[n]) for n in select_nights(found, nights, today)]


def night_output(out_root, name):
    """``out_root/name``, refusing names that would leave ``out_root``."""
    if name in ("", ".", "..") or "/" in name or os.sep in name or name == STATE_DIR:
        raise ArchiveError(f"night {name!r}: not usable as a folder name under {out_root}")
    out = (out_root / name).resolve()
    if out.parent != out_root.resolve():
        raise ArchiveError(f"night {name!r}: would write outside {out_root}")
    return out


def _night_summary(name, result, seconds):
    """The few numbers the archive keeps of a finished night."""
    rec = result.record
    sci = [f for f in rec["frames"] if f.get("type") == "science"]
    cr = [f["cr_pixels"] for f in sci if f.get("cr_pixels") is not None]
    summary = {"night": name, "status": "done" if result.exit_code == 0 else "set aside",
               "exit_code": result.exit_code, "frames": len(rec["frames"]),
               "science": len(sci),
               "reduced": sum(f["status"] == "done" for f in sci),
               "skipped": sum(f["status"] == "skipped" for f in sci),
               "failures": len(rec["failures"]),
               "cr_pixels_total": int(sum(cr)),
               "cr_pixels_median": float(sorted(cr)[len(cr) // 2]) if cr else None,
               "seconds": round(seconds, 3)}
    if rec.get("cr_summary"):
        c = rec["cr_summary"]
        summary.update(recall=c.get("recall"), false_positives=c.get("false_positives"))
    return summary


class ArchiveRun:
    """Result of :func:`run_archive`: ``summary`` (also
    ``archive-summary.json``), ``paths`` and ``exit_code`` (0 every night
    done or being reduced by another run, 2 some night had frames set aside
    or failed)."""

    def __init__(self, summary, paths):
        self.summary = summary
        self.paths = paths

    @property
    def exit_code(self):
        ok = ("done", "skipped", "in use")
        return 0 if all(n["status"] in ok for n in self.summary["nights"]) else 2


def run_archive(root, workflow, *, output=None, nights=None, pattern="*",
                max_nights_in_flight=2, client=None, restart=False, log=print,
                connect_kw=None, today=None, storage_options=None, scratch=None,
                keep_scratch=False):
    """Reduce every night under ``root`` as the workflow template says.

    Parameters
    ----------
    root : path, ``file://`` or fsspec URL (``s3://bucket/raw``)
        One sub-folder (prefix) per night.
    workflow : path, mapping or Workflow
        The template: everything but ``inputs`` and ``output`` applies to
        every night (``inputs.directory`` becomes the night's folder).
    output : path or URL, optional
        Output root (default: the workflow's ``output``, which may be a
        URL); night ``N`` goes to ``output/N``.
    nights, pattern : optional
        Which nights (see :func:`select_nights`) and folder-name glob.
    max_nights_in_flight : int
        Nights reduced at the same time (2); their frame tasks share the
        cluster.
    client : distributed.Client, optional
        Default: one made by :func:`~crdask.pipeline.cluster.connect` with
        ``connect_kw`` (scheduler, scheduler_file, kind, workers, ...) and
        closed at the end; a LocalCluster is started in a thread while the
        first nights are catalogued and their masters built.
    restart : bool
        Forget the archive state and each night's ledger (``--restart``).
    log : callable
        ``log(line)``; a night's lines are prefixed with its name.
    storage_options : dict, optional
        fsspec options for URL inputs and outputs (``endpoint_url``,
        ``key``, ``secret``, ...); never logged.
    scratch : path, optional
        Local folder for staged nights and their ledgers when the archive or
        the output is a URL (default :func:`~crdask.pipeline.archive_store.default_scratch`);
        on a cluster it must be on a filesystem the workers share.
    keep_scratch : bool
        Keep a night's staged inputs and local outputs after they are
        uploaded (default: removed once the night is done and published).

    Returns
    -------
    ArchiveRun
    """
    from .cluster import connect
    from .night import run_night

    limit_malloc_arenas()   # before this run's threads get arenas of their own
    raw_log = log

    def log(line):  # noqa: F811 - every line is scrubbed of secrets
        raw_log(scrub(line, storage_options))

    template = load_workflow(workflow) if not hasattr(workflow, "to_dict") else workflow
    output = output if output is not None else _template_output(workflow, template)
    remote = is_url(root) or is_url(output)
    scratch = Path(scratch) if scratch is not None else default_scratch(output)
    inputs = archive_inputs(root, storage_options, scratch)
    outputs = archive_outputs(output, storage_options, scratch)
    out_root = outputs.local_root
    found = _find(inputs, root, pattern, nights, today)
    if not found:
        raise ArchiveError(f"archive {redact(root)}: no night folder matches pattern "
                           f"{pattern!r}" + (f" and nights {nights!r}" if nights else ""))
    if int(max_nights_in_flight) < 1:
        raise ArchiveError(f"max_nights_in_flight {max_nights_in_flight}: must be >= 1")
    out_root.mkdir(parents=True, exist_ok=True)
    base = template.to_dict()
    h = config_hash(template, "cosmics")
    t0 = time.perf_counter()
    plan = []
    results = {}
    for name, _ in found:
        night_output(out_root, name)
        digest = inputs.digest(name)
        state = None if restart else outputs.state(name)
        if state and state.get("status") == "done" and state.get("inputs") == digest \
                and state.get("config_hash") == h and outputs.finished(name, state):
            results[name] = {**state["summary"], "status": "skipped", "seconds": 0.0}
            continue
        plan.append((name, digest))
    log(f"crdask: {len(found)} night(s) under {redact(root)}: {len(plan)} to reduce, "
        f"{len(found) - len(plan)} finished already")

    def night_doc(name, folder):
        doc = {**base, "inputs": {**base["inputs"], "directory": str(folder), "files": None},
               "output": str(night_output(out_root, name))}
        doc["truth"] = None if base.get("truth") is None else str(
            Path(base["truth"].replace("{night}", name)))
        if doc["truth"] and not Path(doc["truth"]).is_dir():
            doc["truth"] = None  # a truth folder only where the simulation left one
        return doc

    handle = starting = None
    kw = dict(connect_kw or {})
    if plan and client is None and _local_kind(kw):
        # A LocalCluster of our own starts in a thread while the first nights
        # are catalogued and their masters built (on threads here), and its
        # workers import the frame task's modules before the first task
        # comes: ~7 s of cluster start and ~4 s of imports off the critical
        # path (measured at load ~10). run_night waits for it after the masters.
        starting = _start_local(kw, log)
        client = starting["client"]
    elif plan and client is None:
        handle = connect(log=log, ntasks=10**6, **kw)
        client = handle.client
        threading.Thread(target=_warm_workers, args=(client,), daemon=True,
                         name="crdask-warm-workers").start()
    lock = threading.Lock()

    def one(item):
        name, digest = item
        t = time.perf_counter()

        def night_log(line, _name=name):
            with lock:
                log(f"[{_name}] {line}")
        try:
            if outputs.remote:
                outputs.invalidate(name)   # its outputs are about to change
            folder = inputs.stage(name)
            result = run_night(night_doc(name, folder), client=client, restart=restart,
                               log=night_log)
            summary = _night_summary(name, result, time.perf_counter() - t)
            del result  # only the summary stays in the client's memory
            outputs.commit(name, {"status": "done" if summary["exit_code"] == 0
                                  else "set aside", "inputs": digest, "config_hash": h,
                                  "summary": summary})
        except OutputLocked as e:
            night_log(str(e))
            return {"night": name, "status": "in use", "exit_code": 0,
                    "error": str(e), "seconds": round(time.perf_counter() - t, 3)}
        except (WorkflowError, OSError) as e:
            night_log(f"error: {e}")
            return {"night": name, "status": "failed", "exit_code": 1,
                    "error": scrub(str(e).splitlines()[0], storage_options),
                    "seconds": round(time.perf_counter() - t, 3)}
        if remote and summary["exit_code"] == 0 and not keep_scratch:
            inputs.release(name)
            if outputs.remote:
                shutil.rmtree(out_root / name, ignore_errors=True)
        release_memory()
        night_log(f"{summary['reduced']} reduced, {summary['skipped']} already done, "
                  f"{summary['failures']} set aside, in {summary['seconds']:.1f} s")
        return summary

    # On a LocalCluster of our own, each night's masters (a small Dask graph
    # over a few calibration frames) run on threads in this process, as
    # run_night does for its own LocalCluster: shipping strips between worker
    # processes made them 20-39 s per 512^2 night against 4-15 s (measured at
    # load ~16). Set once around all nights: dask.config.set is process-wide,
    # so per-thread nesting would race (and that client is not Dask's default,
    # see _start_local). Frame tasks still go to the workers.
    own_local = starting is not None
    try:
        with ThreadPoolExecutor(max_workers=int(max_nights_in_flight),
                                thread_name_prefix="crdask-night") as pool, \
                (dask.config.set(scheduler="threads") if own_local else nullcontext()):
            for summary in pool.map(one, plan):
                results[summary["night"]] = summary
    finally:
        if starting is not None:
            try:
                handle = starting["handle"].result()
            except Exception:  # noqa: BLE001 - the nights raised it already
                handle = None
        if handle is not None:
            handle.close()
    summary = _summary(results, inputs.label, outputs.label, time.perf_counter() - t0)
    paths = _write_summary(out_root, summary)
    outputs.publish_summary(paths)
    return ArchiveRun(summary, paths)


def release_memory():
    """Give the memory a finished night freed back to the system.

    A night's arrays (masters on threads, previews, catalogue) are freed by
    Python, but glibc keeps the pages in its per-thread arenas, so the
    client's resident size would creep up night after night; ``malloc_trim``
    returns them (Linux/glibc only; elsewhere a no-op)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def limit_malloc_arenas(n=MALLOC_ARENAS):
    """Hold glibc's malloc to ``n`` arenas in this process (``mallopt(M_ARENA_MAX)``).

    Why: the archive's client process has ~35 threads (the scheduler's event
    loop and comms, night threads, the masters' thread pools, a previews
    thread per night) and glibc gives threads up to 8 arenas per core. Each
    night's short-lived allocations land in whichever arenas its threads
    get, and small long-lived objects pin pages in every one of them, so the
    resident size climbed from night to night even with :func:`release_memory`
    (measured, 12 nights x 10 frames of 512^2: 328 -> 441 MiB resident,
    peak 459 -> 540 MiB, with Python-traced memory flat at ~80 MiB; with 2
    arenas 330-356 MiB, peak 401 -> 417 MiB by night 3 and flat after).
    Arenas made before the call are kept; an explicit ``MALLOC_ARENA_MAX``
    in the environment wins. Linux/glibc only; elsewhere a no-op.

    Returns
    -------
    int or None
        The limit set, or None when nothing was changed.

    Example
    -------
    >>> limit_malloc_arenas() in (MALLOC_ARENAS, None)
    True
    """
    import ctypes

    if os.environ.get("MALLOC_ARENA_MAX"):
        return None
    try:
        ok = ctypes.CDLL("libc.so.6").mallopt(-8, int(n))   # -8: M_ARENA_MAX
    except (OSError, AttributeError):
        return None
    return int(n) if ok == 1 else None


def _local_kind(connect_kw):
    """Whether :func:`~crdask.pipeline.cluster.connect` with these
    arguments starts a LocalCluster (no scheduler given, kind local)."""
    return (connect_kw.get("scheduler") is None and connect_kw.get("scheduler_file") is None
            and connect_kw.get("kind") in (None, "local"))


def _start_local(connect_kw, log):
    """Start the archive's LocalCluster in a thread.

    Returns ``{"handle": Future of the Cluster, "client": Future of its
    client}``; the client is resolved as soon as the cluster is up, then
    the workers are warmed up (:func:`_warm_workers`). Its client is not made
    Dask's default scheduler: it is born while nights compute their masters
    on threads, and would otherwise take over their ``dask.compute``."""
    from .cluster import connect

    handle, client = Future(), Future()

    def start():
        try:
            h = connect(log=log, ntasks=10**6, set_as_default=False, **connect_kw)
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits
            handle.set_exception(e)
            client.set_exception(e)
            return
        handle.set_result(h)
        client.set_result(h.client)
        _warm_workers(h.client)

    threading.Thread(target=start, daemon=True, name="crdask-start-cluster").start()
    return {"handle": handle, "client": client}


def _warm_workers(client):
    """Import the frame task's modules on every worker (best effort: a
    worker that fails here fails its first task with a real error)."""
    try:
        client.run(_import_frame_task)
    except Exception:  # noqa: BLE001 - warm-up only
        pass


def _import_frame_task():
    importlib.import_module("crdask.pipeline.frame_task")   # returns None: nothing to ship back


def _template_output(workflow, template):
    """The template's ``output`` as written when it is a URL (the workflow
    loader makes paths absolute, which would mangle ``s3://``)."""
    raw = None
    if isinstance(workflow, (str, os.PathLike)) and os.path.isfile(workflow):
        try:
            raw = (yaml.safe_load(Path(workflow).read_text()) or {}).get("output")
        except (OSError, yaml.YAMLError):
            raw = None
    elif isinstance(workflow, dict):
        raw = workflow.get("output")
    return raw if isinstance(raw, str) and is_url(raw) else template.output


def _summary(results, root, out_root, seconds):
    nights = [results[n] for n in sorted(results)]
    count = {s: sum(n["status"] == s for n in nights)
             for s in ("done", "skipped", "set aside", "failed", "in use")}
    return {"archive": str(root), "output": str(out_root), "seconds": round(seconds, 3),
            "nights_total": len(nights), **{f"nights_{k.replace(' ', '_')}": v
                                            for k, v in count.items()},
            "science_frames": sum(n.get("science", 0) for n in nights),
            "failures": sum(n.get("failures", 0) for n in nights),
            "nights": nights}


def _write_summary(out_root, summary):
    paths = {"json": out_root / f"{SUMMARY_NAME}.json", "md": out_root / f"{SUMMARY_NAME}.md"}
    write_json(paths["json"], summary)
    lines = [f"# crdask archive: {summary['archive']}", "",
             f"{summary['nights_total']} night(s): {summary['nights_done']} reduced, "
             f"{summary['nights_skipped']} finished before, {summary['nights_set_aside']} with "
             f"frames set aside, {summary['nights_failed']} failed, {summary['nights_in_use']} "
             f"in use by another run; {summary['science_frames']} science frames, "
             f"{summary['failures']} set aside; {summary['seconds']:.1f} s.", "",
             "| night | status | science | reduced | set aside | CR pixels | median CR px "
             "| recall | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n in summary["nights"]:
        rec = n.get("recall")
        lines.append(f"| {n['night']} | {n['status']} | {n.get('science', '')} | "
                     f"{n.get('reduced', '')} | {n.get('failures', '')} | "
                     f"{n.get('cr_pixels_total', '')} | {n.get('cr_pixels_median') or ''} | "
                     f"{'' if rec is None else f'{rec:.3f}'} | {n.get('seconds', '')} |")
    with atomic_open(paths["md"], overwrite=True, mode="w") as fh:
        fh.write("\n".join(lines) + "\n")
    return paths
