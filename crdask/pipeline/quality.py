"""Cosmic-ray detection quality against a simulation's truth (layer 4).

A night simulated by :mod:`crdask.simulate` keeps its true CR masks in a
``truth`` folder; a workflow that names it gets recall and false positives
per frame (and over the night) in its report.

Example
-------
>>> cr_summary([{"recall": 0.5, "n_true": 10, "false_positives": 2, "n_found": 7}])
{'frames': 1, 'recall': 0.5, 'false_positives': 2, 'n_true': 10, 'n_found': 7}
"""

import numpy as np

from ..calib import bits

__all__ = ["score_frame", "cr_summary", "QUALITY_KEYS"]

#: Keys :func:`score_frame` adds to a frame's summary.
QUALITY_KEYS = ("recall", "false_positives", "n_true", "n_found")


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


def cr_summary(frames):
    """Recall and false positives over all scored frames (None if none)."""
    scored = [f for f in frames if "recall" in f]
    if not scored:
        return None
    n_true = sum(f["n_true"] for f in scored)
    found_true = sum(f["recall"] * f["n_true"] for f in scored)
    return {"frames": len(scored), "recall": round(found_true / max(n_true, 1), 4),
            "false_positives": sum(f["false_positives"] for f in scored),
            "n_true": n_true, "n_found": sum(f["n_found"] for f in scored)}
