"""Synthetic cosmic-ray injection (crdask.cosmic.inject)."""

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from crdask.cosmic.inject import inject_cosmics
from crdask.simulate.frame import deposit_cosmic, label_components


def frame(seed=0, shape=(200, 300)):
    rng = np.random.default_rng(seed)
    sky = 50.0 + 400.0 * np.exp(-((np.arange(shape[1]) - 150) / 40.0) ** 2)[None, :]
    img = (sky + rng.normal(0, np.sqrt(sky + 25.0), shape)).astype(np.float32)
    var = sky + 25.0 + np.zeros(shape)
    return img, var


def test_peak_snr_is_exact_and_truth_consistent():
    img, var = frame()
    damaged, truth = inject_cosmics(img, var, seed=3, n=60, snr_range=(4, 80))
    assert truth.n == 60 and set(truth.kind) == {"single", "blob", "track"}
    added = damaged.astype(np.float64) - img
    peak = added[truth.peak_y, truth.peak_x]
    np.testing.assert_allclose(peak / np.sqrt(var[truth.peak_y, truth.peak_x]),
                               truth.snr, rtol=1e-4)
    assert (truth.snr >= 4).all() and (truth.snr <= 80).all()
    # the brightest pixel of each event is its peak
    for k in range(truth.n):
        sel = truth.event == k
        assert truth.charge[sel].max() == pytest.approx(truth.peak[k])
    # damaged differs from the image exactly on the touched pixels
    touched = truth.touched()
    assert (added[~touched] == 0).all() and (added[touched] > 0).all()
    mask = truth.mask()
    assert mask.sum() == truth.npix.sum() and (mask <= touched).all()
    # events do not touch one another: as many 8-connected components
    _, ncomp = label_components(touched)
    assert ncomp == truth.n
    assert damaged.dtype == np.float32 and img.min() == frame()[0].min()  # input untouched


def test_deterministic_and_seed_dependent():
    img, var = frame(1)
    a = inject_cosmics(img, var, seed=5, n=30)[1]
    b = inject_cosmics(img, var, seed=5, n=30)[1]
    c = inject_cosmics(img, var, seed=6, n=30)[1]
    np.testing.assert_array_equal(a.pixels, b.pixels)
    np.testing.assert_array_equal(a.snr, b.snr)
    assert not np.array_equal(a.pixels, c.pixels)


def test_avoid_border_and_kinds():
    img, var = frame(2)
    avoid = np.zeros(img.shape, bool)
    avoid[:, :150] = True
    _, t = inject_cosmics(img, var, seed=1, n=40, avoid=avoid, kinds=("single",), border=3)
    iy, ix = np.divmod(t.pixels, img.shape[1])
    assert (ix > 150).all() and set(t.kind) == {"single"}
    assert iy.min() >= 3 and iy.max() < img.shape[0] - 3 and ix.max() < img.shape[1] - 3
    bad_var = var.copy()
    bad_var[:, 150:] = np.nan
    with pytest.raises(ValueError, match="could not place event 0"):
        inject_cosmics(img, bad_var, seed=1, n=5, avoid=avoid, max_tries=20)
    with pytest.raises(ValueError, match="kinds must be"):
        inject_cosmics(img, var, kinds=("muon",))
    with pytest.raises(ValueError, match="snr_range"):
        inject_cosmics(img, var, snr_range=(10, 3))


@settings(max_examples=10, deadline=None)
@given(cy=st.integers(9, 200), cx=st.integers(9, 300), seed=st.integers(0, 100))
def test_dask_equals_numpy(cy, cx, seed):
    img, var = frame(4)
    ref, t = inject_cosmics(img, var, seed=seed, n=25)
    lazy, t2 = inject_cosmics(da.from_array(img, chunks=(cy, cx)),
                              da.from_array(var, chunks=(cy, cx)), seed=seed, n=25)
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), ref)
    np.testing.assert_array_equal(t2.pixels, t.pixels)


def test_uses_the_simulator_shapes():
    rng = np.random.default_rng(0)
    img = np.zeros((50, 50))
    fp = deposit_cosmic(img, rng, "track", 100.0)
    assert fp.size >= 3 and img.ravel()[fp].max() > 0
    with pytest.raises(ValueError, match="kind must be one of"):
        deposit_cosmic(img, rng, "worm", 1.0)


def test_layers_calib_and_inject_import_no_io():
    """Layer 2 modules (and the injection) import nothing from io or pipeline."""
    import subprocess
    import sys
    code = ("import sys, crdask.calib.amplifiers, crdask.calib.response, "
            "crdask.calib.fitting, crdask.cosmic.inject; "
            "bad = [m for m in sys.modules if m.startswith(('crdask.io', 'crdask.pipeline', "
            "'crdask.simulate', 'astropy'))]; print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    assert res.returncode == 0, res.stdout + res.stderr


def test_kind_names_agree_with_the_simulator():
    from crdask.cosmic.inject import CR_KINDS
    from crdask.simulate.frame import CR_KINDS as SIM_KINDS
    assert CR_KINDS == SIM_KINDS
