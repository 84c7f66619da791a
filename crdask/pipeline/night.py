"""``run_night``: a whole night from a workflow file, resumable (layer 4).

Plan -> masters -> one task per science frame -> one task per exposure
group (group methods) -> report.

* Masters (:mod:`crdask.pipeline.masters_step`) are built once and reused
  while their inputs and settings are unchanged.
* Each science frame is one task (:mod:`crdask.pipeline.frame_task`):
  calibrate, keep the calibrated frame in ``OUT/intermediate.zarr``, clean it
  with the workflow's ``frame`` method and write ``OUT/<stem>_cal.fits``.
* With a ``group`` method (pair differencing, Median-Minimum), the science
  frames are split into exposure groups (:mod:`crdask.pipeline.groups`);
  members are only calibrated by their frame tasks, and one task per group
  (:mod:`crdask.pipeline.group_task`) cleans them together and writes the
  members and the group's products. Frames no group can take are cleaned
  with the fallback frame method, and the report says so.
* A product counts as done only while everything it was computed from is
  unchanged: the raw file, the master files it was calibrated with
  (checksums), the settings hash and the crdask version (all in its ledger
  entry); a group's entry covers all of its members.
* Tasks never raise: a bad frame or group is a ``failed`` entry with a
  one-line reason and the night goes on. Pixels never pass through the
  scheduler: tasks read and write files (a shared filesystem on a cluster).
"""

import contextlib
import os
import platform
import shutil
import sys
import time
from concurrent.futures import Future
from datetime import datetime, timezone
from pathlib import Path

import dask
import numpy as np

from .._version import __version__
from ..cosmic.registry import get_method
from ..io.catalog import build_catalog
from ..io.atomic import check_output_root, is_inside
from ..io.checksums import closure_digest
from ..io.intermediates import IntermediateStore
from ..io.naming import check_stems
from .calibration import check_frames
from .cluster import TASK_RESOURCE, ClusterError, connect
from .config import Workflow, config_hash, load_workflow
from .arcs_step import arc_summaries, submit_arcs
from .frame_task import (calibrated_frame, calibrated_output, frame_stem,
                         process_science_frame, warm_workers)
from .group_task import group_entry, group_inputs, process_group
from .groups import group_exposures
from .ledger import Ledger
from .lock import OutputLock
from .masters_step import calibration_frames, masters_current, masters_step
from .process_tuning import night_process
from .quality import QUALITY_KEYS, cr_summary
from .report_previews import LivePreviews
from .spectro_masters import frame_inputs, missing_flat_warnings, night_labels, setup_label

__all__ = ["run_night", "plan_night", "night_inputs", "NightRun", "frame_inputs"]

def _now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class NightRun:
    """Result of :func:`run_night`: the run record (also ``report.json``),
    report paths and the exit code (0 all good, 2 frames set aside or failed)."""

    def __init__(self, record, report_paths):
        self.record = record
        self.report_paths = report_paths

    @property
    def exit_code(self):
        bad = [f for f in self.record["frames"] if f["status"] in ("failed", "set aside")]
        return 2 if bad or self.record["failures"] else 0


# --- planning ---------------------------------------------------------------------

def _current_master_paths(wf, ledger, catalog):
    if not wf.masters["enabled"] or not masters_current(wf, ledger,
                                                         calibration_frames(catalog)):
        return None
    return dict((ledger.get("masters") or {}).get("info", {}).get("paths", {}))


def night_inputs(wf):
    """The night's input files, checked before anything is written: the
    output folder must not be an input folder or hold inputs, files inside
    the output folder are never inputs (a rerun must not catalogue its own
    outputs), and no two inputs may share an output stem.

    Raises ``WorkflowError`` (missing folder, empty glob),
    ``UnsafeOutputError`` or ``StemCollisionError``, each one line naming
    the workflow file and key or the files.
    """
    files = [f for f in wf.input_files() if not is_inside(f, wf.output)]
    where = [wf.inputs.directory] if wf.inputs.directory is not None else files
    check_output_root(wf.output, where, what=f"{wf.source}: output")
    check_stems(files)
    return files


def catalog_warnings(catalog):
    """One line per doubtful header (``FILE: note``) and per set of raw
    files with the same bytes."""
    lines = []
    for f in catalog.frames:
        lines += [f"{f.path}: {w}" for w in f.warnings
                  if not w.startswith("duplicate raw file:")]
    for paths in catalog.duplicates:
        lines.append(" and ".join(paths) + ": duplicate raw files (same bytes); "
                     "each is reduced")
    return lines


