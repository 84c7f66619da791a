"""The method seams: parameter objects, the registry, plugins, exposure groups.

* a toy frame method registered from ``tests/toy_methods.py`` (no file of
  ``crdask/`` names it) runs from a workflow through the real ``crdask run``:
  validated, hashed, written in HISTORY;
* a toy group method runs the group stage end to end: members cleaned
  together, products written, one ledger entry per group, resume at group
  granularity after a SIGKILL and after a member is rewritten;
* the saturation rule of a night (issue: ``satlevel`` 65536 e- silently
  masked bright stars);
* ``crdask calibrate`` and ``crdask run`` with cosmics disabled write the
  same pixels.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.io import fits

from crdask.cosmic.lacosmic import PARAMS as LACOSMIC
from crdask.cosmic.params import Param, ParamError, ParamSet
from crdask.cosmic.registry import get_method, method_names
from crdask.pipeline.config import config_hash, load_workflow
from crdask.simulate import write_night

TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
       "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
SIZE = 96
CALIBS = dict(n_bias=3, dark_times=(60, 300), n_dark=2, filters=("V", "R"), n_flat=3)


def crdask_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "crdask", *map(str, args)], cwd=cwd,
                          env=ENV, capture_output=True, text=True, timeout=900)


def show(proc):
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def write_workflow(path, raw, out, cosmics, **extra):
    doc = {"version": 1, "plugins": ["toy_methods"], "inputs": {"directory": str(raw)},
           "output": str(out), "steps": {"cosmics": cosmics}, **extra}
    Path(path).write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def cal_products(out):
    res = {}
    for p in sorted(Path(out).glob("*_cal.fits")):
        with fits.open(p, memmap=False) as h:
            res[p.name] = tuple(h[i].data.copy() for i in (0, "UNCERT", "MASK"))
    return res


def assert_same(a, b):
    assert sorted(a) == sorted(b) and a
    for name in a:
        for x, y in zip(a[name], b[name]):
            np.testing.assert_array_equal(x, y, err_msg=name)


def ledger(out, name):
    return json.loads((Path(out) / "ledger" / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    m = write_night(root / "raw", shape=(SIZE, SIZE), n_science=8, seed=5, **CALIBS)
    return Path(m.directory)


# --------------------------------------------------------------------------- parameters

def test_one_declaration_drives_validation_cli_history_and_hash():
    ps = ParamSet("demo", [Param("k", 3, "int", "a box", unit="px", minimum=1, odd=True),
                           Param("mode", "a", "choice", "how", choices=("a", "b"))])
    assert ps.validate({"k": 5.0}) == {"k": 5, "mode": "a"}
    with pytest.raises(ParamError, match=r"^k: 4 is not allowed; allowed: an odd integer >= 1$"):
        ps.validate({"k": 4})
    with pytest.raises(ParamError, match=r"^kk: unknown parameter of demo \(did you mean k\?\)"):
        ps.validate({"kk": 3})
    assert ps.history({"k": 5, "mode": "b"}) == ["cosmics demo k=5 mode='b'"]
    assert ps.canonical({"k": 5, "mode": "b"}) == {"k": 5.0, "mode": "b"}
    import click
    from click.testing import CliRunner

    @click.command()
    @ps.click_options()
    def cmd(**kw):
        click.echo(json.dumps(ps.validate(ps.option_values(kw))))
    r = CliRunner().invoke(cmd, ["--k", "7", "--mode", "b"])
    assert r.exit_code == 0 and json.loads(r.output) == {"k": 7, "mode": "b"}


def test_lacosmic_signature_is_its_declaration():
    import inspect
    from crdask import lacosmic
    sig = inspect.signature(lacosmic).parameters
    declared = {p.name: p.default for p in LACOSMIC}
    assert {n: sig[n].default for n in declared} == declared
    extra = set(sig) - set(declared)
    assert extra == {"data", "inmask", "inbkg", "invar", "num_threads"}


def test_registry_lists_kinds_and_refuses_unknown():
    assert {"lacosmic", "median"} <= set(method_names("frame"))
    with pytest.raises(ParamError, match=r"'nope' is not a registered method; allowed: "):
        get_method("nope")
    with pytest.raises(ParamError, match="is not a registered group method"):
        get_method("lacosmic", "group")


def test_saturation_in_a_night_is_the_frame_bit_unless_set():
    """The bug: params_for() always returned satlevel=65536 although the night
    meant no electron-level rule, so every star brighter than 65,536 e- lost
    its CR detection. Now the default is the frames' own saturation bit."""
    wf = load_workflow({"inputs": {"directory": "raw"}, "output": "out"})
    assert wf.params_for()["satlevel"] == np.inf
    wf = load_workflow({"inputs": {"directory": "raw"}, "output": "out",
                        "steps": {"cosmics": {"params": {"satlevel": 50000}}}})
    assert wf.params_for()["satlevel"] == 50000.0


