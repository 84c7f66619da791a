"""One L.A.Cosmic detection, step by step, and its incremental update.

A detection is four steps, each a function of the previous steps' images
on the same pixels (astroscrappy 1.3's order and arithmetic):

1. ``noise``: the CR-free noise, ``sqrt(median(var) + bkg)`` (e-);
2. ``sp``: the Laplacian of the 2x subsampled image over twice the noise,
   minus its own median (the significance of sharp features);
3. ``fc``: the fine-structure contrast, ``(f - median(f)) / noise`` with
   ``f`` a small median (or the PSF-matched filter) of the image;
4. ``found``: candidates (``sp > sigclip`` and ``sp / fc > objlim``) grown
   twice by 3x3, at ``sigclip`` then ``sigfrac * sigclip``.

After a cleaning pass only the cleaned pixels change, so
:func:`detect_update` re-detects only within the detection's reach of them
(:func:`stage_reaches`): the changed pixels are grouped into boxes, and each
box is recomputed on a window with a halo of the same reach. The result is
bit-identical to :func:`detect_once` on the cleaned image. (Recomputing each
step on its own, smaller, windows packed into one mosaic was tried: the
copies in and out cost as much as the smaller windows saved. So was, with
the loop compiled, keeping each step's image and updating it on its own
reach: no faster, as the kernels cost 2-4x more per pixel on windows of
~20 px than on a frame, and fixed tiles instead of groups were slower.)
For the defaults (``sepmed=True``, ``fsmode='median'``) the loop over the
boxes is compiled (``kernels.detect_windows``): a crowded 2048 x 2048
frame has ~1000 boxes, and their Python calls and copies cost more than
the arithmetic.

Units: e- for images, e-^2 for variances.

Example
-------
>>> found, n = detect_once(clean, var, None, bad, p)                       # doctest: +SKIP
>>> found, n = detect_update(clean, var, None, bad, p, found, ys, xs)      # doctest: +SKIP
"""

import numpy as np

from ..kernels import lacosmic_steps as st
from ..kernels.convolve import convolve
from ..kernels.detect_windows import detect_sepmed_boxes
from ..kernels.laplace import laplacian_rebin
from ..kernels.median import medfilt
from ..kernels.sepmedian import sepmedfilt, sepmedfilt_apply_inplace

#: Cell side (pixels) of the grid on which changed pixels are grouped into
#: boxes (``kernels.lacosmic_steps.dirty_boxes``): reaches closer than a cell
#: share a window.
UPDATE_CELL = 4
#: When the windows would cover more than this fraction of the image (dense
#: CRs), one whole-image detection is cheaper than the windows and halos.
UPDATE_MAX_FRACTION = 0.8


def _median(img, size, sepmed):
    return sepmedfilt(img, size + 2) if sepmed else medfilt(img, size)


# --- the four steps, on any window (all arguments of one shape) ---

def noise_of(var, bkg, p):
    """Step 1: noise (e-) from the variance ``var`` (and background ``bkg``)."""
    noise = _median(var, 5, p.sepmed)            # CR-free variance estimate
    if bkg is not None:
        noise += bkg                              # background Poisson, unsmoothed
    return st.noise_map(noise)


def sp_of(clean, noise, p):
    """Step 2: Laplacian significance minus its median."""
    s = st.divide_twice_noise(laplacian_rebin(clean), noise)
    if p.sepmed:  # combined in place: one image less in memory, the same bits
        return sepmedfilt_apply_inplace(s, 5 + 2, noise, 0)
    return st.subtract_inplace(s, medfilt(s, 5))


def fc_of(clean, noise, p):
    """Step 3: fine-structure contrast (>= 0.01)."""
    if p.fsmode == "convolve":
        num, den = st.weighted_inputs(clean, noise)
        f = st.divide_inplace(convolve(num, p.psfk), convolve(den, p.psfk))
        del num, den
    else:
        f = _median(clean, 3, p.sepmed)
    if p.sepmed:
        return sepmedfilt_apply_inplace(f, 7 + 2, noise, 1)
    return st.fine_structure_contrast(f, medfilt(f, 7), noise)


def found_of(sp, fc, bad, p):
    """Step 4: the CR mask (bool) from ``sp``, ``fc`` and the bad pixels."""
    cand = st.initial_candidates(sp, fc, bad, p.sigclip, p.objlim)
    cand, _ = st.grow_candidates(cand, sp, bad, p.sigclip)
    return st.grow_candidates(cand, sp, bad, p.sigcliplow)[0]


