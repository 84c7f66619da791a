"""L.A.Cosmic on one in-memory block: the algorithm, step by step.

This module works on numpy arrays only; ``crdask.cosmic.lacosmic`` decides how
a frame is cut into overlapping blocks and supplies the image-wide values
(background levels) that a block cannot compute itself. Every step follows
astroscrappy 1.3 (van Dokkum 2001 as implemented there): see the comments.

Units: the block works in electrons (input x gain); variances in e-^2.
"""

from dataclasses import dataclass

import numpy as np

from ..kernels.clean import (
    MASKED_KINDS,
    clean_idw,
    clean_masked_at,
    clean_meanmask,
    clean_median,
    clean_medmask,
    flag_new,
    flagged_near,
)
from ..kernels.lacosmic_steps import pixels_at_least
from ..kernels.median import medfilt_at
from ..kernels.sepmedian import sepmedfilt_at
from ..kernels.morphology import dilate3, dilate5_points
from .lacosmic_detect import detect_once, detect_update, stage_reaches

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
#: in flight holds about ten float32 copies of itself (besides the frame's
#: electrons, variance and bad-pixel mask, held once), so larger frames are
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
    return {
        "mask": (3 if p.sepmed else 2) + 2 * 2,  # median, then dilate5 twice
        "detect": stage_reaches(p)["found"][0],
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


def bad_pixel_mask(clean_e, inmask, p):
    """Input mask grown by 1 pixel, plus saturated stars grown by 4.

    Saturated pixels count as a star when the local median (sepmed 7 or
    full 5x5) exceeds a tenth of ``satlevel``.
    """
    ys, xs = pixels_at_least(clean_e, np.float32(p.satlevel))
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
    (:func:`crdask.cosmic.lacosmic_detect.detect_update`) and a masked cleaner
    redo only the flagged pixels near new flags; ``False`` recomputes the
    whole image each time.
    The results are identical. Returns ``(crmask, bits)``; ``clean`` and
    ``var`` are cleaned in place.
    """
    crmask = np.zeros(clean.shape, dtype=np.bool_)
    bits = 0
    found = changed = None
    nx = clean.shape[1]
    # A masked cleaner only needs to redo the flagged pixels near the ones
    # just flagged (see ``clean_masked_at``); the unmasked median reads
    # flagged pixels too, so it cleans every flagged pixel every time.
    kind = MASKED_KINDS.get(p.cleantype) if incremental else None
    for it in range(n_iter):
        if found is None or not incremental:
            found, count = detect_once(clean, var, bkg_e, bad, p)
        else:
            found, count = detect_update(clean, var, bkg_e, bad, p, found,
                                         changed // nx, changed % nx)
        if count_region is not None and found[count_region].any():
            bits |= 1 << it
        new = flag_new(crmask, found)
        if count == 0 and stop_when_clean:
            break
        if kind is not None:
            idx = new if it == 0 else flagged_near(crmask, new, 2)
            moved = clean_masked_at(kind, clean, crmask, bad, bg_level, idx)
            moved |= clean_masked_at(kind, var, crmask, bad, bg_var_level, idx)
            changed = idx[moved]
            continue

        def clean_both():
            clean_pass(clean, crmask, bad, bg_level, p.cleantype)
            clean_pass(var, crmask, bad, bg_var_level, p.cleantype)

        if incremental and it < n_iter - 1:
            changed = _changed_by(clean_both, crmask, clean, var)
        else:
            clean_both()
    return crmask, bits
