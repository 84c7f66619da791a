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
    """
    if np.ndim(readnoise) == 0:
        if readnoise is None or not readnoise >= 0:
            raise ValueError(f"readnoise must be >= 0 e-, got {readnoise!r}")
        rn2 = np.float32(readnoise) ** 2
    else:
        if tuple(readnoise.shape) != tuple(data_e.shape):
            raise ValueError(f"readnoise map has shape {tuple(readnoise.shape)}, the "
                             f"frame {tuple(data_e.shape)}")
        rn = readnoise.astype(np.float32)
        rn2 = rn * rn
    sci = data_e.astype(np.float32)
    var_extra = np.float32(0.0)
    if bias is not None:
        sci = sci - bias
        if bias_var is not None:
            var_extra = var_extra + bias_var
    if dark is not None:
        if exptime is None or not exptime >= 0:
            raise ValueError(f"exptime must be >= 0 s to scale the dark, got {exptime!r}")
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
