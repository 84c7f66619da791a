"""Exposure groups: equivalent science exposures taken one after another (layer 3).

A *group* method of cosmic-ray removal (pair differencing, Median-Minimum)
works on several exposures of the same thing: same target, same instrument
setup, the same exposure time, taken in one go. :func:`exposure_groups` finds
them in a night's catalogue from headers alone.

Rules (all of them must hold between a member and the group):

* the values of ``keys`` are equal (default: ``object`` and ``setup``, the
  latter being filter / grism / slit / binning / window, see
  :class:`~crdask.io.keywords.KeywordMap`);
* the exposure time is within ``exptime_rtol`` (relative) of the group's
  *first* member's (so a slow drift cannot chain 100 s into 200 s);
* consecutive in time: members are ordered by their start (DATE-OBS, or the
  MJD in ``KeywordMap.time_keys`` when DATE-OBS is missing or unparsable),
  and the **gap is measured from the end of one exposure (start +
  exposure time) to the start of the next**; a gap larger than ``max_gap``
  seconds starts a new group. End-to-start is used so that a long
  exposure and a short one are judged by the same idle time (the readout
  and any pause), not by their length (``gap='start-to-start'`` measures
  from start to start instead). Frames of other targets taken in
  between do not break a group (an observer alternating two targets gets
  two groups) -- only the idle time of the target's own exposures counts.

Frames without a usable start time (no DATE-OBS / MJD, or unparsable) each
form a singleton group (``timed = False``): without a time nothing says
which exposures belong together.

Labels are ``<object>_<filter>_<exptime>s_<nn>`` (characters other than
letters, digits, ``.+-`` replaced by ``-``; exposure time rounded to a
whole second when within 0.5%), numbered ``01, 02, ...`` per base label in
time order, so the same night always gives the same labels.

Example
-------
>>> from crdask.io.catalog import build_catalog
>>> cat = build_catalog("raw/")                            # doctest: +SKIP
>>> [(g.label, g.size) for g in cat.exposure_groups()]     # doctest: +SKIP
[('Q1010-0100_g-782_180s_01', 3), ...]
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field

__all__ = ["ExposureGroup", "exposure_groups", "start_seconds"]

_MJD0 = _dt.datetime(1858, 11, 17)
_LABEL_BAD = re.compile(r"[^A-Za-z0-9.+\-]+")


@dataclass
class ExposureGroup:
    """Equivalent exposures, in time order.

    label : str, stable id (``'M51_R_300s_01'``)
    key : dict of the ``keys`` values shared by the members
    exptime : float, s, the first member's exposure time
    paths : tuple of str, members ordered by start time
    starts : tuple of float, start of each member, seconds since MJD 0 (None
        for an untimed singleton)
    gaps : tuple of float, seconds between consecutive members as measured
        for ``max_gap`` (``len(paths) - 1`` values)
    timed : bool, False for a frame without a usable start time
    members : tuple of the members' FrameInfo, in the order of ``paths``
    """

    label: str
    key: dict
    exptime: float | None
    paths: tuple
    starts: tuple
    gaps: tuple
    timed: bool = True
    members: tuple = field(default=(), repr=False, compare=False)

    @property
    def size(self):
        return len(self.paths)

    def to_dict(self):
        return {"label": self.label, "key": dict(self.key), "exptime": self.exptime,
                "paths": list(self.paths), "size": self.size,
                "starts": list(self.starts), "gaps": list(self.gaps), "timed": self.timed}


def _parse_date(text):
    if text is None:
        return None
    s = str(text).strip().replace("Z", "")
    if "T" not in s and " " in s:
        s = s.replace(" ", "T", 1)
    try:
        t = _dt.datetime.fromisoformat(s)
    except ValueError:
        return None
    if t.tzinfo is not None:
        t = t.astimezone(_dt.timezone.utc).replace(tzinfo=None)
    return (t - _MJD0).total_seconds()


def start_seconds(frame):
    """Start of exposure of a :class:`~crdask.io.catalog.FrameInfo`, seconds
    since MJD 0 (from ``date_obs``, else ``mjd_obs``), or None."""
    t = _parse_date(getattr(frame, "date_obs", None))
    if t is None and getattr(frame, "mjd_obs", None) is not None:
        t = float(frame.mjd_obs) * 86400.0
    return t


def _exptime_label(t):
    if t is None:
        return "unknown"
    r = round(t)
    if r > 0 and abs(t - r) <= 0.005 * t:
        return f"{int(r)}s"
    return f"{t:g}s".replace(".", "p")


def _base_label(frame):
    parts = [frame.object or "noobject", frame.filter or "nofilter"]
    parts = [_LABEL_BAD.sub("-", str(p)).strip("-") or "x" for p in parts]
    return "_".join(parts + [_exptime_label(frame.exptime)])


def exposure_groups(frames, keys=("object", "setup"), exptime_rtol=0.01, max_gap=600.0,
                    min_size=1, frame_types=("science", "standard"), gap="end-to-start"):
    """Group equivalent exposures of a night (see the module docstring).

    Parameters
    ----------
    frames : iterable of :class:`~crdask.io.catalog.FrameInfo` (a
        :class:`~crdask.io.catalog.Catalog` works); unusable frames (``ok``
        False) and frames whose type is not in ``frame_types`` are ignored.
    keys : FrameInfo attribute names whose values must be equal.
    exptime_rtol : float >= 0, relative tolerance on the exposure time.
    max_gap : float >= 0 or None, seconds: the largest gap between
        consecutive members of a group (None: no limit).
    min_size : int >= 1; groups with fewer members are left out of the
        result (their frames are then in no group).
    frame_types : frame types to group (default science and standard).
    gap : ``'end-to-start'`` (default: idle time, from the end of one
        exposure to the start of the next) or ``'start-to-start'``.

    Returns
    -------
    list of :class:`ExposureGroup`, ordered by the start of their first
    member (untimed singletons last, by path); labels unique.
    """
    if not exptime_rtol >= 0:
        raise ValueError(f"exptime_rtol must be >= 0, got {exptime_rtol!r}")
    if max_gap is not None and not max_gap >= 0:
        raise ValueError(f"max_gap must be >= 0 s or None, got {max_gap!r}")
    if gap not in ("end-to-start", "start-to-start"):
        raise ValueError(f"gap must be 'end-to-start' or 'start-to-start', got {gap!r}")
    from_end = gap == "end-to-start"

    def length(f):
        return (f.exptime or 0.0) if from_end else 0.0

    if int(min_size) != min_size or min_size < 1:
        raise ValueError(f"min_size must be an integer >= 1, got {min_size!r}")
    keys = tuple(keys)
    chosen = [f for f in frames if f.ok and f.frame_type in frame_types]
    for k in keys:
        if chosen and not hasattr(chosen[0], k):
            raise ValueError(f"keys: {k!r} is not a FrameInfo attribute")
    timed, untimed = [], []
    for f in chosen:
        t = start_seconds(f)
        (timed if t is not None else untimed).append((t, f))
    streams = {}
    for t, f in sorted(timed, key=lambda tf: (tf[0], tf[1].path)):
        streams.setdefault(tuple(str(getattr(f, k)) for k in keys), []).append((t, f))
    runs = []
    for key, members in streams.items():
        cur = []
        for t, f in members:
            if cur:
                t0, f0 = cur[0]
                tp, fp = cur[-1]
                dt = t - (tp + length(fp))
                same_t = (f.exptime is None and f0.exptime is None) or (
                    f.exptime is not None and f0.exptime is not None
                    and abs(f.exptime - f0.exptime)
                    <= exptime_rtol * max(abs(f.exptime), abs(f0.exptime)))
                if not same_t or (max_gap is not None and dt > max_gap):
                    runs.append((key, cur))
                    cur = []
            cur.append((t, f))
        if cur:
            runs.append((key, cur))
    runs.sort(key=lambda r: (r[1][0][0], r[1][0][1].path))
    runs += [((), [(None, f)]) for _, f in sorted(untimed, key=lambda tf: tf[1].path)]
    out, counters = [], {}
    for _, members in runs:
        if len(members) < min_size:
            continue
        first = members[0][1]
        base = _base_label(first)
        counters[base] = counters.get(base, 0) + 1
        starts = tuple(t for t, _ in members)
        gaps = tuple(round(members[i + 1][0] - (members[i][0] + length(members[i][1])), 3)
                     for i in range(len(members) - 1)) if starts[0] is not None else ()
        out.append(ExposureGroup(
            label=f"{base}_{counters[base]:02d}",
            key={k: getattr(first, k) for k in keys}, exptime=first.exptime,
            paths=tuple(f.path for _, f in members), starts=starts, gaps=gaps,
            timed=starts[0] is not None, members=tuple(f for _, f in members)))
    return out
