"""``lacosmic``: L.A.Cosmic for numpy arrays, Dask arrays and ``CCDData``.

A drop-in for ``astroscrappy.detect_cosmics`` (same positional parameters,
defaults and meaning), computed by Numba kernels on overlapping blocks:

* numpy in -> numpy out, computed on all cores by cutting the frame into
  row strips that overlap by :func:`~crdask.cosmic.lacosmic_core.overlap_depth`
  pixels (the result is bit-identical to processing the frame whole);
* Dask array in -> lazy Dask arrays out (the same block function through an
  explicit overlap, any chunking, same bits);
* ``CCDData`` in -> ``CCDData`` out (data cleaned, CRs OR-ed into the mask,
  unit and metadata kept).

Image-wide values that a block cannot know -- the background medians the
cleaners fall back on, and for ``cleantype='median'`` the iteration at which
the whole frame stops finding CRs -- are reduced over all blocks first and
passed in, so no block ever decides on its own what the frame decides.

Non-finite pixels (NaN, inf) are treated as bad pixels: added to ``inmask``,
filled with 0 internally, never flagged, and returned unchanged.
"""

import os

import dask
import dask.array as da
import numpy as np
from dask.array.overlap import ensure_minimum_chunksize

from ..kernels.select import histogram_high, histogram_low, key_to_float, locate_rank
from . import lacosmic_core as core
from .psf import PSF_MODELS, psf_kernel
from .validation import (
    as_image,
    check_choice,
    check_number,
    check_same_shape,
)

__all__ = ["lacosmic", "detect_cosmics"]