def test_saturation_bug_end_to_end():
    """A CR on a bright, unsaturated star (peak 150,000 e-, 50,000 ADU at
    gain 3; FWHM 11.8 px): the night's frame method must find it, and the
    old electron-level rule (65,536 e-) hid it."""
    from crdask.calib import bits
    from crdask.pipeline.frame_task import clean_frame
    rng = np.random.default_rng(1)
    y, x = np.mgrid[:64, :64]
    star = 150000.0 * np.exp(-((x - 32) ** 2 + (y - 32) ** 2) / (2 * 5.0 ** 2))
    sci = (200 + star + rng.normal(0, 15, star.shape)).astype(np.float32)
    sci[32, 36] += 40000.0                      # a cosmic ray 4 px from the centre
    var = (np.maximum(sci, 0) + 25.0).astype(np.float32)
    mask = np.zeros(sci.shape, np.uint8)
    wf = load_workflow({"inputs": {"directory": "raw"}, "output": "out"})
    _, m, ncr, _ = clean_frame("lacosmic", sci, var, mask, wf.params_for(), 5.0)
    assert m[32, 36] & bits.COSMIC_RAY
    old = {**wf.params_for(), "satlevel": 65536.0}   # what the night used before
    _, m_old, _, _ = clean_frame("lacosmic", sci, var, mask, old, 5.0)
    assert not m_old[32, 36] & bits.COSMIC_RAY


# --------------------------------------------------------------------------- plugins

