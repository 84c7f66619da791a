"""Workflow files: loading, defaults, paths, one-line errors, config hash."""

import os
import copy
import pickle
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from crdask.io.catalog import KeywordMap
from crdask.pipeline.calibration import CalibSetup
from crdask.pipeline.config import (
    COMBINE_DEFAULTS,
    DEFAULTS,
    Workflow,
    WorkflowError,
    config_hash,
    load_workflow,
)

from crdask.cosmic.registry import get_method, method_names

from shared_data import SHARED

#: What a night uses when a workflow sets nothing: the methods' night values.
LACOSMIC_PARAMS = get_method("lacosmic").params.defaults(night=True, workflow_only=True)
MEDIAN_PARAMS = get_method("median").params.defaults(night=True, workflow_only=True)

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
EXAMPLES = sorted(WORKFLOWS.glob("*.yaml"))
MINIMAL = {"inputs": {"directory": "raw"}, "output": "out"}


def _write(tmp_path, cfg, name="night.yaml"):
    path = tmp_path / name
    path.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg, sort_keys=False))
    return path


def _merge(base, over):
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _reverse_keys(value):
    if isinstance(value, dict):
        return {k: _reverse_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reverse_keys(v) for v in value]
    return value


# ---------------------------------------------------------------------------
# Example files.