def lacosmic(data, inmask=None, inbkg=None, invar=None, sigclip=4.5,
             sigfrac=0.3, objlim=5.0, gain=1.0, readnoise=6.5,
             satlevel=65536.0, niter=4, sepmed=True, cleantype='meanmask',
             fsmode='median', psfmodel='gauss', psffwhm=2.5, psfsize=7,
             psfk=None, psfbeta=4.765, verbose=False, *, padwidth=0,
             psffwhm_x=None, psffwhm_y=None, num_threads=None):
    """Detect and clean cosmic rays with L.A.Cosmic (van Dokkum 2001).

    Parameters are those of ``astroscrappy.detect_cosmics`` 1.3, with the same
    defaults and meaning:

    data : 2-D array (numpy, Dask or ``astropy.nddata.CCDData``), in ADU
        ("counts"), including the sky (or a background level added back).
    inmask : bool array, same shape; True = bad pixel, never flagged or used.
    inbkg : background image in ADU, subtracted before detection and added
        back to the cleaned output; its Poisson variance is not smoothed.
    invar : variance image in ADU^2, used instead of the noise model.
    sigclip : Laplacian-to-noise threshold for CR pixels (4.5).
    sigfrac : fraction of ``sigclip`` for neighbouring CR pixels (0.3).
    objlim : minimum contrast of Laplacian to fine structure (5.0).
    gain : e-/ADU (1.0), > 0.  readnoise : e- (6.5), >= 0.
    satlevel : saturation level in e- (65536.0); saturated stars are masked.
    niter : number of detect-and-clean iterations (4).
    sepmed : use separable medians (True) instead of full square ones.
    cleantype : 'median' | 'medmask' | 'meanmask' | 'idw' (5x5 window).
    fsmode : 'median' | 'convolve' (matched filter with the PSF kernel).
    psfmodel : 'gauss' | 'gaussx' | 'gaussy' | 'gaussxy' | 'moffat'.
    psffwhm : PSF FWHM in pixels (2.5).  psfsize : kernel side, odd (7).
    psfk : explicit kernel (used as given, not flipped).  psfbeta : Moffat beta.
    verbose : print one line per iteration (numpy input only).

    Keyword-only extras (not in astroscrappy):

    padwidth : mirror-pad the frame by this many pixels before detection and
        crop afterwards, so CRs on the outermost rows/columns are found
        (astroscrappy cannot clean within 2 pixels of the edge). Default 0,
        for parity with astroscrappy.
    psffwhm_x, psffwhm_y : FWHMs of the elliptical 'gaussxy' model.
    num_threads : threads for numpy input (default: all cores).

    Returns
    -------
    (crmask, cleanarr) : bool and float32 arrays of the input's shape (lazy
    for Dask input); for ``CCDData`` input a single cleaned ``CCDData``.

    Notes
    -----
    Scalars are used at float32 precision, as astroscrappy does. Results are
    deterministic and independent of chunking and thread count. They agree
    with astroscrappy to within its own floating-point reordering (it is built
    with ``-ffast-math``), except for ``cleantype='median'``, whose
    astroscrappy 1.3 implementation reads uninitialised memory; here it is
    the unmasked 5x5 median its documentation describes.
    """
    try:
        from astropy.nddata import CCDData
    except ImportError:  # pragma: no cover - astropy is a core dependency
        CCDData = ()
    if isinstance(data, CCDData):
        return _lacosmic_ccddata(data, inmask=inmask, inbkg=inbkg, invar=invar,
                                 sigclip=sigclip, sigfrac=sigfrac, objlim=objlim,
                                 gain=gain, readnoise=readnoise, satlevel=satlevel,
                                 niter=niter, sepmed=sepmed, cleantype=cleantype,
                                 fsmode=fsmode, psfmodel=psfmodel, psffwhm=psffwhm,
                                 psfsize=psfsize, psfk=psfk, psfbeta=psfbeta,
                                 verbose=verbose, padwidth=padwidth,
                                 psffwhm_x=psffwhm_x, psffwhm_y=psffwhm_y,
                                 num_threads=num_threads)

    params = make_params(sigclip=sigclip, sigfrac=sigfrac, objlim=objlim, gain=gain,
                         readnoise=readnoise, satlevel=satlevel, niter=niter,
                         sepmed=sepmed, cleantype=cleantype, fsmode=fsmode,
                         psfmodel=psfmodel, psffwhm=psffwhm, psfsize=psfsize,
                         psfk=psfk, psfbeta=psfbeta, psffwhm_x=psffwhm_x,
                         psffwhm_y=psffwhm_y)
    padwidth = int(check_number("padwidth", padwidth, minimum=0, integer=True))
    lazy = isinstance(data, da.Array)
    data = as_image("data", data)
    inmask = None if inmask is None else as_image("inmask", inmask)
    inbkg = None if inbkg is None else as_image("inbkg", inbkg)
    invar = None if invar is None else as_image("invar", invar)
    for name, arr in (("inmask", inmask), ("inbkg", inbkg), ("invar", invar)):
        if arr is not None:
            check_same_shape(name, arr, data)

    if lazy:
        return lacosmic_dask(data, inmask, inbkg, invar, params, padwidth=padwidth)

    threads = num_threads or os.cpu_count() or 1
    depth = core.overlap_depth(params)
    ny = data.shape[0] + 2 * padwidth
    nstrips = max(1, min(threads, ny // (4 * depth + 1)))
    rows = -(-ny // nstrips)
    arrays = [None if a is None else da.from_array(_pad(a, padwidth), chunks=(rows, -1))
              for a in (data, inmask, inbkg, invar)]
    crmask, clean = _lacosmic_graph(*arrays, params, depth)
    with dask.config.set(scheduler="threads", num_workers=threads):
        crmask, clean = dask.compute(crmask, clean)
    if padwidth:
        crop = (slice(padwidth, -padwidth), slice(padwidth, -padwidth))
        crmask, clean = crmask[crop], clean[crop]
    if verbose:
        print(f"{int(crmask.sum())} cosmic-ray pixels found")
    return np.ascontiguousarray(crmask), np.ascontiguousarray(clean)


#: astroscrappy's name, for ``from crdask import detect_cosmics``.
detect_cosmics = lacosmic


def make_params(*, sigclip, sigfrac, objlim, gain, readnoise, satlevel, niter,
                sepmed, cleantype, fsmode, psfmodel, psffwhm, psfsize, psfk,
                psfbeta, psffwhm_x=None, psffwhm_y=None):
    """Validate the scalar parameters and build :class:`LACosmicParams`.

    Raises ``ValueError`` naming the parameter and what is allowed.
    """
    f32 = np.float32
    sigclip = check_number("sigclip", sigclip, minimum=0, strict=True)
    sigfrac = check_number("sigfrac", sigfrac, minimum=0)
    objlim = check_number("objlim", objlim, minimum=0)
    gain = check_number("gain", gain, minimum=0, strict=True)
    readnoise = check_number("readnoise", readnoise, minimum=0)
    satlevel = check_number("satlevel", satlevel, allow_inf=True)
    niter = int(check_number("niter", niter, minimum=0, integer=True))
    check_choice("cleantype", cleantype, core.CLEANTYPES)
    check_choice("fsmode", fsmode, core.FSMODES)
    check_choice("psfmodel", psfmodel, PSF_MODELS)
    kernel = None
    if fsmode == "convolve":
        if psfk is None:
            psffwhm = check_number("psffwhm", psffwhm, minimum=0, strict=True)
            psfbeta = check_number("psfbeta", psfbeta, minimum=0, strict=True)
            psfsize = int(check_number("psfsize", psfsize, minimum=1, integer=True))
            if psfsize % 2 == 0:
                raise ValueError(f"psfsize must be odd, got {psfsize}")
            for name, v in (("psffwhm_x", psffwhm_x), ("psffwhm_y", psffwhm_y)):
                if v is not None:
                    check_number(name, v, minimum=0, strict=True)
            kernel = psf_kernel(psfmodel, float(f32(psffwhm)), psfsize,
                                float(f32(psfbeta)), psffwhm_x, psffwhm_y)
            # astroscrappy flips a model kernel before its (flipping)
            # convolution, so the model is applied as a correlation.
            kernel = np.ascontiguousarray(kernel[::-1, ::-1])
        else:
            kernel = np.ascontiguousarray(np.asarray(psfk, dtype=np.float32))
            if (kernel.ndim != 2 or kernel.shape[0] % 2 == 0
                    or kernel.shape[1] % 2 == 0 or not np.isfinite(kernel).all()):
                raise ValueError("psfk must be a finite 2-D array with odd sides, "
                                 f"got shape {kernel.shape}")
    return core.LACosmicParams(
        sigclip=f32(sigclip), sigfrac=f32(sigfrac), objlim=f32(objlim), gain=f32(gain),
        readnoise=f32(readnoise), satlevel=f32(satlevel), niter=niter,
        sepmed=bool(sepmed), cleantype=cleantype, fsmode=fsmode, psfk=kernel)


# ---------------------------------------------------------------------------
# Block functions (run on numpy blocks that carry their halo).
# ---------------------------------------------------------------------------

def _prepare(data, inmask, inbkg, invar, p):
    """Electrons, background, variance and bad-pixel mask of one block."""
    bad_input = ~np.isfinite(data)
    if inbkg is not None:
        bad_input |= ~np.isfinite(inbkg)
    if invar is not None:
        bad_input |= ~np.isfinite(invar)
    any_bad = bad_input.any()
    if any_bad:
        data = np.where(bad_input, 0, data)
        inbkg = None if inbkg is None else np.where(bad_input, 0, inbkg)
        invar = None if invar is None else np.where(bad_input, 0, invar)
    clean = core.to_electrons(data, p.gain)
    bkg = None if inbkg is None else core.to_electrons(inbkg, p.gain)
    var = core.initial_variance(clean, bkg, invar, p)
    given = bad_input if inmask is None else (np.asarray(inmask, dtype=bool) | bad_input)
    bad = core.bad_pixel_mask(clean, np.ascontiguousarray(given), p)
    if bkg is not None:
        clean -= bkg
    return clean, bkg, var, bad, (bad_input if any_bad else None)


def _edge_trim(block_info, depth, shape):
    """Slices that drop the halo of an overlapped block (none at frame edges)."""
    info = block_info[0]
    sl = []
    for ax in range(2):
        loc = info["chunk-location"][ax]
        n = info["num-chunks"][ax]
        lo = depth if loc > 0 else 0
        hi = shape[ax] - (depth if loc < n - 1 else 0)
        sl.append(slice(lo, hi))
    return tuple(sl)


def _levels_hist_block(data, inmask, inbkg, invar, p, depth, high=None, block_info=None):
    # Histograms of the electrons image and the variance over good pixels of
    # this block's interior (for the exact image-wide medians).
    clean, _, var, bad, _ = _prepare(data, inmask, inbkg, invar, p)
    inner = _edge_trim(block_info, depth, data.shape)
    c, v, b = (np.ascontiguousarray(a[inner]) for a in (clean, var, bad))
    if high is None:
        h = np.stack([histogram_high(c, b), histogram_high(v, b)])
    else:
        h = np.stack([histogram_low(c, b, high[0]), histogram_low(v, b, high[1])])
    return h[None, None]


def _main_block(data, inmask, inbkg, invar, p, depth, levels, n_iter, stop_when_clean,
                block_info=None):
    # Full L.A.Cosmic on an overlapped block; returns (2, y, x) float32:
    # cleaned data (ADU) and the CR mask as 0/1, halo removed.
    clean, bkg, var, bad, bad_input = _prepare(data, inmask, inbkg, invar, p)
    bg_level, bg_var_level = (np.float32(v) for v in levels)
    crmask, _ = core.iterate(clean, var, bkg, bad, p, bg_level, bg_var_level,
                             int(n_iter), stop_when_clean=stop_when_clean)
    if bkg is not None:
        clean += bkg
    clean /= p.gain
    if bad_input is not None:
        clean[bad_input] = np.asarray(data, dtype=np.float32)[bad_input]
    inner = _edge_trim(block_info, depth, data.shape)
    return np.stack([clean[inner], crmask[inner].astype(np.float32)])


def _iteration_bits_block(data, inmask, inbkg, invar, p, depth, levels, block_info=None):
    # For cleantype='median': which iterations find CRs in this block's
    # interior when all ``niter`` iterations run (no early stop).
    clean, bkg, var, bad, _ = _prepare(data, inmask, inbkg, invar, p)
    bg_level, bg_var_level = (np.float32(v) for v in levels)
    inner = _edge_trim(block_info, depth, data.shape)
    _, bits = core.iterate(clean, var, bkg, bad, p, bg_level, bg_var_level, p.niter,
                           stop_when_clean=False, count_region=inner)
    flags = np.array([(bits >> i) & 1 for i in range(p.niter)], dtype=np.uint8)
    return flags[None, None]


# ---------------------------------------------------------------------------
# Graph construction.
# ---------------------------------------------------------------------------

def _pad(a, width):
    if a is None or not width:
        return a
    if isinstance(a, da.Array):
        return da.pad(a, width, mode="symmetric")
    return np.pad(a, width, mode="symmetric")


def lacosmic_dask(data, inmask, inbkg, invar, params, padwidth=0):
    """Lazy L.A.Cosmic on Dask arrays (already validated); returns
    ``(crmask, cleanarr)`` Dask arrays with ``data``'s shape."""
    depth = core.overlap_depth(params)
    arrays = [None if a is None else _pad(da.asarray(a), padwidth)
              for a in (data, inmask, inbkg, invar)]
    crmask, clean = _lacosmic_graph(*arrays, params, depth)
    if padwidth:
        crop = (slice(padwidth, -padwidth), slice(padwidth, -padwidth))
        crmask, clean = crmask[crop], clean[crop]
    return crmask, clean


def _lacosmic_graph(data, inmask, inbkg, invar, p, depth):
    # Chunks must be at least ``depth`` so each block's halo comes from its
    # direct neighbours only.
    chunks = tuple(ensure_minimum_chunksize(depth, c) for c in data.chunks)
    arrays = [None if a is None else da.asarray(a).rechunk(chunks)
              for a in (data, inmask, inbkg, invar)]
    overlapped = [None if a is None else da.overlap.overlap(a, depth={0: depth, 1: depth},
                                                            boundary="none")
                  for a in arrays]
    present = [a for a in overlapped if a is not None]

    def bind(fn):
        # map_blocks wants arrays positionally; re-insert the missing ones.
        mask_of = [a is not None for a in overlapped]

        def wrapped(*blocks, block_info=None, **kw):
            it = iter(blocks)
            args = [next(it) if m else None for m in mask_of]
            return fn(*args, block_info=block_info, **kw)
        wrapped.__name__ = fn.__name__
        return wrapped

    levels = _exact_medians(bind(_levels_hist_block), present, p, depth)
    n_iter = p.niter
    stop = p.cleantype in core.IDEMPOTENT_CLEANTYPES
    if not stop and p.niter > 0:
        flags = da.map_blocks(bind(_iteration_bits_block), *present, dtype=np.uint8,
                              chunks=((1,) * present[0].numblocks[0],
                                      (1,) * present[0].numblocks[1], (p.niter,)),
                              new_axis=[2], drop_axis=[], p=p, depth=depth,
                              levels=levels).max(axis=(0, 1))
        n_iter = dask.delayed(_first_quiet_iteration)(flags, p.niter)
    out = da.map_blocks(bind(_main_block), *present, dtype=np.float32,
                        chunks=((2,),) + chunks, new_axis=[0], p=p, depth=depth,
                        levels=levels, n_iter=n_iter, stop_when_clean=stop)
    return out[1] != 0, out[0]


def _first_quiet_iteration(flags, niter):
    """Number of iterations the whole frame runs: the first with no CRs."""
    for i, f in enumerate(np.asarray(flags)):
        if not f:
            return i
    return niter


def _exact_medians(hist_fn, present, p, depth):
    """Delayed (background level, variance level): exact lower medians of the
    electrons image and of the variance over good pixels, image-wide, from
    two histogram passes (see ``crdask.kernels.select``)."""
    nby, nbx = present[0].numblocks
    hist_chunks = ((1,) * nby, (1,) * nbx, (2,), (65536,))
    high = da.map_blocks(hist_fn, *present, dtype=np.int64, chunks=hist_chunks,
                         new_axis=[2, 3], p=p, depth=depth).sum(axis=(0, 1))
    picks = dask.delayed(_pick_high)(high)
    low = da.map_blocks(hist_fn, *present, dtype=np.int64, chunks=hist_chunks,
                        new_axis=[2, 3], p=p, depth=depth,
                        high=dask.delayed(_bins_of)(picks)).sum(axis=(0, 1))
    return dask.delayed(_finish_medians)(picks, low)


def _pick_high(h):
    out = []
    for row in np.asarray(h):
        n = int(row.sum())
        b, r = locate_rank(row, (n - 1) // 2 if n else 0)
        out.append((b, r, n))
    return out


def _bins_of(picks):
    return [b for b, _, _ in picks]


def _finish_medians(picks, low):
    vals = []
    for (b, r, n), row in zip(picks, np.asarray(low)):
        if n == 0:  # nothing unmasked: no fallback level exists; use 0
            vals.append(np.float32(0.0))
            continue
        lo, _ = locate_rank(row, r)
        vals.append(np.float32(key_to_float((b << 16) | lo)))
    return tuple(vals)


# ---------------------------------------------------------------------------
# CCDData.
# ---------------------------------------------------------------------------

def _lacosmic_ccddata(ccd, inmask=None, **kw):
    mask = ccd.mask if inmask is None else (
        np.asarray(inmask, bool) | (False if ccd.mask is None else ccd.mask))
    crmask, clean = lacosmic(np.asarray(ccd.data), inmask=mask, **kw)
    out = ccd.copy()
    out.data = clean
    out.mask = crmask if ccd.mask is None else (np.asarray(ccd.mask, bool) | crmask)
    return out
