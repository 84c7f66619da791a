"""1-D robust fits (crdask.calib.fitting) against numpy/scipy references, and the
docstring examples of the calibration, injection and QA modules."""

import doctest
import importlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.interpolate import make_lsq_spline

from crdask.calib.fitting import robust_fit


@settings(max_examples=40, deadline=None)
@given(n=st.integers(20, 300), order=st.integers(0, 6), seed=st.integers(0, 2**31 - 1),
       fit=st.sampled_from(["polynomial", "chebyshev"]))
def test_plain_fit_equals_numpy(n, order, seed, fit):
    rng = np.random.default_rng(seed)
    x = np.linspace(-1, 1, n)
    y = rng.normal(0, 1, n) + 3 * x ** 2
    ours, kept = robust_fit(y, x, x, fit=fit, order=order, iters=0)
    cls = np.polynomial.Polynomial if fit == "polynomial" else np.polynomial.Chebyshev
    ref = cls.fit(x, y, order, domain=[-1, 1], window=[-1, 1])(x)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)
    assert kept.all()


@settings(max_examples=30, deadline=None)
@given(n=st.integers(40, 400), pieces=st.integers(1, 12), seed=st.integers(0, 2**31 - 1))
def test_spline_equals_scipy_lsq_spline(n, pieces, seed):
    """Uniform cubic B-splines with ``pieces`` pieces = scipy's least-squares
    cubic spline with the same interior knots."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-1, 1, n)
    y = np.sin(3 * x) + rng.normal(0, 0.1, n)
    ours, _ = robust_fit(y, x, x, fit="spline", order=pieces, iters=0)
    knots = np.linspace(-1, 1, pieces + 1)
    t = np.r_[[-1.0] * 3, knots, [1.0] * 3]
    ref = make_lsq_spline(x, y, t, k=3)(x)
    np.testing.assert_allclose(ours, ref, rtol=1e-8, atol=1e-8)


def test_rejection_ignores_outliers_and_nan():
    x = np.linspace(-1, 1, 200)
    y = 5 + 2 * x
    y[[10, 50, 120]] += [100, -80, 60]
    y[7] = np.nan
    model, kept = robust_fit(y, x, x, fit="chebyshev", order=1, iters=5)
    np.testing.assert_allclose(model, 5 + 2 * x, atol=1e-9)
    assert not kept[[7, 10, 50, 120]].any() and kept.sum() == 196
    lo_only, kept = robust_fit(y, x, x, fit="chebyshev", order=1, iters=5,
                               sigma_lower=3, sigma_upper=1e9)
    assert kept[10] and not kept[50]   # only low outliers rejected
    with pytest.raises(ValueError, match="needs at least 4 points"):
        robust_fit(np.array([1.0, 2, np.nan]), x[:3], x[:3], fit="chebyshev", order=3)


@pytest.mark.parametrize("module", ["crdask.calib.amplifiers", "crdask.calib.fitting",
                                    "crdask.calib.response", "crdask.io.amplifiers",
                                    "crdask.cosmic.inject", "crdask.pipeline.qa"])
def test_docstring_examples(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
