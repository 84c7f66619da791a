"""L.A.Cosmic on one in-memory block: the algorithm, step by step.

This module works on numpy arrays only; ``crdask.cosmic.lacosmic`` decides how
a frame is cut into overlapping blocks and supplies the image-wide values
(background levels) that a block cannot compute itself. Every step follows
astroscrappy 1.3 (van Dokkum 2001 as implemented there): see the comments.

Units: the block works in electrons (input x gain); variances in e-^2.
"""

from dataclasses import dataclass

import numpy as np

from ..kernels import lacosmic_steps as st
from ..kernels.clean import clean_meanmask, clean_median, clean_medmask, clean_idw
from ..kernels.convolve import convolve
from ..kernels.laplace import laplacian_rebin
from ..kernels.median import (
    medfilt,
    medfilt_at,
    sepmedfilt,
    sepmedfilt_apply_inplace,
    sepmedfilt_at,
)
from ..kernels.morphology import dilate3, dilate5_points

CLEANTYPES = ("median", "medmask", "meanmask", "idw")
FSMODES = ("median", "convolve")
#: Cleaners for which cleaning twice with the same mask changes nothing (so a
#: block may stop iterating as soon as it finds nothing, whatever the rest of
#: the frame does). The unmasked median reads flagged pixels and is not.
IDEMPOTENT_CLEANTYPES = ("medmask", "meanmask", "idw")


@dataclass(frozen=True)
class LACosmicParams:
    """Validated parameters, scalars rounded to float32 as astroscrappy does."""

    sigclip: np.float32
    sigfrac: np.float32
    objlim: np.float32
    gain: np.float32
    readnoise: np.float32
    satlevel: np.float32
    niter: int
    sepmed: bool
    cleantype: str
    fsmode: str
    psfk: object  # float32 (ky, kx) kernel oriented for ``convolve``, or None

    @property
    def sigcliplow(self):
        return np.float32(self.sigfrac * self.sigclip)


#: Largest row strip (pixels) of a numpy frame in the threaded path: a strip
#: in flight holds about ten float32 copies of itself, so larger frames are
#: cut into more strips than threads (2048 x 2048 frames keep one strip per
#: thread; 4096 x 4096 ones get four, ~150 MB each in flight instead of ~300).
STRIP_PIXELS = 2048 * 2048 + 1


# --- how far each step reaches (pixels), used for the Dask overlap depth ---

def step_radii(p):
    """Radii of influence of the steps of one iteration for parameters ``p``.

    Returns a dict with ``mask`` (saturation/bad-pixel mask), ``detect``
    (the candidate mask of one iteration from the current image) and
    ``clean`` (the cleaning window).
    """
    r_noise = 3 if p.sepmed else 2          # sepmedfilt7 / medfilt5 of the variance
    r_s = max(1, r_noise)                   # Laplacian (1) over the noise
    r_sp = r_s + (3 if p.sepmed else 2)     # s minus its median
    if p.fsmode == "median":
        r_f = 2 + 4 if p.sepmed else 1 + 3  # f = med5/med3, minus med9/med7
    else:
        kr = max(p.psfk.shape) // 2
        r_f = r_noise + kr + (4 if p.sepmed else 3)
    r_f = max(r_f, r_noise)
    return {
        "mask": (3 if p.sepmed else 2) + 2 * 2,  # median, then dilate5 twice
        "detect": max(r_sp, r_f) + 2,            # two 3x3 growths
        "clean": 2,
    }


def overlap_depth(p, niter=None):
    """Overlap needed so that a block's interior equals the whole-frame result.

    A block's values go wrong only near its cut edges. The bad-pixel mask is
    computed exactly beforehand (with its own halo of ``step_radii(p)['mask']``)
    and handed to the blocks, so only the iterations spread the error: each
    one's detections reach ``detect`` pixels beyond the previous wrong zone,
    and its 5x5 cleaning ``clean`` pixels further.
    """
    r = step_radii(p)
    n = p.niter if niter is None else niter
    return max(1, n * (r["detect"] + r["clean"]))


# --- the steps ---

def to_electrons(data, gain):
    """``data * gain`` as float32 (multiplied in the input's precision)."""
    return np.ascontiguousarray(np.asarray(data) * gain, dtype=np.float32)


