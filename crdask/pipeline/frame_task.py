"""One science frame of a night as one task: calibrate, clean, write (layer 4).

:func:`process_science_frame` runs on a worker. It reads the raw frame,
calibrates it with the masters (loaded once per worker process), keeps the
calibrated frame in ``OUT/intermediate.zarr``, and then either

* cleans it with the workflow's ``frame`` method (or the fallback method of
  a ``group`` method, for a frame no group can take) and writes
  ``OUT/<stem>_cal.fits`` atomically, or
* stops after calibration (``stop_after="calibrated"``) when the frame is a
  member of an exposure group: the group task
  (:mod:`crdask.pipeline.group_task`) cleans the members together.

Every stage is recorded in the ledger, so a rerun continues from the last
finished one. The task never raises: a bad frame is a ``failed`` entry with
a one-line reason and the night goes on.

:func:`clean_frame` is the one place a frame meets a cosmic-ray method: the
method comes from the registry by name, bad pixels (bad, non-finite,
flat-invalid and saturated bits) reach every method as ``bad``, the variance
as ``var``, the read noise in e-.
"""

from __future__ import annotations

import functools
import os
import time

import dask
import numpy as np

from ..calib import bits
from ..calib.calibrate import calibrate_frame
from ..calib.response import calibrate_arc
from ..cosmic.registry import get_method, load_plugins
from ..io.atomic import OutputRoot
from ..kernels.calibrate import merge_cosmics
from ..io.checksums import closure_digest
from ..io.intermediates import IncompleteError, IntermediateStore
from ..io.naming import output_stem
from ..io.products import read_master, write_calibrated
from .amplifier_frames import layout_history
from .calibration import FrameRejected, electrons
from .config import config_hash, load_workflow
from .ledger import Ledger
from .qa import qa_calibrated
from .quality import QUALITY_KEYS, score_frame
from .spectro_masters import frame_masters

__all__ = ["process_science_frame", "process_arc_frame", "clean_frame", "merge_result",
           "warm_worker", "warm_workers", "frame_stem", "unusable", "master_history", "calibrated_output", "arc_output",
           "calibrated_frame"]

#: Mask bits whose pixels a cosmic-ray method must neither flag nor use.
UNUSABLE_BITS = bits.BAD | bits.NONFINITE | bits.FLAT_INVALID | bits.SATURATED


def frame_stem(path):
    """Output stem of a raw file: its name without FITS/compression suffixes
    (``m51.0001.fits.gz`` -> ``m51.0001``; :func:`crdask.io.naming.output_stem`)."""
    return output_stem(path)


def calibrated_output(out_dir, path):
    """Path of a science frame's calibrated product, through the output
    root's gate (never outside ``out_dir``, never the raw file itself)."""
    return str(OutputRoot(out_dir, inputs=[path]).path(f"{frame_stem(path)}_cal.fits"))


def arc_output(out_dir, path):
    """Path of an arc frame's calibrated product, ``<stem>_arc.fits``."""
    return str(OutputRoot(out_dir, inputs=[path]).path(f"{frame_stem(path)}_arc.fits"))


def unusable(mask):
    """Bool array: pixels no cosmic-ray method may flag or use."""
    return (np.asarray(mask) & UNUSABLE_BITS) != 0


@functools.lru_cache(maxsize=16)
def _load_master(path, mtime_ns):
    data, header, var, _ = read_master(path)
    return data, var


def _master(paths, key):
    p = paths.get(key) if key else None
    if not p:
        return None, None
    return _load_master(p, os.stat(p).st_mtime_ns)


def master_history(wf, master_paths, label, setup=None):
    """HISTORY words naming the masters a science frame was calibrated with
    (``label``: its setup's label, :mod:`crdask.pipeline.spectro_masters`)
    and, when given, its instrument setup."""
    if not wf.calibrate["enabled"]:
        return []
    used = sorted(frame_masters(master_paths, label).values())
    words = [f"{key}={os.path.basename(master_paths[key])}" for key in used]
    if setup is not None:
        words.append(f"setup={setup}" + ("" if label else " (no flat of this setup)"))
    return words


