"""``run_night``: a whole night from a workflow file, resumable (layer 4).

Plan -> masters -> one task per science frame -> report.

* Masters are Dask reductions (``crdask.pipeline.calibration``) computed on
  the active scheduler, written as FITS (and into the Zarr intermediates),
  and recorded in the ledger with a checksum of all their inputs and the
  hash of the settings that shape them: a rerun with the same inputs and
  settings reuses them.
* Each science frame is one task on the cluster: read raw strips, calibrate
  (masters loaded once per worker process), keep the calibrated frame in
  ``OUT/intermediate.zarr``, find cosmic rays (``lacosmic`` or
  ``cosmicray_median`` on the frame in electrons, with its variance), write
  ``OUT/<stem>_cal.fits`` atomically. The task records every stage in the
  ledger (``OUT/ledger/``), so after a crash or a killed node a rerun
  continues from the last finished stage; unchanged finished frames are
  skipped, changed ones (input checksum or settings) are redone, failed ones
  are retried. Tasks never raise: a bad frame is a ``failed`` entry with a
  one-line reason and the night goes on.
* Pixels never pass through the scheduler: tasks read and write files (a
  shared filesystem on a real cluster).
"""

import contextlib
import functools
import os
import platform
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import dask
import numpy as np

from .._version import __version__
from ..calib import bits
from ..calib.calibrate import calibrate_frame
from ..io.catalog import build_catalog
from ..io.intermediates import IntermediateStore
from ..io.products import read_master, write_calibrated
from .cluster import connect
from .calibration import FrameRejected, _check_group, _write_masters, build_masters, electrons
from .config import Workflow, config_hash, load_workflow
from .ledger import Ledger
from .lock import locked_output  # clusters branch (issue #10): output lock

__all__ = ["run_night", "plan_night", "NightRun"]

MASTER_KEY = "masters"
_QUALITY = ("recall", "false_positives", "n_true", "n_found")


def _now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stem(path):
    return os.path.basename(str(path)).split(".")[0]


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

def plan_night(wf, ledger=None):
    """What a run would do: catalogue, science frames with their state.

    Returns a dict: ``catalog``, ``groups`` (label -> count), ``science``
    (list of dicts: file, state 'done'|'todo'|'retry'|'changed'), ``masters``
    ('reuse'|'build'|'none').
    """
    catalog = build_catalog(wf.input_files(), wf.keymap(), hdu=wf.inputs.hdu)
    ledger = ledger or Ledger(wf.output)
    h_all = config_hash(wf, "cosmics")
    science = []
    for info in catalog.of_type("science"):
        if info.error:
            continue
        entry = ledger.get(_stem(info.path))
        out = wf.output / f"{_stem(info.path)}_cal.fits"
        if entry is None:
            state = "todo"
        elif entry.get("status") == "failed":
            state = "retry"
        elif (entry.get("config_hash") == h_all and entry.get("status") == "done"
              and out.exists() and entry.get("input_sha256") == ledger.file_sha256(info.path)):
            state = "done"
        elif entry.get("status") == "done":
            state = "changed"
        else:
            state = f"resume from {entry.get('stage') or 'start'}"
        science.append({"file": info.path, "state": state, "filter": info.filter,
                        "object": info.object})
    calib = [i for i in catalog.frames if i.frame_type in ("bias", "dark", "flat")
             and not i.error]
    if not wf.masters["enabled"] or not calib:
        masters = "none"
    elif _masters_current(wf, ledger, calib):
        masters = "reuse"
    else:
        masters = "build"
    groups = {g.label(): g.count for g in catalog.groups()}
    return {"catalog": catalog, "groups": groups, "science": science, "masters": masters}


def _masters_checksum(ledger, infos):
    import hashlib
    h = hashlib.sha256()
    for info in sorted(infos, key=lambda i: i.path):
        h.update(os.path.basename(info.path).encode())
        h.update(ledger.file_sha256(info.path).encode())
    return h.hexdigest()


def _masters_current(wf, ledger, calib_infos):
    entry = ledger.get(MASTER_KEY)
    if not entry:
        return False
    paths = (entry.get("info") or {}).get("paths", {})
    return (ledger.is_current(MASTER_KEY, _masters_checksum(ledger, calib_infos),
                              config_hash(wf, "masters"))
            and paths and all(Path(p).exists() for p in paths.values()))


# --- per-frame task ------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _load_master(path, mtime_ns):
    data, header, var, _ = read_master(path)
    return data, var, header


