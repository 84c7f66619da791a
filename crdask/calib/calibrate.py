"""Calibrate a frame already in electrons: bias, dark x time, flat, variance, mask.

Everything here is pixel-wise numpy arithmetic, so the same functions work on
numpy arrays and, lazily and chunk by chunk, on Dask arrays. Overscan
subtraction, trimming and the gain (ADU -> e-) come before, from
``crdask.calib.overscan`` and ``to_electrons``.

Units: images in e-, dark current in e-/s, flat dimensionless (normalised to
1), variances in e-^2 (flat variance dimensionless).

Variance model (before the flat): ``readnoise^2 + max(signal, 0) +
var(bias) + t^2 var(dark)``, where ``signal`` is the bias- and
dark-subtracted frame (Poisson noise of the detected electrons, dark
electrons included through ``dark * t``). Dividing by the flat ``F`` with
variance ``v_F`` gives ``var / F^2 + sci^2 v_F / F^2``.
"""

from dataclasses import dataclass

import numpy as np

from ..kernels.calibrate import calibrate_pixels
from . import bits


@dataclass
class CalibratedFrame:
    """``sci`` (e-), ``var`` (e-^2) float32 and ``mask`` uint8 bit flags
    (see :mod:`crdask.calib.bits`), all ``(ny, nx)``."""

    sci: object
    var: object
    mask: object


def to_electrons(data_adu, gain):
    """ADU -> e- as float32 (``gain`` in e-/ADU, > 0)."""
    if not gain > 0:
        raise ValueError(f"gain must be > 0 e-/ADU, got {gain!r}")
    return (data_adu * np.float32(gain)).astype(np.float32)


def calibrate_frame(data_e, *, readnoise, exptime=None, bias=None, bias_var=None,
                    dark=None, dark_var=None, flat=None, flat_var=None, bad=None,
                    saturated=None):
    """Calibrate one frame in electrons.

    Parameters
    ----------
    data_e : (ny, nx) float32, e-: overscan-subtracted, trimmed, gain-corrected.
    readnoise : e- (>= 0): a number, or a (ny, nx) map (e.g. the per-amplifier
        read noise from :func:`crdask.calib.amplifiers.assemble_amplifiers`).
    exptime : s; required with ``dark``.
    bias, bias_var : master bias (e-) and its variance (e-^2), or None.
    dark, dark_var : master dark current (e-/s) and its variance ((e-/s)^2).
    flat, flat_var : normalised master flat and its variance.
    bad : bool (ny, nx) bad-pixel mask, or None.
    saturated : bool (ny, nx) saturated in the raw frame, or None.

    Returns
    -------
    CalibratedFrame. Pixels whose flat is <= 0 or not finite are not divided
    (their value stays flat-uncorrected) and carry ``FLAT_INVALID``; pixels
    that end up non-finite carry ``NONFINITE``.

    When every array is a 2-D float32 numpy array (the masks bool) of the
    frame's shape -- a science frame in a night -- the work is one pass of
    the Numba kernel :func:`crdask.kernels.calibrate.calibrate_pixels`
    (bit-identical to the numpy expressions below, which serve any other
    input, Dask arrays included).

    Example
    -------
    >>> import numpy as np
    >>> d = np.full((2, 2), 100.0, np.float32)
    >>> cal = calibrate_frame(d, readnoise=2.0, bias=d * 0.1)
    >>> float(cal.sci[0, 0]), float(cal.var[0, 0]), int(cal.mask[0, 0])
    (90.0, 94.0, 0)
    """
    if np.ndim(readnoise) == 0:
        if readnoise is None or not readnoise >= 0:
            raise ValueError(f"readnoise must be >= 0 e-, got {readnoise!r}")
    elif tuple(readnoise.shape) != tuple(data_e.shape):
        raise ValueError(f"readnoise map has shape {tuple(readnoise.shape)}, the "
                         f"frame {tuple(data_e.shape)}")
    if dark is not None and (exptime is None or not exptime >= 0):
        raise ValueError(f"exptime must be >= 0 s to scale the dark, got {exptime!r}")
    fused = _fused(data_e, readnoise, exptime, bias, bias_var, dark, dark_var, flat,
                   flat_var, bad, saturated)
    if fused is not None:
        return fused
    if np.ndim(readnoise) == 0:
        rn2 = np.float32(readnoise) ** 2
    else:
        rn = readnoise.astype(np.float32)
        rn2 = rn * rn
    return calibrate_numpy(data_e, rn2, exptime, bias, bias_var, dark, dark_var, flat,
                           flat_var, bad, saturated)


