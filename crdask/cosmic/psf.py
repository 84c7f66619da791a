"""PSF kernels for the matched-filter fine-structure image (``fsmode='convolve'``).

Pixel offsets from the kernel centre are ``arange(size) - size // 2`` (as in
astroscrappy). Kernels are float32 and sum to 1.
"""

import numpy as np

FWHM_TO_SIGMA = 2.35482
PSF_MODELS = ("gauss", "gaussx", "gaussy", "gaussxy", "moffat")


def _grid(size):
    x = np.tile(np.arange(size) - size // 2, (size, 1))
    return x, x.T.copy()


def _normalise(values):
    kernel = np.asarray(values, dtype=np.float32)
    return kernel / kernel.sum(dtype=np.float32)


def psf_kernel(psfmodel, psffwhm, psfsize, psfbeta=4.765, psffwhm_x=None, psffwhm_y=None):
    """Build a ``(psfsize, psfsize)`` float32 kernel.

    Parameters
    ----------
    psfmodel : 'gauss' (circular), 'gaussx' / 'gaussy' (1-D Gaussian along x /
        y, for spectra), 'gaussxy' (elliptical, axes along x and y, FWHMs
        ``psffwhm_x`` and ``psffwhm_y``, each defaulting to ``psffwhm``),
        'moffat' (circular, ``psfbeta``).
    psffwhm : FWHM in pixels.
    psfsize : kernel side in pixels (odd).
    """
    x, y = _grid(psfsize)
    sigma2 = psffwhm * psffwhm / FWHM_TO_SIGMA / FWHM_TO_SIGMA
    if psfmodel == "gauss":
        return _normalise(np.exp(-0.5 * (x * x + y * y) / sigma2))
    if psfmodel == "gaussx":
        return _normalise(np.exp(-0.5 * x * x / sigma2))
    if psfmodel == "gaussy":
        return _normalise(np.exp(-0.5 * y * y / sigma2))
    if psfmodel == "gaussxy":
        fx = psffwhm if psffwhm_x is None else psffwhm_x
        fy = psffwhm if psffwhm_y is None else psffwhm_y
        sx2 = (fx / FWHM_TO_SIGMA) ** 2
        sy2 = (fy / FWHM_TO_SIGMA) ** 2
        return _normalise(np.exp(-0.5 * (x * x / sx2 + y * y / sy2)))
    if psfmodel == "moffat":
        r2 = x * x + y * y
        alpha = (psffwhm / 2.0) / np.sqrt(2.0 ** (1.0 / psfbeta) - 1.0)
        return _normalise((1.0 + r2 / alpha / alpha) ** (-psfbeta))
    raise ValueError(f"psfmodel must be one of {PSF_MODELS}, got {psfmodel!r}")