def _master_arrays(paths):
    def get(key):
        p = paths.get(key)
        if not p:
            return None, None
        data, var, _ = _load_master(p, os.stat(p).st_mtime_ns)
        return data, var
    return get


def process_science_frame(path, wf_dict, master_paths, exptime, filt, readnoise_fallback=None,
                          threads=1):
    """Calibrate, clean and write one science frame; record stages in the
    ledger. Returns a summary dict (never raises)."""
    t0 = time.perf_counter()
    wf = load_workflow(wf_dict)
    stem = _stem(path)
    ledger = Ledger(wf.output)
    summary = {"file": os.path.basename(path), "status": "failed", "stage": None,
               "seconds": 0.0, "cr_pixels": None, "output": None, "error": None}
    try:
        sha = ledger.file_sha256(path)
        h_cal = config_hash(wf, "calibrate")
        h_all = config_hash(wf, "cosmics")
        prev = ledger.get(stem)
        out = wf.output / f"{stem}_cal.fits"
        if ledger.is_current(stem, sha, h_all) and out.exists():
            # finished already (e.g. a result lost with its worker): keep it
            info = (prev or {}).get("info") or {}
            summary.update(status="done", stage="written", cr_pixels=info.get("cr_pixels"),
                           output=str(out), seconds=time.perf_counter() - t0,
                           **{k: info[k] for k in _QUALITY if k in info})
            return summary
        ledger.start(stem, str(path), sha, h_all)
        store = IntermediateStore(wf.output / "intermediate.zarr") \
            if wf.execution.intermediates else None
        setup = wf.calib_setup()
        prep = electrons(path, setup, exptime)
        reuse = (store is not None and prev is not None and store.has_frame(stem)
                 and prev.get("input_sha256") == sha
                 and (prev.get("info") or {}).get("calib_hash") == h_cal)
        if reuse:
            arrays = store.read_frame(stem)
            sci, var, mask = arrays["sci"], arrays["var"], arrays["mask"]
        else:
            get = _master_arrays(master_paths)
            bias, bias_var = get("bias")
            dark, dark_var = get("dark")
            flat, flat_var = get(f"flat_{filt}")
            bpm, _ = get("bpm")
            if not wf.calibrate["enabled"]:
                bias = dark = flat = bpm = None
            # The frame is read into memory first and calibrated with plain
            # numpy: mixing Dask with the in-memory masters would make Dask
            # hash every master (0.1 s per 2048^2 frame).
            data_e, saturated = dask.compute(prep.data, prep.saturated, scheduler="sync")
            cal = calibrate_frame(data_e, readnoise=prep.readnoise, exptime=exptime,
                                  bias=bias, bias_var=bias_var, dark=dark, dark_var=dark_var,
                                  flat=flat, flat_var=flat_var,
                                  bad=None if bpm is None else bpm != 0,
                                  saturated=saturated)
            sci, var, mask = cal.sci, cal.var, cal.mask
            if store is not None:
                store.write_frame(stem, sci=sci, var=var, mask=mask)
        ledger.advance(stem, "calibrated", calib_hash=h_cal)
        history = [*prep.notes, f"gain={prep.gain} readnoise={prep.readnoise}",
                   f"input={os.path.basename(path)}"]
        for key, p in sorted(master_paths.items()):
            if key in ("bias", "dark", "bpm", f"flat_{filt}") and wf.calibrate["enabled"]:
                history.append(f"{key}={os.path.basename(p)}")
        ncr = None
        if wf.cosmics.enabled:
            sci, mask, ncr, words = _clean_cosmics(sci, var, mask, prep, wf, filt, exptime,
                                                   threads)
            history.extend(words)
            ledger.advance(stem, "cleaned", cr_pixels=ncr)
        header = prep.header.copy()
        if ncr is not None:
            header["CRNFIX"] = (ncr, "number of cosmic-ray pixels found")
        write_calibrated(out, sci, var, mask, header=header, history=history, overwrite=True)
        quality = score_frame(wf.truth, os.path.basename(path), mask) \
            if wf.truth and ncr is not None else {}
        seconds = time.perf_counter() - t0
        ledger.finish(stem, cr_pixels=ncr, output=str(out), seconds=seconds, **quality)
        summary.update(status="done", stage="written", seconds=seconds, cr_pixels=ncr,
                       output=str(out), **quality)
    except Exception as e:  # one bad frame must not stop the night
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if not msg.startswith(str(path)) and not isinstance(e, FrameRejected):
            msg = f"{path}: {type(e).__name__}: {msg}"
        try:
            ledger.fail(stem, msg)
        except Exception:  # pragma: no cover - the ledger itself unwritable
            pass
        summary.update(error=msg, seconds=time.perf_counter() - t0)
    return summary


