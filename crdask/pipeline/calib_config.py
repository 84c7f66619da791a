"""``inputs``, ``keywords``, ``instrument`` and ``steps.masters`` of a workflow (layer 4).

Each section has its defaults here, derived from the functions and
dataclasses it configures (:class:`~crdask.io.catalog.KeywordMap`,
:class:`~crdask.pipeline.calibration.CalibSetup`,
:func:`crdask.calib.combine.combine`) so they cannot drift apart, and one
function that validates what a workflow file says with a
:class:`~crdask.pipeline.schema.Checker`.

Example
-------
>>> from pathlib import Path
>>> from crdask.pipeline.schema import Checker
>>> instrument_section(Checker("n.yaml", Path(".")), {"gain": 2}, )["gain"]
2.0
"""

from __future__ import annotations

import copy
import inspect
import numbers

import numpy as np

from ..calib import combine as combine_module
from ..calib.overscan import FIT_METHODS, STATISTICS
from ..io.catalog import FRAME_TYPES, KeywordMap
from ..io.sections import SectionError, parse_section
from ..io.keywords import SETUP_PARTS
from .calibration import CalibSetup
from .spectro_masters import MODES, RESPONSE_DEFAULTS
from .schema import (
    WorkflowError,
    header_keyword,
    join_path,
    reject_yaml_list,
    section_or_keyword,
    show,
    type_name,
    validator_error,
)

__all__ = ["KEYWORD_FIELDS", "COMBINE_DEFAULTS", "INPUTS_DEFAULTS", "KEYWORDS_DEFAULTS",
           "INSTRUMENT_DEFAULTS", "MASTERS_DEFAULTS", "FLAT_NORMS", "AMPLIFIER_KEYS",
           "ARCS_DEFAULTS", "amplifiers_setting", "arcs_section", "inputs_section",
           "keywords_section", "instrument_section", "masters_section"]

#: ``keywords`` names -> :class:`KeywordMap` fields.
KEYWORD_FIELDS = {
    "type": "type_keys",
    "exptime": "exptime_keys",
    "filter": "filter_keys",
    "filter_wheels": "filter_wheel_keys",
    "clear_filters": "clear_filters",
    "grism": "grism_keys",
    "slit": "slit_keys",
    "object": "object_keys",
    "date": "date_keys",
    "time": "time_keys",
    "gain": "gain_keys",
    "readnoise": "rdnoise_keys",
    "binning": "binning_keys",
    "binning_pairs": "binning_pairs",
    "setup": "setup_keys",
}

#: ``steps.masters.combine``: the keyword arguments of
#: :func:`crdask.calib.combine.combine` a workflow may set, with the
#: pipeline's defaults (average after one 3-sigma clip, as ccdproc) on top of
#: the function's own.
COMBINE_DEFAULTS = {
    **{name: p.default for name, p in inspect.signature(combine_module.combine).parameters.items()
       if name not in ("frames", "weights", "scale", "mask", "chunks")},
    **CalibSetup().combine_kw,
}

_CALIB = CalibSetup()
_KEYMAP = KeywordMap()


def _keyword_default(name):
    value = getattr(_KEYMAP, KEYWORD_FIELDS[name])
    if name == "binning_pairs":
        return [list(pair) for pair in value]
    return list(value)


INPUTS_DEFAULTS = {"directory": None, "files": None, "hdu": None}
KEYWORDS_DEFAULTS = {"type_aliases": {},
                     **{name: _keyword_default(name) for name in KEYWORD_FIELDS}}