def initial_variance(clean_e, bkg_e, invar, p):
    """Noise model in e-^2: given variance x gain^2 (minus the background's
    Poisson part, which is added back unsmoothed), or data + readnoise^2."""
    if invar is not None:
        var = np.asarray(invar, dtype=np.float32) * np.float32(p.gain * p.gain)
        if bkg_e is not None:
            var = var - bkg_e
    elif bkg_e is not None:
        var = (clean_e - bkg_e) + np.float32(p.readnoise * p.readnoise)
    else:
        var = clean_e + np.float32(p.readnoise * p.readnoise)
    return np.ascontiguousarray(var, dtype=np.float32)


def _median(img, size, sepmed):
    return sepmedfilt(img, size + 2) if sepmed else medfilt(img, size)


def bad_pixel_mask(clean_e, inmask, p):
    """Input mask grown by 1 pixel, plus saturated stars grown by 4.

    Saturated pixels count as a star when the local median (sepmed 7 or
    full 5x5) exceeds a tenth of ``satlevel``.
    """
    ys, xs = np.nonzero(clean_e >= p.satlevel)
    if ys.size:
        # The median and the dilation only matter at saturated pixels: both
        # are evaluated there alone (the same values as the whole-image
        # filters give), so a few saturated stars cost next to nothing.
        if p.sepmed:
            smooth = sepmedfilt_at(clean_e, ys, xs, 5 + 2)
        else:
            smooth = medfilt_at(clean_e, ys, xs, 5)
        star = smooth > np.float32(float(p.satlevel) / 10.0)
        ny, nx = clean_e.shape
        return dilate5_points(ys[star], xs[star], ny, nx, 2) | dilate3(inmask)
    return dilate3(inmask)


def detect_once(clean, var, bkg_e, bad, p):
    """One L.A.Cosmic detection: bool mask of CR pixels and its count."""
    noise = _median(var, 5, p.sepmed)            # CR-free variance estimate
    if bkg_e is not None:
        noise += bkg_e                            # background Poisson, unsmoothed
    st.noise_map(noise)
    s = st.divide_twice_noise(laplacian_rebin(clean), noise)
    # s is reused as sp, f as its contrast; separable medians are combined in
    # place (one image less in memory per block, the same bits)
    if p.sepmed:
        sp = sepmedfilt_apply_inplace(s, 5 + 2, noise, 0)
    else:
        sp = st.subtract_inplace(s, medfilt(s, 5))
    if p.fsmode == "convolve":
        num, den = st.weighted_inputs(clean, noise)
        f = st.divide_inplace(convolve(num, p.psfk), convolve(den, p.psfk))
        del num, den
    else:
        f = _median(clean, 3, p.sepmed)
    if p.sepmed:
        f = sepmedfilt_apply_inplace(f, 7 + 2, noise, 1)
    else:
        f = st.fine_structure_contrast(f, medfilt(f, 7), noise)
    cand = st.initial_candidates(sp, f, bad, p.sigclip, p.objlim)
    cand, _ = st.grow_candidates(cand, sp, bad, p.sigclip)
    return st.grow_candidates(cand, sp, bad, p.sigcliplow)


def clean_pass(arr, crmask, bad, background, cleantype):
    """Replace ``crmask`` pixels of ``arr`` in place with ``cleantype``."""
    if cleantype == "median":
        clean_median(arr, crmask)
    elif cleantype == "meanmask":
        clean_meanmask(arr, crmask, bad, background)
    elif cleantype == "medmask":
        clean_medmask(arr, crmask, bad, background)
    else:
        clean_idw(arr, crmask, bad, background)


#: Cell side (pixels) of the grid on which :func:`detect_update` groups the
#: changed pixels into windows: reaches closer than a cell share a window.
UPDATE_CELL = 4
#: When the windows would cover more than this fraction of the image (dense
#: CRs), one whole-image detection is cheaper than the windows and halos.
UPDATE_MAX_FRACTION = 0.8


