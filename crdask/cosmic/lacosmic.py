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

import dask.array as da
import numpy as np

from . import lacosmic_core as core
from .lacosmic_graph import lacosmic_graph
from .lacosmic_strips import lacosmic_strips
from .psf import PSF_MODELS, psf_kernel
from .params import Param, ParamError, ParamSet
from .registry import CRResult, Method, register
from .validation import as_image, check_same_shape, is_ccddata

__all__ = ["lacosmic", "detect_cosmics", "PARAMS", "make_params", "detect_frame"]


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
    if is_ccddata(data):
        return _lacosmic_ccddata(data, inmask=inmask, inbkg=inbkg, invar=invar,
                                 sigclip=sigclip, sigfrac=sigfrac, objlim=objlim,
                                 gain=gain, readnoise=readnoise, satlevel=satlevel,
                                 niter=niter, sepmed=sepmed, cleantype=cleantype,
                                 fsmode=fsmode, psfmodel=psfmodel, psffwhm=psffwhm,
                                 psfsize=psfsize, psfk=psfk, psfbeta=psfbeta,
                                 verbose=verbose, padwidth=padwidth,
                                 psffwhm_x=psffwhm_x, psffwhm_y=psffwhm_y,
                                 num_threads=num_threads)

    values = PARAMS.validate(dict(
        sigclip=sigclip, sigfrac=sigfrac, objlim=objlim, gain=gain, readnoise=readnoise,
        satlevel=satlevel, niter=niter, sepmed=sepmed, cleantype=cleantype,
        fsmode=fsmode, psfmodel=psfmodel, psffwhm=psffwhm, psfsize=psfsize, psfk=psfk,
        psfbeta=psfbeta, verbose=verbose, padwidth=padwidth, psffwhm_x=psffwhm_x,
        psffwhm_y=psffwhm_y))
    params = make_params(values)
    padwidth = values["padwidth"]
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

    # numpy: row strips, one per thread (strips keep the halo overhead to
    # 2 * depth rows per strip), run directly (lacosmic_strips); identical
    # to a single block.
    threads = num_threads or os.cpu_count() or 1
    depth = core.overlap_depth(params)
    nstrips = max(1, min(max(threads, -(-data.size // core.STRIP_PIXELS)),
                         data.shape[0] // (4 * depth + 1)))  # strips: memory bounded
    arrays = [_pad(a, padwidth) for a in (data, inmask, inbkg, invar)]
    crmask, clean = lacosmic_strips(*arrays, params, nstrips, threads)
    if padwidth:
        crop = (slice(padwidth, -padwidth), slice(padwidth, -padwidth))
        crmask, clean = crmask[crop], clean[crop]
    if verbose:
        print(f"{int(crmask.sum())} cosmic-ray pixels found")
    return np.ascontiguousarray(crmask), np.ascontiguousarray(clean)


#: astroscrappy's name, for ``from crdask import detect_cosmics``.
detect_cosmics = lacosmic


#: Every parameter of :func:`lacosmic`, written once (astroscrappy 1.3's
#: names, defaults and meanings, plus crdask's keyword-only extras).
PARAMS = ParamSet("lacosmic", [
    Param("sigclip", 4.5, "float", "Laplacian-to-noise limit for cosmic-ray pixels",
          unit="sigma", minimum=0, strict=True),
    Param("sigfrac", 0.3, "float", "fraction of sigclip for neighbouring CR pixels",
          minimum=0),
    Param("objlim", 5.0, "float", "minimum contrast of Laplacian to fine structure",
          minimum=0),
    Param("gain", 1.0, "float", "gain of the input", unit="e-/ADU", minimum=0,
          strict=True, workflow=False),
    Param("readnoise", 6.5, "float", "read noise", unit="e-", minimum=0, workflow=False),
    # A night flags saturation from the raw ADU (mask bit SATURATED), which
    # reaches the method as bad pixels: no second, electron-level rule.
    Param("satlevel", 65536.0, "float", "saturation level; saturated stars are masked",
          unit="e-", allow_inf=True, night_default=float("inf")),
    Param("niter", 4, "int", "number of detect-and-clean iterations", minimum=0),
    Param("sepmed", True, "bool", "separable medians instead of full square ones"),
    Param("cleantype", "meanmask", "choice", "cleaner of CR pixels (5x5 window)",
          choices=core.CLEANTYPES),
    Param("fsmode", "median", "choice", "fine structure: median or PSF convolution",
          choices=core.FSMODES),
    Param("psfmodel", "gauss", "choice", "PSF model for fsmode=convolve",
          choices=PSF_MODELS),
    Param("psffwhm", 2.5, "float", "PSF FWHM", unit="px", minimum=0, strict=True),
    Param("psfsize", 7, "int", "PSF kernel side", unit="px", minimum=1, odd=True),
    Param("psfk", None, "any", "explicit PSF kernel (2-D array, odd sides)",
          none_ok=True, workflow=False, cli=False),
    Param("psfbeta", 4.765, "float", "Moffat beta", minimum=0, strict=True),
    Param("verbose", False, "bool", "print the CR count", workflow=False, cli=False),
    Param("padwidth", 0, "int", "mirror-pad the frame so edge CRs are found",
          unit="px", minimum=0),
    Param("psffwhm_x", None, "float", "FWHM along x of psfmodel=gaussxy", unit="px",
          minimum=0, strict=True, none_ok=True),
    Param("psffwhm_y", None, "float", "FWHM along y of psfmodel=gaussxy", unit="px",
          minimum=0, strict=True, none_ok=True),
])


def make_params(values=None, **kwargs):
    """Build :class:`~crdask.cosmic.lacosmic_core.LACosmicParams` from a
    complete dict already checked by ``PARAMS.validate``, or from keyword
    arguments (validated here, defaults filled in).

    Raises ``ValueError`` naming a bad parameter.
    """
    v = values if values is not None else PARAMS.validate(kwargs)
    f32 = np.float32
    kernel = None
    if v["fsmode"] == "convolve":
        if v["psfk"] is None:
            kernel = psf_kernel(v["psfmodel"], float(f32(v["psffwhm"])), v["psfsize"],
                                float(f32(v["psfbeta"])), v["psffwhm_x"], v["psffwhm_y"])
            # astroscrappy flips a model kernel before its (flipping)
            # convolution, so the model is applied as a correlation.
            kernel = np.ascontiguousarray(kernel[::-1, ::-1])
        else:
            kernel = np.ascontiguousarray(np.asarray(v["psfk"], dtype=np.float32))
            if (kernel.ndim != 2 or kernel.shape[0] % 2 == 0
                    or kernel.shape[1] % 2 == 0 or not np.isfinite(kernel).all()):
                raise ParamError("psfk", f"shape {kernel.shape} is not allowed",
                                 "a finite 2-D array with odd sides")
    return core.LACosmicParams(
        sigclip=f32(v["sigclip"]), sigfrac=f32(v["sigfrac"]), objlim=f32(v["objlim"]),
        gain=f32(v["gain"]), readnoise=f32(v["readnoise"]), satlevel=f32(v["satlevel"]),
        niter=v["niter"], sepmed=v["sepmed"], cleantype=v["cleantype"],
        fsmode=v["fsmode"], psfk=kernel)


def detect_frame(data, params, *, bad=None, var=None, readnoise=0.0, num_threads=None):
    """The registry's ``frame`` convention for L.A.Cosmic: ``data`` in e-
    (so ``gain=1``), ``bad`` as ``inmask``, ``var`` as ``invar``.

    Returns a :class:`~crdask.cosmic.registry.CRResult`.
    """
    kw = {**params, "gain": 1.0, "readnoise": float(readnoise)}
    crmask, clean = lacosmic(data, inmask=bad, invar=var, num_threads=num_threads, **kw)
    return CRResult(clean=clean, crmask=crmask)


register(Method("lacosmic", "frame", PARAMS, detect_frame,
                summary="L.A.Cosmic (van Dokkum 2001), astroscrappy's parameters"))


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