def test_plugin_frame_method_from_a_workflow(night, tmp_path):
    out = tmp_path / "out"
    wf = write_workflow(tmp_path / "n.yaml", night, out,
                        {"method": "toy_threshold", "params": {"level": 3000}})
    r = crdask_cli("run", wf, cwd=tmp_path)
    assert r.returncode == 0, show(r)
    cal = sorted(out.glob("*_cal.fits"))
    assert len(cal) == 8
    for p in cal:
        with fits.open(p) as h:
            hist = " ".join(str(v) for v in h[0].header["HISTORY"])
            assert "cosmics toy_threshold level=3000.0" in hist
            assert h[0].header["CRNFIX"] == int(((h["MASK"].data & 4) != 0).sum())
    rec = json.loads((out / "report.json").read_text())
    assert rec["workflow"]["method"] == "toy_threshold"
    h1 = config_hash(load_workflow(wf))
    write_workflow(tmp_path / "n.yaml", night, out,
                   {"method": "toy_threshold", "params": {"level": 4000}})
    assert config_hash(load_workflow(wf)) != h1
    r = crdask_cli("run", wf, cwd=tmp_path)
    assert "8 science frame(s) reduced, 0 already done" in r.stdout, show(r)
    write_workflow(tmp_path / "n.yaml", night, out,
                   {"method": "toy_threshold", "params": {"level": -1}})
    r = crdask_cli("run", wf, cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().endswith("steps.cosmics.params.level: -1 is not allowed; "
                                     "allowed: a number >= 0"), show(r)


# --------------------------------------------------------------------------- group stage

GROUP = {"method": "toy_others", "params": {"nsigma": 6}}


@pytest.fixture(scope="module")
def grouped_ref(night, tmp_path_factory):
    d = tmp_path_factory.mktemp("grouped_ref")
    wf = write_workflow(d / "n.yaml", night, d / "out", GROUP)
    r = crdask_cli("run", wf, "--workers", "2", "--threads-per-worker", "1", cwd=d)
    assert r.returncode == 0, show(r)
    return d / "out"


def test_group_method_cleans_members_together(night, grouped_ref):
    rec = json.loads((grouped_ref / "report.json").read_text())
    groups = {g["label"]: g for g in rec["exposure_groups"]}
    assert groups and all(g["status"] == "done" for g in groups.values())
    members = sorted(m for g in groups.values() for m in g["members"])
    assert members == sorted(p.name for p in night.glob("sci_*.fits"))
    for label, g in groups.items():
        assert (grouped_ref / f"{label}_median.fits").exists()
        entry = ledger(grouped_ref, f"group-{label}")
        assert entry["status"] == "done" and len(entry["info"]["members"]) == len(g["members"])
    with fits.open(sorted(grouped_ref.glob("sci_*_cal.fits"))[0]) as h:
        assert h[0].header["CRGROUP"] in groups
        assert "cosmics toy_others nsigma=6.0" in " ".join(h[0].header["HISTORY"])


def test_small_groups_fall_back_to_a_frame_method(night, tmp_path):
    out = tmp_path / "out"
    # the simulated exposures start 330 s apart: with max_gap 100 s no group forms
    wf = write_workflow(tmp_path / "n.yaml", night, out,
                        {**GROUP, "grouping": {"keys": ["object", "filter"], "max_gap": 100}})
    r = crdask_cli("run", wf, "--dry-run", cwd=tmp_path)
    assert r.returncode == 0 and "exposure groups for toy_others" in r.stdout, show(r)
    r = crdask_cli("run", wf, cwd=tmp_path)
    assert r.returncode == 0, show(r)
    rec = json.loads((out / "report.json").read_text())
    sci = [f for f in rec["frames"] if f.get("type") == "science"]
    assert len(sci) == 8 and all(not f.get("cosmics_group") for f in sci)
    assert rec["exposure_groups"] == []
    with fits.open(sci[0]["output"]) as h:
        assert "cosmics lacosmic" in " ".join(h[0].header["HISTORY"])


def test_group_resume_after_sigkill_and_member_rewrite(night, grouped_ref, tmp_path):
    import shutil
    raw = tmp_path / "raw"
    shutil.copytree(night, raw)
    out = tmp_path / "out"
    wf = write_workflow(tmp_path / "n.yaml", raw, out, GROUP)
    proc = subprocess.Popen([sys.executable, "-m", "crdask", "run", str(wf), "--workers", "1",
                             "--threads-per-worker", "1"], cwd=tmp_path, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:   # kill once the first group is written, before the last one is
        deadline = time.monotonic() + 600
        while not list((out / "ledger").glob("group-*.json")) or not any(
                ledger(out, p.stem)["status"] == "done"
                for p in (out / "ledger").glob("group-*.json")):
            assert proc.poll() is None and time.monotonic() < deadline, "no group finished"
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done = sorted(p.stem for p in (out / "ledger").glob("group-*.json")
                  if ledger(out, p.stem)["status"] == "done")
    r = crdask_cli("run", wf, cwd=tmp_path)
    assert r.returncode == 0, show(r)
    for g in done:   # finished groups are not redone
        assert ledger(out, g)["attempts"] == 1, g
    assert_same(cal_products(out), cal_products(grouped_ref))

    # rewrite one member: its group is redone, the others are not
    rec = json.loads((out / "report.json").read_text())
    groups = {g["label"]: g["members"] for g in rec["exposure_groups"]}
    label, members = sorted(groups.items())[0]
    path = raw / members[0]
    with fits.open(path, do_not_scale_image_data=True) as h:
        h[0].header["HISTORY"] = "touched"
        h.writeto(tmp_path / "tmp.fits")
    os.replace(tmp_path / "tmp.fits", path)
    before = {g: ledger(out, f"group-{g}")["attempts"] for g in groups}
    r = crdask_cli("run", wf, cwd=tmp_path)
    assert r.returncode == 0, show(r)
    after = {g: ledger(out, f"group-{g}")["attempts"] for g in groups}
    assert after[label] == before[label] + 1
    assert all(after[g] == before[g] for g in groups if g != label)
    n_other = sum(len(m) for g, m in groups.items() if g != label)
    assert f"{len(members)} science frame(s) reduced, {n_other} already done" in r.stdout


def test_group_method_named_without_groups_sets_frames_aside(night, tmp_path):
    out = tmp_path / "out"
    wf = write_workflow(tmp_path / "n.yaml", night, out,
                        {**GROUP, "fallback": None, "grouping": {"max_gap": 1}})
    r = crdask_cli("run", wf, cwd=tmp_path)
    assert r.returncode == 2, show(r)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("crdask: error:")]
    assert len(lines) == 8 and all("no fallback method" in ln for ln in lines), r.stderr
    assert not list(out.glob("*_cal.fits"))
    assert (out / "master_bias.fits").exists()


# --------------------------------------------------------------------------- one calibration path

def test_calibrate_equals_run_without_cosmics(night, tmp_path):
    r = crdask_cli("calibrate", night, "-o", tmp_path / "cal", cwd=tmp_path)
    assert r.returncode == 0, show(r)
    wf = tmp_path / "n.yaml"
    wf.write_text(yaml.safe_dump({"inputs": {"directory": str(night)},
                                  "output": str(tmp_path / "run"),
                                  "steps": {"cosmics": {"enabled": False}}}))
    r = crdask_cli("run", wf, cwd=tmp_path)
    assert r.returncode == 0, show(r)
    assert_same(cal_products(tmp_path / "cal"), cal_products(tmp_path / "run"))


def test_performance_report(night, tmp_path):
    wf = write_workflow(tmp_path / "n.yaml", night, tmp_path / "out",
                        {"method": "toy_threshold"})
    html = tmp_path / "perf.html"
    r = crdask_cli("run", wf, "--performance-report", html, cwd=tmp_path)
    assert r.returncode == 0, show(r)
    text = html.read_text()
    assert "Dask Performance Report" in text
    # The task stream records every task (its keys name the frames); the
    # function names come only from the profile, sampled every 10 ms, which
    # can miss tasks as short as these (it did, in CI).
    stems = sorted(p.stem for p in night.glob("sci_*.fits"))
    assert len(stems) == 8 and all(f"frame-{s}-" in text for s in stems)