INSTRUMENT_DEFAULTS = {
    "overscan": _CALIB.overscan,                      # 'BIASSEC'
    "trim": _CALIB.trim,                              # 'DATASEC'
    "overscan_statistic": _CALIB.overscan_statistic,  # 'median'
    "overscan_fit": _CALIB.overscan_fit,              # None
    "overscan_order": _CALIB.overscan_order,          # 3
    "bias_level": _CALIB.bias_level,                  # None
    "gain": _CALIB.gain,                              # None = header
    "readnoise": _CALIB.readnoise,                    # None = header
    "saturation": _CALIB.saturation,                  # None = SATURATE or 65535
    "amplifiers": _CALIB.amplifiers,                  # None = one amplifier (above)
    "mode": _CALIB.mode,                              # 'imaging'
    "mode_keyword": _CALIB.mode_keyword,              # None = mode for every frame
    "dispersion_axis": _CALIB.dispersion_axis,        # None = header DISPAXIS
}
MASTERS_DEFAULTS = {
    "enabled": True,
    "combine": dict(COMBINE_DEFAULTS),
    "flat_norm": _CALIB.flat_norm,                # 'median'
    "flat_region": _CALIB.flat_region,            # None = central half
    "hot_sigma": _CALIB.hot_sigma,                # 8.0
    "hot_floor": _CALIB.hot_floor,                # 0.5 e-/s
    "low_flat": _CALIB.low_flat,                  # 0.5
    "response": dict(RESPONSE_DEFAULTS),          # normalise_response's own defaults
}
#: ``response`` normalises spectroscopic setups' flats by their response
#: along the dispersion axis; imaging setups' flats by their median.
FLAT_NORMS = ("median", "mode", "response")
#: ``steps.arcs``: arc-lamp frames (type ``arc``) calibrated (bias, trim,
#: e-; no flat) and written as ``<stem>_arc.fits``; CR cleaning with the
#: workflow's frame method only if ``cosmics`` is true (arc lines are sharp).
ARCS_DEFAULTS = {"enabled": True, "cosmics": False, "flat": False}


def inputs_section(ctx, raw):
    path = "inputs"
    if raw is None:
        raise ctx.error(path, "missing", "a mapping with directory or files (and hdu)")
    raw = ctx.mapping(raw, path, list(INPUTS_DEFAULTS), none_ok=False)
    directory, files = raw.get("directory"), raw.get("files")
    if directory is not None and files is not None:
        raise ctx.error(path, "both directory and files are given",
                        "exactly one of directory, files")
    if directory is None and files is None:
        raise ctx.error(path, "neither directory nor files is given",
                        "exactly one of directory, files")
    out = {"directory": None, "files": None}
    if directory is not None:
        out["directory"] = ctx.path(directory, join_path(path, "directory"))
    else:
        if isinstance(files, str):
            files = [files]
        if not isinstance(files, list) or not files:
            raise ctx.error(join_path(path, "files"),
                            f"expected a non-empty list, got {type_name(files)} "
                            f"{show(files)}", "a list of file names or globs")
        out["files"] = [ctx.path(f, join_path(join_path(path, "files"), i))
                        for i, f in enumerate(files)]
    hdu = raw.get("hdu")
    allowed = "null (first HDU with 2-D data), an HDU index >= 0 or an EXTNAME"
    if hdu is not None:
        if isinstance(hdu, str):
            hdu = ctx.text(hdu, join_path(path, "hdu"), allowed=allowed)
        elif isinstance(hdu, bool) or not isinstance(hdu, numbers.Integral) or hdu < 0:
            raise ctx.error(join_path(path, "hdu"), f"{show(hdu)} is not allowed", allowed)
        else:
            hdu = int(hdu)
    out["hdu"] = hdu
    return out