def _clean_cosmics(sci, var, mask, prep, wf, filt, exptime, threads):
    from ..cosmic import cosmicray_median, lacosmic
    from ..io.fits import history_lines

    params = wf.cosmics.params_for(filter=filt, object=prep.header.get("OBJECT"),
                                   exptime=exptime)
    unusable = (mask & (bits.BAD | bits.NONFINITE | bits.FLAT_INVALID | bits.SATURATED)) != 0
    if wf.cosmics.method == "lacosmic":
        kw = {"satlevel": np.inf, **params, "gain": 1.0, "readnoise": prep.readnoise}
        crmask, clean = lacosmic(sci, inmask=unusable, invar=var, num_threads=threads, **kw)
    else:
        err = np.sqrt(np.maximum(var, 0)).astype(np.float32)
        data = np.where(unusable, np.nan, sci).astype(np.float32)
        clean, crmask = cosmicray_median(data, error_image=err, **params)
        clean = np.where(unusable, sci, clean)
        crmask &= ~unusable
    crmask = np.asarray(crmask, bool)
    mask = mask | np.where(crmask, bits.COSMIC_RAY, 0).astype(np.uint8)
    words = [f"cosmics {wf.cosmics.method}"] + history_lines(
        [f"{k}={v}" for k, v in sorted(params.items())])
    return np.asarray(clean, np.float32), mask, int(crmask.sum()), words


# --- the night ------------------------------------------------------------------------

