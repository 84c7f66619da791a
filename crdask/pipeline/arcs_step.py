"""Arc-lamp frames of a night: one task each, beside the science frames (layer 4).

Arcs (frame type ``arc``: ``WAVE``, ``ARC``, ``COMP``, ``WAVE,LAMP``) are
wavelength calibrators: with ``steps.arcs.enabled`` (the default) each is
calibrated like a science frame but not flat-fielded and not cleaned of
cosmic rays unless the workflow asks (``steps.arcs.flat``,
``steps.arcs.cosmics``), and written as ``OUT/<stem>_arc.fits`` (SCI e-,
UNCERT, MASK; HISTORY names the masters and the setup) by
:func:`crdask.pipeline.frame_task.process_arc_frame`. An arc whose product is
current (same raw file, masters, settings) is not redone.

Example
-------
>>> arc_summaries(None, [], [], print, str)   # a night without arcs
[]
"""

from __future__ import annotations

from ..io.checksums import closure_digest
from .frame_task import frame_stem, process_arc_frame
from .spectro_masters import frame_inputs, setup_label

__all__ = ["submit_arcs", "arc_summaries"]


def submit_arcs(client, wf, ledger, arcs, master_paths, threads, resources, labels):
    """One task per arc frame (:func:`crdask.pipeline.frame_task.process_arc_frame`),
    in the order of ``arcs``."""
    wf_dict = wf.to_dict()
    futures = []
    if not wf.arcs["flat"]:   # not flat-fielded: the flat is no input of theirs
        master_paths = {k: v for k, v in master_paths.items() if not k.startswith("flat_")}
    for info in arcs:
        label = setup_label(labels, info)
        inputs = frame_inputs(ledger, info.path, label, master_paths)
        key = f"arc-{frame_stem(info.path)}-{closure_digest(inputs)[:12]}"
        futures.append(client.submit(process_arc_frame, info.path, wf_dict, master_paths,
                                     info.exptime, inputs=inputs, label=label,
                                     setup_name=info.setup, threads=threads, key=key,
                                     pure=False, retries=2, resources=resources))
    return futures


def arc_summaries(client, arcs, futures, log, group_label):
    """Wait for the arc tasks; their summaries (``type`` 'arc', ``group``
    from ``group_label(info)``), one log line each."""
    out = []
    for info, res in zip(arcs, client.gather(futures) if futures else []):
        res["group"] = group_label(info)
        log(f"crdask: arc {res['file']}: {res['status']}"
            + (f" ({res['error']})" if res.get("error") else ""))
        out.append(res)
    return out
