"""Helpers for the cluster, lock and archive tests: simulated nights,
workflow files, ``crdask`` in real subprocesses, output comparisons.

Subprocesses import the crdask of this checkout (``PYTHONPATH`` is set to
the repository root), whatever ``pip install -e`` points at.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from astropy.io import fits

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
       "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(
           os.pathsep)}
SIZE = 128
CALIBS = dict(n_bias=3, dark_times=(60,), n_dark=2, filters=("V",), n_flat=3)


def crdask_cli(*args, cwd=None, timeout=900):
    """``python -m crdask ARGS`` in a real subprocess."""
    return subprocess.run([sys.executable, "-m", "crdask", *map(str, args)], cwd=cwd,
                          env=ENV, capture_output=True, text=True, timeout=timeout)


def crdask_popen(*args, cwd=None, log=None):
    """``python -m crdask ARGS`` started in its own process group."""
    return subprocess.Popen([sys.executable, "-m", "crdask", *map(str, args)], cwd=cwd,
                            env=ENV, stdout=log or subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def show(proc):
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def simulate(root, n_science, seed, size=SIZE):
    """A simulated raw night in ``root/raw`` (truth in ``root/raw_truth``)."""
    from crdask.simulate import write_night

    m = write_night(Path(root) / "raw", shape=(size, size), n_science=n_science, seed=seed,
                    **CALIBS)
    return Path(m.directory), Path(m.truth_dir)


def write_workflow(path, raw, out, *, execution=None, cosmics=None):
    """A workflow YAML file with absolute paths."""
    doc = {"version": 1, "inputs": {"directory": str(raw)}, "output": str(out)}
    if cosmics:
        doc["steps"] = {"cosmics": {"params": dict(cosmics)}}
    if execution:
        doc["execution"] = dict(execution)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def science_stems(raw):
    return sorted(p.name.split(".")[0] for p in Path(raw).glob("sci_*.fits"))


def ledger_entries(out):
    d = Path(out) / "ledger"
    res = {}
    for p in d.glob("*.json") if d.is_dir() else ():
        if p.name.startswith(".") or p.stem == "masters":
            continue
        try:
            res[p.stem] = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
    return res


def n_done(out):
    return sum(e.get("status") == "done" for e in ledger_entries(out).values())


def outputs(out):
    res = {}
    for p in sorted(Path(out).glob("*_cal.fits")):
        with fits.open(p, memmap=False) as hdul:
            res[p.name[:-len("_cal.fits")]] = (hdul[0].data.copy(), hdul["UNCERT"].data.copy(),
                                               hdul["MASK"].data.copy())
    return res


def assert_same_outputs(out, ref, stems):
    got, want = outputs(out), outputs(ref)
    assert sorted(got) == sorted(stems), f"{out}: outputs {sorted(got)}"
    assert sorted(want) == sorted(stems), f"{ref}: outputs {sorted(want)}"
    for stem in stems:
        for name, a, b in zip(("SCI", "UNCERT", "MASK"), got[stem], want[stem]):
            assert a.dtype == b.dtype and a.shape == b.shape, (stem, name)
            np.testing.assert_array_equal(a, b, err_msg=f"{stem} {name} differs from {ref}")


def tree_state(d):
    """{relative path: (size, mtime_ns, sha256)} of every file under ``d``."""
    res = {}
    for p in sorted(Path(d).rglob("*")):
        if p.is_file():
            st = p.stat()
            res[str(p.relative_to(d))] = (st.st_size, st.st_mtime_ns,
                                          hashlib.sha256(p.read_bytes()).hexdigest())
    return res
