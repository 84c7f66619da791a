"""One exposure group of a night as one task (layer 4).

:func:`process_group` runs on a worker after its members' frame tasks have
calibrated them into ``OUT/intermediate.zarr``. It reads the members from
there, runs the workflow's ``group`` method on all of them at once, writes
each member's ``OUT/<stem>_cal.fits`` and the group's combined products
(``OUT/<label>_<product>.fits``) atomically, and records one ledger entry
for the group (``group-<label>``) whose checksum covers every member's
inputs and whose settings hash covers the method's parameters: a changed
member redoes its group, a killed run resumes at group granularity.

Members whose calibration failed are left out; if fewer than the method's
``min_members`` remain, the rest are cleaned one by one with the fallback
frame method (said so in their summaries). The task never raises.
"""

from __future__ import annotations

import os
import time

import numpy as np
from astropy.io import fits

from ..calib import bits
from ..cosmic.registry import get_method, load_plugins
from ..io.atomic import OutputRoot
from ..io.checksums import closure_digest
from ..io.fits import write_fits_atomic
from ..io.intermediates import IntermediateStore
from ..io.products import write_calibrated
from .calibration import electrons
from .config import config_hash, load_workflow
from .frame_task import calibrated_output, clean_frame, frame_stem, master_history, unusable
from .ledger import Ledger
from .quality import score_frame

__all__ = ["process_group", "group_entry", "group_inputs", "product_path"]


def group_entry(label):
    """Ledger entry name of a group."""
    return f"group-{label}"


def product_path(out_dir, label, product):
    """Path of a group's combined product (through the output root's gate)."""
    return str(OutputRoot(out_dir).path(f"{label}_{product}.fits"))


def group_inputs(members):
    """A group's input closure: every member's own closure digest (its raw
    file and the masters it was calibrated with)."""
    return {f"member:{frame_stem(m['path'])}": closure_digest(m["inputs"]) for m in members}


def _write_product(path, value, cards, history):
    header = fits.Header()
    for k, v in cards.items():
        header[k] = v            # a value or (value, comment)
    if isinstance(value, tuple):
        data, var, mask = value
        write_calibrated(path, np.asarray(data, np.float32), np.asarray(var, np.float32),
                         np.asarray(mask, np.uint8), header=header, history=history,
                         overwrite=True)
        return
    for line in history:
        header["HISTORY"] = line
    write_fits_atomic([fits.PrimaryHDU(np.asarray(value, np.float32), header=header)], path,
                      overwrite=True)


