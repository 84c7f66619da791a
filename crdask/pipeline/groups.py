"""Exposure groups of a night as units of work, from the workflow's rule (layer 4).

The grouping itself is the catalogue's (:func:`crdask.io.exposures.exposure_groups`);
this module applies ``steps.cosmics.grouping`` to it: the catalogue fields
named in ``keys`` equal (object and filter by default), exposure times equal
within ``exptime_rtol`` (relative), and consecutive in time with at most
``max_gap`` seconds between the *starts* of consecutive members (start to
start, so the rule does not depend on exposure times; null: any gap).
Frames without a usable time form groups of their own.

Example
-------
>>> from crdask.io.catalog import FrameInfo
>>> fs = [FrameInfo(f"/n/s{i}.fits", "science", 60.0, "R", "M51",
...                 date_obs=f"2024-03-01T01:0{i}:00") for i in range(3)]
>>> [len(g.members) for g in group_exposures(fs, {"keys": ["object", "filter"],
...                                               "exptime_rtol": 0.01, "max_gap": None})]
[3]
"""

from __future__ import annotations

from ..io.exposures import exposure_groups

__all__ = ["group_exposures"]


def group_exposures(infos, grouping):
    """Split science frames into exposure groups as the workflow says.

    Parameters
    ----------
    infos : iterable of FrameInfo
        Readable science-like frames.
    grouping : dict
        ``keys``, ``exptime_rtol``, ``max_gap`` (``steps.cosmics.grouping``).

    Returns
    -------
    list of ExposureGroup (``label``, ``members``, ``paths``), sorted by label.
    """
    groups = exposure_groups(list(infos), keys=tuple(grouping.get("keys", ())),
                             exptime_rtol=float(grouping.get("exptime_rtol", 0.0)),
                             max_gap=grouping.get("max_gap"), min_size=1,
                             gap="start-to-start")
    return sorted(groups, key=lambda g: g.label)