def clean_frame(method_name, sci, var, mask, params, readnoise, threads=1):
    """Find cosmic rays in one calibrated frame with a registered ``frame`` method.

    Parameters
    ----------
    method_name : str
        Registered ``frame`` method.
    sci, var : (ny, nx) float32 arrays, e- and e-^2.
    mask : (ny, nx) uint8 mask bits (:mod:`crdask.calib.bits`).
    params : dict, the method's complete parameters.
    readnoise : float, e-.
    threads : int, threads the method may use.

    Returns
    -------
    clean : float32 array, mask : uint8 with the COSMIC_RAY bit added,
    ncr : int, history : list of HISTORY lines.
    """
    method = get_method(method_name, "frame")
    bad = unusable(mask)
    res = method.detect(sci, params, bad=bad, var=var, readnoise=readnoise,
                        num_threads=threads)
    clean, mask, ncr = merge_result(sci, res.clean, res.crmask, mask)
    return clean, mask, ncr, method.params.history(params)


def merge_result(sci, clean, crmask, mask):
    """``(clean, mask, ncr)``: a method's cleaned frame and cosmic-ray mask
    merged into the calibrated ``sci`` and ``mask`` -- unusable pixels keep
    their value and are never flagged. One pass of
    :func:`crdask.kernels.calibrate.merge_cosmics` for plain float32/bool/
    uint8 arrays of one shape, the numpy expressions otherwise."""
    arrays = (sci, clean, crmask, mask)
    dtypes = (np.float32, np.float32, np.bool_, np.uint8)
    if all(isinstance(a, np.ndarray) and a.dtype == d and a.shape == np.shape(sci)
           and a.ndim == 2 for a, d in zip(arrays, dtypes)):
        clean, mask, ncr = merge_cosmics(sci, clean, crmask, mask, UNUSABLE_BITS,
                                         bits.COSMIC_RAY)
        return clean, mask, int(ncr)
    bad = unusable(mask)
    crmask = np.asarray(crmask, bool) & ~bad
    clean = np.where(bad, sci, np.asarray(clean, np.float32)).astype(np.float32)
    mask = mask | np.where(crmask, bits.COSMIC_RAY, 0).astype(np.uint8)
    return clean, mask, int(crmask.sum())


def warm_worker(wf_dict, size=48):
    """Make a worker ready for frame tasks: import what they import and load
    the Numba kernels from the on-disk cache, by calibrating and cleaning a
    tiny random frame (``size`` x ``size``) with the workflow's frame method.

    Submitted once per worker while the client process builds the masters
    (:func:`crdask.pipeline.night.run_night`), so the ~1.5 s per worker of
    imports and kernel loading is off the critical path. Never raises.

    Returns
    -------
    float : the seconds it took (0.0 if it failed).

    Example
    -------
    >>> warm_worker({"version": 1, "inputs": {"files": []}, "output": "o"})  # doctest: +SKIP
    0.42
    """
    t0 = time.perf_counter()
    try:
        wf = load_workflow(wf_dict)
        load_plugins(wf.plugins)
        rng = np.random.default_rng(0)
        data = rng.normal(100.0, 10.0, (size, size)).astype(np.float32)
        cal = calibrate_frame(data, readnoise=5.0, bias=data * np.float32(0.01),
                              flat=np.ones_like(data), bad=np.zeros(data.shape, bool))
        cos = wf.cosmics
        name = cos.method if cos.kind == "frame" else cos.fallback
        if cos.enabled and name is not None:
            params = cos.params_for(filter=None, object=None, exptime=1.0, method=name)
            clean_frame(name, cal.sci, cal.var, cal.mask, params, 5.0)
    except Exception:   # only a warm-up: the frame tasks report real problems
        return 0.0
    return time.perf_counter() - t0


def warm_workers(client, wf_dict):
    """Submit one :func:`warm_worker` task to each worker of ``client``;
    returns the futures (keep them until the warm-up may end)."""
    try:
        workers = list(client.scheduler_info().get("workers", {}))
    except Exception:  # pragma: no cover - a scheduler that cannot say
        return []
    return [client.submit(warm_worker, wf_dict, workers=[w], allow_other_workers=False,
                          pure=False) for w in workers]