def test_examples_present():
    names = {p.name for p in EXAMPLES}
    assert {"night.yaml", "lacosmic-only.yaml", "sprat.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads_and_round_trips(path):
    wf = load_workflow(path)
    assert isinstance(wf, Workflow)
    assert wf.source == str(path)
    assert wf.output.is_absolute()
    wf.keymap()
    wf.calib_setup()
    wf.params_for(filter="R", object="x", exptime=60)
    d = wf.to_dict()
    again = load_workflow(d)
    assert again.to_dict() == d
    assert config_hash(again) == config_hash(wf)
    yaml.safe_dump(d)  # plain types only


def test_night_yaml_shows_the_defaults():
    """night.yaml is the documented copy of every default: keep them equal."""
    wf = load_workflow(WORKFLOWS / "night.yaml")
    d = wf.to_dict()
    ref = load_workflow(MINIMAL, base_dir=WORKFLOWS).to_dict()
    for key in ("version", "truth", "keywords", "instrument", "steps", "execution"):
        assert d[key] == ref[key], key
    assert d["inputs"] == {"directory": str(WORKFLOWS / "raw"), "files": None, "hdu": None}
    assert d["output"] == str(WORKFLOWS / "out")


def test_lacosmic_only_yaml():
    wf = load_workflow(WORKFLOWS / "lacosmic-only.yaml")
    assert not wf.masters["enabled"] and not wf.calibrate["enabled"]
    assert wf.cosmics.enabled and wf.cosmics.method == "lacosmic"
    setup = wf.calib_setup()
    assert setup.overscan is None and setup.trim is None
    assert wf.params_for(filter="B")["sigclip"] == 5.0
    assert wf.params_for(filter="V")["sigclip"] == 4.5


def test_sprat_yaml():
    wf = load_workflow(WORKFLOWS / "sprat.yaml")
    setup = wf.calib_setup()
    assert setup.overscan is None and setup.trim is None
    assert setup.bias_level == 917.0 and setup.readnoise == 7.0 and setup.gain is None
    km = wf.keymap()
    assert km.type_keys == ("OBSTYPE",)
    assert km.filter_wheel_keys == ("FILTER1", "FILTER2")
    assert km.frame_type("EXPOSE") == "science"
    assert km.binning_pairs == (("CCDXBIN", "CCDYBIN"),)
    assert wf.params_for(object="Hilt102")["objlim"] == 8.0
    assert wf.params_for(object="LHS6328")["objlim"] == 5.0


def test_sprat_yaml_reads_the_real_headers():
    """The example as users copy it, with its inputs pointed at wherever the
    shared data are here (the file's own ../../shared works in a checkout
    that sits beside shared/, as CI's does)."""

    from crdask.io.catalog import build_catalog
    cfg = yaml.safe_load((WORKFLOWS / "sprat.yaml").read_text())
    cfg["inputs"]["files"] = [str(SHARED / "sprat-lhs6328" / os.path.basename(f))
                              for f in cfg["inputs"]["files"]]
    wf = load_workflow(cfg, base_dir=WORKFLOWS)
    files = wf.input_files()
    assert len(files) == 6 and files == sorted(files)
    cat = build_catalog(files, wf.keymap(), hdu=wf.inputs.hdu)
    assert {f.frame_type for f in cat.frames} == {"science"}
    assert {f.filter for f in cat.frames} == {"4020longpass"}
    assert {f.binning for f in cat.frames} == {"1x1"}


# ---------------------------------------------------------------------------
# Defaults and normalisation.


def test_defaults_filled():
    wf = load_workflow(MINIMAL, base_dir="/data/night1")
    d = wf.to_dict()
    assert d["version"] == 1 and d["truth"] is None
    assert d["instrument"] == DEFAULTS["instrument"]
    assert d["steps"]["masters"] == DEFAULTS["steps"]["masters"]
    assert d["steps"]["calibrate"] == {"enabled": True}
    assert d["steps"]["cosmics"]["method"] == "lacosmic"
    assert d["steps"]["cosmics"]["params"] == LACOSMIC_PARAMS
    assert d["steps"]["cosmics"]["overrides"] == []
    assert d["steps"]["cosmics"]["fallback"] == "lacosmic"
    assert d["execution"] == DEFAULTS["execution"]
    assert "gain" not in wf.params_for() and "readnoise" not in wf.params_for()
    # The pipeline's own defaults: an empty workflow builds the default CalibSetup.
    setup, ref = wf.calib_setup(), CalibSetup()
    for f in fields(CalibSetup):
        if f.name != "combine_kw":
            assert getattr(setup, f.name) == getattr(ref, f.name), f.name
    # combine_kw: the pipeline's settings, every other combine() keyword at its default
    assert setup.combine_kw == {**COMBINE_DEFAULTS, **ref.combine_kw}
    assert ref.combine_kw.items() <= setup.combine_kw.items()
    assert wf.keymap() == KeywordMap()
    assert wf.execution.chunk_rows == 512 and wf.execution.intermediates is False


def test_median_defaults_and_numbers_normalised():
    wf = load_workflow(_merge(MINIMAL, {"steps": {"cosmics": {
        "method": "median", "params": {"mbox": 7.0}}}}))
    p = wf.params_for()
    assert set(p) == set(MEDIAN_PARAMS)
    assert p["mbox"] == 7 and isinstance(p["mbox"], int)
    assert p["thresh"] == 5.0 and isinstance(p["thresh"], float)
    wf = load_workflow(_merge(MINIMAL, {"steps": {"cosmics": {"params": {"sigclip": 5}}}}))
    assert isinstance(wf.params_for()["sigclip"], float)


def test_empty_sections_mean_defaults(tmp_path):
    path = _write(tmp_path, "inputs:\n  directory: raw\noutput: out\nkeywords:\n"
                            "instrument:\nsteps:\n  cosmics:\n    params:\nexecution:\n")
    assert load_workflow(path).to_dict() == load_workflow(MINIMAL, base_dir=tmp_path).to_dict()


def test_yaml_exponent_is_a_number(tmp_path):
    path = _write(tmp_path, "inputs: {directory: raw}\noutput: out\n"
                            "steps:\n  masters:\n    hot_floor: 5e-1\n")
    assert load_workflow(path).masters["hot_floor"] == 0.5


def test_keywords_override_and_aliases():
    wf = load_workflow(_merge(MINIMAL, {"keywords": {
        "type": "OBSTYPE", "type_aliases": {"SKYFLAT_EVE": "flat"},
        "exptime": ["EXPOSURE"]}}))
    km = wf.keymap()
    assert km.type_keys == ("OBSTYPE",)
    assert km.exptime_keys == ("EXPOSURE",)
    assert km.frame_type("skyflat eve") == "flat"
    assert km.frame_type("bias") == "bias"          # built-in aliases kept
    assert km.filter_keys == KeywordMap().filter_keys


def test_instrument_and_masters_reach_calib_setup():
    wf = load_workflow(_merge(MINIMAL, {
        "inputs": {"hdu": 1},
        "instrument": {"overscan": "[1025:1056,1:1024]", "trim": "[1:1024,1:1024]",
                       "overscan_fit": "chebyshev", "overscan_order": 2,
                       "bias_level": "BIASLVL", "gain": 1.5, "readnoise": 4,
                       "saturation": 60000},
        "steps": {"masters": {"combine": {"method": "median", "sigma_clip": False},
                              "flat_norm": "mode", "flat_region": "[100:900,100:900]"}},
        "execution": {"chunk_rows": 128}}))
    s = wf.calib_setup()
    assert s.hdu == 1 and s.overscan == "[1025:1056,1:1024]" and s.overscan_fit == "chebyshev"
    assert s.bias_level == "BIASLVL" and s.gain == 1.5 and s.readnoise == 4.0
    assert s.combine_kw["method"] == "median" and s.combine_kw["sigma_clip"] is False
    assert s.combine_kw["maxiters"] == 1
    assert s.flat_norm == "mode" and s.flat_region == "[100:900,100:900]"
    assert s.chunk_rows == 128


# ---------------------------------------------------------------------------
# Paths.


def test_relative_paths_resolved_against_yaml_folder(tmp_path, monkeypatch):
    sub = tmp_path / "nights" / "n1"
    (sub / "raw").mkdir(parents=True)
    for name in ("b2.fits", "b1.fits", "notes.txt", ".tmp.fits"):
        (sub / "raw" / name).write_bytes(b"")
    path = _write(sub, {"inputs": {"directory": "raw/"}, "output": "out",
                        "truth": "../truth", "execution": {"scheduler_file": "s.json"}},
                  "w.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    wf = load_workflow(Path("..") / "nights" / "n1" / "w.yaml")
    assert wf.inputs.directory == sub / "raw"
    assert wf.output == sub / "out"
    assert wf.truth == tmp_path / "nights" / "truth"
    assert wf.execution.scheduler_file == sub / "s.json"
    assert wf.input_files() == [str(sub / "raw" / "b1.fits"), str(sub / "raw" / "b2.fits")]
    # An explicit base_dir wins; a mapping resolves against the cwd by default.
    assert load_workflow(path, base_dir="/x").output == Path("/x/out")
    assert load_workflow({"inputs": {"files": "a/*.fits"}, "output": "o"}).output == \
        elsewhere / "o"


def test_globs_sorted_and_deduplicated(tmp_path):
    for name in ("c.fits", "a.fits", "b.fit", "d/e.fits"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    wf = load_workflow({"inputs": {"files": ["*.fits", "a.*", "**/*.fits"]}, "output": "o"},
                       base_dir=tmp_path)
    assert wf.input_files() == [str(tmp_path / n) for n in ("a.fits", "c.fits", "d/e.fits")]


# ---------------------------------------------------------------------------
# Bad configurations: one line naming the file, the key path and what is allowed.

LACO_ALLOWED = ", ".join(LACOSMIC_PARAMS)
BAD = [
    # unknown keys, at each level
    ("top", {"outptu": "x"},
     "outptu: unknown key; allowed: version, plugins, inputs, output, truth, keywords, instrument, "
     "steps, execution"),
    ("inputs", {"inputs": {"hdus": 1}},
     "inputs.hdus: unknown key; allowed: directory, files, hdu"),
    ("keywords", {"keywords": {"filters": ["F"]}}, "keywords.filters: unknown key; allowed: "
     "type_aliases, type, exptime, filter, filter_wheels, clear_filters, grism, slit, object, "
     "date, time, gain, readnoise, binning, binning_pairs, setup"),
    ("instrument", {"instrument": {"biassec": "X"}},
     "instrument.biassec: unknown key; allowed: overscan, trim, overscan_statistic, "
     "overscan_fit, overscan_order, bias_level, gain, readnoise, saturation, amplifiers, "
     "mode, mode_keyword, dispersion_axis"),
    ("steps", {"steps": {"clean": {}}},
     "steps.clean: unknown key; allowed: masters, calibrate, cosmics, qa, arcs"),
    ("masters", {"steps": {"masters": {"norm": "median"}}},
     "steps.masters.norm: unknown key; allowed: enabled, combine, flat_norm, flat_region, "
     "hot_sigma, hot_floor, low_flat, response"),
    ("combine", {"steps": {"masters": {"combine": {"weights": [1, 2]}}}},
     "steps.masters.combine.weights: unknown key; allowed: method, minmax_clip, "
     "minmax_clip_min, minmax_clip_max, clip_extrema, nlow, nhigh, sigma_clip, "
     "sigma_clip_low_thresh, sigma_clip_high_thresh, sigma_clip_func, sigma_clip_dev_func, "
     "maxiters"),
    ("calibrate", {"steps": {"calibrate": {"overwrite": True}}},
     "steps.calibrate.overwrite: unknown key; allowed: enabled"),
    ("cosmics", {"steps": {"cosmics": {"param": {}}}},
     "steps.cosmics.param: unknown key; allowed: enabled, method, params, fallback, "
     "fallback_params, grouping, overrides"),
    ("params", {"steps": {"cosmics": {"params": {"sigclp": 4}}}},
     "steps.cosmics.params.sigclp: unknown lacosmic parameter (did you mean sigclip?); "
     f"allowed: {LACO_ALLOWED}"),
    ("params-other-method", {"steps": {"cosmics": {"method": "median",
                                                   "params": {"sigclip": 4}}}},
     "steps.cosmics.params.sigclip: unknown median parameter; allowed: thresh, mbox, gbox, "
     "rbox"),
    ("group", {"steps": {"cosmics": {"overrides": [{"match": {"filter": "R"}, "when": 1}]}}},
     "steps.cosmics.overrides[0].when: unknown key; allowed: match, params"),
    ("match", {"steps": {"cosmics": {"overrides": [{"match": {"airmass": 1}}]}}},
     "steps.cosmics.overrides[0].match.airmass: unknown key; allowed: filter, object, exptime"),
    ("execution", {"execution": {"nworkers": 2}},
     "execution.nworkers: unknown key; allowed: chunk_rows, intermediates, scheduler, "
     "scheduler_file, workers, threads_per_worker, memory_limit, processes, cluster, adapt"),
    # bad enums
    ("method", {"steps": {"cosmics": {"method": "lacosmicx"}}},
     lambda: "steps.cosmics.method: 'lacosmicx' is not allowed; allowed: "
     + ", ".join(method_names())),
    ("statistic", {"instrument": {"overscan_statistic": "mode"}},
     "instrument.overscan_statistic: 'mode' is not allowed; allowed: median, mean, "
     "clipped_mean"),
    ("fit", {"instrument": {"overscan_fit": "cubic"}},
     "instrument.overscan_fit: 'cubic' is not allowed; allowed: null, polynomial, chebyshev, "
     "spline"),
    ("flat_norm", {"steps": {"masters": {"flat_norm": "mean"}}},
     "steps.masters.flat_norm: 'mean' is not allowed; allowed: median, mode, response"),
    ("alias", {"keywords": {"type_aliases": {"EXPOSE": "sci"}}},
     "keywords.type_aliases.EXPOSE: 'sci' is not a frame type; allowed: bias, dark, flat, "
     "science, standard, arc, other"),
    ("combine-func", {"steps": {"masters": {"combine": {"sigma_clip_func": "mode"}}}},
     "steps.masters.combine.sigma_clip_func: 'mode' is not allowed; allowed: 'median', "
     "'mean'"),
    # bad types
    ("chunk_rows", {"execution": {"chunk_rows": "512"}},
     "execution.chunk_rows: expected an integer, got text '512'; allowed: an integer >= 1"),
    ("enabled", {"steps": {"masters": {"enabled": "yes"}}},
     "steps.masters.enabled: expected true or false, got text 'yes'; allowed: true, false"),
    ("processes", {"execution": {"processes": "threads"}},
     "execution.processes: expected true or false, got text 'threads'; allowed: true, false"),
    ("gain", {"instrument": {"gain": "2.0"}},
     "instrument.gain: expected a number, got text '2.0'; allowed: null or a number > 0"),
    ("keyword-list", {"keywords": {"type": {"a": 1}}},
     "keywords.type: expected a list, got a mapping {'a': 1}; allowed: a list of header "
     "keywords, tried in order"),
    ("steps-list", {"steps": []},
     "steps: expected a mapping, got a list []; allowed: masters, calibrate, cosmics, qa, arcs"),
    ("groups-type", {"steps": {"cosmics": {"overrides": {"filter": "R"}}}},
     "steps.cosmics.overrides: expected a list, got a mapping {'filter': 'R'}; allowed: a list "
     "of {match, params}"),
    ("workers", {"execution": {"workers": 0}},
     "execution.workers: 0 is not allowed; allowed: null or an integer >= 1"),
    ("memory", {"execution": {"memory_limit": "4 gigs"}},
     "execution.memory_limit: '4 gigs' is not a size; allowed: null, 'auto', a number of "
     "bytes or a size such as '4GiB'"),
    ("section", {"instrument": {"overscan": "[1:50,1:]"}},
     "instrument.overscan: malformed section '[1:50,1:]' (expected [x1:x2,y1:y2], 1-based); "
     "allowed: null, a header keyword (e.g. BIASSEC) or a FITS section '[x1:x2,y1:y2]'"),
    # bad L.A.Cosmic / median parameters, reported by crdask's own validators
    ("sigclip", {"steps": {"cosmics": {"params": {"sigclip": -1}}}},
     "steps.cosmics.params.sigclip: -1 is not allowed; allowed: a number > 0"),
    ("cleantype", {"steps": {"cosmics": {"params": {"cleantype": "mean"}}}},
     "steps.cosmics.params.cleantype: 'mean' is not allowed; allowed: median, medmask, "
     "meanmask, idw"),
    ("niter", {"steps": {"cosmics": {"params": {"niter": 2.5}}}},
     "steps.cosmics.params.niter: 2.5 is not allowed; allowed: an integer >= 0"),
    ("sepmed", {"steps": {"cosmics": {"params": {"sepmed": "no"}}}},
     "steps.cosmics.params.sepmed: expected true or false, got text 'no'; allowed: true, "
     "false"),
    ("psfsize", {"steps": {"cosmics": {"params": {"fsmode": "convolve", "psfsize": 6}}}},
     "steps.cosmics.params.psfsize: 6 is not allowed; allowed: an odd integer >= 1"),
    ("padwidth", {"steps": {"cosmics": {"params": {"padwidth": -2}}}},
     "steps.cosmics.params.padwidth: -2 is not allowed; allowed: an integer >= 0"),
    ("params-gain", {"steps": {"cosmics": {"params": {"gain": 2.0}}}},
     "steps.cosmics.params.gain: not allowed here: frames are in electrons, so the pipeline "
     "sets it per frame (set instrument.gain/readnoise or "
     f"keywords.gain/readnoise instead); allowed: {LACO_ALLOWED}"),
    ("group-param", {"steps": {"cosmics": {"overrides": [
        {"match": {"filter": "R"}}, {"match": {"filter": "V"}, "params": {"objlim": -3}}]}}},
     "steps.cosmics.overrides[1].params.objlim: -3 is not allowed; allowed: a number >= 0"),
    ("median-mbox", {"steps": {"cosmics": {"method": "median", "params": {"mbox": 4}}}},
     "steps.cosmics.params.mbox: 4 is not allowed; allowed: an odd integer >= 3"),
    ("median-thresh", {"steps": {"cosmics": {"method": "median", "params": {"thresh": 0}}}},
     "steps.cosmics.params.thresh: 0 is not allowed; allowed: a number > 0"),
    # structure
    ("no-inputs", {"inputs": None},
     "inputs: missing; allowed: a mapping with directory or files (and hdu)"),
    ("empty-inputs", {"inputs": {"hdu": 0, "directory": None}},
     "inputs: neither directory nor files is given; allowed: exactly one of directory, files"),
    ("both-inputs", {"inputs": {"files": ["raw/*.fits"]}},
     "inputs: both directory and files are given; allowed: exactly one of directory, files"),
    ("no-output", {"output": None},
     "output: missing; allowed: a folder path (relative to the workflow file's folder)"),
    ("version", {"version": 2}, "version: 2 is not supported; allowed: 1"),
    ("match-empty", {"steps": {"cosmics": {"overrides": [{"params": {"objlim": 6}}]}}},
     "steps.cosmics.overrides[0].match: missing or empty; allowed: a mapping of filter, "
     "object, exptime"),
    ("two-schedulers", {"execution": {"scheduler": "tcp://h:8786", "scheduler_file": "s.json"}},
     "execution.scheduler_file: scheduler and scheduler_file are both given; allowed: one "
     "of them, or neither (a local cluster)"),
    ("nothing-to-do", {"steps": {"masters": {"enabled": False}, "calibrate": {"enabled": False},
                                 "cosmics": {"enabled": False}}},
     "steps: every step is disabled: nothing to do; allowed: at least one of masters, "
     "calibrate, cosmics enabled"),
]


@pytest.mark.parametrize("over,expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_one_line(tmp_path, over, expected):
    # (a callable: what is registered when the test runs, plugins included)
    expected = expected() if callable(expected) else expected
    path = _write(tmp_path, _merge(MINIMAL, over))
    with pytest.raises(WorkflowError) as info:
        load_workflow(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg == f"{path}: {expected}"


def test_bad_config_from_mapping_names_the_key():
    with pytest.raises(WorkflowError, match=r"^<workflow>: steps\.cosmics\.method: "):
        load_workflow(_merge(MINIMAL, {"steps": {"cosmics": {"method": "x"}}}))


def test_unquoted_section_hint(tmp_path):
    path = _write(tmp_path, "inputs: {directory: raw}\noutput: out\n"
                            "instrument:\n  trim: [1:1024,1:1024]\n")
    with pytest.raises(WorkflowError, match=r"instrument\.trim: YAML read \['1:1024', "
                                            r"'1:1024'\] as a list: quote a section"):
        load_workflow(path)


@pytest.mark.parametrize("text,expected", [
    ("inputs:\n  directory: raw\n output: out\n",
     "line 3, column 2: invalid YAML: did not find expected key"),
    ("inputs: {directory: raw\noutput: out\n",
     "line 2, column 7: invalid YAML: did not find expected ',' or '}'"),
    ("inputs: {directory: raw}\noutput: out\nsteps:\n  cosmics:\n    params:\n"
     "      sigclip: 4\n      sigclip: 5\n",
     "line 7, column 7: invalid YAML: duplicate key 'sigclip' (first on line 6)"),
])
def test_yaml_syntax_errors_give_the_line(tmp_path, text, expected):
    path = _write(tmp_path, text)
    with pytest.raises(WorkflowError) as info:
        load_workflow(path)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"{path}: {expected}")


def test_empty_and_non_mapping_files(tmp_path):
    path = _write(tmp_path, "# nothing\n")
    with pytest.raises(WorkflowError, match=r"night\.yaml: the workflow is empty; allowed"):
        load_workflow(path)
    path = _write(tmp_path, "- a\n- b\n")
    with pytest.raises(WorkflowError, match=r"night\.yaml: expected a mapping, got a list"):
        load_workflow(path)
    with pytest.raises(WorkflowError, match=r"missing\.yaml: no such file"):
        load_workflow(tmp_path / "missing.yaml")


def test_empty_glob_and_missing_directory(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.fits").write_bytes(b"")
    path = _write(tmp_path, {"inputs": {"files": ["raw/*.fits", "raw/*.fts"]}, "output": "o"})
    wf = load_workflow(path)  # loading does not look at the data
    with pytest.raises(WorkflowError) as info:
        wf.input_files()
    assert str(info.value) == (
        f"{path}: inputs.files[1]: {str(tmp_path / 'raw' / '*.fts')!r} matches no file; "
        "allowed: file names or globs that match at least one file")
    for directory, problem in (("nope", "does not exist"), ("empty", "no FITS file in")):
        if directory == "empty":
            (tmp_path / "empty").mkdir()
        path = _write(tmp_path, {"inputs": {"directory": directory}, "output": "o"})
        with pytest.raises(WorkflowError, match=rf"^{path}: inputs\.directory: .*{problem}"):
            load_workflow(path).input_files()


def test_error_is_picklable_value_error():
    err = WorkflowError("night.yaml", "steps.cosmics.method", "'x' is not allowed",
                        "lacosmic, median")
    assert isinstance(err, ValueError)
    assert str(pickle.loads(pickle.dumps(err))) == str(err)


# ---------------------------------------------------------------------------
# Groups.


def test_params_for_first_match_wins():
    wf = load_workflow(_merge(MINIMAL, {"steps": {"cosmics": {
        "params": {"sigclip": 5.0},
        "overrides": [
            {"match": {"filter": "R", "exptime": 300}, "params": {"objlim": 7}},
            {"match": {"filter": ["R", "I"]}, "params": {"objlim": 6.0, "niter": 2}},
            {"match": {"object": "M51"}, "params": {"sigfrac": 0.5}},
        ]}}}))
    assert wf.params_for(filter="R", exptime=300.0000001)["objlim"] == 7.0
    p = wf.params_for(filter="R", exptime=60)
    assert (p["objlim"], p["niter"], p["sigclip"]) == (6.0, 2, 5.0)
    assert wf.params_for(filter="I", object="M51")["sigfrac"] == 0.3   # group 2 first
    assert wf.params_for(filter="V", object="M51")["sigfrac"] == 0.5
    assert wf.params_for() == {**LACOSMIC_PARAMS, "sigclip": 5.0}
    wf.params_for()["sigclip"] = 99
    assert wf.params_for()["sigclip"] == 5.0


# ---------------------------------------------------------------------------
# Config hash.


def test_config_hash_stable_and_scoped(tmp_path):
    base = _merge(MINIMAL, {"steps": {"cosmics": {
        "params": {"sigclip": 4.5, "objlim": 5},
        "overrides": [{"match": {"filter": "R"}, "params": {"objlim": 6}}]}}})
    wf = load_workflow(base)
    sections = ("masters", "calibrate", "cosmics")
    h = {s: config_hash(wf, section=s) for s in sections}
    assert len(set(h.values())) == 3 and all(len(v) == 64 for v in h.values())
    assert config_hash(wf) == h["cosmics"] == config_hash(wf, section="final")
    assert config_hash(wf, section="calibrated") == h["calibrate"]

    # key order, YAML vs mapping, 5 vs 5.0: same hash
    assert {s: config_hash(load_workflow(_reverse_keys(base)), section=s)
            for s in sections} == h
    assert config_hash(load_workflow(_write(tmp_path, _reverse_keys(base)))) == h["cosmics"]
    five = _merge(base, {"steps": {"cosmics": {"params": {"objlim": 5.0}}}})
    assert config_hash(load_workflow(five)) == h["cosmics"]

    # execution settings, paths and truth do not change it
    for over in ({"execution": {"workers": 3, "threads_per_worker": 1, "chunk_rows": 64,
                                "memory_limit": "2GiB", "intermediates": False}},
                 {"execution": {"scheduler": "tcp://host:8786"}},
                 {"output": "elsewhere", "truth": "truth", "inputs": {"directory": "other"}}):
        other = load_workflow(_merge(base, over))
        assert {s: config_hash(other, section=s) for s in sections} == h, over

    # a cosmics parameter changes only the final hash
    changed = load_workflow(_merge(base, {"steps": {"cosmics": {"params": {"sigclip": 5}}}}))
    assert config_hash(changed, section="cosmics") != h["cosmics"]
    assert config_hash(changed, section="calibrate") == h["calibrate"]
    assert config_hash(changed, section="masters") == h["masters"]
    group = _merge(base, {})
    group["steps"]["cosmics"]["overrides"][0]["params"]["objlim"] = 6.5
    assert config_hash(load_workflow(group)) != h["cosmics"]

    # masters settings, instrument and keywords change everything downstream
    for over in ({"steps": {"masters": {"hot_sigma": 6}}}, {"instrument": {"readnoise": 3}},
                 {"keywords": {"type": ["OBSTYPE"]}}, {"inputs": {"hdu": 1}}):
        other = load_workflow(_merge(base, over))
        assert all(config_hash(other, section=s) != h[s] for s in sections), over

    with pytest.raises(ValueError, match="section must be one of"):
        config_hash(wf, section="everything")
