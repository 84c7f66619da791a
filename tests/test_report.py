"""Run report: report.json / report.md / PNG previews (crdask.pipeline.report)."""

import json
import os
import sys

import numpy as np
import pytest

from crdask.io.atomic import is_temp_name
from crdask.pipeline import previews as pv
from crdask.pipeline.report import record_to_json, render_markdown, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _record():
    frames = [
        {"file": "bias_001.fits", "type": "bias", "group": "bias", "status": "done",
         "stage": "combined", "seconds": 0.4, "cr_pixels": None, "output": None,
         "error": None},
        {"file": "bias_002.fits", "type": "bias", "group": "bias", "status": "set aside",
         "stage": "read", "seconds": 0.1, "cr_pixels": None, "output": None,
         "error": "bias_002.fits[0]: NAXIS2 is 100, expected 2048"},
        {"file": "flat_V_001.fits", "type": "flat", "group": "flat filter=V",
         "status": "done", "stage": "combined", "seconds": 0.5, "cr_pixels": None,
         "output": None, "error": None},
        {"file": "sci_field01_V_001.fits", "type": "science",
         "group": "science filter=V object=field01", "status": "done", "stage": "written",
         "seconds": 1.2, "cr_pixels": 1234, "output": "out/sci_field01_V_001_cal.fits",
         "error": None, "recall": 0.912, "false_positives": 120},
        {"file": "sci_field01_V_002.fits", "type": "science",
         "group": "science filter=V object=field01", "status": "skipped",
         "stage": "written", "seconds": 0.0, "cr_pixels": 987,
         "output": "out/sci_field01_V_002_cal.fits", "error": None, "recall": 0.887,
         "false_positives": 95},
        {"file": "sci_field02_R_001.fits", "type": "science",
         "group": "science filter=R object=field02", "status": "failed", "stage": "cosmic",
         "seconds": 3.4, "cr_pixels": None, "output": None,
         "error": "sci_field02_R_001.fits: worker died (KilledWorker)"},
        {"file": "sci_field02_R|odd name.fits", "type": "science",
         "group": "science filter=R object=field02", "status": "set aside",
         "stage": "catalogue", "seconds": None, "cr_pixels": None, "output": None,
         "error": "sci_field02_R|odd name.fits[0]: keyword FILTER missing"},
    ]
    return {
        "crdask_version": "0.1.0",
        "versions": {"python": "3.11.2", "numpy": "1.26.4", "dask": "2024.5.0",
                     "numba": "0.59.1", "astropy": "6.0.1"},
        "workflow": {"path": "night.yaml", "hash": "ab12cd34"},
        "started": "2026-11-21T01:02:03Z", "finished": "2026-11-21T01:04:06Z",
        "seconds": 123.4,
        "scheduler": {"kind": "LocalCluster", "workers": 2, "threads_per_worker": 1,
                      "dashboard": "http://127.0.0.1:8787/status"},
        "frames": frames,
        "masters": {
            "bias": {"path": "out/master_bias.fits",
                     "inputs": ["bias_001.fits", "bias_003.fits", "bias_004.fits"],
                     "status": "done"},
            "flat V": {"path": "out/master_flat_V.fits", "inputs": ["flat_V_001.fits"],
                       "status": "reused"},
        },
        # the lead lists failures itself; one set-aside frame is only in `frames`
        "failures": [
            {"file": "bias_002.fits", "reason": "bias_002.fits[0]: NAXIS2 is 100, expected 2048"},
            {"file": "sci_field02_R_001.fits",
             "reason": "sci_field02_R_001.fits: worker died (KilledWorker)"},
        ],
        "cr_summary": {"recall": 0.9034, "false_positives": 215, "n_true": 2300,
                       "n_found": 2293},
    }


def _previews(shape=(300, 400)):
    from crdask.simulate import simulate_frame
    fr = simulate_frame(shape, seed=3)
    rng = np.random.default_rng(1)
    bias = (300 + rng.normal(0, 3, shape)).astype(np.float32)
    return {
        "masters": {"bias": bias, "flat V": np.ones(shape, np.float32)},
        "science": [{"name": "sci_field01_V_001", "before": fr.data, "after": fr.clean,
                     "crmask": fr.crmask}],
        "cr_counts": [("sci_field01_V_001.fits", 1234), ("sci_field01_V_002.fits", 987),
                      ("sci_field02_R_001.fits", None)],
    }


def _no_temp_files(root):
    left = [os.path.join(d, n) for d, _, names in os.walk(root) for n in names
            if is_temp_name(n)]
    assert left == []