def stage_reaches(p):
    """For each step, ``(reach, halo)`` in pixels.

    ``reach``: how far from a changed input pixel (image or variance) the
    step's output can change; ``halo``: how far the step reads around a pixel
    from its own inputs (its window margin).
    """
    r_n = 3 if p.sepmed else 2                   # sepmedfilt7 / medfilt5 of the variance
    r_m = 3 if p.sepmed else 2                   # the median of s
    if p.fsmode == "median":
        f_halo = 2 + 4 if p.sepmed else 1 + 3    # f = med5/med3, minus med9/med7
        r_f = max(f_halo, r_n)
    else:
        f_halo = max(p.psfk.shape) // 2 + (4 if p.sepmed else 3)
        r_f = r_n + f_halo                       # the weights read the noise
    r_sp = max(1, r_n) + r_m                     # the Laplacian reads 1 pixel
    return {"noise": (r_n, r_n), "sp": (r_sp, 1 + r_m), "fc": (r_f, f_halo),
            "found": (max(r_sp, r_f) + 2, 2)}    # two 3x3 growths


def detect_once(clean, var, bkg_e, bad, p):
    """One L.A.Cosmic detection on the whole image: ``(found, count)``, the
    bool CR mask and its pixel count."""
    noise = noise_of(var, bkg_e, p)
    sp = sp_of(clean, noise, p)
    fc = fc_of(clean, noise, p)
    del noise
    found = found_of(sp, fc, bad, p)
    return found, int(np.count_nonzero(found))


def detect_update(clean, var, bkg_e, bad, p, found, ys, xs):
    """Re-detect only where the image changed since ``found`` was detected.

    ``found`` is the previous iteration's detection (bool ``(ny, nx)``); the
    pixels ``(ys, xs)`` are those whose value (in ``clean`` or ``var``) the
    cleaning has changed since. A detection at a pixel depends only on the
    image within ``stage_reaches(p)['found'][0]`` pixels of it, so only
    pixels within that reach of a changed pixel can change. They are grouped
    into boxes (``kernels.lacosmic_steps.dirty_boxes``) and each box is
    recomputed on a window with a halo of the same reach (clipped at the
    frame edge, where the kernels then see the same edge as on the whole
    frame); everything else is kept. The result is bit-identical to
    :func:`detect_once` on the whole image.

    Returns ``(found, count)`` as :func:`detect_once` (``found`` is updated
    in place).
    """
    if ys.size == 0:
        return found, int(np.count_nonzero(found))
    boxes, windows = update_windows(p, clean.shape, ys, xs)
    if boxes is None:
        return detect_once(clean, var, bkg_e, bad, p)
    if p.sepmed and p.fsmode == "median":
        # the defaults: the whole loop compiled (Python's per-box calls and
        # copies cost more than the arithmetic on a crowded frame's ~1000 boxes)
        nobkg = np.zeros((0, 0), np.float32)
        n = detect_sepmed_boxes(clean, var, nobkg if bkg_e is None else bkg_e, bad, found,
                                boxes, windows, p.sigclip, p.objlim, p.sigcliplow)
        return found, int(n)
    for k in range(boxes.shape[0]):
        y0, y1, x0, x1 = boxes[k]
        wy0, wy1, wx0, wx1 = windows[k]
        win = (slice(wy0, wy1), slice(wx0, wx1))
        part, _ = detect_once(np.ascontiguousarray(clean[win]),
                              np.ascontiguousarray(var[win]),
                              None if bkg_e is None else np.ascontiguousarray(bkg_e[win]),
                              np.ascontiguousarray(bad[win]), p)
        found[y0:y1, x0:x1] = part[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0]
    return found, int(np.count_nonzero(found))


def update_windows(p, shape, ys, xs):
    """The boxes :func:`detect_update` recomputes and their windows.

    Parameters
    ----------
    p : parameters.  shape : ``(ny, nx)`` of the frame.
    ys, xs : int (n,), the changed pixels (n >= 1).

    Returns
    -------
    ``(boxes, windows)``: int64 (m, 4) rows ``(y0, y1, x0, x1)``, half-open;
    or ``(None, None)`` when the windows would cover more than
    ``UPDATE_MAX_FRACTION`` of the frame (one whole detection is cheaper).

    Example
    -------
    >>> boxes, wins = update_windows(p, (64, 64), np.array([9]), np.array([9]))  # doctest: +SKIP
    """
    reach = stage_reaches(p)["found"][0]
    ny, nx = shape
    boxes = st.dirty_boxes(ys, xs, ny, nx, reach, UPDATE_CELL)
    windows = np.empty_like(boxes)
    windows[:, 0] = np.maximum(boxes[:, 0] - reach, 0)
    windows[:, 1] = np.minimum(boxes[:, 1] + reach, ny)
    windows[:, 2] = np.maximum(boxes[:, 2] - reach, 0)
    windows[:, 3] = np.minimum(boxes[:, 3] + reach, nx)
    area = ((windows[:, 1] - windows[:, 0]) * (windows[:, 3] - windows[:, 2])).sum()
    if area > UPDATE_MAX_FRACTION * ny * nx:
        return None, None
    return boxes, windows
