"""The masters of a night: built once, reused while their inputs are unchanged (layer 4).

The masters are Dask reductions (:mod:`crdask.pipeline.calibration`)
computed on the active scheduler, written as FITS (and into the Zarr
intermediates), and recorded in the ledger under ``masters`` with a checksum
of all their inputs and the hash of the settings that shape them. A rerun
with the same inputs and settings reuses them.

The checksums of the master *files* are part of every science frame's
input closure: a science product counts as done only while the masters it
was calibrated with are unchanged.
"""

from __future__ import annotations

import os
import time

from ..io.catalog import Catalog
from ..io.intermediates import IntermediateStore
from .calibration import build_masters, master_arrays, write_masters
from .config import config_hash
from .ledger import Ledger

__all__ = ["MASTER_KEY", "calibration_frames", "masters_inputs", "masters_current",
           "masters_step"]

#: Ledger entry of the masters.
MASTER_KEY = "masters"
CALIBRATION_TYPES = ("bias", "dark", "flat")


def calibration_frames(catalog):
    """Readable bias, dark and flat frames of a catalogue."""
    return [i for i in catalog.frames if i.frame_type in CALIBRATION_TYPES and not i.error]


def masters_inputs(ledger, infos):
    """The masters' input closure: every calibration frame by checksum."""
    return ledger.closure(files=sorted(i.path for i in infos))


def masters_current(wf, ledger, calib_infos):
    """True if the recorded masters were built from these frames and
    settings and their files are intact (sizes and checksums recorded)."""
    return ledger.is_current(MASTER_KEY, None, config_hash(wf, "masters"),
                             inputs=masters_inputs(ledger, calib_infos))


def masters_step(wf, ledger: Ledger, catalog, log):
    """Build or reuse the masters.

    Returns
    -------
    (info, paths, rejected) : report entries per master, ``{key: path}``,
    and ``[(path, one-line reason)]`` of calibration frames set aside.
    """
    rejected = []
    if not wf.masters["enabled"]:
        return {}, {}, rejected
    calib = calibration_frames(catalog)
    if not calib:
        return {}, {}, rejected
    if masters_current(wf, ledger, calib):
        info = ledger.get(MASTER_KEY)["info"]
        rejected = [tuple(r) for r in info.get("rejected", [])]
        log("crdask: masters unchanged, reused")
        return ({k: {"path": p, "inputs": info.get("inputs", {}).get(k, []),
                     "status": "reused"} for k, p in info["paths"].items()},
                info["paths"], rejected)
    ledger.start(MASTER_KEY, None, None, config_hash(wf, "masters"), kind="master",
                 inputs=masters_inputs(ledger, calib))
    t = time.perf_counter()
    sub = Catalog(frames=calib, keymap=catalog.keymap)
    masters = build_masters(sub, wf.calib_setup(), rejected)
    known = {str(i.path): ledger.file_sha256(i.path) for i in calib}   # cached above
    paths = write_masters(masters, str(wf.output), overwrite=True, checksums=known)
    inputs = {}
    for kind in ("bias", "dark"):
        if masters[kind] is not None:
            inputs[kind] = [os.path.basename(p) for p in masters[kind].inputs]
    for filt, m in masters["flat"].items():
        inputs[f"flat_{filt}"] = [os.path.basename(p) for p in m.inputs]
    if wf.execution.intermediates:   # the arrays just written, not read back
        store = IntermediateStore(wf.output / "intermediate.zarr")
        arrays = master_arrays(masters)
        for key in paths:
            store.write_master(key, arrays[key])
    ledger.finish(MASTER_KEY, outputs=list(paths.values()), paths=paths, inputs=inputs,
                  rejected=rejected,
                  seconds=time.perf_counter() - t)
    log(f"crdask: masters built in {time.perf_counter() - t:.1f} s: {', '.join(paths)}")
    return ({k: {"path": p, "inputs": inputs.get(k, []), "status": "done"}
             for k, p in paths.items()}, paths, rejected)
