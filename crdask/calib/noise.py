"""Gain and read noise from a night's own flats and biases (layer 2).

Janesick's photon-transfer method ("Photon Transfer", SPIE PM170, 2007,
ch. 5; Janesick, "Scientific Charge-Coupled Devices", 2001): for two flats
``F1, F2`` of (nearly) the same level and two biases ``B1, B2``, all in ADU,

    gain      = ((mean F1 + mean F2) - (mean B1 + mean B2))
                / (var(F1 - F2) - var(B1 - B2))              [e-/ADU]
    readnoise = gain * std(B1 - B2) / sqrt(2)                [e-]

Differencing two frames removes everything fixed (bias structure, flat-field
pattern, dust, hot pixels); what is left is shot noise plus read noise.

Implementation choices (each is a decision an observer may want to know):

* Statistics are taken in ``region`` (default: the central half of each axis,
  i.e. a quarter of the pixels, away from vignetted or badly illuminated edges).
* Variances of the difference images are *robust*: iterative 3-sigma clipping
  about the median (cosmic rays, hot pixels and single defects are rejected),
  then corrected for the truncation of a Gaussian at the final clip limit (a
  3-sigma clip alone would lower a Gaussian's variance by ~3 % and bias the
  gain high by as much). Means are plain means of the region.
* Flats of slightly different level (up to 10 % when paired automatically) are
  differenced after scaling: ``d = (F1 - B) - a (F2 - B)`` with
  ``a = S1 / S2`` (``S`` = flat level above the bias ``B``), which cancels the
  flat-field pattern exactly; then
  ``gain = S1 (1 + a) / (var(d) - (1 + a^2)/2 var(B1 - B2))``. For ``a = 1``
  this is the formula above.
* Read noise includes the ADC's quantisation noise (1/12 ADU^2), which is part
  of the noise of a raw frame.
* Pairs are combined by the mean; the quoted error is the standard error of
  the mean over pairs, but never less than the statistical error expected from
  the number of pixels (with 2-3 pairs the scatter alone can be accidentally
  tiny). Read noise of flat pairs that share a bias pair is correlated.
"""

import math
import numbers
from dataclasses import dataclass

import numpy as np

from .overscan import as_slices

__all__ = ["GainReadnoise", "gain_readnoise", "compare_with_header", "robust_variance"]

#: Two flats are paired automatically when their levels above the bias differ
#: by at most this fraction of their mean level.
PAIR_LEVEL_TOLERANCE = 0.10
#: A flat whose median is above this fraction of ``satlevel`` is too near
#: saturation (non-linear, clipped) for the method.
SATURATION_FRACTION = 0.80
#: ... as is a flat with more than this fraction of region pixels >= satlevel.
SATURATED_PIXEL_FRACTION = 0.001


@dataclass
class GainReadnoise:
    """Result of :func:`gain_readnoise`.

    Attributes
    ----------
    gain, gain_err : float
        Gain and its 1-sigma error, e-/ADU.
    readnoise, readnoise_err : float
        Read noise and its 1-sigma error, e- (rms per pixel).
    n_pairs : int
        Number of flat pairs used.
    per_pair : astropy.table.Table
        One row per flat pair: indices ``flat1, flat2, bias1, bias2``;
        ``level`` (mean flat level above bias, ADU); ``ratio`` (S1/S2);
        ``var_flat_diff``, ``var_bias_diff`` (robust variances of the
        difference images, ADU^2); ``gain``, ``gain_err`` (e-/ADU);
        ``readnoise``, ``readnoise_err`` (e-); ``npix``.
    """

    gain: float
    gain_err: float
    readnoise: float
    readnoise_err: float
    n_pairs: int
    per_pair: object

    def __str__(self):
        return (f"gain {self.gain:.3f} ± {self.gain_err:.3f} e-/ADU, read noise "
                f"{self.readnoise:.2f} ± {self.readnoise_err:.2f} e- "
                f"({self.n_pairs} flat pair{'s' if self.n_pairs != 1 else ''})")


# --------------------------------------------------------------------------
# robust variance
# --------------------------------------------------------------------------

def _truncated_variance_ratio(a):
    """Variance of a unit Gaussian truncated to |x| <= a."""
    if a > 12:
        return 1.0
    phi = math.exp(-0.5 * a * a) / math.sqrt(2 * math.pi)
    mass = math.erf(a / math.sqrt(2))
    return 1.0 - 2.0 * a * phi / mass


