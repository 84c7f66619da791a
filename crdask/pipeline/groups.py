"""Exposure groups of a night: equivalent science exposures as units of work (layer 4).

A group is a run of science frames that a ``group`` cosmic-ray method may
clean together: the catalogue fields named in ``steps.cosmics.grouping.keys``
equal (object and filter by default), exposure times equal within
``exptime_rtol`` (relative), and consecutive in time (``DATE-OBS``) with at
most ``max_gap`` seconds between the starts of consecutive members
(start-to-start, so the rule does not depend on exposure times). Frames
without a usable ``DATE-OBS`` form groups of their own.

Labels are stable and readable: ``<object>_<filter>_<exptime>s_<nn>``, with
``nn`` counting the groups of the same object/filter/time in time order.

Example
-------
>>> from crdask.io.catalog import FrameInfo
>>> fs = [FrameInfo(f"/n/s{i}.fits", "science", 60.0, "R", "M51",
...                 date_obs=f"2024-03-01T01:0{i}:00") for i in range(3)]
>>> [(g.label, len(g.members)) for g in group_exposures(fs, {"keys": ["object", "filter"],
...                                                          "exptime_rtol": 0.01,
...                                                          "max_gap": None})]
[('M51_R_60s_01', 3)]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

__all__ = ["ExposureGroup", "group_exposures"]


@dataclass(frozen=True)
class ExposureGroup:
    """A group of equivalent exposures: ``label`` and ``members`` (catalogue
    :class:`~crdask.io.catalog.FrameInfo` s in time order)."""

    label: str
    members: tuple

    @property
    def paths(self):
        return tuple(m.path for m in self.members)


def _when(info):
    text = info.date_obs
    if not text:
        return None
    try:
        t = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.timestamp()


def _field(info, key):
    value = getattr(info, key, None)
    return tuple(value) if isinstance(value, list) else value


def _safe(text):
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(text)).strip("-") or "none"


def group_exposures(infos, grouping):
    """Split science frames into exposure groups.

    Parameters
    ----------
    infos : iterable of FrameInfo
        Readable science frames.
    grouping : dict
        ``keys`` (catalogue fields that must be equal), ``exptime_rtol``
        (relative tolerance of exposure times), ``max_gap`` (seconds between
        consecutive starts, or None for no limit).

    Returns
    -------
    list of ExposureGroup, sorted by label.
    """
    keys = list(grouping.get("keys", ()))
    rtol = float(grouping.get("exptime_rtol", 0.0))
    gap = grouping.get("max_gap")
    timed = sorted(infos, key=lambda i: (_when(i) is None, _when(i) or 0.0, i.path))
    open_runs = {}          # key tuple -> list of runs (each a list of infos)
    for info in timed:
        key = tuple(_field(info, k) for k in keys)
        runs = open_runs.setdefault(key, [])
        t = _when(info)
        last = runs[-1] if runs else None
        fits = (last is not None and t is not None and _when(last[-1]) is not None
                and info.exptime is not None and last[-1].exptime is not None
                and abs(info.exptime - last[-1].exptime)
                <= rtol * max(abs(info.exptime), abs(last[-1].exptime))
                and (gap is None or t - _when(last[-1]) <= gap))
        if fits:
            last.append(info)
        else:
            runs.append([info])
    groups, counts = [], {}
    for runs in open_runs.values():
        for run in runs:
            first = run[0]
            base = "_".join(_safe(x) for x in (
                first.object, first.filter,
                f"{first.exptime:g}s" if first.exptime is not None else "t"))
            counts[base] = counts.get(base, 0) + 1
            groups.append((base, run))
    out, seen = [], {}
    for base, run in sorted(groups, key=lambda g: (g[0], _when(g[1][0]) or 0.0,
                                                   g[1][0].path)):
        seen[base] = seen.get(base, 0) + 1
        out.append(ExposureGroup(f"{base}_{seen[base]:02d}", tuple(run)))
    return out