def keywords_section(ctx, raw):
    path = "keywords"
    raw = ctx.mapping(raw, path, list(KEYWORDS_DEFAULTS))
    out = copy.deepcopy(KEYWORDS_DEFAULTS)
    for name, value in raw.items():
        p = join_path(path, name)
        if name == "type_aliases":
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ctx.error(p, f"expected a mapping, got {type_name(value)} "
                                   f"{show(value)}", "a mapping header value -> frame type")
            aliases = {}
            for k, v in value.items():
                kp = join_path(p, str(k))
                if isinstance(k, bool) or not isinstance(k, (str, numbers.Real)):
                    raise ctx.error(kp, f"header value {show(k)} must be text "
                                        "(quote it in YAML)", "text")
                if not isinstance(v, str) or v not in FRAME_TYPES:
                    raise ctx.error(kp, f"{show(v)} is not a frame type",
                                    ", ".join(FRAME_TYPES))
                aliases[str(k)] = v
            out[name] = aliases
        elif name == "binning_pairs":
            allowed = "a list of [X, Y] keyword pairs, e.g. [[CCDXBIN, CCDYBIN]]"
            if not isinstance(value, list):
                raise ctx.error(p, f"expected a list, got {type_name(value)} "
                                   f"{show(value)}", allowed)
            pairs = []
            for i, pair in enumerate(value):
                if not isinstance(pair, list) or len(pair) != 2:
                    raise ctx.error(join_path(p, i), f"{show(pair)} is not a pair", allowed)
                pairs.append([header_keyword(ctx, k, join_path(join_path(p, i), j))
                              for j, k in enumerate(pair)])
            out[name] = pairs
        elif name == "setup":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not value or len(set(value)) != len(value) \
                    or any(v not in SETUP_PARTS for v in value):
                raise ctx.error(p, f"{show(value)} is not allowed",
                                "a non-empty list of distinct " + ", ".join(SETUP_PARTS))
            out[name] = list(value)
        else:
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list):
                raise ctx.error(p, f"expected a list, got {type_name(value)} "
                                   f"{show(value)}",
                                "a list of header keywords, tried in order")
            if name == "clear_filters":
                for i, v in enumerate(value):
                    if not isinstance(v, str):
                        raise ctx.error(join_path(p, i), f"expected text, got {type_name(v)} "
                                                     f"{show(v)}", "filter names")
                out[name] = [v.strip() for v in value]
            else:
                out[name] = [header_keyword(ctx, v, join_path(p, i)) for i, v in enumerate(value)]
    return out


def instrument_section(ctx, raw):
    path = "instrument"
    raw = ctx.mapping(raw, path, list(INSTRUMENT_DEFAULTS))
    v = {**INSTRUMENT_DEFAULTS, **raw}
    j = lambda k: join_path(path, k)  # noqa: E731
    out = {
        "overscan": section_or_keyword(ctx, v["overscan"], j("overscan")),
        "trim": section_or_keyword(ctx, v["trim"], j("trim")),
        "overscan_statistic": ctx.choice(v["overscan_statistic"], j("overscan_statistic"),
                                         STATISTICS),
        "overscan_fit": ctx.choice(v["overscan_fit"], j("overscan_fit"), FIT_METHODS,
                                   none_ok=True),
    }
    out["overscan_order"] = ctx.number(
        v["overscan_order"], j("overscan_order"), integer=True,
        minimum=1 if out["overscan_fit"] == "spline" else 0)
    level = v["bias_level"]
    if isinstance(level, str):
        level = header_keyword(ctx, level, j("bias_level"),
                         "null, a number (ADU) or a header keyword holding it")
    else:
        try:
            level = ctx.number(level, j("bias_level"), none_ok=True)
        except WorkflowError:
            raise ctx.error(j("bias_level"), f"{show(level)} is not allowed",
                            "null, a number (ADU) or a header keyword holding it") from None
    out["bias_level"] = level
    out["gain"] = ctx.number(v["gain"], j("gain"), minimum=0, strict=True, none_ok=True)
    out["readnoise"] = ctx.number(v["readnoise"], j("readnoise"), minimum=0, none_ok=True)
    out["saturation"] = ctx.number(v["saturation"], j("saturation"), minimum=0, strict=True,
                                   none_ok=True)
    out.update(_spectroscopy_keys(ctx, v, j))
    out["amplifiers"] = amplifiers_setting(ctx, v["amplifiers"], j("amplifiers"))
    return out


#: ``instrument.amplifiers`` list entries: the keys of
#: :func:`crdask.io.amplifiers.amplifiers_from_config`.
AMPLIFIER_KEYS = ("name", "data", "overscan", "gain", "readnoise", "detsec",
                  "overscan_axis", "bias_level")