def process_group(label, members, wf_dict, master_paths, group_sha256, member_results,
                  *, threads=1):
    """Clean one exposure group with the workflow's group method.

    Parameters
    ----------
    label : str, the group's label.
    members : list of dict
        One per member, in time order: ``path``, ``exptime``, ``filter``,
        ``inputs`` (the member's input closure).
    wf_dict : dict, the workflow (``Workflow.to_dict()``).
    master_paths : dict, master key -> FITS path.
    group_sha256 : str, checksum over the members' input closures.
    member_results : list of dict
        The members' frame-task summaries (status 'calibrated' when ready).
    threads : int, threads the method may use.

    Returns
    -------
    dict with ``label``, ``status``, ``error``, ``members`` (one frame
    summary per member), ``products`` (paths) and ``seconds``.
    """
    t0 = time.perf_counter()
    wf = load_workflow(wf_dict)
    load_plugins(wf.plugins)
    ledger = Ledger(wf.output)
    name = group_entry(label)
    cos = wf.cosmics
    result = {"label": label, "status": "failed", "error": None, "members": [],
              "products": {}, "method": cos.method, "seconds": 0.0}
    ready = [(m, r) for m, r in zip(members, member_results) if r.get("status") == "calibrated"]
    result["members"] = [r for r in member_results if r.get("status") != "calibrated"]
    try:
        method = get_method(cos.method, "group")
        h_all = config_hash(wf, "cosmics")
        ledger.start(name, None, group_sha256, h_all, kind="group",
                     inputs=group_inputs(members))
        store = IntermediateStore(wf.output / "intermediate.zarr")
        setup = wf.calib_setup()
        frames = []
        for m, _ in ready:
            arrays = store.read_frame(frame_stem(m["path"]))
            prep = electrons(m["path"], setup, m["exptime"])
            frames.append((m, prep, arrays))
        if len(frames) < method.min_members:
            result["members"] += _fallback(frames, wf, master_paths, ledger, threads,
                                           f"group {label} has {len(frames)} usable "
                                           f"member(s), {method.name} needs "
                                           f"{method.min_members}")
            ledger.finish(name, members=[frame_stem(m["path"]) for m, _, _ in frames],
                          fallback=True, seconds=time.perf_counter() - t0)
            result.update(status="done", method=cos.fallback,
                          seconds=time.perf_counter() - t0)
            return result
        first = frames[0][0]
        params = cos.params_for(filter=first["filter"], object=frames[0][1].header.get("OBJECT"),
                                exptime=first["exptime"])
        bad = [unusable(a["mask"]) for _, _, a in frames]
        res = method.detect([a["sci"] for _, _, a in frames], params, bad=bad,
                            var=[a["var"] for _, _, a in frames],
                            readnoise=[p.readnoise for _, p, _ in frames],
                            num_threads=threads)
        words = method.params.history(params)
        names = [os.path.basename(m["path"]) for m, _, _ in frames]
        for i, (m, prep, a) in enumerate(frames):
            crmask = np.asarray(res.crmask[i], bool) & ~bad[i]
            clean = np.where(bad[i], a["sci"], np.asarray(res.clean[i], np.float32))
            mask = a["mask"] | np.where(crmask, bits.COSMIC_RAY, 0).astype(np.uint8)
            ncr = int(crmask.sum())
            out = calibrated_output(wf.output, m["path"])
            header = prep.header.copy()
            header["CRNFIX"] = (ncr, "number of cosmic-ray pixels found")
            header["CRGROUP"] = (label, "exposure group cleaned together")
            history = [*prep.notes, f"gain={prep.gain} readnoise={prep.readnoise}",
                       f"input={os.path.basename(m['path'])}",
                       *master_history(wf, master_paths, m.get("label", m["filter"]),
                                       m.get("setup")), *words,
                       f"group {label}: " + " ".join(names)]
            write_calibrated(out, clean.astype(np.float32), a["var"], mask, header=header,
                             history=history, overwrite=True)
            quality = score_frame(wf.truth, os.path.basename(m["path"]), mask) \
                if wf.truth else {}
            stem = frame_stem(m["path"])
            ledger.finish(stem, outputs=[out], cr_pixels=ncr, output=out, group=label,
                          **quality)
            result["members"].append({"file": os.path.basename(m["path"]), "status": "done",
                                      "stage": "written", "cr_pixels": ncr, "output": out,
                                      "error": None, "seconds": 0.0, **quality})
        for product, value in sorted(res.products.items()):
            path = product_path(wf.output, label, product)
            hdr = {k: v for k, v in res.header.items()}
            _write_product(path, value, {**hdr, "CRGROUP": label},
                           [*words, f"group {label}: " + " ".join(names)])
            result["products"][product] = path
        seconds = time.perf_counter() - t0
        ledger.finish(name, outputs=[s["output"] for s in result["members"]
                                     if s.get("output")] + list(result["products"].values()),
                      members=[frame_stem(m["path"]) for m, _, _ in frames],
                      products=result["products"], seconds=seconds)
        for s in result["members"]:
            s["seconds"] = s["seconds"] or round(seconds / max(len(frames), 1), 3)
        result.update(status="done", seconds=seconds)
    except Exception as e:  # one bad group must not stop the night
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        msg = f"group {label}: {type(e).__name__}: {msg}" if not msg.startswith("group") \
            else msg
        try:
            ledger.fail(name, msg)
        except Exception:  # pragma: no cover - the ledger itself unwritable
            pass
        done = {s["file"] for s in result["members"]}
        for m, _ in ready:
            if os.path.basename(m["path"]) not in done:
                result["members"].append({"file": os.path.basename(m["path"]),
                                          "status": "failed", "stage": "calibrated",
                                          "cr_pixels": None, "output": None, "error": msg,
                                          "seconds": 0.0})
        result.update(error=msg, seconds=time.perf_counter() - t0)
    return result


def _fallback(frames, wf, master_paths, ledger, threads, why):
    """Clean members one by one with the fallback frame method."""
    cos = wf.cosmics
    out = []
    for m, prep, a in frames:
        stem = frame_stem(m["path"])
        if cos.fallback is None:
            msg = f"{m['path']}: {why} and no fallback method is set"
            ledger.fail(stem, msg)
            out.append({"file": os.path.basename(m["path"]), "status": "failed",
                        "stage": "calibrated", "cr_pixels": None, "output": None,
                        "error": msg, "seconds": 0.0})
            continue
        params = cos.params_for(filter=m["filter"], object=prep.header.get("OBJECT"),
                                exptime=m["exptime"], method=cos.fallback)
        clean, mask, ncr, words = clean_frame(cos.fallback, a["sci"], a["var"], a["mask"],
                                              params, prep.readnoise, threads)
        path = calibrated_output(wf.output, m["path"])
        header = prep.header.copy()
        header["CRNFIX"] = (ncr, "number of cosmic-ray pixels found")
        history = [*prep.notes, f"gain={prep.gain} readnoise={prep.readnoise}",
                   f"input={os.path.basename(m['path'])}",
                   *master_history(wf, master_paths, m.get("label", m["filter"]),
                                   m.get("setup")), *words,
                   f"fallback: {why}"]
        write_calibrated(path, clean, a["var"], mask, header=header, history=history,
                         overwrite=True)
        quality = score_frame(wf.truth, os.path.basename(m["path"]), mask) if wf.truth else {}
        ledger.finish(stem, outputs=[path], cr_pixels=ncr, output=path, fallback=cos.fallback,
                      **quality)
        out.append({"file": os.path.basename(m["path"]), "status": "done", "stage": "written",
                    "cr_pixels": ncr, "output": path, "error": None, "seconds": 0.0,
                    "method": cos.fallback, "note": why, **quality})
    return out
