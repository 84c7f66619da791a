"""CR completeness by injection on the real frames of ../shared/data, and `crdask qa`."""

import json
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from crdask import lacosmic
from crdask.cli_qa import qa_cmd
from crdask.pipeline.qa import completeness, qa_file

from shared_data import REAL_FRAMES, SHARED

# How each real frame becomes electrons (shared/data/README.md): SPRAT raw with a
# constant bias of ~917 ADU, GAIN 2.45, read noise ~7 e- (no keyword); the WHT
# dark with prescan columns 1-50 and CCDXIMSI = 1024 useful columns, GAIN 1.1,
# READNOIS 3.6; M51 already reduced (no gain/read-noise keywords: astroscrappy's
# defaults gain 1, read noise 6.5).
FRAMES = {
    "sprat": dict(bias=917.0, readnoise=7.0),
    "wht": dict(bias="[1:50,*]", trim="[51:1074,*]"),
    "m51": dict(gain=1.0, readnoise=6.5),
}


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_recall_above_10_sigma_on_real_frames(name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # wht070.fits: one trailing byte
        rep = qa_file(SHARED / REAL_FRAMES[name], method="lacosmic", seed=0, n=200,
                      **FRAMES[name])
    n10 = sum(k for k, e in zip(rep.n_events, rep.bins) if e >= 10)
    print(f"{name}: recall(S/N>=10) {rep.recall_above['10']:.3f} of {n10}; per bin "
          f"{[round(r, 3) for r in rep.recall]} (n {rep.n_events}); pixel recall "
          f"{[round(r, 3) for r in rep.pixel_recall]}; by kind {rep.by_kind}; extra false "
          f"{rep.extra_false_pixels} ({rep.extra_false_pixels_far} far); base "
          f"{rep.base_pixels}")
    assert rep.n_injected == 200 and n10 > 80
    assert rep.recall_above["10"] >= 0.9
    # completeness rises with S/N: the faintest bin is clearly below the brightest
    assert rep.recall[0] < rep.recall[-1]
    assert rep.base_pixels > 0 and rep.lost_base_pixels <= 0.01 * rep.base_pixels
    assert rep.extra_false_pixels_far <= 5
    # L.A.Cosmic never flags within 3 px of the edge: away from it, recall is higher
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inner = qa_file(SHARED / REAL_FRAMES[name], method="lacosmic", seed=0, n=200,
                        border=3, **FRAMES[name])
    print(f"{name}, border 3: recall(S/N>=10) {inner.recall_above['10']:.3f}")
    assert inner.recall_above["10"] >= 0.95


def test_completeness_scores_any_detector():
    rng = np.random.default_rng(0)
    img = (200 + rng.normal(0, 15, (150, 150))).astype(np.float32)
    var = np.full(img.shape, 225.0)
    nothing = completeness(img, var, None, lambda f: np.zeros(f.shape, bool), seed=1, n=30)
    assert nothing.recall_above["3"] == 0.0 and nothing.extra_false_pixels == 0
    oracle = completeness(img, var, None, lambda f: f != img, seed=1, n=30)
    assert oracle.recall_above["3"] == 1.0 and all(r == 1.0 for r in oracle.pixel_recall)
    assert oracle.extra_false_pixels == 0
    with pytest.raises(ValueError, match="could not place event 0"):
        # a detector flagging everything leaves no room for injection
        completeness(img, var, None, lambda f: f > -1e9, seed=1, n=30)
    # lacosmic itself, its (mask, cleaned) tuple taken as it comes
    # (away from the 2-px edge where L.A.Cosmic never flags)
    rep = completeness(img, var, None, lacosmic, {"gain": 1.0, "readnoise": 15.0}, seed=1,
                       n=30, border=3)
    assert rep.recall_above["20"] >= 0.9 and rep.border == 3   # (misses: one long track)
    d = rep.to_dict()
    json.dumps(d)                            # NaN-free JSON
    assert d["n_injected"] == 30


def test_cli_qa(tmp_path):
    sprat = str(SHARED / REAL_FRAMES["sprat"])
    missing = str(tmp_path / "missing.fits")
    out = tmp_path / "qa"
    res = CliRunner().invoke(qa_cmd, [sprat, missing, "--bias", "917", "--readnoise", "7",
                                      "--seed", "3", "--n", "60", "--out-dir", str(out)])
    assert res.exit_code == 2, res.output
    assert "recall (S/N >= 10)" in res.output
    assert f"crdask: error: {missing}: no such file" in res.output
    data = json.loads((out / "completeness.json").read_text())
    assert len(data) == 1 and data[0]["seed"] == 3 and data[0]["n_injected"] == 60
    png = out / "completeness.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    m51 = str(SHARED / REAL_FRAMES["m51"])
    res = CliRunner().invoke(qa_cmd, [m51, "--out-dir", str(tmp_path / "qa2")])
    assert res.exit_code == 2
    assert f"crdask: error: {m51}[0]: keyword GAIN not found" in res.output
    res = CliRunner().invoke(qa_cmd, [sprat, "--snr-min", "50", "--snr-max", "5"])
    assert res.exit_code != 0 and "--snr-min" in res.output
    res = CliRunner().invoke(qa_cmd, [sprat, "--param", "sigclip", "--out-dir", str(out)])
    assert "KEY=VALUE" in res.output