@locked_output  # clusters branch (issue #10): one run per output folder, --restart too
def run_night(config, client=None, *, restart=False, log=print, progress=None):
    """Reduce a night as the workflow ``config`` says (a path, a mapping or a
    :class:`Workflow`). ``client``: a ``distributed.Client`` to use (default:
    a LocalCluster made for the run). Returns a :class:`NightRun`."""
    from .report import write_report

    wf = config if isinstance(config, Workflow) else load_workflow(config)
    t0 = time.perf_counter()
    started = _now()
    out = Path(wf.output)
    out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(out)
    if restart:
        ledger.reset()
        shutil.rmtree(out / "intermediate.zarr", ignore_errors=True)
    _remove_leftovers(out)
    plan = plan_night(wf, ledger)
    catalog = plan["catalog"]
    failures = []
    frames = []
    for info in catalog.frames:
        if info.error:
            failures.append({"file": os.path.basename(info.path), "reason": info.error})
            frames.append({"file": os.path.basename(info.path), "type": "unreadable",
                           "group": None, "status": "set aside", "error": info.error})

    own = client is None
    todo = [s for s in plan["science"] if s["state"] != "done"]
    resources = None
    cluster = None
    if own:
        ex = wf.execution
        handle = connect(scheduler=ex.scheduler, scheduler_file=ex.scheduler_file,
                         workers=ex.workers, threads_per_worker=ex.threads_per_worker,
                         memory_limit=ex.memory_limit, ntasks=max(1, len(todo)), log=log,
                         kind=ex.cluster, adapt=ex.adapt)  # clusters branch (issue #10)
        client, threads, resources = handle.client, handle.threads, handle.resources
        cluster = handle if handle.kind == "local" else None
    else:
        threads = int(wf.execution.threads_per_worker or 1)
    scheduler = {"kind": "LocalCluster" if cluster else "external",
                 "workers": len(client.scheduler_info().get("workers", {})),
                 "threads_per_worker": threads, "dashboard": client.dashboard_link}
    log(f"crdask: dashboard {client.dashboard_link}")
    try:
        # Masters are one Dask graph over a few dozen frames: on a cluster of
        # our own, the threaded scheduler in this process avoids shipping
        # strips between worker processes (0.4 s instead of 3-8 s measured on
        # a small night); on an external cluster the graph runs there.
        local = dask.config.set(scheduler="threads") if cluster is not None \
            else contextlib.nullcontext()
        with local:
            master_info, master_paths, rejected = _masters_step(wf, ledger, catalog, client,
                                                                log)
        for path, why in rejected:
            failures.append({"file": os.path.basename(path), "reason": why})
        rejected_paths = {p for p, _ in rejected}
        for info in catalog.frames:
            if info.error or info.frame_type == "science":
                continue
            frames.append({"file": os.path.basename(info.path), "type": info.frame_type,
                           "group": _group_label(info),
                           "status": "set aside" if info.path in rejected_paths else "used",
                           "error": next((w for p, w in rejected if p == info.path), None)})
        science_rejected = []
        sci_infos = _check_group([i for i in catalog.of_type("science") if not i.error],
                                 "science", wf.calib_setup(), science_rejected)
        for path, why in science_rejected:
            failures.append({"file": os.path.basename(path), "reason": why})
            frames.append({"file": os.path.basename(path), "type": "science", "group": None,
                           "status": "set aside", "error": why})
        states = {s["file"]: s["state"] for s in plan["science"]}
        wf_dict = wf.to_dict()
        futures, done = {}, []
        for info in sci_infos:
            if states.get(info.path) == "done":
                einfo = (ledger.get(_stem(info.path)) or {}).get("info") or {}
                done.append({"file": os.path.basename(info.path), "status": "skipped",
                             "stage": "written", "seconds": 0.0,
                             "cr_pixels": einfo.get("cr_pixels"),
                             "output": str(out / f"{_stem(info.path)}_cal.fits"),
                             "error": None, "info": info,
                             **{k: einfo[k] for k in _QUALITY if k in einfo}})
                continue
            fut = client.submit(process_science_frame, info.path, wf_dict, master_paths,
                                info.exptime, info.filter, threads=threads,
                                key=f"frame-{_stem(info.path)}-{ledger.file_sha256(info.path)[:12]}",
                                retries=2, pure=False, resources=resources)
            futures[fut] = info
        total = len(futures) + len(done)
        n = len(done)
        results = list(done)
        from distributed import as_completed
        for fut in as_completed(list(futures)):
            info = futures[fut]
            try:
                s = fut.result()
            except Exception as e:  # the task itself died (e.g. its worker, three times)
                s = {"file": os.path.basename(info.path), "status": "failed", "stage": None,
                     "seconds": 0.0, "cr_pixels": None, "output": None,
                     "error": f"{info.path}: {type(e).__name__}: {e}".splitlines()[0]}
            s["info"] = info
            results.append(s)
            n += 1
            _report_progress(progress, log, n, total, s)
        for s in sorted(results, key=lambda r: r["file"]):
            info = s.pop("info")
            s["type"] = "science"
            s["group"] = _group_label(info)
            if s["status"] == "failed":
                failures.append({"file": s["file"], "reason": s["error"]})
            frames.append(s)
        _remove_leftovers(out)  # e.g. of a worker killed mid-write during this run
    finally:
        if own:
            handle.close()
    record = {
        "crdask_version": __version__,
        "versions": _versions(),
        "workflow": {"path": str(wf.source), "hash": config_hash(wf, "cosmics")},
        "started": started, "finished": _now(),
        "seconds": round(time.perf_counter() - t0, 3),
        "scheduler": scheduler,
        "frames": frames,
        "masters": master_info,
        "failures": failures,
        "cr_summary": _cr_summary(frames),
    }
    paths = write_report(out, record, previews=_previews(wf, frames, master_paths))
    return NightRun(record, paths)


def _remove_leftovers(out):
    """Delete what writers killed mid-write left behind: hidden ``.*.tmp``
    files of atomic writes (outputs, ledger) and Zarr's partial files. Only
    called before any task of this run starts."""
    from ..io.atomic import is_temp_name

    for d in (out, out / "ledger", out / "previews"):
        if d.is_dir():
            for p in d.iterdir():
                if p.is_file() and is_temp_name(p.name):
                    p.unlink(missing_ok=True)
    if (out / "intermediate.zarr").exists():
        IntermediateStore(out / "intermediate.zarr").cleanup()


def _group_label(info):
    if info.frame_type == "science":
        return f"science filter={info.filter} object={info.object}"
    if info.frame_type == "dark":
        return f"dark exptime={info.exptime:g}s" if info.exptime else "dark"
    if info.frame_type == "flat":
        return f"flat filter={info.filter}"
    return info.frame_type


def _report_progress(progress, log, n, total, s):
    if progress is not None:
        progress(n, total, s)
        return
    what = (f"{s['cr_pixels']} CR px, {s['seconds']:.1f} s" if s["status"] == "done"
            else s.get("error") or s["status"])
    log(f"[{n}/{total}] {s['file']}: {s['status']} ({what})")