def _hide_matplotlib(monkeypatch):
    """Make every ``import matplotlib...`` fail, as if the extra were not installed."""
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


# --------------------------------------------------------------------------- JSON / markdown

def test_report_json_round_trips_and_markdown_lists_everything(tmp_path):
    rec = _record()
    paths = write_report(tmp_path, rec)
    assert paths["json"] == os.path.join(tmp_path, "report.json")
    with open(paths["json"], encoding="utf-8") as f:
        assert json.load(f) == rec
    text = open(paths["json"], encoding="utf-8").read()
    assert text == json.dumps(rec, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    md = open(paths["md"], encoding="utf-8").read()
    for fr in rec["frames"]:
        assert fr["file"].replace("|", "\\|") in md, fr["file"]
    for f in rec["frames"]:
        if f["error"]:
            assert f["error"] in md   # incl. the set-aside frame missing from failures
    for f in rec["failures"]:
        assert f["reason"] in md
    assert "## Set aside / failures" in md
    assert "| bias | `out/master_bias.fits` | 3 | done |" in md
    assert "| flat V | `out/master_flat_V.fits` | 1 | reused |" in md
    assert "0.903" in md and "90.3 %" in md          # CR quality vs truth
    assert "0.912" in md and "| 120 |" in md          # per-frame recall / FP columns
    assert "0.1.0" in md and "night.yaml" in md and "ab12cd34" in md
    assert "LocalCluster" in md and "2 workers" in md
    assert "123.4 s (2 min 03 s)" in md
    assert "7 input frames (4 science): 3 done, 1 skipped, 1 failed, 2 set aside." in md
    assert "## Previews" not in md or not pv.plot_available()
    _no_temp_files(tmp_path)


def test_markdown_table_rows_have_the_right_number_of_cells():
    md = render_markdown(_record())
    sci = md.split("## Science frames")[1].split("\n## ")[0]
    rows = [ln for ln in sci.splitlines() if ln.startswith("|")]
    assert len(rows) == 2 + 4
    for ln in rows:   # the "|" inside a file name is escaped, not a cell border
        cells = ln.replace("\\|", "").strip("|").split("|")
        assert len(cells) == 8, ln


def test_without_truth_or_failures_the_report_says_so(tmp_path):
    rec = _record()
    rec["cr_summary"] = None
    rec["failures"] = []
    rec["frames"] = [dict(f, status="done", error=None) for f in rec["frames"]]
    for f in rec["frames"]:
        f.pop("recall", None)
        f.pop("false_positives", None)
    md = render_markdown(rec)
    assert "CR detection quality" not in md and "recall" not in md
    assert "None: every frame was reduced or reused." in md
    assert "No frame was set aside." in md


def test_sparse_record_and_numpy_values_do_not_break_the_report(tmp_path):
    rec = {"frames": [{"file": "a.fits", "type": "science", "status": "done",
                       "cr_pixels": np.int64(5), "seconds": np.float32(0.5)}],
           "cr_summary": {"recall": float("nan"), "false_positives": 0, "n_true": 0,
                          "n_found": 0}}
    paths = write_report(tmp_path, rec)
    data = json.load(open(paths["json"]))
    assert data["frames"][0]["cr_pixels"] == 5 and data["cr_summary"]["recall"] is None
    md = open(paths["md"]).read()
    assert "a.fits" in md and "| 5 |" in md
    json.loads(record_to_json(rec))   # strict JSON: no NaN


def test_rewriting_replaces_the_report_atomically(tmp_path):
    write_report(tmp_path, {"frames": [], "crdask_version": "old"})
    rec = _record()
    write_report(tmp_path, rec)
    assert json.load(open(tmp_path / "report.json")) == rec
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "report.md"]
    _no_temp_files(tmp_path)


def test_failed_write_leaves_the_old_report(tmp_path, monkeypatch):
    rec = _record()
    write_report(tmp_path, rec)
    before = (tmp_path / "report.md").read_bytes()
    import crdask.pipeline.report as report

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "render_markdown", boom)
    with pytest.raises(RuntimeError):
        write_report(tmp_path, dict(rec, crdask_version="new"))
    assert (tmp_path / "report.md").read_bytes() == before
    _no_temp_files(tmp_path)


# --------------------------------------------------------------------------- previews

def _check_png(path, min_w=100, min_h=100):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    assert os.path.getsize(path) < 220_000, (path, os.path.getsize(path))
    import matplotlib.image as mpimg
    img = mpimg.imread(path)
    h, w = img.shape[:2]
    assert img.ndim == 3 and w >= min_w and h >= min_h
    return img