def calibrate_numpy(data_e, rn2, exptime, bias, bias_var, dark, dark_var, flat, flat_var,
                    bad, saturated):
    """:func:`calibrate_frame` as numpy (or Dask) expressions, ``rn2`` = the read
    noise squared (e-^2, a number or a map); the reference of the fused kernel."""
    sci = data_e.astype(np.float32)
    var_extra = np.float32(0.0)
    if bias is not None:
        sci = sci - bias
        if bias_var is not None:
            var_extra = var_extra + bias_var
    if dark is not None:
        t = np.float32(exptime)
        sci = sci - dark * t
        if dark_var is not None:
            var_extra = var_extra + dark_var * (t * t)
    var = rn2 + np.maximum(sci, 0) + var_extra
    mask = np.zeros(sci.shape, np.uint8)
    if flat is not None:
        usable = np.isfinite(flat) & (flat > 0)
        safe = np.where(usable, flat, np.float32(1.0))
        fvar = np.float32(0.0) if flat_var is None else np.where(usable, flat_var, 0)
        var = var / (safe * safe) + (sci * sci) * fvar / (safe * safe)
        sci = sci / safe
        mask = mask | np.where(usable, 0, bits.FLAT_INVALID).astype(np.uint8)
    if bad is not None:
        mask = mask | np.where(bad, bits.BAD, 0).astype(np.uint8)
    if saturated is not None:
        mask = mask | np.where(saturated, bits.SATURATED, 0).astype(np.uint8)
    finite = np.isfinite(sci) & np.isfinite(var)
    mask = mask | np.where(finite, 0, bits.NONFINITE).astype(np.uint8)
    return CalibratedFrame(sci=sci.astype(np.float32), var=var.astype(np.float32),
                           mask=mask)


def _plain(a, shape, dtype):
    return isinstance(a, np.ndarray) and a.dtype == dtype and a.shape == shape


def _fused(data_e, readnoise, exptime, bias, bias_var, dark, dark_var, flat, flat_var, bad,
           saturated):
    """The kernel's result, or None when an input is not a plain numpy array
    of the frame's shape and dtype (then numpy does it)."""
    if not isinstance(data_e, np.ndarray) or data_e.ndim != 2 or data_e.dtype != np.float32:
        return None
    shape = data_e.shape
    f32 = np.dtype(np.float32)
    rn_map = None if np.ndim(readnoise) == 0 else readnoise
    floats = (rn_map, bias, bias_var, dark, dark_var, flat, flat_var)
    if not all(a is None or _plain(a, shape, f32) for a in floats):
        return None
    if not all(a is None or _plain(a, shape, np.dtype(bool)) for a in (bad, saturated)):
        return None
    dummy = np.zeros((1, 1), np.float32)
    nob = np.zeros((1, 1), np.bool_)

    def arg(a, d=dummy):
        return (d, False) if a is None else (a, True)

    rn2 = np.float32(0.0) if rn_map is not None else np.float32(readnoise) ** 2
    t = np.float32(0.0) if dark is None else np.float32(exptime)
    sci, var, mask = calibrate_pixels(
        data_e, rn2, *arg(rn_map), *arg(bias), *arg(None if bias is None else bias_var),
        *arg(dark), t, *arg(None if dark is None else dark_var), *arg(flat),
        *arg(None if flat is None else flat_var), *arg(bad, nob), *arg(saturated, nob),
        bits.BAD, bits.SATURATED, bits.FLAT_INVALID, bits.NONFINITE)
    return CalibratedFrame(sci=sci, var=var, mask=mask)
