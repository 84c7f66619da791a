"""L.A.Cosmic re-detection on many small windows in one compiled call.

After the first iteration only the pixels near the last cleaning can change
their detection (``crdask.cosmic.lacosmic_detect.detect_update``); they are
grouped into a thousand or so small boxes on a crowded frame. Running the
steps box by box from Python costs about ten interpreted calls and array
copies per box, more than the arithmetic on the box: this kernel runs the
whole loop compiled, with the same kernels in the same order as
``detect_once`` (separable medians, ``fsmode='median'``), so the result is
bit-identical.

Units: e- for images, e-^2 for variances.
"""

import numpy as np
from numba import njit

from .laplace import laplacian_rebin
from .lacosmic_steps import divide_twice_noise, grow_candidates, initial_candidates, noise_map
from .sepmedian import sepmedfilt, sepmedfilt_apply_inplace


@njit(cache=True, nogil=True)
def _window(a, y0, y1, x0, x1):
    # A C-contiguous copy of a[y0:y1, x0:x1] (the kernels need contiguity).
    out = np.empty((y1 - y0, x1 - x0), dtype=a.dtype)
    for j in range(y1 - y0):
        for i in range(x1 - x0):
            out[j, i] = a[y0 + j, x0 + i]
    return out


@njit(cache=True, nogil=True)
def detect_sepmed_window(clean, var, bkg, bad, sigclip, objlim, sigcliplow):
    """One detection with ``sepmed=True, fsmode='median'`` on whole arrays.

    The steps of ``crdask.cosmic.lacosmic_detect.detect_once`` for those
    settings, compiled: noise ``sqrt(max(sepmed7(var) + bkg, 1e-5))``,
    ``sp`` (Laplacian over twice the noise minus its sepmed7), ``fc``
    (sepmed5 of ``clean`` minus its sepmed9, over the noise, >= 0.01),
    candidates grown twice.

    Parameters
    ----------
    clean, var : float32 (ny, nx), C-contiguous, e- and e-^2.
    bkg : float32 (ny, nx) background (e-), or a (0, 0) array for none.
    bad : bool (ny, nx).  sigclip, objlim, sigcliplow : float32.

    Returns
    -------
    bool (ny, nx): the CR mask.

    Example
    -------
    >>> found = detect_sepmed_window(c, v, np.zeros((0, 0), np.float32), b,
    ...                              *thresholds)  # doctest: +SKIP
    """
    noise = sepmedfilt(var, 7)
    if bkg.shape[0] != 0:
        ny, nx = noise.shape
        for j in range(ny):
            for i in range(nx):
                noise[j, i] = noise[j, i] + bkg[j, i]
    noise_map(noise)
    s = divide_twice_noise(laplacian_rebin(clean), noise)
    sp = sepmedfilt_apply_inplace(s, 7, noise, 0)
    fc = sepmedfilt_apply_inplace(sepmedfilt(clean, 5), 9, noise, 1)
    cand = initial_candidates(sp, fc, bad, sigclip, objlim)
    cand, _ = grow_candidates(cand, sp, bad, sigclip)
    return grow_candidates(cand, sp, bad, sigcliplow)[0]


@njit(cache=True, nogil=True)
def detect_sepmed_boxes(clean, var, bkg, bad, found, boxes, windows, sigclip, objlim,
                        sigcliplow):
    """Re-detect ``found`` inside each box from its window, in place.

    Parameters
    ----------
    clean, var : float32 (ny, nx), e- and e-^2.  bkg : float32 (ny, nx) or
    (0, 0) for none.  bad, found : bool (ny, nx); ``found`` is updated.
    boxes, windows : int64 (m, 4), rows ``(y0, y1, x0, x1)`` (half-open):
    the pixels to recompute and the window (the box plus its halo, clipped
    at the frame) they are recomputed from.
    sigclip, objlim, sigcliplow : float32.

    Returns
    -------
    int: the number of pixels set in ``found`` afterwards.

    Example
    -------
    >>> n = detect_sepmed_boxes(c, v, nobkg, b, found, boxes, wins,
    ...                         *thresholds)  # doctest: +SKIP
    """
    has_bkg = bkg.shape[0] != 0
    for k in range(boxes.shape[0]):
        y0, y1, x0, x1 = windows[k, 0], windows[k, 1], windows[k, 2], windows[k, 3]
        b = bkg if not has_bkg else _window(bkg, y0, y1, x0, x1)
        part = detect_sepmed_window(_window(clean, y0, y1, x0, x1),
                                    _window(var, y0, y1, x0, x1), b,
                                    _window(bad, y0, y1, x0, x1),
                                    sigclip, objlim, sigcliplow)
        for j in range(boxes[k, 0], boxes[k, 1]):
            for i in range(boxes[k, 2], boxes[k, 3]):
                found[j, i] = part[j - y0, i - x0]
    return np.count_nonzero(found)