def _calibrate(path, wf, prep, master_paths, exptime, label, arc=False):
    keys = frame_masters(master_paths, label)
    bias, bias_var = _master(master_paths, keys.get("bias"))
    dark, dark_var = _master(master_paths, keys.get("dark"))
    flat, flat_var = _master(master_paths, keys.get("flat"))
    bpm, _ = _master(master_paths, keys.get("bpm"))
    if not wf.calibrate["enabled"]:
        bias = dark = flat = bpm = None
    if arc and not wf.arcs["flat"]:
        flat = flat_var = None       # arc lines are measured, not flat-fielded
    # The frame is read into memory first and calibrated with plain numpy:
    # mixing Dask with the in-memory masters would make Dask hash every
    # master (0.1 s per 2048^2 frame).
    # (with several amplifiers: their read-noise map and bias levels too,
    # from the same read of the raw file)
    levels = prep.layout.levels if prep.layout is not None else ()
    data_e, saturated, rn, *levels = dask.compute(
        prep.data, prep.saturated,
        prep.readnoise if prep.readnoise_map is None else prep.readnoise_map, *levels,
        scheduler="sync")
    if prep.layout is not None:
        prep.notes.extend(layout_history(prep.layout, levels))
    if not np.isfinite(data_e).any():
        raise FrameRejected(f"{path}: no finite pixel (all NaN or inf)")
    cal = (calibrate_arc if arc else calibrate_frame)(data_e, readnoise=rn, exptime=exptime, bias=bias,
                          bias_var=bias_var, dark=dark, dark_var=dark_var, flat=flat,
                          flat_var=flat_var, bad=None if bpm is None else bpm != 0,
                          saturated=saturated)
    return cal.sci, cal.var, cal.mask


def calibrated_frame(path, wf_dict, master_paths, exptime, label):
    """A science frame calibrated as its frame task calibrates it (the same
    code, so the same bits), before any cosmic-ray cleaning.

    For what needs the calibrated frame after its task is gone without
    keeping every frame in the intermediates: the report's before/after
    previews. Raises as the task's calibration does.

    Parameters
    ----------
    path : str, the raw file; wf_dict : dict, the workflow.
    master_paths : dict, master key -> FITS path.
    exptime : float, s; label : str, the frame's setup label (which flat).

    Returns
    -------
    (sci, var, mask) : (ny, nx) float32 e-, float32 e-^2, uint8 mask bits.

    Example
    -------
    >>> sci, var, mask = calibrated_frame("r1.fits", wf, paths, 30.0, "V")  # doctest: +SKIP
    """
    wf = load_workflow(wf_dict)
    prep = electrons(path, wf.calib_setup(), exptime)
    return _calibrate(path, wf, prep, master_paths, exptime, label)