def plan_night(wf, ledger=None):
    """What a run would do, without doing it (nothing is written).

    Returns a dict: ``catalog``, ``groups`` (calibration group label ->
    count), ``science`` (list of dicts: file, state 'done' | 'todo' |
    'retry' | 'changed' | 'resume from STAGE', exposure ``group``),
    ``exposure_groups`` (label -> member files) and ``masters`` ('reuse' |
    'build' | 'none').
    """
    catalog = build_catalog(night_inputs(wf), wf.keymap(), hdu=wf.inputs.hdu)
    ledger = ledger or Ledger(wf.output, readonly=True)
    h_all = config_hash(wf, "cosmics")
    calib = calibration_frames(catalog)
    labels = night_labels(calib, wf.keymap())
    master_paths = _current_master_paths(wf, ledger, catalog)
    if not wf.masters["enabled"] or not calib:
        masters = "none"
    else:
        masters = "reuse" if master_paths is not None else "build"
    infos = [i for i in catalog.science_like() if not i.error]
    membership = {}
    exposure_groups = {}
    if wf.cosmics.enabled and wf.cosmics.kind == "group":
        need = get_method(wf.cosmics.method).min_members
        for g in group_exposures(infos, wf.cosmics.grouping):
            exposure_groups[g.label] = [os.path.basename(p) for p in g.paths]
            if len(g.members) >= need:
                for m in g.members:
                    membership[m.path] = g.label
    science = []
    for info in infos:
        stem = frame_stem(info.path)
        entry = ledger.get(stem)
        current = (master_paths is not None or masters == "none") and entry is not None \
            and ledger.is_current(stem, None, h_all, inputs=frame_inputs(
                ledger, info.path, setup_label(labels, info), master_paths or {}))
        if entry is None:
            state = "todo"
        elif entry.get("status") == "failed":
            state = "retry"
        elif current:
            state = "done"
        elif entry.get("status") == "done":
            state = "changed"
        else:
            state = f"resume from {entry.get('stage') or 'start'}"
        science.append({"file": info.path, "state": state, "filter": info.filter,
                        "setup": info.setup, "object": info.object,
                        "group": membership.get(info.path)})
    groups = {g.label(): g.count for g in catalog.groups()}
    return {"catalog": catalog, "groups": groups, "science": science,
            "exposure_groups": exposure_groups, "masters": masters, "labels": labels}


# --- the night ------------------------------------------------------------------------

def _summary(info, status, **kw):
    s = {"file": os.path.basename(info.path), "status": status, "stage": None,
         "seconds": 0.0, "cr_pixels": None, "output": None, "error": None}
    s.update(kw)
    return s


def _skipped(ledger, wf, info):
    einfo = (ledger.get(frame_stem(info.path)) or {}).get("info") or {}
    return _summary(info, "skipped", stage="written", cr_pixels=einfo.get("cr_pixels"),
                    output=calibrated_output(wf.output, info.path),
                    **{k: einfo[k] for k in (*QUALITY_KEYS, "qa") if k in einfo})


def _submit_science(client, wf, ledger, infos, master_paths, threads, resources, labels):
    """Submit the frame and group tasks. Returns (futures -> what, skipped
    frame summaries, skipped groups)."""
    wf_dict = wf.to_dict()
    h_all = config_hash(wf, "cosmics")
    cos = wf.cosmics
    submit = dict(pure=False, retries=2, resources=resources)
    futures, skipped, skipped_groups = {}, [], []
    inputs = {i.path: frame_inputs(ledger, i.path, setup_label(labels, i), master_paths)
              for i in infos}

    def frame(info, **kw):
        key = f"frame-{frame_stem(info.path)}-{closure_digest(inputs[info.path])[:12]}"
        return client.submit(process_science_frame, info.path, wf_dict, master_paths,
                             info.exptime, info.filter, inputs=inputs[info.path],
                             threads=threads, key=key + ("-cal" if kw else ""),
                             label=setup_label(labels, info), setup_name=info.setup, **kw,
                             **submit)

    def done(info):
        return ledger.is_current(frame_stem(info.path), None, h_all, inputs=inputs[info.path])

    singles = list(infos)
    if cos.enabled and cos.kind == "group":
        need = get_method(cos.method).min_members
        singles = []
        for g in group_exposures(infos, cos.grouping):
            if len(g.members) < need:
                singles.extend(g.members)
                continue
            members = [{"path": m.path, "exptime": m.exptime, "filter": m.filter,
                        "label": setup_label(labels, m), "setup": m.setup,
                        "inputs": inputs[m.path]} for m in g.members]
            sha = closure_digest(group_inputs(members))
            if ledger.is_current(group_entry(g.label), sha, h_all,
                                 inputs=group_inputs(members)) \
                    and all(done(m) for m in g.members):
                skipped.extend({**_skipped(ledger, wf, m), "cosmics_group": g.label}
                               for m in g.members)
                info = (ledger.get(group_entry(g.label)) or {}).get("info") or {}
                skipped_groups.append({"label": g.label, "status": "skipped", "error": None,
                                       "method": cos.method,
                                       "products": info.get("products", {}),
                                       "members": [os.path.basename(m.path)
                                                   for m in g.members]})
                continue
            cal = [frame(m, stop_after="calibrated") for m in g.members]
            fut = client.submit(process_group, g.label, members, wf_dict, master_paths, sha,
                                cal, threads=threads, key=f"group-{g.label}-{sha[:12]}",
                                **submit)
            futures[fut] = ("group", g)
    for info in singles:
        if cos.enabled and cos.kind == "group" and cos.fallback is None:
            need = get_method(cos.method).min_members
            skipped.append(_summary(info, "failed", error=(
                f"{info.path}: in no exposure group of >= {need} for {cos.method} "
                "(steps.cosmics.grouping) and no fallback method is set")))
            continue
        if done(info):
            skipped.append(_skipped(ledger, wf, info))
        else:
            futures[frame(info)] = ("frame", info)
    return futures, skipped, skipped_groups


