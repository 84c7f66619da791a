"""Group methods in a simulated night, end to end (issues #8 and #9).

A night whose science frames come in pairs and in groups of 3-5 equivalent
exposures (the simulator keeps the true CR masks apart) is reduced with
``cr2images`` and with ``lacosmic`` on the same frames: the report carries
recall and false positives against the truth, and pair differencing finds
at least as many true CR pixels as L.A.Cosmic. ``median_minimum`` writes
numina's combined products for each group of three or more.
"""

import json
from pathlib import Path

import pytest
from astropy.io import fits

from crdask.pipeline.night import run_night
from crdask.simulate import write_night

SIZE = 160
CALIBS = dict(n_bias=3, dark_times=(60, 300), n_dark=2, filters=("V", "R"), n_flat=3)


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as c:
        yield c


def reduce(raw, truth, out, method, client, **cosmics):
    run = run_night({"inputs": {"directory": str(raw)}, "output": str(out),
                     "truth": str(truth),
                     "steps": {"cosmics": {"method": method, **cosmics}}},
                    client=client, log=lambda m: None)
    assert run.exit_code == 0, run.record["failures"]
    return run.record


@pytest.mark.parametrize("layout", ["pairs", "groups"])
def test_cr2images_night_recall_at_least_lacosmic(tmp_path, client, layout):
    m = write_night(tmp_path / "raw", shape=(SIZE, SIZE), n_science=8, seed=21,
                    layout=layout, **CALIBS)
    raw, truth = Path(m.directory), Path(m.truth_dir)
    pairs = reduce(raw, truth, tmp_path / "cr2", "cr2images", client)
    la = reduce(raw, truth, tmp_path / "la", "lacosmic", client)
    groups = pairs["exposure_groups"]
    sizes = sorted(len(g["members"]) for g in groups)
    assert groups and all(g["status"] == "done" for g in groups)
    assert sizes == ([2] * 4 if layout == "pairs" else sizes) and min(sizes) >= 2
    assert sum(sizes) == 8          # every science frame in a group
    for rec in (pairs, la):
        s = rec["cr_summary"]
        assert s["frames"] == 8 and s["n_true"] > 0
        assert "false_positives" in s
        assert all("recall" in f for f in rec["frames"] if f.get("type") == "science")
    assert pairs["cr_summary"]["recall"] >= la["cr_summary"]["recall"], \
        (pairs["cr_summary"], la["cr_summary"])
    md = (tmp_path / "cr2" / "report.md").read_text()
    assert "recall" in md.lower()


def test_median_minimum_night_writes_numina_products(tmp_path, client):
    m = write_night(tmp_path / "raw", shape=(SIZE, SIZE), n_science=8, seed=22,
                    layout="groups", **CALIBS)
    raw, truth = Path(m.directory), Path(m.truth_dir)
    out = tmp_path / "mm"
    rec = reduce(raw, truth, out, "median_minimum", client)
    groups = rec["exposure_groups"]
    assert groups and all(g["status"] == "done" for g in groups)
    for g in groups:
        for name in ("mean", "median", "min", "mediancr", "meancrt", "meancr", "meancr2"):
            path = out / f"{g['label']}_combined_{name}.fits"
            assert path.exists(), path
        with fits.open(out / f"{g['label']}_combined_meancr.fits") as h:
            assert h[0].header["CRGROUP"] == g["label"]
    for f in rec["frames"]:
        if f.get("type") == "science":
            assert f["status"] == "done" and f.get("cosmics_group")
    report = json.loads((out / "report.json").read_text())
    assert report["workflow"]["method"] == "median_minimum"
