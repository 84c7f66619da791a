"""``steps.cosmics`` of a workflow, driven by the methods' parameter objects (layer 4).

Nothing here knows a method's name or parameters: the section is checked by
walking the :class:`~crdask.cosmic.params.ParamSet` of the method the
workflow names (looked up in :mod:`crdask.cosmic.registry`)::

    steps:
      cosmics:
        method: cr2images          # any registered method, frame or group
        params: {tsigma_peak: 8}   # that method's parameters
        fallback: lacosmic         # frame method for frames no group can take
        fallback_params: {}
        grouping:                  # equivalent exposures (group methods)
          keys: [object, filter]   # catalogue fields that must be equal
          exptime_rtol: 0.01       # exposure times equal within 1%
          max_gap: 1800            # seconds between consecutive starts (null: any)
        overrides:                 # per-frame parameter changes, first match wins
          - match: {filter: R}
            params: {sigclip: 5}

Decisions: parameters a night sets itself (``workflow=False`` in the
declaration: ``gain``, ``readnoise``) are refused with the reason;
parameters left out take the method's *night* value
(:meth:`~crdask.cosmic.params.Param.night_value`), e.g. no electron-level
saturation rule for L.A.Cosmic because the frame's saturation bit, taken
from the raw ADU, already masks saturated pixels; ``fallback`` must be a
``frame`` method, or null: frames no group can take are then set aside
with one line each; ``fallback``, ``fallback_params`` and ``grouping`` are
accepted for frame methods too (unused), so one file can switch methods.

Example
-------
>>> from pathlib import Path
>>> from crdask.pipeline.schema import Checker
>>> c = cosmics_section(Checker("n.yaml", Path(".")), {"params": {"sigclip": 5}},
...                     "steps.cosmics")
>>> (c.method, c.params["sigclip"], c.params["satlevel"])
('lacosmic', 5.0, inf)
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from ..cosmic.params import ParamError
from ..cosmic.registry import get_method, method_names
from .schema import join_path, show, type_name

__all__ = ["Cosmics", "Override", "cosmics_section", "COSMICS_DEFAULTS", "MATCH_KEYS",
           "GROUPING_DEFAULTS"]

#: Frame fields an override may match on.
MATCH_KEYS = ("filter", "object", "exptime")
#: Catalogue fields that may define exposure groups.
GROUP_FIELDS = ("object", "filter", "setup", "binning", "shape")
GROUPING_DEFAULTS = {"keys": ["object", "filter"], "exptime_rtol": 0.01, "max_gap": None}
COSMICS_DEFAULTS = {"enabled": True, "method": "lacosmic", "params": {},
                    "fallback": "lacosmic", "fallback_params": {},
                    "grouping": dict(GROUPING_DEFAULTS), "overrides": []}


def _matches(wanted, value, key):
    if value is None:
        return False
    if key == "exptime":
        try:
            value = float(value)
        except (TypeError, ValueError):
            return False
        return any(math.isclose(value, w, rel_tol=1e-6, abs_tol=1e-9) for w in wanted)
    return str(value).strip() in wanted


@dataclass(frozen=True)
class Override:
    """``match`` maps filter/object/exptime to accepted values; ``params``
    are the changed parameters only."""

    match: dict
    params: dict

    def matches(self, filter=None, object=None, exptime=None):
        given = {"filter": filter, "object": object, "exptime": exptime}
        return all(_matches(w, given[k], k) for k, w in self.match.items())


@dataclass(frozen=True)
class Cosmics:
    """``steps.cosmics``, validated: complete parameters of ``method`` and
    of ``fallback`` (night values filled in), the grouping rule and the
    overrides."""

    enabled: bool
    method: str
    params: dict
    fallback: str | None = "lacosmic"
    fallback_params: dict = field(default_factory=dict)
    grouping: dict = field(default_factory=lambda: dict(GROUPING_DEFAULTS))
    overrides: tuple = ()

    @property
    def kind(self):
        """``'frame'`` or ``'group'``: the kind of :attr:`method`."""
        return get_method(self.method).kind

    def params_for(self, filter=None, object=None, exptime=None, *, method=None):
        """Complete parameters for one frame (or group, by its first member):
        the method's night values, ``params``, then the first matching
        override (overrides apply to the main method only). ``method`` may
        name the fallback. A new dict on every call."""
        if method is not None and method != self.method:
            return dict(self.fallback_params)
        out = dict(self.params)
        for o in self.overrides:
            if o.matches(filter=filter, object=object, exptime=exptime):
                out.update(o.params)
                break
        return out

    def to_dict(self):
        return {"enabled": self.enabled, "method": self.method, "params": dict(self.params),
                "fallback": self.fallback, "fallback_params": dict(self.fallback_params),
                "grouping": dict(self.grouping),
                "overrides": [{"match": {k: list(v) for k, v in o.match.items()},
                               "params": dict(o.params)} for o in self.overrides]}


def _method(ck, value, path, kind=None):
    if not isinstance(value, str):
        raise ck.error(path, f"{show(value)} is not allowed", ", ".join(method_names(kind)))
    try:
        return get_method(value, kind)
    except ParamError as e:
        raise ck.error(path, f"{show(value)} is not allowed", e.allowed) from None


def _given_params(ck, method, raw, path):
    """The parameters a mapping sets, each validated by its declaration."""
    ps = method.params
    allowed = ", ".join(p.name for p in ps if p.workflow)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ck.error(path, f"expected a mapping, got {type_name(raw)} {show(raw)}",
                       f"a mapping of {method.name} parameters: {allowed}")
    out = {}
    for key, value in raw.items():
        kp = join_path(path, str(key))
        if not isinstance(key, str) or key not in ps:
            near = ps.closest(str(key))
            hint = f" (did you mean {near}?)" if near and ps[near].workflow else ""
            raise ck.error(kp, f"unknown {method.name} parameter{hint}", allowed)
        p = ps[key]
        if not p.workflow:
            raise ck.error(kp, "not allowed here: frames are in electrons, so the pipeline "
                               "sets it per frame (set instrument.gain/readnoise or "
                               "keywords.gain/readnoise instead)", allowed)
        try:
            out[key] = p.validate(value)
        except ParamError as e:
            raise ck.error(kp, e.problem, e.allowed) from None
    return out


def _complete(ck, method, given, path):
    """Night values + ``given``, with the set's cross-parameter rules."""
    try:
        full = method.params.validate(given, night=True, workflow_only=True)
    except ParamError as e:
        raise ck.error(join_path(path, e.name), e.problem, e.allowed) from None
    return full