def detect_update(clean, var, bkg_e, bad, p, found, ys, xs):
    """Re-detect only where the image changed since ``found`` was detected.

    ``found`` is the previous iteration's detection (bool ``(ny, nx)``); the
    pixels ``(ys, xs)`` are those whose value (in ``clean`` or ``var``) the
    cleaning has changed since. A detection at a pixel depends only on the
    image within ``step_radii(p)['detect']`` pixels of it, so only pixels
    within that reach of a changed pixel can change. They are grouped into
    boxes (``kernels.lacosmic_steps.dirty_boxes``) and each box is
    recomputed on a window with a halo of the same reach (clipped at the
    frame edge, where the kernels then see the same edge as on the whole
    frame); everything else is kept. The result is bit-identical to
    ``detect_once`` on the whole image.

    Returns ``(found, count)`` as :func:`detect_once` (``found`` is updated
    in place).

    Example
    -------
    >>> found, n = detect_update(clean, var, None, bad, p, found, ys, xs)  # doctest: +SKIP
    """
    if ys.size == 0:
        return found, int(np.count_nonzero(found))
    reach = step_radii(p)["detect"]
    ny, nx = clean.shape
    boxes = st.dirty_boxes(ys, xs, ny, nx, reach, UPDATE_CELL)
    wy0 = np.maximum(boxes[:, 0] - reach, 0)
    wy1 = np.minimum(boxes[:, 1] + reach, ny)
    wx0 = np.maximum(boxes[:, 2] - reach, 0)
    wx1 = np.minimum(boxes[:, 3] + reach, nx)
    if ((wy1 - wy0) * (wx1 - wx0)).sum() > UPDATE_MAX_FRACTION * clean.size:
        return detect_once(clean, var, bkg_e, bad, p)
    for k in range(boxes.shape[0]):
        y0, y1, x0, x1 = boxes[k]
        win = (slice(wy0[k], wy1[k]), slice(wx0[k], wx1[k]))
        part, _ = detect_once(np.ascontiguousarray(clean[win]),
                              np.ascontiguousarray(var[win]),
                              None if bkg_e is None else np.ascontiguousarray(bkg_e[win]),
                              np.ascontiguousarray(bad[win]), p)
        found[y0:y1, x0:x1] = part[y0 - wy0[k]:y1 - wy0[k], x0 - wx0[k]:x1 - wx0[k]]
    return found, int(np.count_nonzero(found))


def _changed_by(fn, crmask, *images):
    """Run ``fn()`` (which writes only ``crmask`` pixels of ``images``) and
    return the flat indices of the pixels whose bits it changed."""
    idx = np.flatnonzero(crmask)
    flat = [im.reshape(-1) for im in images]
    before = [f[idx].view(np.uint32) for f in flat]
    fn()
    diff = np.zeros(idx.size, dtype=np.bool_)
    for f, b in zip(flat, before):
        diff |= f[idx].view(np.uint32) != b
    return idx[diff]


def iterate(clean, var, bkg_e, bad, p, bg_level, bg_var_level, n_iter,
            stop_when_clean=True, count_region=None, incremental=True):
    """Run up to ``n_iter`` detect-and-clean iterations on ``clean``/``var``.

    ``stop_when_clean`` stops at the first iteration that finds nothing (the
    astroscrappy rule, and a safe local rule for idempotent cleaners).
    ``count_region`` (a tuple of slices) makes the function also return a bit
    field: bit ``i`` set when iteration ``i`` found CR pixels inside it.
    ``incremental`` (default) makes every iteration after the first
    re-detect only near the pixels the previous cleaning changed
    (:func:`detect_update`); ``False`` recomputes the whole image each time.
    The results are identical. Returns ``(crmask, bits)``; ``clean`` and
    ``var`` are cleaned in place.
    """
    crmask = np.zeros(clean.shape, dtype=np.bool_)
    bits = 0
    found = changed = None
    nx = clean.shape[1]
    for it in range(n_iter):
        if found is None or not incremental:
            found, count = detect_once(clean, var, bkg_e, bad, p)
        else:
            found, count = detect_update(clean, var, bkg_e, bad, p, found,
                                         changed // nx, changed % nx)
        if count_region is not None and found[count_region].any():
            bits |= 1 << it
        st.or_into(crmask, found)
        if count == 0 and stop_when_clean:
            break

        def clean_both():
            clean_pass(clean, crmask, bad, bg_level, p.cleantype)
            clean_pass(var, crmask, bad, bg_var_level, p.cleantype)

        if incremental and it < n_iter - 1:
            changed = _changed_by(clean_both, crmask, clean, var)
        else:
            clean_both()
    return crmask, bits
