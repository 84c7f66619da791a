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
  list or record once the night is done), so its memory stays flat as the
  number of nights grows.
* Nothing from the archive is unpickled: nights are FITS files and the
  state is JSON.
* Night names come from folder names and are checked to stay inside
  ``OUTPUT`` (no ``..``, no separators); each night's frames are written
  under its folder by ``run_night``, by their file stems.
* Inputs and outputs are local (or shared-filesystem) paths; ``file://``
  URLs are accepted. Object stores (``s3://``) are not supported yet and are
  refused with one line.

Example
-------
>>> from crdask.pipeline.archive import select_nights
>>> select_nights(["20261128", "20261129", "20261130"], "20261129..20261130")
['20261129', '20261130']
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path

from ..io.atomic import atomic_open
from ..io.catalog import list_fits_files
from .config import WorkflowError, config_hash, load_workflow
from .lock import OutputLocked

__all__ = ["run_archive", "find_nights", "select_nights", "night_output", "ArchiveRun", "ArchiveError",
           "STATE_DIR", "SUMMARY_NAME"]

STATE_DIR = "archive"
SUMMARY_NAME = "archive-summary"


class ArchiveError(ValueError):
    """A bad archive root, night range or output root (one line)."""


def _local(path_or_url, what):
    text = os.fspath(path_or_url)
    if "://" in text:
        scheme, rest = text.split("://", 1)
        if scheme != "file":
            raise ArchiveError(f"{what} {text}: {scheme}:// is not supported (yet); use a "
                               "local or shared-filesystem path")
        text = rest
    return Path(text)


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


def find_nights(root, pattern="*", nights=None, today=None):
    """``[(name, folder)]`` of the nights under ``root``: sub-folders whose
    name matches the glob ``pattern`` and that hold at least one FITS file,
    restricted by ``nights`` (see :func:`select_nights`), sorted by name.

    Raises :class:`ArchiveError` if ``root`` is not a folder.
    """
    root = _local(root, "archive")
    if not root.is_dir():
        raise ArchiveError(f"archive {root}: not a folder")
    found = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith(".") \
                and fnmatch.fnmatchcase(entry.name, pattern) and list_fits_files(entry.path):
            found[entry.name] = Path(entry.path)
    return [(n, found[n]) for n in select_nights(found, nights, today)]


def night_output(out_root, name):
    """``out_root/name``, refusing names that would leave ``out_root``."""
    if name in ("", ".", "..") or "/" in name or os.sep in name or name == STATE_DIR:
        raise ArchiveError(f"night {name!r}: not usable as a folder name under {out_root}")
    out = (out_root / name).resolve()
    if out.parent != out_root.resolve():
        raise ArchiveError(f"night {name!r}: would write outside {out_root}")
    return out


def _inputs_digest(folder):
    """SHA-256 over the night's FITS names, sizes and modification times."""
    h = hashlib.sha256()
    for p in sorted(list_fits_files(folder)):
        st = os.stat(p)
        h.update(f"{os.path.basename(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _write_json(path, doc):
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, overwrite=True, mode="w") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


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
                connect_kw=None, today=None):
    """Reduce every night under ``root`` as the workflow template says.

    Parameters
    ----------
    root : path or ``file://`` URL
        One sub-folder per night.
    workflow : path, mapping or Workflow
        The template: everything but ``inputs`` and ``output`` applies to
        every night (``inputs.directory`` becomes the night's folder).
    output : path, optional
        Output root (default: the workflow's ``output``); night ``N`` goes
        to ``output/N``.
    nights, pattern : optional
        Which nights (see :func:`select_nights`) and folder-name glob.
    max_nights_in_flight : int
        Nights reduced at the same time (2); their frame tasks share the
        cluster.
    client : distributed.Client, optional
        Default: one made by :func:`~crdask.pipeline.cluster.connect` with
        ``connect_kw`` (scheduler, scheduler_file, kind, workers, ...) and
        closed at the end.
    restart : bool
        Forget the archive state and each night's ledger (``--restart``).
    log : callable
        ``log(line)``; a night's lines are prefixed with its name.

    Returns
    -------
    ArchiveRun
    """
    from .cluster import connect
    from .night import run_night

    template = load_workflow(workflow) if not hasattr(workflow, "to_dict") else workflow
    out_root = _local(output if output is not None else template.output, "output")
    found = find_nights(root, pattern, nights, today)
    if not found:
        raise ArchiveError(f"archive {root}: no night folder matches pattern {pattern!r}"
                           + (f" and nights {nights!r}" if nights else ""))
    if int(max_nights_in_flight) < 1:
        raise ArchiveError(f"max_nights_in_flight {max_nights_in_flight}: must be >= 1")
    out_root.mkdir(parents=True, exist_ok=True)
    base = template.to_dict()
    h = config_hash(template, "cosmics")
    t0 = time.perf_counter()
    plan = []
    results = {}
    for name, folder in found:
        out = night_output(out_root, name)
        state_path = out_root / STATE_DIR / f"{name}.json"
        digest = _inputs_digest(folder)
        state = None if restart else _read_json(state_path)
        if state and state.get("status") == "done" and state.get("inputs") == digest \
                and state.get("config_hash") == h and (out / "report.json").exists():
            results[name] = {**state["summary"], "status": "skipped", "seconds": 0.0}
            continue
        doc = {**base, "inputs": {**base["inputs"], "directory": str(folder), "files": None},
               "output": str(out)}
        doc["truth"] = None if base.get("truth") is None else str(
            Path(base["truth"].replace("{night}", name)))
        if doc["truth"] and not Path(doc["truth"]).is_dir():
            doc["truth"] = None  # a truth folder only where the simulation left one
        plan.append((name, doc, state_path, digest))
    log(f"crdask: {len(found)} night(s) under {root}: {len(plan)} to reduce, "
        f"{len(found) - len(plan)} finished already")

    handle = None
    if plan and client is None:
        handle = connect(log=log, ntasks=10**6, **(connect_kw or {}))
        client = handle.client
    lock = threading.Lock()

    def one(item):
        name, doc, state_path, digest = item
        t = time.perf_counter()

        def night_log(line, _name=name):
            with lock:
                log(f"[{_name}] {line}")
        try:
            result = run_night(doc, client=client, restart=restart, log=night_log)
        except OutputLocked as e:
            night_log(str(e))
            return {"night": name, "status": "in use", "exit_code": 0,
                    "error": str(e), "seconds": round(time.perf_counter() - t, 3)}
        except (WorkflowError, OSError) as e:
            night_log(f"error: {e}")
            return {"night": name, "status": "failed", "exit_code": 1,
                    "error": str(e).splitlines()[0],
                    "seconds": round(time.perf_counter() - t, 3)}
        summary = _night_summary(name, result, time.perf_counter() - t)
        del result  # only the summary stays in the client's memory
        _write_json(state_path, {"status": "done" if summary["exit_code"] == 0
                                 else "set aside", "inputs": digest, "config_hash": h,
                                 "summary": summary})
        night_log(f"{summary['reduced']} reduced, {summary['skipped']} already done, "
                  f"{summary['failures']} set aside, in {summary['seconds']:.1f} s")
        return summary

    try:
        with ThreadPoolExecutor(max_workers=int(max_nights_in_flight),
                                thread_name_prefix="crdask-night") as pool:
            for summary in pool.map(one, plan):
                results[summary["night"]] = summary
    finally:
        if handle is not None:
            handle.close()
    summary = _summary(results, root, out_root, time.perf_counter() - t0)
    return ArchiveRun(summary, _write_summary(out_root, summary))


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
    _write_json(paths["json"], summary)
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