_AMPS_ALLOWED = ("null (one amplifier: overscan/trim/gain above), 'header' (each frame's "
                 "DATASECn/BIASSECn/GAINn/RDNOISEn/DETSECn keywords) or a list of "
                 "{name, data, overscan, gain, readnoise, detsec, overscan_axis, bias_level}")


def amplifiers_setting(ctx, value, path):
    """``instrument.amplifiers``: ``None``, ``'header'`` or a checked list of
    plain mappings (sections as FITS text, numbers as floats).

    Example
    -------
    >>> from pathlib import Path
    >>> from crdask.pipeline.schema import Checker
    >>> amplifiers_setting(Checker("n.yaml", Path(".")), [{"data": "[1:50,1:100]",
    ...     "overscan": "[51:60,1:100]", "gain": 1.5, "readnoise": 4}], "a")[0]["name"]
    '1'
    """
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip().lower() != "header":
            raise ctx.error(path, f"{show(value)} is not allowed", _AMPS_ALLOWED)
        return "header"
    if not isinstance(value, list) or not value:
        raise ctx.error(path, f"expected a non-empty list, got {type_name(value)} "
                              f"{show(value)}", _AMPS_ALLOWED)
    out = []
    for i, entry in enumerate(value):
        p = join_path(path, i)
        entry = ctx.mapping(entry, p, list(AMPLIFIER_KEYS), none_ok=False)
        e = {"name": str(entry.get("name", i + 1))}
        for key in ("data", "overscan", "detsec"):
            sec = entry.get(key)
            if sec is None:
                if key == "data":
                    raise ctx.error(join_path(p, key), "missing", "a FITS section")
                e[key] = None
                continue
            reject_yaml_list(ctx, sec, join_path(p, key), "a FITS section '[x1:x2,y1:y2]'")
            sec = ctx.text(sec, join_path(p, key), allowed="a FITS section '[x1:x2,y1:y2]'")
            try:
                parse_section(sec)
            except SectionError as err:
                raise ctx.error(join_path(p, key), err.problem,
                                "a FITS section '[x1:x2,y1:y2]'") from None
            e[key] = sec
        if entry.get("gain") is None or entry.get("readnoise") is None:
            missing = "gain" if entry.get("gain") is None else "readnoise"
            raise ctx.error(join_path(p, missing), "missing",
                            "a number > 0 (e-/ADU)" if missing == "gain"
                            else "a number >= 0 (e-)")
        e["gain"] = ctx.number(entry["gain"], join_path(p, "gain"), minimum=0, strict=True)
        e["readnoise"] = ctx.number(entry["readnoise"], join_path(p, "readnoise"), minimum=0)
        axis = entry.get("overscan_axis")
        if axis is not None and (isinstance(axis, bool) or axis not in (0, 1)):
            raise ctx.error(join_path(p, "overscan_axis"), f"{show(axis)} is not allowed",
                            "null (from the strip's shape), 0 (rows) or 1 (columns)")
        e["overscan_axis"] = axis
        e["bias_level"] = ctx.number(entry.get("bias_level", 0.0),
                                     join_path(p, "bias_level"))
        out.append(e)
    names = [e["name"] for e in out]
    if len(set(names)) != len(names):
        raise ctx.error(path, f"amplifier names must be unique, got {names}", _AMPS_ALLOWED)
    return out


def _spectroscopy_keys(ctx, v, j):
    """``instrument.mode``, ``mode_keyword`` and ``dispersion_axis``."""
    key = v["mode_keyword"]
    if key is not None:
        key = header_keyword(ctx, key, j("mode_keyword"),
                             "null or a header keyword saying imaging / spectroscopy")
    axis = v["dispersion_axis"]
    if axis is not None and (isinstance(axis, bool) or axis not in (1, 2)):
        raise ctx.error(j("dispersion_axis"), f"{show(axis)} is not allowed",
                        "null (header DISPAXIS), 1 (along x, NAXIS1) or 2 (along y, NAXIS2)")
    return {"mode": ctx.choice(v["mode"], j("mode"), MODES), "mode_keyword": key,
            "dispersion_axis": None if axis is None else int(axis)}