def _match_value(ck, key, value, path):
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ck.error(path, "empty list", "a value or a list of alternatives")
    out = []
    for i, v in enumerate(values):
        p = join_path(path, i) if isinstance(value, list) else path
        if key == "exptime":
            out.append(ck.number(v, p, minimum=0))
        elif isinstance(v, bool) or not isinstance(v, (str, numbers.Real)):
            raise ck.error(p, f"expected text, got {type_name(v)} {show(v)} (quote it "
                              "in YAML: yes/no/on/off are read as true/false)",
                           f"the {key} header value")
        else:
            out.append(str(v))
    return out


def _grouping(ck, raw, path):
    raw = ck.mapping(raw, path, list(GROUPING_DEFAULTS))
    v = {**GROUPING_DEFAULTS, **raw}
    keys = v["keys"]
    keys = [keys] if isinstance(keys, str) else keys
    kp = join_path(path, "keys")
    if not isinstance(keys, list):
        raise ck.error(kp, f"expected a list, got {type_name(keys)} {show(keys)}",
                       ", ".join(GROUP_FIELDS))
    for i, k in enumerate(keys):
        ck.choice(k, join_path(kp, i), GROUP_FIELDS)
    return {"keys": list(keys),
            "exptime_rtol": ck.number(v["exptime_rtol"], join_path(path, "exptime_rtol"),
                                      minimum=0),
            "max_gap": ck.number(v["max_gap"], join_path(path, "max_gap"), minimum=0,
                                 none_ok=True)}


def cosmics_section(ck, raw, path):
    """Validate ``steps.cosmics`` (``raw`` as read from YAML) with the
    :class:`~crdask.pipeline.schema.Checker` ``ck``; returns :class:`Cosmics`."""
    d = COSMICS_DEFAULTS
    raw = ck.mapping(raw, path, list(d))
    j = lambda k: join_path(path, k)  # noqa: E731
    enabled = ck.flag(raw.get("enabled", d["enabled"]), j("enabled"))
    method = _method(ck, raw.get("method", d["method"]), j("method"))
    given = _given_params(ck, method, raw.get("params"), j("params"))
    full = _complete(ck, method, given, j("params"))
    fallback, fb_full = None, {}
    if raw.get("fallback", d["fallback"]) is not None:   # null: no fallback
        fallback = _method(ck, raw.get("fallback", d["fallback"]), j("fallback"), "frame")
        fb_given = _given_params(ck, fallback, raw.get("fallback_params"),
                                 j("fallback_params"))
        fb_full = _complete(ck, fallback, fb_given, j("fallback_params"))
    grouping = _grouping(ck, raw.get("grouping"), j("grouping"))

    opath = j("overrides")
    over_raw = raw.get("overrides")
    over_raw = [] if over_raw is None else over_raw
    if not isinstance(over_raw, list):
        raise ck.error(opath, f"expected a list, got {type_name(over_raw)} "
                              f"{show(over_raw)}", "a list of {match, params}")
    overrides = []
    for i, o in enumerate(over_raw):
        p = join_path(opath, i)
        o = ck.mapping(o, p, ["match", "params"], none_ok=False)
        mp = join_path(p, "match")
        if not o.get("match"):
            raise ck.error(mp, "missing or empty", "a mapping of " + ", ".join(MATCH_KEYS))
        match = ck.mapping(o["match"], mp, list(MATCH_KEYS), none_ok=False)
        match = {k: _match_value(ck, k, v, join_path(mp, k)) for k, v in match.items()}
        op = join_path(p, "params")
        changed = _given_params(ck, method, o.get("params"), op)
        _complete(ck, method, {**given, **changed}, op)
        overrides.append(Override(match=match, params=changed))
    return Cosmics(enabled=enabled, method=method.name, params=full,
                   fallback=None if fallback is None else fallback.name,
                   fallback_params=fb_full, grouping=grouping,
                   overrides=tuple(overrides))