def process_science_frame(path, wf_dict, master_paths, exptime, filt, *, inputs,
                          method=None, stop_after=None, threads=1, label=None,
                          setup_name=None):
    """Calibrate, clean and write one science frame; record stages in the ledger.

    Parameters
    ----------
    path : str, the raw file.
    wf_dict : dict, the workflow (``Workflow.to_dict()``).
    master_paths : dict, master key -> FITS path.
    exptime : float, s; filt : str, the frame's filter.
    inputs : dict
        The input closure (:meth:`~crdask.pipeline.ledger.Ledger.closure`):
        checksums of everything the output depends on besides the settings,
        the raw file and the masters it is calibrated with.
    method : str, optional
        The frame method to clean with (default: the workflow's method if
        it is a frame method, else its fallback).
    stop_after : None or 'calibrated'
        Stop once the calibrated frame is in the intermediates (a group
        member).
    threads : int, threads the CR method may use.
    label, setup_name : the frame's setup label (which master flat and
        mask: :func:`crdask.pipeline.spectro_masters.frame_masters`; default
        ``filt``) and catalogue setup (named in HISTORY).

    Returns
    -------
    dict, the frame's summary (status 'done', 'calibrated' or 'failed').
    """
    t0 = time.perf_counter()
    wf = load_workflow(wf_dict)
    load_plugins(wf.plugins)
    label = filt if label is None else label
    stem = frame_stem(path)
    digest = closure_digest(inputs)
    ledger = Ledger(wf.output)
    summary = {"file": os.path.basename(path), "status": "failed", "stage": None,
               "seconds": 0.0, "cr_pixels": None, "output": None, "error": None}
    try:
        h_cal = config_hash(wf, "calibrate")
        h_all = config_hash(wf, "cosmics")
        prev = ledger.get(stem)
        out = calibrated_output(wf.output, path)
        if stop_after is None and ledger.is_current(stem, None, h_all, inputs=inputs):
            info = (prev or {}).get("info") or {}   # e.g. a result lost with its worker
            summary.update(status="done", stage="written", cr_pixels=info.get("cr_pixels"),
                           output=out, seconds=time.perf_counter() - t0,
                           **{k: info[k] for k in (*QUALITY_KEYS, "qa") if k in info})
            return summary
        store = IntermediateStore(wf.output / "intermediate.zarr") \
            if (wf.execution.intermediates or stop_after) else None
        reuse = (store is not None and prev is not None and store.has_frame(stem)
                 and prev.get("input_sha256") == digest
                 and (prev.get("info") or {}).get("calib_hash") == h_cal
                 and prev.get("stage") is not None)
        ledger.start(stem, str(path), None, h_all, inputs=inputs)
        setup = wf.calib_setup()
        prep = electrons(path, setup, exptime)
        arrays = None
        if reuse:
            try:
                arrays = store.read_frame(stem)
            except IncompleteError as e:   # a damaged chunk: recompute from raw
                summary["note"] = f"intermediate not used ({e}); recomputed from raw"
        if arrays is not None:
            sci, var, mask = arrays["sci"], arrays["var"], arrays["mask"]
            if prep.layout is not None:   # the bias levels for HISTORY
                prep.notes.extend(layout_history(prep.layout, dask.compute(
                    *prep.layout.levels, scheduler="sync")))
        else:
            sci, var, mask = _calibrate(path, wf, prep, master_paths, exptime, label)
            if store is not None:
                store.write_frame(stem, sci=sci, var=var, mask=mask)
        ledger.advance(stem, "calibrated", calib_hash=h_cal, readnoise=prep.readnoise)
        if stop_after == "calibrated":
            summary.update(status="calibrated", stage="calibrated",
                           seconds=time.perf_counter() - t0)
            return summary
        history = [*prep.notes, f"gain={prep.gain} readnoise={prep.readnoise}",
                   f"input={os.path.basename(path)}",
                   *master_history(wf, master_paths, label, setup_name)]
        ncr = qa = None
        if wf.cosmics.enabled:
            cos = wf.cosmics
            name = method or (cos.method if cos.kind == "frame" else cos.fallback)
            params = cos.params_for(filter=filt, object=prep.header.get("OBJECT"),
                                    exptime=exptime, method=name)
            before = sci, mask
            sci, mask, ncr, words = clean_frame(name, sci, var, mask, params,
                                                prep.readnoise, threads)
            history.extend(words)
            ledger.advance(stem, "cleaned", cr_pixels=ncr)
            if wf.qa["inject"]:   # on a copy: sci, var, mask above are not touched
                qa = qa_calibrated(before[0], var, before[1], unusable(before[1]), name,
                                   params, prep.readnoise, settings=wf.qa,
                                   name=os.path.basename(path), threads=threads).to_dict()
        _write(out, sci, var, mask, prep, ncr, history)
        quality = score_frame(wf.truth, os.path.basename(path), mask) \
            if wf.truth and ncr is not None else {}
        seconds = time.perf_counter() - t0
        extra = {"qa": qa} if qa is not None else {}
        ledger.finish(stem, outputs=[out], cr_pixels=ncr, output=out, seconds=seconds,
                      **quality, **extra)
        summary.update(status="done", stage="written", seconds=seconds, cr_pixels=ncr,
                       output=out, **quality, **extra)
    except Exception as e:  # one bad frame must not stop the night
        _failed(ledger, stem, path, e, summary, t0)
    return summary