def _response(ctx, raw, path):
    """``steps.masters.response``: checked by running the fit's own checks on
    a small lamp-like spectrum, so the rules are written once."""
    from ..calib.fitting import FIT_FAMILIES
    from ..calib.response import normalise_response

    raw = ctx.mapping(raw, path, list(RESPONSE_DEFAULTS))
    full = {**RESPONSE_DEFAULTS, **raw}
    full["fit"] = ctx.choice(full["fit"], join_path(path, "fit"), FIT_FAMILIES)
    slit = full["slit"]
    if slit is not None:
        if not (isinstance(slit, list) and len(slit) == 2
                and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                        for s in slit) and slit[0] < slit[1]):
            raise ctx.error(join_path(path, "slit"), f"{show(slit)} is not allowed",
                            "null (found from the flat) or [start, stop] spatial lines "
                            "(0-based, stop excluded)")
    full["threshold"] = ctx.number(full["threshold"], join_path(path, "threshold"),
                                   none_ok=True)
    try:
        normalise_response(np.ones((4, 64), np.float32),
                           **{**full, "slit": None, "threshold": None,
                              "order": min(full["order"], 3)
                              if isinstance(full["order"], int) else full["order"]})
    except (TypeError, ValueError) as e:
        msg = str(e).split(";")[0]
        name = next((n for n in RESPONSE_DEFAULTS if msg.startswith(n)), None)
        if name is None:
            raise ctx.error(path, msg) from None
        raise ctx.error(join_path(path, name), f"{show(full[name])} is not allowed",
                        msg.split(" must be ", 1)[-1]) from None
    return full


def _combine(ctx, raw, path):
    raw = ctx.mapping(raw, path, list(COMBINE_DEFAULTS))
    full = {**COMBINE_DEFAULTS, **raw}
    check = combine_module.check_params
    try:
        check(**full)
        # Settings of switched-off rejections must still be valid values.
        check(**{**full, "minmax_clip": True, "clip_extrema": True, "sigma_clip": True})
    except (TypeError, ValueError) as e:
        raise validator_error(ctx, e, lambda n: join_path(path, n) if n else path,
                               COMBINE_DEFAULTS) from None
    return full


def masters_section(ctx, raw, path):
    raw = ctx.mapping(raw, path, list(MASTERS_DEFAULTS))
    v = {**MASTERS_DEFAULTS, **raw}
    j = lambda k: join_path(path, k)  # noqa: E731
    region = v["flat_region"]
    if region is not None:
        allowed = "null (the central half) or a FITS section '[x1:x2,y1:y2]'"
        reject_yaml_list(ctx, region, j("flat_region"), allowed)
        region = ctx.text(region, j("flat_region"), allowed=allowed)
        try:
            parse_section(region)
        except SectionError as e:
            raise ctx.error(j("flat_region"), e.problem, allowed) from None
    return {
        "enabled": ctx.flag(v["enabled"], j("enabled")),
        "combine": _combine(ctx, v["combine"], j("combine")),
        "flat_norm": ctx.choice(v["flat_norm"], j("flat_norm"), FLAT_NORMS),
        "flat_region": region,
        "hot_sigma": ctx.number(v["hot_sigma"], j("hot_sigma"), minimum=0, strict=True),
        "hot_floor": ctx.number(v["hot_floor"], j("hot_floor"), minimum=0),
        "low_flat": ctx.number(v["low_flat"], j("low_flat"), minimum=0),
        "response": _response(ctx, v["response"], j("response")),
    }


def arcs_section(ctx, raw, path):
    """``steps.arcs``: ``enabled``, ``cosmics``, ``flat`` (all flags)."""
    raw = ctx.mapping(raw, path, list(ARCS_DEFAULTS))
    v = {**ARCS_DEFAULTS, **raw}
    return {k: ctx.flag(v[k], join_path(path, k)) for k in ARCS_DEFAULTS}
