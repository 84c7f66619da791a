"""Workflow files for ``crdask run WORKFLOW.yaml``: load, validate, normalise (layer 4).

A workflow is a YAML mapping (see ``workflows/night.yaml`` for every key with
comments, and :data:`DEFAULTS` for every default value -- the one place they
are written down)::

    wf = load_workflow("night.yaml")          # or a dict, with base_dir=
    wf.input_files()                          # sorted absolute paths
    wf.output, wf.truth                       # absolute Paths (truth may be None)
    wf.keymap()                               # crdask.io.catalog.KeywordMap
    wf.calib_setup()                          # crdask.pipeline.calibration.CalibSetup
    wf.cosmics.method, wf.cosmics.kind        # a registered method, 'frame' | 'group'
    wf.params_for(filter="R", object="M51", exptime=300.0)   # full parameter dict
    wf.execution.workers                      # scheduler settings
    wf.to_dict()                              # normalised, every default filled in
    config_hash(wf, section="cosmics")        # what the outputs depend on

Every problem is a :class:`WorkflowError` (a ``ValueError``) whose message is
one line ``"<file>: <key.path>: <problem>; allowed: <values>"``, e.g.
``night.yaml: steps.cosmics.method: 'lacosmicx' is not allowed; allowed:
cr2images, lacosmic, median, median_minimum``. Nothing is half-accepted: unknown keys, wrong types and
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
* ``steps.cosmics`` is checked by walking the named method's parameter
  object (:mod:`crdask.pipeline.cosmics_config`): ``params`` apply to every
  science frame (or group); ``overrides`` are tried in order and the first
  whose ``match`` fits (all given keys equal; a key may list alternatives;
  exposure times compared to 1e-6 relative) adds its ``params`` on top.
  Parameters the night sets itself (``gain``/``readnoise``: frames are in
  electrons) are refused there. ``plugins`` name modules that register
  more methods (imported when the workflow is loaded).
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
import json
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..cosmic.registry import load_plugins
from ..cosmic.params import ParamError
from ..io.catalog import KeywordMap, list_fits_files
from .schema import Checker, WorkflowError, join_path, read_yaml, show, type_name
from .calibration import CalibSetup
from .calib_config import (
    ARCS_DEFAULTS,
    COMBINE_DEFAULTS,
    INPUTS_DEFAULTS,
    INSTRUMENT_DEFAULTS,
    KEYWORD_FIELDS,
    KEYWORDS_DEFAULTS,
    MASTERS_DEFAULTS,
    inputs_section,
    instrument_section,
    keywords_section,
    arcs_section,
    masters_section,
)
from .cosmics_config import COSMICS_DEFAULTS, Cosmics, cosmics_section
from .execution_config import EXECUTION_DEFAULTS, Execution, execution_section
from .qa import QA_DEFAULTS, qa_section

__all__ = ["WorkflowError", "Workflow", "Inputs", "Cosmics", "Execution", "DEFAULTS",
           "COMBINE_DEFAULTS", "KEYWORD_FIELDS", "HASH_SECTIONS", "load_workflow",
           "config_hash"]


# ---------------------------------------------------------------------------
# Defaults: the one place they are written down (derived from the functions
# and dataclasses they configure, so they cannot drift apart).
# ---------------------------------------------------------------------------

#: Every key of a workflow and its default (``None`` for ``output`` and the
#: ``inputs`` choice means "required"). ``keywords.type_aliases`` lists only
#: additions to :class:`KeywordMap`'s built-in aliases; ``cosmics.params``
#: is completed with the method's night values (its parameter object).
DEFAULTS = {
    "version": 1,
    "plugins": [],
    "inputs": dict(INPUTS_DEFAULTS),
    "output": None,
    "truth": None,
    "keywords": copy.deepcopy(KEYWORDS_DEFAULTS),
    "instrument": dict(INSTRUMENT_DEFAULTS),
    "steps": {
        "masters": copy.deepcopy(MASTERS_DEFAULTS),
        "calibrate": {"enabled": True},
        "cosmics": copy.deepcopy(COSMICS_DEFAULTS),
        "qa": dict(QA_DEFAULTS),
        "arcs": dict(ARCS_DEFAULTS),
    },
    "execution": dict(EXECUTION_DEFAULTS),
}

#: ``config_hash`` sections: which parts of the workflow each output depends on.
HASH_SECTIONS = {
    "masters": ("masters",),
    "calibrate": ("masters", "calibrate"),
    "cosmics": ("masters", "calibrate", "cosmics"),
    "arcs": ("masters", "calibrate", "cosmics", "arcs"),
}
_HASH_ALIASES = {"calibrated": "calibrate", "final": "cosmics"}


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
    qa: dict = field(default_factory=lambda: dict(QA_DEFAULTS))
    arcs: dict = field(default_factory=lambda: dict(ARCS_DEFAULTS))

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
                          chunk_rows=self.execution.chunk_rows, response=dict(m["response"]))

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
                "qa": dict(self.qa),
                "arcs": dict(self.arcs),
            },
            "execution": ex.to_dict(),
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
    inputs = inputs_section(ctx, raw.get("inputs"))
    if raw.get("output") is None:
        raise ctx.error("output", "missing",
                        "a folder path (relative to the workflow file's folder)")
    output = ctx.path(raw["output"], "output")
    truth = ctx.path(raw.get("truth"), "truth", none_ok=True)
    keywords = keywords_section(ctx, raw.get("keywords"))
    instrument = instrument_section(ctx, raw.get("instrument"))
    steps = ctx.mapping(raw.get("steps"), "steps", list(DEFAULTS["steps"]))
    masters = masters_section(ctx, steps.get("masters"), "steps.masters")
    cal = ctx.mapping(steps.get("calibrate"), "steps.calibrate", ["enabled"])
    calibrate = {"enabled": ctx.flag(cal.get("enabled", DEFAULTS["steps"]["calibrate"]["enabled"]),
                                     "steps.calibrate.enabled")}
    cosmics = cosmics_section(ctx, steps.get("cosmics"), "steps.cosmics")
    qa = qa_section(ctx, steps.get("qa"), "steps.qa")
    arcs = arcs_section(ctx, steps.get("arcs"), "steps.arcs")
    if not (masters["enabled"] or calibrate["enabled"] or cosmics.enabled):
        raise ctx.error("steps", "every step is disabled: nothing to do",
                        "at least one of masters, calibrate, cosmics enabled")
    execution = execution_section(ctx, raw.get("execution"))
    return Workflow(source=source, base_dir=base, version=1,
                    inputs=Inputs(directory=inputs["directory"],
                                  files=None if inputs["files"] is None
                                  else tuple(inputs["files"]),
                                  hdu=inputs["hdu"]),
                    output=output, truth=truth, keywords=keywords, instrument=instrument,
                    masters=masters, calibrate=calibrate, cosmics=cosmics,
                    execution=execution, plugins=tuple(plugins), qa=qa, arcs=arcs)


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
    if name == "cosmics" and d["steps"]["qa"]["inject"]:   # qa figures are in the entries
        payload["steps"]["qa"] = d["steps"]["qa"]
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
