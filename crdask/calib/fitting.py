"""1-D least-squares fits with iterative sigma rejection (layer 2, numpy).

Used by the overscan model (a bias level along the readout direction) and
the spectroscopic flat response (a lamp spectrum along the dispersion axis):
the same three families as IRAF's ``icfit`` -- a power-series polynomial, a
Chebyshev series (degree ``order``) and a cubic spline with ``order`` equal
pieces (IRAF's ``spline3`` convention: ``order`` pieces = ``order + 1``
knots, ``order + 3`` coefficients).

Coordinates are normalised by the caller to ``[-1, 1]`` over the fitted
range (conditioning); evaluation outside it extrapolates (the spline's end
pieces are continued).
"""

from __future__ import annotations

import numpy as np

__all__ = ["FIT_FAMILIES", "design_matrix", "robust_fit"]

#: Allowed fit families.
FIT_FAMILIES = ("polynomial", "chebyshev", "spline")


def spline_basis(u, pieces):
    """Cubic B-spline design matrix, ``pieces`` uniform pieces on u in [0, 1].

    Uniform cubic B-splines with knots extended beyond the ends span exactly
    the C2 cubic splines with ``pieces`` equal pieces on [0, 1]; outside
    [0, 1] the end pieces are continued (cubic extrapolation).
    """
    s = u * pieces
    k = np.clip(np.floor(s), 0, pieces - 1).astype(np.intp)
    t = s - k
    w = np.stack([(1 - t) ** 3,
                  3 * t ** 3 - 6 * t ** 2 + 4,
                  -3 * t ** 3 + 3 * t ** 2 + 3 * t + 1,
                  t ** 3], axis=1) / 6.0
    basis = np.zeros((u.size, pieces + 3))
    rows = np.arange(u.size)
    for j in range(4):
        basis[rows, k + j] = w[:, j]
    return basis


def design_matrix(x, fit, order):
    """Design matrix ``(len(x), n_params)`` of a fit family at ``x`` in [-1, 1].

    Parameters
    ----------
    x : 1-D float array, normalised coordinates.
    fit : {'polynomial', 'chebyshev', 'spline'}
    order : int, polynomial degree or number of spline pieces (>= 1).

    Example
    -------
    >>> design_matrix(np.linspace(-1, 1, 5), "chebyshev", 2).shape
    (5, 3)
    """
    if fit == "polynomial":
        return np.polynomial.polynomial.polyvander(x, order)
    if fit == "chebyshev":
        return np.polynomial.chebyshev.chebvander(x, order)
    if fit == "spline":
        return spline_basis((x + 1.0) / 2.0, order)
    raise ValueError(f"fit must be one of {', '.join(FIT_FAMILIES)}; got {fit!r}")


def robust_fit(values, x, x_eval, *, fit, order, sigma_lower=3.0, sigma_upper=3.0,
               iters=3, what="fit"):
    """Least-squares fit of ``values(x)`` rejecting outliers, evaluated at ``x_eval``.

    Parameters
    ----------
    values : 1-D float array (any units); NaN values are left out.
    x : 1-D float array, same length, normalised coordinates (~[-1, 1]).
    x_eval : 1-D float array of normalised coordinates to evaluate at.
    fit, order : fit family and order (see :func:`design_matrix`).
    sigma_lower, sigma_upper : float
        Points more than ``sigma_lower`` (below) / ``sigma_upper`` (above)
        times the rms of the residuals of the kept points from the fit are
        rejected and the fit is redone; a rejected point may come back.
    iters : int >= 0, maximum rejection passes (0 = plain least squares).
    what : str, name used in the error message.

    Returns
    -------
    (model, kept) : float64 model at ``x_eval`` and the bool mask of the
    points used in the last fit.

    Example
    -------
    >>> x = np.linspace(-1, 1, 50); y = 2 + x; y[10] = 100
    >>> m, kept = robust_fit(y, x, x, fit="polynomial", order=1)
    >>> bool(kept[10]), round(float(m[10]), 3)
    (False, 1.408)
    """
    values = np.asarray(values, dtype=np.float64)
    design = design_matrix(x, fit, order)
    npar = design.shape[1]
    finite = np.isfinite(values)
    good = finite
    if good.sum() < npar:
        raise ValueError(f"{what} {fit!r} of order {order} needs at least {npar} "
                         f"points with a finite value, got {int(good.sum())}")
    coef = np.linalg.lstsq(design[good], values[good], rcond=None)[0]
    for _ in range(int(iters)):
        resid = values - design @ coef
        sigma = np.std(resid[good])
        if not sigma > 0:
            break
        new = finite & (resid <= sigma_upper * sigma) & (resid >= -sigma_lower * sigma)
        if np.array_equal(new, good) or new.sum() < npar:
            break
        good = new
        coef = np.linalg.lstsq(design[good], values[good], rcond=None)[0]
    return design_matrix(x_eval, fit, order) @ coef, good