def _collect(futures, skipped, skipped_groups, progress, log, live, loop=None):
    """Wait for the tasks; one summary per frame, and one per group."""
    from distributed import as_completed

    infos = {}
    for what, thing in futures.values():
        for m in (thing.members if what == "group" else (thing,)):
            infos[os.path.basename(m.path)] = m
    results, groups = list(skipped), list(skipped_groups)
    total = len(infos) + len(skipped)
    n = len(skipped)
    for fut in as_completed(list(futures), loop=loop):  # loop: a non-default client's
        what, thing = futures[fut]
        try:
            res = fut.result()
        except Exception as e:  # the task itself died (e.g. its worker, three times)
            err = f"{getattr(thing, 'label', None) or thing.path}: {type(e).__name__}: " \
                  f"{e}".splitlines()[0]
            res = {"status": "failed", "error": err, "members": []} if what == "group" \
                else _summary(thing, "failed", error=err)
        fut.release()
        if what == "group":
            seen = {s["file"] for s in res["members"]}
            res["members"] += [_summary(m, "failed", error=res.get("error"))
                               for m in thing.members
                               if os.path.basename(m.path) not in seen]
            groups.append({k: v for k, v in res.items() if k != "members"}
                          | {"label": thing.label,
                             "members": [s["file"] for s in res["members"]]})
            summaries = [{**s, "cosmics_group": thing.label} for s in res["members"]]
        else:
            summaries = [res]
        for s in summaries:
            results.append(s)
            live.frame(s)
            n += 1
            _report_progress(progress, log, n, total, s)
    return results, groups, infos


def run_night(config, client=None, *, restart=False, log=print, progress=None,
              performance_report=None):
    """Reduce a night as the workflow ``config`` says.

    Parameters
    ----------
    config : path, mapping or :class:`~crdask.pipeline.config.Workflow`
    client : distributed.Client or a concurrent.futures.Future of one, optional
        Use this client (a Future: waited for after the masters; default: one
        made by :func:`~crdask.pipeline.cluster.connect` from ``execution``, closed at the end).
    restart : bool
        Forget the ledger and intermediates first.
    log, progress : callables for messages and per-frame progress.
    performance_report : path, optional
        Write distributed's performance report (task stream, profiles,
        bandwidth) of the run to this HTML file.

    Returns
    -------
    NightRun
    """
    wf = config if isinstance(config, Workflow) else load_workflow(config)
    night_inputs(wf)   # a bad folder, glob or output root: one line, nothing created
    # One run at a time per output folder (--restart too): a second run
    # raises OutputLocked, touching nothing (crdask.pipeline.lock).
    with OutputLock(wf.output, command=f"crdask run {wf.source}", log=log), \
            night_process(own_memory=client is None):
        return _reduce(wf, client, restart=restart, log=log, progress=progress,
                       performance_report=performance_report)