def _failed(ledger, stem, path, e, summary, t0):
    """Record a task's exception as one line: a frame that cannot be used
    (its file or headers) is set aside, anything else is a failure."""
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    if not msg.startswith(str(path)) and not isinstance(e, FrameRejected):
        msg = f"{path}: {type(e).__name__}: {msg}"
    try:
        ledger.fail(stem, msg)
    except Exception:  # pragma: no cover - the ledger itself unwritable
        pass
    summary.update(status="set aside" if isinstance(e, FrameRejected) else "failed",
                   error=msg, seconds=time.perf_counter() - t0)


def _write(out, sci, var, mask, prep, ncr, history):
    """Write a calibrated product with the raw header, CRNFIX and HISTORY."""
    header = prep.header.copy()
    if ncr is not None:
        header["CRNFIX"] = (ncr, "number of cosmic-ray pixels found")
    write_calibrated(out, sci, var, mask, header=header, history=history, overwrite=True)


def process_arc_frame(path, wf_dict, master_paths, exptime, *, inputs, label="",
                      setup_name=None, threads=1):
    """Calibrate one arc-lamp frame and write ``OUT/<stem>_arc.fits``.

    Overscan-subtracted, trimmed, in electrons, minus the master bias (and
    dark current x EXPTIME if there is a master dark) of the night
    (:func:`crdask.calib.response.calibrate_arc`); flat-fielded only with
    ``steps.arcs.flat``; cleaned of cosmic rays with the workflow's frame
    method (its fallback for a group method) only with ``steps.arcs.cosmics``
    (off by default: L.A.Cosmic at science settings clips sharp arc lines).
    Parameters as :func:`process_science_frame` (``master_paths`` without
    the flats unless ``steps.arcs.flat``: :func:`crdask.pipeline.arcs_step.
    submit_arcs`); ``label`` the arc's setup label ('' = no master flat of
    its setup). Never raises.

    Returns
    -------
    dict, the arc's summary (``type`` 'arc', status 'done', 'set aside' or
    'failed').
    """
    t0 = time.perf_counter()
    wf = load_workflow(wf_dict)
    load_plugins(wf.plugins)
    stem = frame_stem(path)
    ledger = Ledger(wf.output)
    summary = {"file": os.path.basename(path), "type": "arc", "status": "failed",
               "stage": None, "seconds": 0.0, "cr_pixels": None, "output": None,
               "error": None}
    try:
        h = config_hash(wf, "arcs")
        out = arc_output(wf.output, path)
        if ledger.is_current(stem, None, h, inputs=inputs):
            summary.update(status="skipped", stage="written", output=out)
            return summary
        ledger.start(stem, str(path), None, h, inputs=inputs)
        prep = electrons(path, wf.calib_setup(), exptime)
        sci, var, mask = _calibrate(path, wf, prep, master_paths, exptime, label, arc=True)
        history = [*prep.notes, f"gain={prep.gain} readnoise={prep.readnoise}",
                   f"input={os.path.basename(path)}",
                   *master_history(wf, master_paths, label, setup_name),
                   "arc: bias-subtracted, trimmed, e-" +
                   ("" if wf.arcs["flat"] else "; not flat-fielded")]
        ncr = None
        cos = wf.cosmics
        name = cos.method if cos.kind == "frame" else cos.fallback
        if wf.arcs["cosmics"] and cos.enabled and name is not None:
            params = cos.params_for(filter=None, object=prep.header.get("OBJECT"),
                                    exptime=exptime, method=name)
            sci, mask, ncr, words = clean_frame(name, sci, var, mask, params,
                                                prep.readnoise, threads)
            history.extend(words)
        else:
            history.append("arc: no cosmic-ray cleaning (steps.arcs.cosmics)")
        _write(out, sci, var, mask, prep, ncr, history)
        seconds = time.perf_counter() - t0
        ledger.finish(stem, outputs=[out], cr_pixels=ncr, output=out, seconds=seconds)
        summary.update(status="done", stage="written", seconds=seconds, cr_pixels=ncr,
                       output=out)
    except Exception as e:  # one bad arc must not stop the night
        _failed(ledger, stem, path, e, summary, t0)
    return summary
