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

from ..calib import combine as combine_module
from ..calib.overscan import FIT_METHODS, STATISTICS
from ..io.catalog import FRAME_TYPES, KeywordMap
from ..io.sections import SectionError, parse_section
from .calibration import CalibSetup
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
           "amplifiers_setting", "inputs_section",
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
}
MASTERS_DEFAULTS = {
    "enabled": True,
    "combine": dict(COMBINE_DEFAULTS),
    "flat_norm": _CALIB.flat_norm,                # 'median'
    "flat_region": _CALIB.flat_region,            # None = central half
    "hot_sigma": _CALIB.hot_sigma,                # 8.0
    "hot_floor": _CALIB.hot_floor,                # 0.5 e-/s
    "low_flat": _CALIB.low_flat,                  # 0.5
}
FLAT_NORMS = ("median", "mode")


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
    }