def _reduce(wf, client, *, restart, log, progress, performance_report):
    """The body of :func:`run_night`, under the output folder's lock."""
    from .report import write_report

    t0, started = time.perf_counter(), _now()
    out = Path(wf.output)
    out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(out)
    if restart:
        ledger.reset()
        shutil.rmtree(out / "intermediate.zarr", ignore_errors=True)
    _remove_leftovers(out)
    plan = plan_night(wf, ledger)
    catalog = plan["catalog"]
    hashed = ledger.prefetch(s["file"] for s in plan["science"] if s["state"] != "done")
    warnings = catalog_warnings(catalog)
    for line in warnings:
        log(f"crdask: warning: {line}")
    failures, frames = [], []
    for info in catalog.frames:
        if info.error:
            failures.append({"file": os.path.basename(info.path), "reason": info.error})
            frames.append({"file": os.path.basename(info.path), "type": "unreadable",
                           "group": None, "status": "set aside", "error": info.error})
    own = client is None
    handle = None
    if own:
        ex = wf.execution
        todo = [s for s in plan["science"] if s["state"] != "done"]
        handle = connect(scheduler=ex.scheduler, scheduler_file=ex.scheduler_file,
                         workers=ex.workers, threads_per_worker=ex.threads_per_worker,
                         memory_limit=ex.memory_limit, ntasks=max(1, len(todo)), log=log,
                         kind=ex.cluster, adapt=ex.adapt, processes=ex.processes)
        client, threads, resources = handle.client, handle.threads, handle.resources
    else:
        threads, resources = int(wf.execution.threads_per_worker or 1), None
    local = handle is not None and handle.kind == "local"
    starting = isinstance(client, Future)   # archive mode: its cluster is still starting
    scheduler = None if starting else _scheduler_info(client, local, threads, log)
    groups = []
    master_info = {}
    live = LivePreviews(out, before=_before_cleaning(wf, catalog, plan["labels"]))
    stack = contextlib.ExitStack()
    warm = []
    try:
        if performance_report is not None:
            import importlib.util
            if importlib.util.find_spec("bokeh") is None:   # distributed draws with it
                raise ClusterError("--performance-report needs bokeh: pip install "
                                   "'crdask[diagnostics]'")
            from distributed import performance_report as perf_report
            stack.enter_context(perf_report(filename=os.fspath(performance_report)))
        # Masters are one Dask graph over a few dozen frames: on a cluster of
        # our own, the threaded scheduler in this process avoids shipping
        # strips between worker processes (0.4 s instead of 3-8 s measured on
        # a small night); on an external cluster the graph runs there.
        # imports and kernels while the masters build (an archive's cluster
        # that is still starting warms its workers itself)
        warm = [] if starting else warm_workers(client, wf.to_dict())
        with dask.config.set(scheduler="threads") if local else contextlib.nullcontext():
            master_info, master_paths, rejected = masters_step(wf, ledger, catalog, log)
        if starting:
            client = client.result()
            scheduler = _scheduler_info(client, local, threads, log)
        live.masters(master_paths)
        for line in missing_flat_warnings(wf, plan["labels"], master_paths,
                                          [i for i in catalog.science_like() if not i.error]):
            log(f"crdask: warning: {line}")
            warnings.append(line)
        failures += [{"file": os.path.basename(p), "reason": why} for p, why in rejected]
        why_rejected = dict(rejected)
        arcs = [i for i in catalog.frames if i.frame_type == "arc" and not i.error] \
            if wf.arcs["enabled"] else []
        for info in catalog.frames:
            if info.error or info.science_like or info in arcs:
                continue
            frames.append({"file": os.path.basename(info.path), "type": info.frame_type,
                           "group": _group_label(info),
                           "status": "set aside" if info.path in why_rejected
                           else "used" if info.frame_type in ("bias", "dark", "flat")
                           else "not reduced",
                           "error": why_rejected.get(info.path)})
        science_rejected = []
        sci_infos = check_frames([i for i in catalog.science_like() if not i.error],
                                 "science", wf.calib_setup(), science_rejected)
        for path, why in science_rejected:
            failures.append({"file": os.path.basename(path), "reason": why})
            frames.append({"file": os.path.basename(path), "type": "science", "group": None,
                           "status": "set aside", "error": why})
        hashed.result()   # the closures below then read the checksum cache
        futures, skipped, skipped_groups = _submit_science(
            client, wf, ledger, sci_infos, master_paths, threads, resources, plan["labels"])
        arc_futures = submit_arcs(client, wf, ledger, arcs, master_paths, threads,
                                  resources, plan["labels"])
        results, groups, _ = _collect(futures, skipped, skipped_groups, progress, log, live,
                                      client.loop)
        for res in arc_summaries(client, arcs, arc_futures, log, _group_label):
            if res["status"] in ("failed", "set aside"):
                failures.append({"file": res["file"], "reason": res["error"]})
            frames.append(res)
        failures += [{"file": f"group {g['label']}", "reason": g["error"]} for g in groups
                     if g.get("status") == "failed"]
        by_name = {os.path.basename(i.path): i for i in sci_infos}
        for s in sorted(results, key=lambda r: r["file"]):
            s["type"] = "science"
            s["group"] = _group_label(by_name[s["file"]])
            if s["status"] in ("failed", "set aside"):
                failures.append({"file": s["file"], "reason": s["error"]})
            frames.append(s)
        # e.g. of a worker killed mid-write during this run; not the previews,
        # which the live previews' thread may be writing now
        _remove_leftovers(out, previews=False)
        stack.close()         # the performance report is written here
    finally:
        if handle is not None:
            # a warm-up still running when the night stops early (say, the
            # disk is full) would have its worker log a traceback as the
            # cluster closes under it: let it end first
            if warm:
                from distributed import wait
                with contextlib.suppress(Exception):
                    wait(warm, timeout=30)
            handle.close()
    record = {
        "crdask_version": __version__,
        "versions": _versions(),
        "workflow": {"path": str(wf.source), "hash": config_hash(wf, "cosmics"),
                     "method": wf.cosmics.method if wf.cosmics.enabled else None},
        "started": started, "finished": _now(),
        "seconds": round(time.perf_counter() - t0, 3),
        "scheduler": scheduler,
        "frames": frames,
        "exposure_groups": sorted(groups, key=lambda g: g["label"]),
        "masters": master_info,
        "failures": failures,
        "warnings": warnings,
        "cr_summary": cr_summary(frames),
    }
    paths = write_report(out, record, preview_items=live.finish(frames), live=True)
    return NightRun(record, paths)


