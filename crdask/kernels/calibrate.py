"""One pass over a frame: bias, dark x time, flat, variance and mask bits (Numba kernel).

:func:`calibrate_pixels` is the fused form of
:func:`crdask.calib.calibrate.calibrate_frame` for float32 numpy arrays: the
numpy version makes ~20 full-frame temporaries (one per operation), this
kernel reads every input once and writes ``sci``, ``var`` and ``mask``
once. It does the same float32 operations in the same order as the numpy
expressions (no fused multiply-add, no reassociation: Numba's default
without ``fastmath``), so its results are bit-identical to them
(``tests/test_calibrate_kernel.py`` checks this with hypothesis).

Per pixel, with ``t`` the exposure time and ``tt = t * t`` (float32)::

    s  = data - bias - dark * t
    v  = rn2 + max(s, 0) + (bias_var + dark_var * tt)
    flat usable (finite and > 0):  v = v / (f f) + (s s) fvar / (f f);  s = s / f
    else: FLAT_INVALID bit; BAD, SATURATED bits; NONFINITE if s or v is not finite

``max`` is numpy's ``maximum`` (NaN propagates). Absent inputs are passed as
1x1 dummies with their ``has_*`` flag False.

Example
-------
>>> import numpy as np
>>> d = np.full((2, 2), 100.0, np.float32)
>>> one = np.ones((1, 1), np.float32)
>>> no = np.zeros((1, 1), np.bool_)
>>> s, v, m = calibrate_pixels(d, np.float32(4.0), one, False, d * 0.1, True, one, False,
...                            one, False, np.float32(1.0), one, False, one, False, one, False,
...                            no, False, no, False, 1, 2, 4, 8)
>>> float(s[0, 0]), float(v[0, 0]), int(m[0, 0])
(90.0, 94.0, 0)
"""

import numpy as np
from numba import njit

__all__ = ["calibrate_pixels", "merge_cosmics", "adu_to_electrons"]


@njit(cache=True, nogil=True, error_model="numpy")
def calibrate_pixels(data, rn2, rn_map, has_rn_map, bias, has_bias, bias_var, has_bias_var,
                     dark, has_dark, t, dark_var, has_dark_var, flat, has_flat,
                     flat_var, has_flat_var, bad, has_bad, saturated, has_saturated,
                     bit_bad, bit_saturated, bit_flat_invalid, bit_nonfinite):
    """Calibrated ``(sci, var, mask)`` of a frame in electrons.

    Parameters
    ----------
    data : (ny, nx) float32, e-.
    rn2 : float32, read noise squared (e-^2), used when not ``has_rn_map``.
    rn_map : (ny, nx) float32 read noise (e-) per pixel (squared here).
    bias, bias_var : (ny, nx) float32 master bias (e-) and its variance.
    dark, dark_var : (ny, nx) float32 dark current (e-/s) and its variance.
    t : float32 exposure time (s).
    flat, flat_var : (ny, nx) float32 normalised flat and its variance.
    bad, saturated : (ny, nx) bool.
    has_* : bool, whether the matching array is given (else a 1x1 dummy).
    bit_* : int, the mask bits (:mod:`crdask.calib.bits`).

    Returns
    -------
    sci, var : (ny, nx) float32; mask : (ny, nx) uint8.
    """
    ny, nx = data.shape
    sci = np.empty((ny, nx), np.float32)
    var = np.empty((ny, nx), np.float32)
    mask = np.empty((ny, nx), np.uint8)
    zero = np.float32(0.0)
    one = np.float32(1.0)
    tt = t * t
    b_bad = np.uint8(bit_bad)
    b_sat = np.uint8(bit_saturated)
    b_flat = np.uint8(bit_flat_invalid)
    b_nonfin = np.uint8(bit_nonfinite)
    for i in range(ny):
        for j in range(nx):
            s = data[i, j]
            extra = zero
            if has_bias:
                s = s - bias[i, j]
                if has_bias_var:
                    extra = extra + bias_var[i, j]
            if has_dark:
                s = s - dark[i, j] * t
                if has_dark_var:
                    extra = extra + dark_var[i, j] * tt
            if has_rn_map:
                r = rn_map[i, j]
                r2 = r * r
            else:
                r2 = rn2
            pos = s if (s >= zero or s != s) else zero   # numpy.maximum(s, 0)
            v = r2 + pos + extra
            m = np.uint8(0)
            if has_flat:
                f = flat[i, j]
                usable = np.isfinite(f) and f > zero
                if usable:
                    fv = flat_var[i, j] if has_flat_var else zero
                else:
                    f = one
                    fv = zero
                    m |= b_flat
                ff = f * f
                v = v / ff + (s * s) * fv / ff
                s = s / f
            if has_bad and bad[i, j]:
                m |= b_bad
            if has_saturated and saturated[i, j]:
                m |= b_sat
            if not (np.isfinite(s) and np.isfinite(v)):
                m |= b_nonfin
            sci[i, j] = s
            var[i, j] = v
            mask[i, j] = m
    return sci, var, mask