def test_previews_are_valid_pngs_and_linked_from_the_report(tmp_path):
    import matplotlib  # noqa: F401  (plot extra, installed with the tests)
    paths = write_report(tmp_path, _record(), previews=_previews())
    pngs = paths["previews"]
    names = sorted(os.path.basename(p) for p in pngs)
    assert names == ["cr_counts.png", "frame_sci_field01_V_001.png", "master_bias.png",
                     "master_flat_V.png"]
    for p in pngs:
        assert os.path.dirname(p) == os.path.join(tmp_path, "previews")
        img = _check_png(p)
        if os.path.basename(p).startswith("frame_"):   # two 400x300 panels, not binned
            assert img.shape[1] >= 2 * 400 and img.shape[0] >= 300
    md = open(paths["md"]).read()
    for n in names:
        assert f"](previews/{n})" in md
    assert "pip install crdask[plot]" not in md
    _no_temp_files(tmp_path)


def test_science_preview_shows_the_cr_mask_in_red(tmp_path):
    import matplotlib  # noqa: F401  (plot extra, installed with the tests)
    before = np.full((64, 64), 100.0, np.float32) + np.random.default_rng(0).normal(
        0, 1, (64, 64)).astype(np.float32)
    mask = np.zeros((64, 64), bool)
    mask[10, 20] = True
    out = pv.make_previews(tmp_path, {"science": [{"name": "s", "before": before,
                                                    "after": before, "crmask": mask}]})
    img = _check_png(out[0])[..., :3]
    red = (img[..., 0] > 0.9) & (img[..., 1] < 0.3) & (img[..., 2] < 0.3)
    assert red.sum() >= 4   # one CR pixel, enlarged on screen, in the left panel only
    cols = np.nonzero(red.any(axis=0))[0]
    assert cols.max() < img.shape[1] / 2