def _masters_step(wf, ledger, catalog, client, log):
    """Build or reuse the masters. Returns (report info, paths, rejected)."""
    rejected = []
    if not wf.masters["enabled"]:
        return {}, {}, rejected
    calib = [i for i in catalog.frames if i.frame_type in ("bias", "dark", "flat")
             and not i.error]
    if not calib:
        return {}, {}, rejected
    checksum = _masters_checksum(ledger, calib)
    entry = ledger.get(MASTER_KEY)
    if _masters_current(wf, ledger, calib):
        info = entry["info"]
        rejected = [tuple(r) for r in info.get("rejected", [])]
        log("crdask: masters unchanged, reused")
        return ({k: {"path": p, "inputs": info.get("inputs", {}).get(k, []), "status": "reused"}
                 for k, p in info["paths"].items()}, info["paths"], rejected)
    ledger.start(MASTER_KEY, "calibration frames", checksum, config_hash(wf, "masters"))
    t = time.perf_counter()
    setup = wf.calib_setup()
    from ..io.catalog import Catalog
    sub = Catalog(frames=calib, keymap=catalog.keymap)
    masters = build_masters(sub, setup, rejected)
    paths = _write_masters(masters, str(wf.output), overwrite=True)
    inputs = {}
    for kind in ("bias", "dark"):
        if masters[kind] is not None:
            inputs[kind] = [os.path.basename(p) for p in masters[kind].inputs]
    for filt, m in masters["flat"].items():
        inputs[f"flat_{filt}"] = [os.path.basename(p) for p in m.inputs]
    if wf.execution.intermediates:
        store = IntermediateStore(wf.output / "intermediate.zarr")
        for key, p in paths.items():
            data, _, _, _ = read_master(p)
            store.write_master(key, data)
    ledger.finish(MASTER_KEY, paths=paths, inputs=inputs, rejected=rejected,
                  seconds=time.perf_counter() - t)
    log(f"crdask: masters built in {time.perf_counter() - t:.1f} s: {', '.join(paths)}")
    return ({k: {"path": p, "inputs": inputs.get(k, []), "status": "done"}
             for k, p in paths.items()}, paths, rejected)


def score_frame(truth_dir, name, mask_bits):
    """CR detection quality of one frame against the simulation's truth:
    dict(recall, false_positives, n_true, n_found) or {} when there is no
    truth for it. False positives do not count pixels next to a true CR
    (tolerance 1 pixel): L.A.Cosmic's growth step flags CR edges that the
    truth's 3-sigma rule leaves out."""
    from ..simulate import score
    from ..simulate.night import NightManifest
    try:
        truth = NightManifest.load(truth_dir).crmask(name)
    except (OSError, ValueError, KeyError):
        return {}
    found = (np.asarray(mask_bits) & bits.COSMIC_RAY) != 0
    if found.shape != truth.shape:
        return {}
    s = score(found, truth, tolerance=1)
    return {"recall": round(float(s["recall"]), 4), "false_positives": int(s["false_positives"]),
            "n_true": int(s["n_true"]), "n_found": int(s["n_found"])}


def _cr_summary(frames):
    scored = [f for f in frames if "recall" in f]
    if not scored:
        return None
    n_true = sum(f["n_true"] for f in scored)
    found_true = sum(f["recall"] * f["n_true"] for f in scored)
    return {"frames": len(scored), "recall": round(found_true / max(n_true, 1), 4),
            "false_positives": sum(f["false_positives"] for f in scored),
            "n_true": n_true, "n_found": sum(f["n_found"] for f in scored)}


def _versions():
    import astropy
    import dask as _dask
    import numba
    return {"python": platform.python_version(), "numpy": np.__version__,
            "dask": _dask.__version__, "numba": numba.__version__,
            "astropy": astropy.__version__}


def _previews(wf, frames, master_paths, n_science=3):
    from astropy.io import fits
    previews = {"masters": {}, "science": [], "cr_counts": []}
    for key, p in sorted(master_paths.items()):
        previews["masters"][key] = fits.getdata(p)
    store = IntermediateStore(wf.output / "intermediate.zarr") \
        if wf.execution.intermediates else None
    for f in frames:
        if f.get("type") != "science" or f["status"] not in ("done", "skipped"):
            continue
        previews["cr_counts"].append((f["file"], f.get("cr_pixels") or 0))
        if len(previews["science"]) < n_science and store is not None:
            stem = _stem(f["file"])
            if store.has_frame(stem):
                with fits.open(f["output"]) as hdul:
                    after = hdul[0].data.astype(np.float32)
                    mask = hdul["MASK"].data
                previews["science"].append({"name": stem, "before": store.read_frame(stem)["sci"],
                                            "after": after,
                                            "crmask": (mask & bits.COSMIC_RAY) != 0})
    return previews


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_night(sys.argv[1]).exit_code)
