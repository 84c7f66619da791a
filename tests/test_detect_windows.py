"""The compiled detection of ``kernels.detect_windows`` repeats the steps of
``lacosmic_detect.detect_once`` (sepmed, fsmode='median') inside one Numba
function: the two must give the same mask on any image."""

import numpy as np
from hypothesis import given, settings, strategies as st

from crdask.cosmic.lacosmic import make_params
from crdask.cosmic.lacosmic_detect import detect_once
from crdask.kernels.detect_windows import detect_sepmed_window


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), ny=st.integers(1, 60), nx=st.integers(1, 60),
       with_bkg=st.booleans(), hits=st.integers(0, 40))
def test_compiled_window_detection_equals_detect_once(seed, ny, nx, with_bkg, hits):
    rng = np.random.default_rng(seed)
    p = make_params(gain=2.0, readnoise=5.0, sigclip=4.0, objlim=3.0)
    clean = rng.normal(400.0, 20.0, (ny, nx)).astype(np.float32)
    clean.flat[rng.integers(0, ny * nx, hits)] += rng.uniform(200, 5000, hits).astype(np.float32)
    bkg = np.full((ny, nx), np.float32(50.0)) if with_bkg else None
    var = (np.abs(clean) + np.float32(25.0)).astype(np.float32)
    bad = rng.random((ny, nx)) < 0.02
    want, _ = detect_once(clean, var, bkg, bad, p)
    got = detect_sepmed_window(clean, var, bkg if with_bkg else np.zeros((0, 0), np.float32),
                               bad, p.sigclip, p.objlim, p.sigcliplow)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.bool_
