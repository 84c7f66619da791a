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

from . import lacosmic_core as core
from .lacosmic_graph import lacosmic_graph
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

    # numpy: the same graph on row strips, one per thread (strips keep the
    # halo overhead to 2 * depth rows per strip); identical to a single block.
    threads = num_threads or os.cpu_count() or 1
    depth = core.overlap_depth(params)
    nstrips = max(1, min(max(threads, -(-data.size // core.STRIP_PIXELS)),
                         data.shape[0] // (4 * depth + 1)))  # strips: memory bounded
    rows = -(-data.shape[0] // nstrips)
    # name=False: no hashing of the pixels for a graph used once
    arrays = [None if a is None else da.from_array(a, chunks=(rows, -1), name=False)
              for a in (data, inmask, inbkg, invar)]
    crmask, clean = lacosmic_dask(*arrays, params, padwidth=padwidth)
    sched = {"scheduler": "sync"} if threads == 1 else {"scheduler": "threads",
                                                          "num_workers": threads}
    with dask.config.set(**sched):
        crmask, clean = dask.compute(crmask, clean)
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


def _pad(a, width):
    if a is None or not width:
        return a
    if isinstance(a, da.Array):
        return da.pad(a, width, mode="symmetric")
    return np.pad(a, width, mode="symmetric")


def lacosmic_dask(data, inmask, inbkg, invar, params, padwidth=0):
    """Lazy L.A.Cosmic on Dask arrays (already validated); returns
    ``(crmask, cleanarr)`` Dask arrays with ``data``'s shape."""
    arrays = [None if a is None else _pad(da.asarray(a), padwidth)
              for a in (data, inmask, inbkg, invar)]
    crmask, clean = lacosmic_graph(*arrays, params)
    if padwidth:
        crop = (slice(padwidth, -padwidth), slice(padwidth, -padwidth))
        crmask, clean = crmask[crop], clean[crop]
    return crmask, clean


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