def test_large_frame_preview_is_small_fast_and_keeps_single_pixel_crs(tmp_path):
    import matplotlib  # noqa: F401  (plot extra, installed with the tests)
    rng = np.random.default_rng(5)
    before = (200 + rng.normal(0, 10, (2048, 2048))).astype(np.float32)
    mask = np.zeros(before.shape, bool)
    ys, xs = rng.integers(0, 2048, 40), rng.integers(0, 2048, 40)
    mask[ys, xs] = True   # 40 isolated single-pixel CRs
    before[mask] += 5000
    after = before.copy()
    after[mask] = 200
    prev = {"science": [{"name": "big", "before": before, "after": after, "crmask": mask}],
            "masters": {"bias": before}}
    out = pv.make_previews(tmp_path, prev)
    # "fast" without a wall-clock limit (tests never have one): the images
    # are drawn from frames binned to MAX_PIX, never at full resolution
    for p in out:
        img = _check_png(p)
        assert max(img.shape[:2]) <= 4 * pv.MAX_PIX < 2 * before.shape[1], img.shape
    img = _check_png([p for p in out if os.path.basename(p).startswith("frame_")][0])[..., :3]
    left = img[:, : img.shape[1] // 2]
    red = (left[..., 0] > 0.9) & (left[..., 1] < 0.3) & (left[..., 2] < 0.3)
    from scipy import ndimage
    _, n_blobs = ndimage.label(red)
    assert n_blobs >= 35   # max-pooled: (almost) every lone CR survives 4x binning


@pytest.mark.parametrize("n", [12, 3000])
def test_cr_counts_chart_draws_every_frame(tmp_path, n):
    """One bar a frame (12 frames, named under the axis); thousands of frames
    in fewer screen columns: each column the maximum of its frames, so the
    one frame with ten times the others' CRs stands out wherever it is."""
    counts = [(f"sci_{i:05d}.fits", 100 + (i % 7)) for i in range(n)]
    peak = n * 2 // 3
    counts[peak] = (counts[peak][0], 1000)
    (path,) = pv.make_previews(tmp_path, {"cr_counts": counts})
    img = _check_png(path)[..., :3]
    bar = (np.abs(img[..., 0] - 0xc0 / 255) < 0.02) & (np.abs(img[..., 1] - 0x39 / 255) < 0.02)
    cols = np.nonzero(bar.any(axis=0))[0]
    assert len(cols) > 0.6 * img.shape[1]          # the bars span the plot
    heights = bar.sum(axis=0)
    tall = np.nonzero(heights > 0.5 * heights.max())[0]
    # only the peak frame's bar is tall, at its place along the night
    assert tall.max() - tall.min() < max(0.05, 1.0 / n) * img.shape[1]   # one bar's slot
    frac = (tall.mean() - cols.min()) / (cols.max() - cols.min())
    assert abs(frac - peak / (n - 1)) < 0.05, frac
    assert heights[tall].min() > 5 * np.median(heights[cols])


def test_broken_preview_is_reported_not_fatal(tmp_path):
    import matplotlib  # noqa: F401  (plot extra, installed with the tests)
    prev = {"masters": {"bias": np.zeros(5), "dark": np.ones((50, 60))},
            "science": [{"name": "x", "before": np.ones((4, 4)), "after": np.ones((5, 5)),
                         "crmask": np.zeros((4, 4), bool)}]}
    paths = write_report(tmp_path, _record(), previews=prev)
    assert [os.path.basename(p) for p in paths["previews"]] == ["master_dark.png"]
    md = open(paths["md"]).read()
    assert "bias: preview not made (ValueError" in md
    assert "x: preview not made (ValueError" in md


def test_without_matplotlib_no_pngs_and_the_report_says_why(tmp_path, monkeypatch):
    _hide_matplotlib(monkeypatch)
    with pytest.raises(ImportError):
        import matplotlib.pyplot  # noqa: F401
    assert not pv.plot_available()
    assert pv.make_previews(tmp_path / "p", _previews()) == []
    rec = _record()
    paths = write_report(tmp_path, rec, previews=_previews())
    assert paths["previews"] == []
    assert not (tmp_path / "previews").exists()
    md = open(paths["md"]).read()
    assert "previews need the plot extra: pip install crdask[plot]" in md
    assert json.load(open(paths["json"])) == rec
    _no_temp_files(tmp_path)


def test_end_of_run_cleanup_leaves_the_live_previews_writing(tmp_path):
    """The night's clean-up after its frames (temporary files of writers
    killed mid-write) runs while the previews' thread may still be writing
    a PNG: that temporary file must survive it (it did not, and the preview
    was lost with "no such file or directory"); the clean-up at the start of
    a run, when nothing writes, removes it."""
    from crdask.io.atomic import temp_name_for
    from crdask.pipeline.night import _remove_leftovers

    (tmp_path / "previews").mkdir()
    png = temp_name_for(tmp_path / "previews" / "frame_x.png")
    fits_tmp = temp_name_for(tmp_path / "x_cal.fits")
    for p in (png, fits_tmp):
        open(p, "wb").close()
    _remove_leftovers(tmp_path, previews=False)
    assert os.path.exists(png) and not os.path.exists(fits_tmp)
    _remove_leftovers(tmp_path)
    assert not os.path.exists(png)


def test_science_previews_without_intermediates_equal_those_kept(tmp_path):
    """A run keeps no calibrated frames by default (``execution.intermediates:
    false``): the before/after previews calibrate the raw frames again
    (:func:`crdask.pipeline.frame_task.calibrated_frame`), which must give
    the very frame the task calibrated (as a run that keeps them has in its
    intermediates), and the same previews whatever the setting."""
    from astropy.io import fits
    from cluster_helpers import simulate
    from crdask.io.intermediates import IntermediateStore
    from crdask.pipeline.config import load_workflow
    from crdask.pipeline.frame_task import calibrated_frame
    from crdask.pipeline.night import run_night

    raw, _ = simulate(tmp_path / "night", n_science=2, seed=5)
    pngs = {}
    for keep in (False, True):
        out = tmp_path / f"out_{keep}"
        run = run_night({"version": 1, "inputs": {"directory": str(raw)}, "output": str(out),
                         "execution": {"intermediates": keep, "workers": 1}},
                        log=lambda m: None)
        assert run.exit_code == 0
        assert (out / "intermediate.zarr").is_dir() == keep
        pngs[keep] = {p.name: p.read_bytes() for p in (out / "previews").glob("frame_*.png")}
    wf = load_workflow({"version": 1, "inputs": {"directory": str(raw)}, "output": str(out)})
    store = IntermediateStore(out / "intermediate.zarr")
    masters = {k: str(out / f"master_{k}.fits") for k in ("bias", "dark", "flat_V", "bpm")}
    for path in sorted(raw.glob("sci_*.fits")):
        kept = store.read_frame(path.name.split(".")[0])
        exptime = float(fits.getval(path, "EXPTIME"))
        again = calibrated_frame(str(path), wf.to_dict(), masters, exptime, "V")
        for key, a in zip(("sci", "var", "mask"), again):
            assert np.array_equal(a.view(np.uint8), kept[key].view(np.uint8)), (path, key)
    assert len(pngs[False]) == 2 and all(b.startswith(PNG_MAGIC) for b in pngs[False].values())
    assert pngs[False] == pngs[True]