def _before_cleaning(wf, catalog, labels):
    """``before(file, master_paths)`` for the previews: a science frame
    calibrated again from its raw file (:func:`~crdask.pipeline.frame_task.calibrated_frame`)."""
    wf_dict = wf.to_dict()
    science = {os.path.basename(i.path): i for i in catalog.science_like() if not i.error}

    def before(file, master_paths):
        info = science[file]
        return calibrated_frame(info.path, wf_dict, master_paths, info.exptime,
                                setup_label(labels, info))[0]
    return before


def _scheduler_info(client, local, threads, log):
    log(f"crdask: dashboard {client.dashboard_link}")
    workers = client.scheduler_info().get("workers", {})
    return {"kind": "LocalCluster" if local else "external", "workers": len(workers),
            "threads_per_worker": threads, "dashboard": client.dashboard_link,
            # frames at once: a threaded worker holds several task slots
            "task_slots": sum(int(w.get("resources", {}).get(TASK_RESOURCE, 1))
                              for w in workers.values())}


def _remove_leftovers(out, previews=True):
    """Delete what writers killed mid-write left behind: hidden ``.*.tmp``
    files of atomic writes (outputs, ledger, with ``previews`` the previews
    too) and Zarr's partial files. Only called while no task of this run is
    writing (``previews=False`` while the previews' thread still may)."""
    from ..io.atomic import is_temp_name

    dirs = (out, out / "ledger", out / "ledger" / "sha256") + ((out / "previews",)
                                                              if previews else ())
    for d in dirs:
        if d.is_dir():
            for p in d.iterdir():
                if p.is_file() and is_temp_name(p.name):
                    p.unlink(missing_ok=True)
    if (out / "intermediate.zarr").exists():
        IntermediateStore(out / "intermediate.zarr").cleanup()
    Ledger(out).cleanup()


def _group_label(info):
    if info.science_like:
        return f"{info.frame_type} filter={info.filter} object={info.object}"
    if info.frame_type == "dark":
        return f"dark exptime={info.exptime:g}s" if info.exptime else "dark"
    if info.frame_type == "flat" and (info.grism or info.slit):
        return f"flat setup={info.setup}"
    if info.frame_type == "flat":
        return f"flat filter={info.filter}"
    if info.frame_type == "arc":
        return f"arc setup={info.setup}"
    return info.frame_type


def _report_progress(progress, log, n, total, s):
    if progress is not None:
        progress(n, total, s)
        return
    cr = f"{s['cr_pixels']} CR px, " if s.get("cr_pixels") is not None else ""
    what = (f"{cr}{s['seconds']:.1f} s" if s["status"] == "done"
            else s.get("error") or s["status"])
    log(f"[{n}/{total}] {s['file']}: {s['status']} ({what})")


def _versions():
    import astropy
    import dask as _dask
    import numba
    return {"python": platform.python_version(), "numpy": np.__version__,
            "dask": _dask.__version__, "numba": numba.__version__,
            "astropy": astropy.__version__}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_night(sys.argv[1]).exit_code)
