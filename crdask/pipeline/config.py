"""Workflow files for ``crdask run WORKFLOW.yaml``: load, validate, normalise (layer 4).

A workflow is a YAML mapping (see ``workflows/night.yaml`` for every key with
comments, and :data:`DEFAULTS` for every default value -- the one place they
are written down)::

    wf = load_workflow("night.yaml")          # or a dict, with base_dir=
    wf.input_files()                          # sorted absolute paths
    wf.output, wf.truth                       # absolute Paths (truth may be None)
    wf.keymap()                               # crdask.io.catalog.KeywordMap
    wf.calib_setup()                          # crdask.pipeline.calibration.CalibSetup
    wf.cosmics.method                         # 'lacosmic' | 'median'
    wf.params_for(filter="R", object="M51", exptime=300.0)   # full parameter dict
    wf.execution.workers                      # scheduler settings
    wf.to_dict()                              # normalised, every default filled in
    config_hash(wf, section="cosmics")        # what the outputs depend on

Every problem is a :class:`WorkflowError` (a ``ValueError``) whose message is
one line ``"<file>: <key.path>: <problem>; allowed: <values>"``, e.g.
``night.yaml: steps.cosmics.method: 'lacosmicx' is not allowed; allowed:
lacosmic, median``. Nothing is half-accepted: unknown keys, wrong types and
bad values are all errors, so a typo never silently falls back to a default.

Decisions, written down:

* Relative paths (``inputs``, ``output``, ``truth``,
  ``execution.scheduler_file``) are relative to the folder of the YAML file
  (``base_dir`` for a mapping, default: the current directory); ``~`` is
  expanded. Loading never touches the data: :meth:`Workflow.input_files`
  lists the inputs when asked and fails if the directory is missing or holds
  no FITS file, or if any one glob matches no file (a typo in one pattern
  must not silently drop frames).
* ``inputs.directory`` is listed like ``crdask catalog`` does (FITS files
  directly in it, by suffix, hidden files skipped, not recursive);
  ``inputs.files`` are globs (``**`` recurses), de-duplicated and sorted.
* A section left empty in YAML (``keywords:`` with nothing under it) means
  "all defaults". A single string where a list of keywords is expected is a
  one-element list. Numbers such as ``1e-3`` are read as numbers (plain
  PyYAML would read them as text), and duplicate keys are an error (plain
  PyYAML keeps the last one silently).
* ``keywords.type_aliases`` are *added* to the default aliases (they win on
  a clash); every other ``keywords`` entry *replaces* the default list.
* ``steps.cosmics.params`` apply to every science frame; ``groups`` are
  tried in order and the first whose ``match`` fits (all given keys equal;
  a key may list alternatives; exposure times compared to 1e-6 relative)
  adds its ``params`` on top. ``gain``/``readnoise`` are not accepted there:
  the frames reaching CR detection are in electrons, so the pipeline passes
  ``gain=1`` and each frame's read noise itself. :meth:`Cosmics.params_for`
  returns the method's complete parameter set without those two.
* Steps: ``calibrate`` without ``masters`` means pre-processing only
  (overscan or bias level, trim, gain to electrons, variance); ``cosmics``
  without ``calibrate`` cleans the input frames as they are (already
  calibrated). At least one step must be enabled.
* ``execution.workers``/``threads_per_worker``/``memory_limit`` size the
  local cluster and are ignored when ``scheduler`` or ``scheduler_file``
  points at a running one (only one of those two may be given).
* :func:`config_hash` covers what changes the pixels written, never how
  they are computed: chunking, workers, scheduler, ``intermediates``, paths
  and ``truth`` are left out (outputs are identical whatever the chunking).
  Numbers are hashed as floats, so ``5`` and ``5.0`` hash alike.
"""

from __future__ import annotations

import copy
import functools
import glob
import hashlib
import inspect
import json
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..calib import combine as _combine_mod
from ..calib.overscan import FIT_METHODS, STATISTICS
from ..cosmic import median_method as _median_mod
from ..cosmic.lacosmic import make_params
from ..cosmic.validation import check_number
from ..io.catalog import FRAME_TYPES, KeywordMap, list_fits_files
from ..io.sections import SectionError, parse_section
from .calibration import CalibSetup
from .clean_files import LACOSMIC_DEFAULTS

__all__ = ["WorkflowError", "Workflow", "Inputs", "Cosmics", "CosmicsGroup",
           "Execution", "DEFAULTS", "LACOSMIC_PARAMS", "MEDIAN_PARAMS",
           "COMBINE_DEFAULTS", "KEYWORD_FIELDS", "HASH_SECTIONS", "load_workflow",
           "config_hash"]


# ---------------------------------------------------------------------------
# Defaults: the one place they are written down (derived from the functions
# and dataclasses they configure, so they cannot drift apart).
# ---------------------------------------------------------------------------

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