def robust_variance(values, sigma=3.0, maxiters=20):
    """Variance of ``values`` after iterative sigma clipping, corrected for the
    Gaussian truncation at the final clip limit.

    Parameters
    ----------
    values : array_like
        Any shape; non-finite values are ignored.
    sigma : float
        Clip limit in standard deviations about the median.
    maxiters : int
        Maximum clipping passes.

    Returns
    -------
    (variance, n) : (float, int)
        Variance in the units of ``values`` squared, and the number of values
        kept. For Gaussian data with outliers it estimates the Gaussian's
        variance without bias.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size < 2:
        return float("nan"), int(x.size)
    keep = x
    limit = np.inf
    for _ in range(int(maxiters)):
        centre = np.median(keep)
        limit = sigma * keep.std()
        new = x[np.abs(x - centre) <= limit]
        if new.size == keep.size:
            break
        keep = new
    v = float(keep.var())
    if not (v > 0 and np.isfinite(limit)):
        return v, int(keep.size)
    s = math.sqrt(v)
    for _ in range(100):  # solve v = s^2 * r(limit / s) for s
        s_new = math.sqrt(v / _truncated_variance_ratio(limit / s))
        if abs(s_new - s) <= 1e-12 * s:
            s = s_new
            break
        s = s_new
    return s * s, int(keep.size)


# --------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------

def _frames(frames, kind):
    plural = "biases" if kind == "bias" else kind + "s"
    if isinstance(frames, np.ndarray) and frames.ndim == 3:
        frames = list(frames)
    try:
        frames = list(frames)
    except TypeError:
        raise TypeError(f"{plural} must be a list of 2-D arrays, got "
                        f"{type(frames).__name__}") from None
    if len(frames) < 2:
        raise ValueError(f"need at least 2 {plural} for the photon-transfer method, "
                         f"got {len(frames)}")
    for i, f in enumerate(frames):
        if getattr(f, "ndim", np.ndim(f)) != 2:
            raise ValueError(f"{kind} {i} is not a 2-D image: shape {np.shape(f)}")
    return frames


def _pixels(frame, sy, sx):
    """Region of a frame as float64 numpy (computes a Dask slice)."""
    part = frame[sy, sx]
    if hasattr(part, "compute"):
        part = part.compute()
    return np.asarray(part, dtype=np.float64)


def _default_satlevel(flats):
    dt = getattr(flats[0], "dtype", None)
    if dt is not None and np.issubdtype(dt, np.integer) and np.dtype(dt).itemsize <= 2:
        return float(np.iinfo(dt).max)
    return 65535.0


def _auto_flat_pairs(levels):
    """Greedy pairing of neighbours in level within PAIR_LEVEL_TOLERANCE."""
    order = np.argsort(levels, kind="stable")
    pairs = []
    i = 0
    while i < len(order) - 1:
        a, b = int(order[i]), int(order[i + 1])
        la, lb = levels[a], levels[b]
        if abs(la - lb) <= PAIR_LEVEL_TOLERANCE * 0.5 * (la + lb):
            pairs.append((a, b))
            i += 2
        else:
            i += 1
    return pairs


def _check_index(i, n, kind):
    if not isinstance(i, numbers.Integral) or not 0 <= i < n:
        raise ValueError(f"pairs: {kind} index {i!r} out of range 0..{n - 1}")
    return int(i)


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------

def gain_readnoise(flats, biases, *, region=None, pairs=None, satlevel=None):
    """Measure gain and read noise from pairs of flats and biases.

    Parameters
    ----------
    flats : sequence of 2-D arrays, shape (ny, nx), ADU
        Raw (overscan not subtracted, or all treated alike) flat fields; at
        least 2. numpy or Dask arrays (only ``region`` is read).
    biases : sequence of 2-D arrays, shape (ny, nx), ADU
        Raw bias frames, same shape and treatment as the flats; at least 2.
    region : str, Section or (slice_y, slice_x), optional
        Where to measure (FITS section string or slices, as in
        :mod:`crdask.calib.overscan`). Default: the central half of each axis.
    pairs : sequence of tuples, optional
        ``(i, j)`` flat indices, or ``(i, j, k, l)`` flat and bias indices.
        Default: flats sorted by level and neighbours paired when their levels
        differ by at most 10 %; biases paired in the given order (0, 1),
        (2, 3), ...; flat pair ``n`` uses bias pair ``n mod (number of bias
        pairs)``.
    satlevel : float, optional
        Saturation level of the raw frames, ADU. Default: the maximum of an
        8- or 16-bit integer dtype, else 65535 (16-bit ADC).

    Returns
    -------
    GainReadnoise
        ``gain`` (e-/ADU), ``gain_err``, ``readnoise`` (e-),
        ``readnoise_err``, ``n_pairs`` and the ``per_pair`` table.

    Raises
    ------
    ValueError
        One line naming the problem: fewer than 2 flats or biases, frames not
        2-D or of different shapes, no flats of similar level, a flat too near
        saturation (median above 80 % of ``satlevel`` or >0.1 % of pixels at
        it), or too faint (not above the bias, or photon noise below read
        noise).
    """
    from astropy.table import Table

    flats = _frames(flats, "flat")
    biases = _frames(biases, "bias")
    shape = tuple(flats[0].shape)
    for kind, frames in (("flat", flats), ("bias", biases)):
        for i, f in enumerate(frames):
            if tuple(f.shape) != shape:
                raise ValueError(f"{kind} {i} has shape {tuple(f.shape)} but flat 0 has "
                                 f"{shape}: all frames must have the same shape")
    if region is None:
        ny, nx = shape
        region = (slice(ny // 4, ny // 4 + max(ny // 2, 1)),
                  slice(nx // 4, nx // 4 + max(nx // 2, 1)))
    sy, sx = as_slices(region, shape, where="gain_readnoise region")
    if satlevel is None:
        satlevel = _default_satlevel(flats)
    satlevel = float(satlevel)

    F = [_pixels(f, sy, sx) for f in flats]
    B = [_pixels(b, sy, sx) for b in biases]
    bias_median = float(np.median([np.nanmedian(b) for b in B]))

    # --- flats: saturation and level ------------------------------------
    levels = []
    for i, f in enumerate(F):
        med = float(np.nanmedian(f))
        if med >= SATURATION_FRACTION * satlevel:
            raise ValueError(f"flat {i}: median {med:.0f} ADU is above "
                             f"{SATURATION_FRACTION:.0%} of satlevel {satlevel:.0f} ADU: "
                             "too near saturation for the photon-transfer method")
        frac = float(np.mean(f >= satlevel))
        if frac > SATURATED_PIXEL_FRACTION:
            raise ValueError(f"flat {i}: {frac:.2%} of the region's pixels are at or "
                             f"above satlevel {satlevel:.0f} ADU: saturated")
        if not med > bias_median:
            raise ValueError(f"flat {i}: median {med:.1f} ADU is not above the bias "
                             f"level {bias_median:.1f} ADU: too faint")
        levels.append(med - bias_median)

    # --- pairs -------------------------------------------------------------
    bias_pairs = [(k, k + 1) for k in range(0, len(B) - 1, 2)]
    if pairs is None:
        flat_pairs = _auto_flat_pairs(levels)
        if not flat_pairs:
            lv = ", ".join(f"{v:.0f}" for v in levels)
            raise ValueError(f"no two flats within {PAIR_LEVEL_TOLERANCE:.0%} in level "
                             f"(levels above bias: {lv} ADU): take flats in pairs")
        quads = [(i, j) + bias_pairs[n % len(bias_pairs)]
                 for n, (i, j) in enumerate(flat_pairs)]
    else:
        quads = []
        for n, p in enumerate(pairs):
            p = tuple(p)
            if len(p) == 2:
                p = p + bias_pairs[n % len(bias_pairs)]
            if len(p) != 4:
                raise ValueError(f"pairs: each entry must be (flat_i, flat_j) or "
                                 f"(flat_i, flat_j, bias_k, bias_l); got {p!r}")
            i, j = (_check_index(v, len(F), "flat") for v in p[:2])
            k, l_ = (_check_index(v, len(B), "bias") for v in p[2:])
            if i == j or k == l_:
                raise ValueError(f"pairs: {p!r} pairs a frame with itself")
            quads.append((i, j, k, l_))
        if not quads:
            raise ValueError("pairs: empty list")

    # --- per pair ------------------------------------------------------------
    rows = []
    for i, j, k, l_ in quads:
        b1, b2 = B[k], B[l_]
        bias_level = 0.5 * (np.nanmean(b1) + np.nanmean(b2))
        s1 = float(np.nanmean(F[i]) - bias_level)
        s2 = float(np.nanmean(F[j]) - bias_level)
        if not (s1 > 0 and s2 > 0):
            raise ValueError(f"flats {i}, {j}: level {min(s1, s2):.1f} ADU is not above "
                             f"biases {k}, {l_}: too faint")
        a = s1 / s2
        var_b, nb = robust_variance(b1 - b2)
        var_d, nd = robust_variance((F[i] - bias_level) - a * (F[j] - bias_level))
        read_var = 0.5 * (1.0 + a * a) * var_b
        photon_var = var_d - read_var
        if not photon_var >= read_var:
            raise ValueError(
                f"flats {i}, {j}: photon noise variance {max(photon_var, 0):.3g} ADU^2 "
                f"is below the read noise variance {read_var:.3g} ADU^2 (level "
                f"{0.5 * (s1 + s2):.1f} ADU above bias): too faint")
        gain = s1 * (1.0 + a) / photon_var
        readnoise = gain * math.sqrt(0.5 * var_b)
        dvar_d = var_d * math.sqrt(2.0 / max(nd - 1, 1))
        dvar_b = var_b * math.sqrt(2.0 / max(nb - 1, 1))
        g_rel = math.hypot(dvar_d, 0.5 * (1.0 + a * a) * dvar_b) / photon_var
        rn_rel = math.hypot(g_rel, 0.5 * dvar_b / var_b)
        rows.append((i, j, k, l_, 0.5 * (s1 + s2), a, var_d, var_b, gain, gain * g_rel,
                     readnoise, readnoise * rn_rel, min(nd, nb)))

    table = Table(rows=rows, names=("flat1", "flat2", "bias1", "bias2", "level", "ratio",
                                    "var_flat_diff", "var_bias_diff", "gain", "gain_err",
                                    "readnoise", "readnoise_err", "npix"))
    table["level"].unit = "adu"
    table["var_flat_diff"].unit = table["var_bias_diff"].unit = "adu2"
    table["gain"].unit = table["gain_err"].unit = "electron/adu"
    table["readnoise"].unit = table["readnoise_err"].unit = "electron"

    def combine(values, errors):
        values = np.asarray(values, dtype=np.float64)
        n = values.size
        mean = float(values.mean())
        floor = float(np.sqrt(np.sum(np.square(errors)))) / n
        if n == 1:
            return mean, floor
        return mean, max(float(values.std(ddof=1)) / math.sqrt(n), floor)

    gain, gain_err = combine(table["gain"], table["gain_err"])
    rn, rn_err = combine(table["readnoise"], table["readnoise_err"])
    return GainReadnoise(gain=gain, gain_err=gain_err, readnoise=rn, readnoise_err=rn_err,
                         n_pairs=len(table), per_pair=table)


def _header_number(value, name):
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None, f"header {name} {value!r} is not a number: cannot compare"
    if not (v > 0 and math.isfinite(v)):
        return None, f"header {name} {value!r} is not a positive number: cannot compare"
    return v, None


def compare_with_header(result, header_gain, header_rn, tolerance=0.10):
    """Warnings where the measured gain or read noise disagrees with the header.

    Parameters
    ----------
    result : GainReadnoise
        From :func:`gain_readnoise`.
    header_gain : float or None
        Header gain (e.g. ``GAIN``), e-/ADU; ``None`` = not in the header,
        not compared.
    header_rn : float or None
        Header read noise (e.g. ``RDNOISE``/``READNOIS``), e-; ``None`` = not
        compared.
    tolerance : float
        Largest relative difference accepted silently (0.10 = 10 %).

    Returns
    -------
    list of str
        One line per disagreement, e.g. ``"gain: measured 1.52 ± 0.01 e-/ADU
        differs from the header value 1.1 e-/ADU by +38% (more than 10%)"``;
        empty when both agree.
    """
    out = []
    for name, unit, measured, err, header in (
            ("gain", "e-/ADU", result.gain, result.gain_err, header_gain),
            ("read noise", "e-", result.readnoise, result.readnoise_err, header_rn)):
        if header is None:
            continue
        value, problem = _header_number(header, name)
        if problem:
            out.append(f"{name}: {problem}")
            continue
        rel = measured / value - 1.0
        if abs(rel) > tolerance:
            out.append(f"{name}: measured {measured:.3g} ± {err:.2g} {unit} differs from "
                       f"the header value {value:g} {unit} by {rel:+.0%} (more than "
                       f"{tolerance:.0%})")
    return out