@njit(cache=True, nogil=True)
def merge_cosmics(sci, clean, crmask, mask, unusable_bits, cr_bit):
    """A cosmic-ray method's result merged into a calibrated frame, in one pass.

    Parameters
    ----------
    sci : (ny, nx) float32, the frame before cleaning (e-).
    clean : (ny, nx) float32, the method's cleaned frame.
    crmask : (ny, nx) bool, the method's cosmic-ray pixels.
    mask : (ny, nx) uint8 mask bits.
    unusable_bits : int, bits of pixels the method may neither flag nor change.
    cr_bit : int, the COSMIC_RAY bit.

    Returns
    -------
    out : float32 ``clean``, but ``sci`` where a pixel is unusable;
    new_mask : uint8 ``mask`` with ``cr_bit`` on the flagged usable pixels;
    n : int, how many pixels got ``cr_bit``.

    Example
    -------
    >>> import numpy as np
    >>> s = np.array([[1.0, 2.0]], np.float32)
    >>> out, m, n = merge_cosmics(s, s * 0, np.array([[True, True]]),
    ...                           np.array([[0, 1]], np.uint8), 1, 8)
    >>> out.tolist(), m.tolist(), n
    ([[0.0, 2.0]], [[8, 1]], 1)
    """
    ny, nx = sci.shape
    out = np.empty((ny, nx), np.float32)
    new_mask = np.empty((ny, nx), np.uint8)
    bad_bits = np.uint8(unusable_bits)
    cr = np.uint8(cr_bit)
    n = 0
    for i in range(ny):
        for j in range(nx):
            m = mask[i, j]
            if m & bad_bits:
                out[i, j] = sci[i, j]
            else:
                out[i, j] = clean[i, j]
                if crmask[i, j]:
                    m |= cr
                    n += 1
            new_mask[i, j] = m
    return out, new_mask, n


#: ``along`` of :func:`adu_to_electrons`: which index of the block the bias
#: level follows (a row's, a column's, one number, or none).
ROWS, COLUMNS, SCALAR, NO_LEVEL = 0, 1, 2, -1


@njit(cache=True, nogil=True)
def adu_to_electrons(block, level, along, offset, gain):
    """A raw block's overscan level, a constant offset and the gain, in one pass.

    Per pixel, with ``b`` the level of the pixel's row (``along=ROWS``),
    column (``COLUMNS``) or ``level[0]`` (``SCALAR``)::

        x = float32(float64(block) - b)     (NO_LEVEL: x = float32(block))
        out = (x - offset) * gain           (float32 operations)

    These are the roundings of the numpy expressions it replaces
    (``(block.astype(float64) - model[:, None]).astype(float32)``, then
    ``- np.float32(offset)`` and ``* np.float32(gain)``): the same bits, without
    their two float64 and two float32 temporaries of the frame's size.
    ``offset=0`` and ``gain=1`` change nothing (``x - 0`` and ``x * 1`` are
    ``x`` for every float, NaN and -0.0 included).

    Parameters
    ----------
    block : (ny, nx) real array, ADU (float32 raw values; any real dtype with
        a level).
    level : (n,) float64, the bias level in ADU: one per row (n = ny), per
        column (n = nx) or ``level[0]``; unused with ``NO_LEVEL``.
    along : int, ``ROWS``, ``COLUMNS``, ``SCALAR`` or ``NO_LEVEL``.
    offset : float32, ADU subtracted after the level (0: none).
    gain : float32, e-/ADU (1: ADU out).

    Returns
    -------
    (ny, nx) float32, e- (ADU with ``gain=1``).

    Example
    -------
    >>> import numpy as np
    >>> b = np.array([[101.0, 103.0], [99.0, 97.0]], np.float32)
    >>> adu_to_electrons(b, np.array([100.0, 98.0]), ROWS, np.float32(0), np.float32(2)).tolist()
    [[2.0, 6.0], [2.0, -2.0]]
    """
    ny, nx = block.shape
    out = np.empty((ny, nx), np.float32)
    for i in range(ny):
        for j in range(nx):
            if along == NO_LEVEL:
                x = np.float32(block[i, j])
            elif along == ROWS:
                x = np.float32(np.float64(block[i, j]) - level[i])
            elif along == COLUMNS:
                x = np.float32(np.float64(block[i, j]) - level[j])
            else:
                x = np.float32(np.float64(block[i, j]) - level[0])
            out[i, j] = (x - offset) * gain
    return out