#: L.A.Cosmic parameters a workflow may set (``lacosmic``'s own defaults),
#: without ``gain``/``readnoise`` (set by the pipeline per frame).
LACOSMIC_PARAMS = {k: v for k, v in LACOSMIC_DEFAULTS.items()
                   if k not in ("gain", "readnoise")}

#: ``cosmicray_median`` parameters a workflow may set, with their defaults
#: (``error_image`` comes from the frame's variance in the pipeline).
MEDIAN_PARAMS = {name: p.default for name, p in
                 inspect.signature(_median_mod.cosmicray_median).parameters.items()
                 if name not in ("ccd", "error_image")}

#: ``steps.masters.combine``: the keyword arguments of
#: :func:`crdask.calib.combine.combine` a workflow may set, with the
#: pipeline's defaults (average after one 3-sigma clip, as ccdproc) on top of
#: the function's own.
COMBINE_DEFAULTS = {
    **{name: p.default for name, p in inspect.signature(_combine_mod.combine).parameters.items()
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


#: Every key of a workflow and its default (``None`` for ``output`` and the
#: ``inputs`` choice means "required"). ``keywords.type_aliases`` lists only
#: additions to :class:`KeywordMap`'s built-in aliases; ``cosmics.params``
#: is completed with :data:`LACOSMIC_PARAMS` or :data:`MEDIAN_PARAMS`.
DEFAULTS = {
    "version": 1,
    "inputs": {"directory": None, "files": None, "hdu": None},
    "output": None,
    "truth": None,
    "keywords": {"type_aliases": {},
                 **{name: _keyword_default(name) for name in KEYWORD_FIELDS}},
    "instrument": {
        "overscan": _CALIB.overscan,                      # 'BIASSEC'
        "trim": _CALIB.trim,                              # 'DATASEC'
        "overscan_statistic": _CALIB.overscan_statistic,  # 'median'
        "overscan_fit": _CALIB.overscan_fit,              # None
        "overscan_order": _CALIB.overscan_order,          # 3
        "bias_level": _CALIB.bias_level,                  # None
        "gain": _CALIB.gain,                              # None = header
        "readnoise": _CALIB.readnoise,                    # None = header
        "saturation": _CALIB.saturation,                  # None = SATURATE or 65535
    },
    "steps": {
        "masters": {
            "enabled": True,
            "combine": dict(COMBINE_DEFAULTS),
            "flat_norm": _CALIB.flat_norm,                # 'median'
            "flat_region": _CALIB.flat_region,            # None = central half
            "hot_sigma": _CALIB.hot_sigma,                # 8.0
            "hot_floor": _CALIB.hot_floor,                # 0.5 e-/s
            "low_flat": _CALIB.low_flat,                  # 0.5
        },
        "calibrate": {"enabled": True},
        "cosmics": {"enabled": True, "method": "lacosmic", "params": {}, "groups": []},
    },
    "execution": {
        "chunk_rows": _CALIB.chunk_rows,                  # 512
        "intermediates": True,
        "scheduler": None,
        "scheduler_file": None,
        "workers": None,
        "threads_per_worker": None,
        "memory_limit": None,
    },
}

METHODS = {"lacosmic": LACOSMIC_PARAMS, "median": MEDIAN_PARAMS}
FLAT_NORMS = ("median", "mode")
MATCH_KEYS = ("filter", "object", "exptime")

#: ``config_hash`` sections: which parts of the workflow each output depends on.
HASH_SECTIONS = {
    "masters": ("masters",),
    "calibrate": ("masters", "calibrate"),
    "cosmics": ("masters", "calibrate", "cosmics"),
}
_HASH_ALIASES = {"calibrated": "calibrate", "final": "cosmics"}


# ---------------------------------------------------------------------------
# Errors.
# ---------------------------------------------------------------------------

class WorkflowError(ValueError):
    """A bad workflow. ``str(err)`` is one line:
    ``"<file>: <key.path>: <problem>; allowed: <values>"`` (the ``allowed``
    part is left out only where nothing sensible can be listed)."""

    def __init__(self, source, path, problem, allowed=None):
        self.source, self.path, self.problem, self.allowed = source, path, problem, allowed
        text = f"{source}: {path}: {problem}" if path else f"{source}: {problem}"
        if allowed:
            text += f"; allowed: {allowed}"
        super().__init__(" ".join(text.split("\n")))

    def __reduce__(self):
        return (type(self), (self.source, self.path, self.problem, self.allowed))


def _join(path, key):
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _show(value):
    """A value as the user wrote it, for messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_TYPE_NAMES = {bool: "true/false", int: "an integer", float: "a number", str: "text",
               list: "a list", dict: "a mapping", type(None): "null"}


def _type_name(value):
    for t, name in _TYPE_NAMES.items():
        if type(value) is t:
            return name
    return type(value).__name__


# ---------------------------------------------------------------------------
# YAML: line numbers for syntax errors, duplicate keys refused, 1e-3 a number.
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _yaml_loader():
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):
        """Safe loader: duplicate keys refused, ``1e-3`` read as a number."""

    merge_tag = "tag:yaml.org,2002:merge"

    def construct_mapping(loader, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == merge_tag or not isinstance(key_node, yaml.ScalarNode):
                continue  # '<<' merges may be overridden; odd keys fail below
            key = loader.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return base.construct_mapping(loader, node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"))
    return yaml, Loader


def _read_yaml(path, source):
    yaml, Loader = _yaml_loader()
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise WorkflowError(source, "", "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise WorkflowError(source, "", f"cannot read the file ({e})") from None
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        context = getattr(e, "context", None)
        where = (f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None
                 else "")
        text = problem + (f" ({context})" if context and problem != str(e) else "")
        raise WorkflowError(source, where, f"invalid YAML: {text}") from None


# ---------------------------------------------------------------------------
# Value checks. Each returns the normalised value or raises WorkflowError.
# ---------------------------------------------------------------------------

class _Ctx:
    """The file name and base folder for one load."""

    def __init__(self, source, base_dir):
        self.source = source
        self.base_dir = base_dir

    def error(self, path, problem, allowed=None):
        return WorkflowError(self.source, path, problem, allowed)

    def mapping(self, value, path, allowed_keys, *, none_ok=True, what=None):
        """A mapping with only ``allowed_keys``; None -> {} if ``none_ok``."""
        if value is None and none_ok:
            return {}
        if not isinstance(value, dict):
            raise self.error(path, f"expected a mapping, got {_type_name(value)} "
                                   f"{_show(value)}",
                             what or ", ".join(allowed_keys))
        for key in value:
            if not isinstance(key, str):
                raise self.error(_join(path, str(key)),
                                 f"key {_show(key)} must be text (quote it in YAML)",
                                 ", ".join(allowed_keys))
            if key not in allowed_keys:
                raise self.error(_join(path, key), "unknown key", ", ".join(allowed_keys))
        return value

    def flag(self, value, path):
        if not isinstance(value, bool):
            raise self.error(path, f"expected true or false, got {_type_name(value)} "
                                   f"{_show(value)}", "true, false")
        return value

    def choice(self, value, path, allowed, *, none_ok=False):
        shown = ", ".join((["null"] if none_ok else []) + list(allowed))
        if value is None and none_ok:
            return None
        if not isinstance(value, str) or value not in allowed:
            raise self.error(path, f"{_show(value)} is not allowed", shown)
        return value

    def number(self, value, path, *, minimum=None, strict=False, integer=False,
               none_ok=False):
        kind = "an integer" if integer else "a number"
        bound = ""
        if minimum is not None:
            bound = f" {'>' if strict else '>='} {minimum:g}"
        allowed = ("null or " if none_ok else "") + kind + bound
        if value is None and none_ok:
            return None
        ok_type = (isinstance(value, numbers.Integral) if integer
                   else isinstance(value, numbers.Real))
        if isinstance(value, bool) or not ok_type:
            raise self.error(path, f"expected {kind}, got {_type_name(value)} "
                                   f"{_show(value)}", allowed)
        v = int(value) if integer else float(value)
        if not math.isfinite(v) or (minimum is not None
                                    and (v <= minimum if strict else v < minimum)):
            raise self.error(path, f"{_show(value)} is not allowed", allowed)
        return v

    def text(self, value, path, *, none_ok=False, allowed="text"):
        if value is None and none_ok:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(path, f"expected non-empty text, got {_type_name(value)} "
                                   f"{_show(value)}",
                             ("null or " if none_ok else "") + allowed)
        return value.strip()

    def path(self, value, path, *, none_ok=False):
        value = self.text(value, path, none_ok=none_ok,
                          allowed="a path (relative to the workflow file's folder)")
        if value is None:
            return None
        p = Path(os.path.expanduser(value))
        if not p.is_absolute():
            p = self.base_dir / p
        return Path(os.path.normpath(p))


# ---------------------------------------------------------------------------
# Sections.
# ---------------------------------------------------------------------------

_KEYWORD_RE = re.compile(r"^[A-Za-z0-9_\-]+(?: [A-Za-z0-9_\-]+)*$")


def _keyword(ctx, value, path, allowed="a header keyword"):
    value = ctx.text(value, path, allowed=allowed)
    if not _KEYWORD_RE.match(value):
        raise ctx.error(path, f"{_show(value)} is not a header keyword", allowed)
    return value


def _not_a_yaml_list(ctx, value, path, allowed):
    if isinstance(value, list):
        raise ctx.error(path, f"YAML read {_show(value)} as a list: quote a section, "
                              "e.g. '[1:50,1:100]'", allowed)


def _section_or_keyword(ctx, value, path):
    allowed = "null, a header keyword (e.g. BIASSEC) or a FITS section '[x1:x2,y1:y2]'"
    if value is None:
        return None
    _not_a_yaml_list(ctx, value, path, allowed)
    value = ctx.text(value, path, allowed=allowed)
    if value.startswith("["):
        try:
            parse_section(value)
        except SectionError as e:
            raise ctx.error(path, e.problem, allowed) from None
        return value
    return _keyword(ctx, value, path, allowed)


def _inputs(ctx, raw):
    path = "inputs"
    if raw is None:
        raise ctx.error(path, "missing", "a mapping with directory or files (and hdu)")
    raw = ctx.mapping(raw, path, list(DEFAULTS["inputs"]), none_ok=False)
    directory, files = raw.get("directory"), raw.get("files")
    if directory is not None and files is not None:
        raise ctx.error(path, "both directory and files are given",
                        "exactly one of directory, files")
    if directory is None and files is None:
        raise ctx.error(path, "neither directory nor files is given",
                        "exactly one of directory, files")
    out = {"directory": None, "files": None}
    if directory is not None:
        out["directory"] = ctx.path(directory, _join(path, "directory"))
    else:
        if isinstance(files, str):
            files = [files]
        if not isinstance(files, list) or not files:
            raise ctx.error(_join(path, "files"),
                            f"expected a non-empty list, got {_type_name(files)} "
                            f"{_show(files)}", "a list of file names or globs")
        out["files"] = [ctx.path(f, _join(_join(path, "files"), i))
                        for i, f in enumerate(files)]
    hdu = raw.get("hdu")
    allowed = "null (first HDU with 2-D data), an HDU index >= 0 or an EXTNAME"
    if hdu is not None:
        if isinstance(hdu, str):
            hdu = ctx.text(hdu, _join(path, "hdu"), allowed=allowed)
        elif isinstance(hdu, bool) or not isinstance(hdu, numbers.Integral) or hdu < 0:
            raise ctx.error(_join(path, "hdu"), f"{_show(hdu)} is not allowed", allowed)
        else:
            hdu = int(hdu)
    out["hdu"] = hdu
    return out


def _keywords(ctx, raw):
    path = "keywords"
    raw = ctx.mapping(raw, path, list(DEFAULTS["keywords"]))
    out = copy.deepcopy(DEFAULTS["keywords"])
    for name, value in raw.items():
        p = _join(path, name)
        if name == "type_aliases":
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ctx.error(p, f"expected a mapping, got {_type_name(value)} "
                                   f"{_show(value)}", "a mapping header value -> frame type")
            aliases = {}
            for k, v in value.items():
                kp = _join(p, str(k))
                if isinstance(k, bool) or not isinstance(k, (str, numbers.Real)):
                    raise ctx.error(kp, f"header value {_show(k)} must be text "
                                        "(quote it in YAML)", "text")
                if not isinstance(v, str) or v not in FRAME_TYPES:
                    raise ctx.error(kp, f"{_show(v)} is not a frame type",
                                    ", ".join(FRAME_TYPES))
                aliases[str(k)] = v
            out[name] = aliases
        elif name == "binning_pairs":
            allowed = "a list of [X, Y] keyword pairs, e.g. [[CCDXBIN, CCDYBIN]]"
            if not isinstance(value, list):
                raise ctx.error(p, f"expected a list, got {_type_name(value)} "
                                   f"{_show(value)}", allowed)
            pairs = []
            for i, pair in enumerate(value):
                if not isinstance(pair, list) or len(pair) != 2:
                    raise ctx.error(_join(p, i), f"{_show(pair)} is not a pair", allowed)
                pairs.append([_keyword(ctx, k, _join(_join(p, i), j))
                              for j, k in enumerate(pair)])
            out[name] = pairs
        else:
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list):
                raise ctx.error(p, f"expected a list, got {_type_name(value)} "
                                   f"{_show(value)}",
                                "a list of header keywords, tried in order")
            if name == "clear_filters":
                for i, v in enumerate(value):
                    if not isinstance(v, str):
                        raise ctx.error(_join(p, i), f"expected text, got {_type_name(v)} "
                                                     f"{_show(v)}", "filter names")
                out[name] = [v.strip() for v in value]
            else:
                out[name] = [_keyword(ctx, v, _join(p, i)) for i, v in enumerate(value)]
    return out


def _instrument(ctx, raw):
    path = "instrument"
    raw = ctx.mapping(raw, path, list(DEFAULTS["instrument"]))
    v = {**DEFAULTS["instrument"], **raw}
    j = lambda k: _join(path, k)  # noqa: E731
    out = {
        "overscan": _section_or_keyword(ctx, v["overscan"], j("overscan")),
        "trim": _section_or_keyword(ctx, v["trim"], j("trim")),
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
        level = _keyword(ctx, level, j("bias_level"),
                         "null, a number (ADU) or a header keyword holding it")
    else:
        try:
            level = ctx.number(level, j("bias_level"), none_ok=True)
        except WorkflowError:
            raise ctx.error(j("bias_level"), f"{_show(level)} is not allowed",
                            "null, a number (ADU) or a header keyword holding it") from None
    out["bias_level"] = level
    out["gain"] = ctx.number(v["gain"], j("gain"), minimum=0, strict=True, none_ok=True)
    out["readnoise"] = ctx.number(v["readnoise"], j("readnoise"), minimum=0, none_ok=True)
    out["saturation"] = ctx.number(v["saturation"], j("saturation"), minimum=0, strict=True,
                                   none_ok=True)
    return out


_MSG_RE = re.compile(r"^(?P<name>\w+) must be (?P<req>.+?)[;,] got (?P<got>.+)$")


def _requirement(req):
    req = req.split(" (or the numpy", 1)[0]   # YAML cannot hold a function
    if req.startswith("one of "):
        return req[len("one of "):]
    if req[:1] in "<>":
        return f"a number {req}"
    return {"finite": "a finite number", "odd": "an odd integer"}.get(req, req)


def _validator_error(ctx, exc, path_for, known):
    """Turn a crdask validator's one-line message into a WorkflowError at the
    key it names (``path_for(name)``)."""
    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    m = _MSG_RE.match(msg)
    if m and m.group("name") in known:
        return ctx.error(path_for(m.group("name")), f"{m.group('got')} is not allowed",
                         _requirement(m.group("req")))
    name = msg.split(" ", 1)[0]
    return ctx.error(path_for(name if name in known else None), msg)


def _combine(ctx, raw, path):
    raw = ctx.mapping(raw, path, list(COMBINE_DEFAULTS))
    full = {**COMBINE_DEFAULTS, **raw}
    check = _combine_mod._check_params
    try:
        check(**full)
        # Settings of switched-off rejections must still be valid values.
        check(**{**full, "minmax_clip": True, "clip_extrema": True, "sigma_clip": True})
    except (TypeError, ValueError) as e:
        raise _validator_error(ctx, e, lambda n: _join(path, n) if n else path,
                               COMBINE_DEFAULTS) from None
    return full


def _masters(ctx, raw, path):
    raw = ctx.mapping(raw, path, list(DEFAULTS["steps"]["masters"]))
    v = {**DEFAULTS["steps"]["masters"], **raw}
    j = lambda k: _join(path, k)  # noqa: E731
    region = v["flat_region"]
    if region is not None:
        allowed = "null (the central half) or a FITS section '[x1:x2,y1:y2]'"
        _not_a_yaml_list(ctx, region, j("flat_region"), allowed)
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


def _check_method_params(ctx, method, params, path_for):
    """Validate a complete parameter dict with crdask's own validators."""
    allowed = METHODS[method]
    try:
        if method == "lacosmic":
            for name, default in allowed.items():
                value = params[name]
                if isinstance(default, bool):
                    ctx.flag(value, path_for(name))
                elif default is None and value is not None:
                    check_number(name, value, minimum=0, strict=True)
            check_number("padwidth", params["padwidth"], minimum=0, integer=True)
            make_params(gain=1.0, readnoise=0.0, psfk=None,
                        **{k: v for k, v in params.items() if k != "padwidth"})
        else:
            _median_mod._check_params(params["thresh"], params["mbox"], params["gbox"],
                                      params["rbox"])
    except (TypeError, ValueError) as e:
        if isinstance(e, WorkflowError):
            raise
        raise _validator_error(ctx, e, path_for, allowed) from None


_INT_PARAMS = ("niter", "psfsize", "padwidth", "mbox", "gbox", "rbox")


def _normal_params(params):
    """Validated numbers as int (counts, box sizes) or float (``sigclip: 5``
    -> 5.0), so equal settings look alike in ``to_dict`` and the hash."""
    out = {}
    for k, v in params.items():
        if isinstance(v, numbers.Real) and not isinstance(v, bool):
            v = int(v) if k in _INT_PARAMS else float(v)
        out[k] = v
    return out


def _param_keys(ctx, method, raw, path):
    allowed = ", ".join(METHODS[method])
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ctx.error(path, f"expected a mapping, got {_type_name(raw)} {_show(raw)}",
                        f"a mapping of {method} parameters: {allowed}")
    for k in raw:
        if k in ("gain", "readnoise"):
            raise ctx.error(
                _join(path, k), "not allowed here: frames are in electrons, so the pipeline "
                "passes gain=1 and each frame's read noise (set instrument.gain/readnoise "
                "or keywords.gain/readnoise instead)", allowed)
        if not isinstance(k, str) or k not in METHODS[method]:
            raise ctx.error(_join(path, str(k)), f"unknown {method} parameter", allowed)
    return raw


def _match_value(ctx, key, value, path):
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ctx.error(path, "empty list", "a value or a list of alternatives")
    out = []
    for i, v in enumerate(values):
        p = _join(path, i) if isinstance(value, list) else path
        if key == "exptime":
            out.append(ctx.number(v, p, minimum=0))
        elif isinstance(v, bool) or not isinstance(v, (str, numbers.Real)):
            raise ctx.error(p, f"expected text, got {_type_name(v)} {_show(v)} (quote it "
                               "in YAML: yes/no/on/off are read as true/false)",
                            f"the {key} header value")
        else:
            out.append(str(v))
    return out


def _cosmics(ctx, raw, path):
    d = DEFAULTS["steps"]["cosmics"]
    raw = ctx.mapping(raw, path, list(d))
    enabled = ctx.flag(raw.get("enabled", d["enabled"]), _join(path, "enabled"))
    method = ctx.choice(raw.get("method", d["method"]), _join(path, "method"), list(METHODS))
    ppath = _join(path, "params")
    params = _param_keys(ctx, method, raw.get("params"), ppath)
    full = {**METHODS[method], **params}
    _check_method_params(ctx, method, full, lambda n: _join(ppath, n) if n else ppath)
    full = _normal_params(full)

    gpath = _join(path, "groups")
    groups_raw = raw.get("groups")
    groups_raw = [] if groups_raw is None else groups_raw
    if not isinstance(groups_raw, list):
        raise ctx.error(gpath, f"expected a list, got {_type_name(groups_raw)} "
                               f"{_show(groups_raw)}", "a list of {match, params}")
    groups = []
    for i, g in enumerate(groups_raw):
        p = _join(gpath, i)
        g = ctx.mapping(g, p, ["match", "params"], none_ok=False)
        mp = _join(p, "match")
        if not g.get("match"):
            raise ctx.error(mp, "missing or empty", "a mapping of " + ", ".join(MATCH_KEYS))
        match = ctx.mapping(g["match"], mp, list(MATCH_KEYS), none_ok=False)
        match = {k: _match_value(ctx, k, v, _join(mp, k)) for k, v in match.items()}
        gp = _join(p, "params")
        over = _param_keys(ctx, method, g.get("params"), gp)
        merged = {**full, **over}
        _check_method_params(
            ctx, method, merged,
            lambda n, over=over, gp=gp: (_join(gp, n) if n in over
                                         else _join(ppath, n) if n else gp))
        groups.append(CosmicsGroup(match=match, params=_normal_params(over)))
    return Cosmics(enabled=enabled, method=method, params=full, groups=tuple(groups))


def _execution(ctx, raw):
    path = "execution"
    raw = ctx.mapping(raw, path, list(DEFAULTS["execution"]))
    v = {**DEFAULTS["execution"], **raw}
    j = lambda k: _join(path, k)  # noqa: E731
    if v["scheduler"] is not None and v["scheduler_file"] is not None:
        raise ctx.error(j("scheduler_file"), "scheduler and scheduler_file are both given",
                        "one of them, or neither (a local cluster)")
    mem = v["memory_limit"]
    allowed = "null, 'auto', a number of bytes or a size such as '4GiB'"
    if mem is not None:
        if isinstance(mem, str) and mem.strip().lower() == "auto":
            mem = "auto"
        elif isinstance(mem, str):
            from dask.utils import parse_bytes
            try:
                if parse_bytes(mem) <= 0:
                    raise ValueError
            except (ValueError, TypeError):
                raise ctx.error(j("memory_limit"), f"{_show(mem)} is not a size",
                                allowed) from None
            mem = mem.strip()
        else:
            try:
                mem = ctx.number(mem, j("memory_limit"), integer=True, minimum=1)
            except WorkflowError:
                raise ctx.error(j("memory_limit"), f"{_show(mem)} is not a size",
                                allowed) from None
    return Execution(
        chunk_rows=ctx.number(v["chunk_rows"], j("chunk_rows"), integer=True, minimum=1),
        intermediates=ctx.flag(v["intermediates"], j("intermediates")),
        scheduler=ctx.text(v["scheduler"], j("scheduler"), none_ok=True,
                           allowed="a scheduler address such as 'tcp://host:8786'"),
        scheduler_file=ctx.path(v["scheduler_file"], j("scheduler_file"), none_ok=True),
        workers=ctx.number(v["workers"], j("workers"), integer=True, minimum=1,
                           none_ok=True),
        threads_per_worker=ctx.number(v["threads_per_worker"], j("threads_per_worker"),
                                      integer=True, minimum=1, none_ok=True),
        memory_limit=mem,
    )


# ---------------------------------------------------------------------------
# The validated workflow.
# ---------------------------------------------------------------------------

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
class CosmicsGroup:
    """Per-group override: ``match`` maps filter/object/exptime to a list of
    accepted values; ``params`` are the overridden parameters only."""

    match: dict
    params: dict

    def matches(self, filter=None, object=None, exptime=None):
        given = {"filter": filter, "object": object, "exptime": exptime}
        return all(_matches(w, given[k], k) for k, w in self.match.items())


@dataclass(frozen=True)
class Cosmics:
    """``steps.cosmics``: method, complete default parameters, groups."""

    enabled: bool
    method: str
    params: dict
    groups: tuple = ()

    def params_for(self, filter=None, object=None, exptime=None):
        """Complete parameters for one science frame: the method's defaults,
        ``params``, then the first matching group's ``params``. Never holds
        ``gain``/``readnoise`` (the pipeline passes gain=1 and the frame's
        read noise). A new dict on every call."""
        out = dict(self.params)
        for g in self.groups:
            if g.matches(filter=filter, object=object, exptime=exptime):
                out.update(g.params)
                break
        return out


@dataclass(frozen=True)
class Inputs:
    """``inputs``: an absolute ``directory`` or absolute ``files`` globs, and
    ``hdu``."""

    directory: Path | None
    files: tuple | None
    hdu: object = None


@dataclass(frozen=True)
class Execution:
    """``execution``: how the work is run (never what it produces)."""

    chunk_rows: int = 512
    intermediates: bool = True
    scheduler: str | None = None
    scheduler_file: Path | None = None
    workers: int | None = None
    threads_per_worker: int | None = None
    memory_limit: object = None


@dataclass(frozen=True)
class Workflow:
    """A validated workflow; build it with :func:`load_workflow`."""

    source: str
    base_dir: Path
    version: int
    inputs: Inputs
    output: Path
    truth: Path | None
    keywords: dict
    instrument: dict
    masters: dict
    calibrate: dict
    cosmics: Cosmics
    execution: Execution = field(default_factory=Execution)

    # -- inputs ---------------------------------------------------------------
    def input_files(self):
        """The input FITS files: absolute path strings, sorted, de-duplicated.

        Raises :class:`WorkflowError` if the directory is missing or holds no
        FITS file, or if any glob of ``inputs.files`` matches no file.
        """
        src = self.source
        if self.inputs.directory is not None:
            d = self.inputs.directory
            if not d.is_dir():
                raise WorkflowError(src, "inputs.directory",
                                    f"folder {str(d)!r} does not exist",
                                    "an existing folder of FITS files")
            found = list_fits_files(d)
            if not found:
                raise WorkflowError(src, "inputs.directory",
                                    f"no FITS file in {str(d)!r}",
                                    "a folder holding *.fits, *.fit, *.fts (.gz, .fz) files")
            return sorted(os.path.abspath(f) for f in found)
        out = set()
        for i, pattern in enumerate(self.inputs.files):
            hits = [h for h in glob.glob(str(pattern), recursive=True) if os.path.isfile(h)]
            if not hits:
                raise WorkflowError(src, f"inputs.files[{i}]",
                                    f"{str(pattern)!r} matches no file",
                                    "file names or globs that match at least one file")
            out.update(os.path.abspath(h) for h in hits)
        return sorted(out)

    # -- what the pipeline needs ----------------------------------------------
    def keymap(self):
        """:class:`KeywordMap` with the ``keywords`` overrides (aliases added
        to the built-in ones)."""
        kw = {}
        for name, fld in KEYWORD_FIELDS.items():
            value = self.keywords[name]
            kw[fld] = tuple(tuple(p) for p in value) if name == "binning_pairs" \
                else tuple(value)
        return KeywordMap(type_aliases={**KeywordMap().type_aliases,
                                        **self.keywords["type_aliases"]}, **kw)

    def calib_setup(self):
        """:class:`CalibSetup` from ``inputs.hdu``, ``keywords``,
        ``instrument``, ``steps.masters`` and ``execution.chunk_rows``."""
        m = self.masters
        return CalibSetup(hdu=self.inputs.hdu, keymap=self.keymap(), **self.instrument,
                          combine_kw=dict(m["combine"]), flat_region=m["flat_region"],
                          flat_norm=m["flat_norm"], hot_sigma=m["hot_sigma"],
                          hot_floor=m["hot_floor"], low_flat=m["low_flat"],
                          chunk_rows=self.execution.chunk_rows)

    def params_for(self, filter=None, object=None, exptime=None):
        """Shortcut for ``self.cosmics.params_for(...)``."""
        return self.cosmics.params_for(filter=filter, object=object, exptime=exptime)

    # -- serialisation ----------------------------------------------------------
    def to_dict(self):
        """The normalised workflow with every default filled in, as plain
        YAML/JSON types (absolute paths as text). ``load_workflow`` of it
        gives an equal :class:`Workflow`."""
        ex = self.execution
        return {
            "version": self.version,
            "inputs": {
                "directory": None if self.inputs.directory is None
                else str(self.inputs.directory),
                "files": None if self.inputs.files is None
                else [str(f) for f in self.inputs.files],
                "hdu": self.inputs.hdu,
            },
            "output": str(self.output),
            "truth": None if self.truth is None else str(self.truth),
            "keywords": copy.deepcopy(self.keywords),
            "instrument": dict(self.instrument),
            "steps": {
                "masters": copy.deepcopy(self.masters),
                "calibrate": dict(self.calibrate),
                "cosmics": {
                    "enabled": self.cosmics.enabled,
                    "method": self.cosmics.method,
                    "params": dict(self.cosmics.params),
                    "groups": [{"match": copy.deepcopy(g.match), "params": dict(g.params)}
                               for g in self.cosmics.groups],
                },
            },
            "execution": {
                "chunk_rows": ex.chunk_rows,
                "intermediates": ex.intermediates,
                "scheduler": ex.scheduler,
                "scheduler_file": None if ex.scheduler_file is None
                else str(ex.scheduler_file),
                "workers": ex.workers,
                "threads_per_worker": ex.threads_per_worker,
                "memory_limit": ex.memory_limit,
            },
        }


_TOP_KEYS = list(DEFAULTS)


def load_workflow(path_or_mapping, *, base_dir=None) -> Workflow:
    """Read and validate a workflow.

    ``path_or_mapping`` : a YAML file path, or an already-parsed mapping.
    ``base_dir`` : folder that relative paths are resolved against; default:
    the YAML file's folder (for a mapping: the current directory).

    Returns a :class:`Workflow`; raises :class:`WorkflowError` (one line).
    """
    if isinstance(path_or_mapping, (str, os.PathLike)):
        source = os.fspath(path_or_mapping)
        raw = _read_yaml(source, source)
        if base_dir is None:
            base_dir = os.path.dirname(os.path.abspath(source))
    elif isinstance(path_or_mapping, dict):
        source = "<workflow>"
        raw = copy.deepcopy(path_or_mapping)
    else:
        raise TypeError("load_workflow() takes a file path or a mapping, got "
                        f"{type(path_or_mapping).__name__}")
    base = Path(os.path.abspath(os.path.expanduser(os.fspath(base_dir or os.getcwd()))))
    ctx = _Ctx(source, base)
    if raw is None:
        raise ctx.error("", "the workflow is empty", "a mapping of " + ", ".join(_TOP_KEYS))
    raw = ctx.mapping(raw, "", _TOP_KEYS, none_ok=False,
                      what="a mapping of " + ", ".join(_TOP_KEYS))

    version = raw.get("version", DEFAULTS["version"])
    if isinstance(version, bool) or version != 1:
        raise ctx.error("version", f"{_show(version)} is not supported", "1")
    inputs = _inputs(ctx, raw.get("inputs"))
    if raw.get("output") is None:
        raise ctx.error("output", "missing",
                        "a folder path (relative to the workflow file's folder)")
    output = ctx.path(raw["output"], "output")
    truth = ctx.path(raw.get("truth"), "truth", none_ok=True)
    keywords = _keywords(ctx, raw.get("keywords"))
    instrument = _instrument(ctx, raw.get("instrument"))
    steps = ctx.mapping(raw.get("steps"), "steps", list(DEFAULTS["steps"]))
    masters = _masters(ctx, steps.get("masters"), "steps.masters")
    cal = ctx.mapping(steps.get("calibrate"), "steps.calibrate", ["enabled"])
    calibrate = {"enabled": ctx.flag(cal.get("enabled", DEFAULTS["steps"]["calibrate"]["enabled"]),
                                     "steps.calibrate.enabled")}
    cosmics = _cosmics(ctx, steps.get("cosmics"), "steps.cosmics")
    if not (masters["enabled"] or calibrate["enabled"] or cosmics.enabled):
        raise ctx.error("steps", "every step is disabled: nothing to do",
                        "at least one of masters, calibrate, cosmics enabled")
    execution = _execution(ctx, raw.get("execution"))
    return Workflow(source=source, base_dir=base, version=1,
                    inputs=Inputs(directory=inputs["directory"],
                                  files=None if inputs["files"] is None
                                  else tuple(inputs["files"]),
                                  hdu=inputs["hdu"]),
                    output=output, truth=truth, keywords=keywords, instrument=instrument,
                    masters=masters, calibrate=calibrate, cosmics=cosmics,
                    execution=execution)


# ---------------------------------------------------------------------------
# Hash of what the outputs depend on.
# ---------------------------------------------------------------------------

def _canonical(value):
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Real):
        return float(value)
    return str(value)


def config_hash(workflow, section="cosmics"):
    """sha256 (hex) of the canonical JSON of what a step's outputs depend on.

    ``section`` : ``'masters'`` (inputs.hdu, keywords, instrument,
    steps.masters), ``'calibrate'`` (+ steps.calibrate; alias
    ``'calibrated'``) or ``'cosmics'`` (+ steps.cosmics; alias ``'final'``,
    the default). Execution settings, paths and ``truth`` never enter it;
    key order and ``5`` vs ``5.0`` do not matter. ``workflow`` may be a
    :class:`Workflow` or anything :func:`load_workflow` takes.
    """
    if not isinstance(workflow, Workflow):
        workflow = load_workflow(workflow)
    name = _HASH_ALIASES.get(section, section)
    if name not in HASH_SECTIONS:
        raise ValueError(f"section must be one of "
                         f"{', '.join(list(HASH_SECTIONS) + list(_HASH_ALIASES))}; "
                         f"got {section!r}")
    d = workflow.to_dict()
    payload = {"version": d["version"], "hdu": d["inputs"]["hdu"],
               "keywords": d["keywords"], "instrument": d["instrument"],
               "steps": {s: d["steps"][s] for s in HASH_SECTIONS[name]}}
    text = json.dumps(_canonical(payload), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True, allow_nan=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()

