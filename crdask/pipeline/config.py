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
import glob
import hashlib
import inspect
import json
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..calib import combine as _combine_mod
from ..calib.overscan import FIT_METHODS, STATISTICS
from ..cosmic.registry import load_plugins
from ..cosmic.params import ParamError
from ..io.catalog import FRAME_TYPES, KeywordMap, list_fits_files
from ..io.sections import SectionError, parse_section
from .schema import (
    Checker,
    WorkflowError,
    header_keyword,
    join_path,
    read_yaml,
    reject_yaml_list,
    section_or_keyword,
    show,
    type_name,
    validator_error,
)
from .calibration import CalibSetup
from .cosmics_config import COSMICS_DEFAULTS, Cosmics, cosmics_section

__all__ = ["WorkflowError", "Workflow", "Inputs", "Cosmics", "Execution", "DEFAULTS",
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
    "object": "object_keys",
    "date": "date_keys",
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
    "plugins": [],
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
        "cosmics": copy.deepcopy(COSMICS_DEFAULTS),
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

FLAT_NORMS = ("median", "mode")

#: ``config_hash`` sections: which parts of the workflow each output depends on.
HASH_SECTIONS = {
    "masters": ("masters",),
    "calibrate": ("masters", "calibrate"),
    "cosmics": ("masters", "calibrate", "cosmics"),
}
_HASH_ALIASES = {"calibrated": "calibrate", "final": "cosmics"}


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


def _keywords(ctx, raw):
    path = "keywords"
    raw = ctx.mapping(raw, path, list(DEFAULTS["keywords"]))
    out = copy.deepcopy(DEFAULTS["keywords"])
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


def _instrument(ctx, raw):
    path = "instrument"
    raw = ctx.mapping(raw, path, list(DEFAULTS["instrument"]))
    v = {**DEFAULTS["instrument"], **raw}
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
    return out


def _combine(ctx, raw, path):
    raw = ctx.mapping(raw, path, list(COMBINE_DEFAULTS))
    full = {**COMBINE_DEFAULTS, **raw}
    check = _combine_mod._check_params
    try:
        check(**full)
        # Settings of switched-off rejections must still be valid values.
        check(**{**full, "minmax_clip": True, "clip_extrema": True, "sigma_clip": True})
    except (TypeError, ValueError) as e:
        raise validator_error(ctx, e, lambda n: join_path(path, n) if n else path,
                               COMBINE_DEFAULTS) from None
    return full


def _masters(ctx, raw, path):
    raw = ctx.mapping(raw, path, list(DEFAULTS["steps"]["masters"]))
    v = {**DEFAULTS["steps"]["masters"], **raw}
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


def _plugins(ctx, raw):
    """``plugins``: modules that register cosmic-ray methods, imported now
    (so the method can be validated) and again in every task process."""
    allowed = "a list of importable module names that register methods"
    if raw is None:
        return []
    raw = [raw] if isinstance(raw, str) else raw
    if not isinstance(raw, list):
        raise ctx.error("plugins", f"expected a list, got {type_name(raw)} {show(raw)}",
                        allowed)
    names = [ctx.text(m, join_path("plugins", i), allowed=allowed)
             for i, m in enumerate(raw)]
    try:
        load_plugins(names)
    except ParamError as e:
        raise ctx.error("plugins", e.problem, allowed) from None
    return names


def _execution(ctx, raw):
    path = "execution"
    raw = ctx.mapping(raw, path, list(DEFAULTS["execution"]))
    v = {**DEFAULTS["execution"], **raw}
    j = lambda k: join_path(path, k)  # noqa: E731
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
                raise ctx.error(j("memory_limit"), f"{show(mem)} is not a size",
                                allowed) from None
            mem = mem.strip()
        else:
            try:
                mem = ctx.number(mem, j("memory_limit"), integer=True, minimum=1)
            except WorkflowError:
                raise ctx.error(j("memory_limit"), f"{show(mem)} is not a size",
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
    plugins: tuple = ()

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
            "plugins": list(self.plugins),
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
                "cosmics": self.cosmics.to_dict(),
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
        raw = read_yaml(source, source)
        if base_dir is None:
            base_dir = os.path.dirname(os.path.abspath(source))
    elif isinstance(path_or_mapping, dict):
        source = "<workflow>"
        raw = copy.deepcopy(path_or_mapping)
    else:
        raise TypeError("load_workflow() takes a file path or a mapping, got "
                        f"{type(path_or_mapping).__name__}")
    base = Path(os.path.abspath(os.path.expanduser(os.fspath(base_dir or os.getcwd()))))
    ctx = Checker(source, base)
    if raw is None:
        raise ctx.error("", "the workflow is empty", "a mapping of " + ", ".join(_TOP_KEYS))
    raw = ctx.mapping(raw, "", _TOP_KEYS, none_ok=False,
                      what="a mapping of " + ", ".join(_TOP_KEYS))

    version = raw.get("version", DEFAULTS["version"])
    if isinstance(version, bool) or version != 1:
        raise ctx.error("version", f"{show(version)} is not supported", "1")
    plugins = _plugins(ctx, raw.get("plugins"))
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
    cosmics = cosmics_section(ctx, steps.get("cosmics"), "steps.cosmics")
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
                    execution=execution, plugins=tuple(plugins))


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



def calibration_workflow(directory, output, *, hdu=None, overscan="BIASSEC", trim="DATASEC",
                         gain=None, readnoise=None):
    """The workflow of ``crdask calibrate DIRECTORY -o OUTPUT``: every default,
    the given instrument settings (``'none'`` switches overscan or trim off),
    and the cosmic-ray step disabled -- so calibration has one path, the
    night's.

    Example
    -------
    >>> wf = calibration_workflow("raw", "reduced", trim="none")
    >>> (wf.cosmics.enabled, wf.instrument["trim"], wf.output.name)
    (False, None, 'reduced')
    """
    def region(value):
        return None if value is None or str(value).strip().lower() in ("none", "") else value

    if isinstance(hdu, str) and hdu.strip().isdigit():
        hdu = int(hdu)
    base = os.getcwd()
    return load_workflow({
        "inputs": {"directory": os.path.abspath(os.fspath(directory)), "hdu": hdu},
        "output": os.path.abspath(os.fspath(output)),
        "instrument": {"overscan": region(overscan), "trim": region(trim), "gain": gain,
                       "readnoise": readnoise},
        "steps": {"cosmics": {"enabled": False}},
    }, base_dir=base)
