"""Seeded raw CCD frames as an instrument writes them, with the truth kept apart.

:func:`simulate_raw` draws one raw frame -- ``bias``, ``dark``, ``flat`` or
``science`` -- for a :class:`Detector`: unsigned 16-bit ADU (stored as int16
with ``BZERO = 32768``, as real cameras write them), an overscan strip, a
structured bias, dark current with hot pixels and a bad column, a per-filter
flat-field response and, on darks and science frames, cosmic rays (CRs) with
their true mask. The header carries what an observer's instrument writes
(IMAGETYP, EXPTIME, FILTER, GAIN, RDNOISE, DATASEC, BIASSEC, ...) and nothing
of the truth, which is returned separately in :attr:`RawSimulation.truth`.

The star field and the CR shapes are those of :mod:`crdask.simulate.frame`
(its internals are reused, not copied).

Geometry
--------
Arrays are ``(y, x)``. The raw array is ``[prescan | imaging | overscan]``
along x and ``[imaging ; overscan rows]`` along y (overscan rows at the top,
i.e. read last). ``Detector.shape`` is the *unbinned* imaging area; with
``binning = (bx, by)`` (CCDSUM order: x first) the imaging area written is
``(ny // by, nx // bx)`` and every fixed pattern (flat, hot pixels, bias
columns) is drawn at that output resolution. Prescan/overscan widths are in
output pixels. Header sections use the FITS convention ``[x1:x2,y1:y2]``,
1-based, inclusive: ``DATASEC = TRIMSEC`` is the imaging area and ``BIASSEC``
the overscan columns (the prescan if there are no overscan columns, the
overscan rows if there are neither).

Signal model (per output pixel, electrons)
------------------------------------------
``expected = t * (sky + stars) * flat + t * dark_current`` for science frames,
``t * lamp * flat + t * dark_current`` for flats, ``t * dark_current`` for
darks and 0 for biases; ``electrons = Poisson(expected) + Poisson(crcharge)``;
then ``ADU = round(electrons / gain + bias + Normal(0, readnoise) / gain)``
clipped to ``0..saturation`` (65535: the ADC limit, ``SATURATE``). The bias
(ADU) is ``bias_level + ramp(y) + column pattern + per-frame offset``: the
ramp (a fast transient on the first rows plus a slow linear trend along the
readout direction, y) is in every column, prescan and overscan included, so a
row-by-row overscan fit removes it; the fixed column pattern is in the imaging
columns only (a master bias removes it); the per-frame offset (``bias_drift``
rms) is what overscan subtraction removes. There is no bleeding, charge
transfer inefficiency or non-linearity.

Rates are per *output* pixel: sky, lamp and dark current are given per
unbinned pixel and multiplied by ``bx * by``. CR events arrive at
``cr_rate`` per second per 512 x 512 unbinned pixels (default 0.5, i.e. the
density :func:`~crdask.simulate.frame.simulate_frame` uses at 300 s --
about 30 times a sea-level muon rate, so that CR detection can be measured on
small frames); their footprints are those of ``frame.py`` on the output grid.
Flats (a few seconds long) and biases get no CRs. The CR truth rule is that
of ``frame.py``: a pixel is a true CR pixel when the expected CR charge
exceeds ``cr_threshold`` times ``sqrt(expected + readnoise**2)`` (e-) and the
pixel would not be saturated without the CR.

Determinism: the fixed patterns are a function of the :class:`Detector`
(including ``Detector.seed``) only; everything that changes from frame to
frame (noise, CRs, bias offset, lamp level, the star field when ``scene`` is
not given) is a function of ``seed``. No global random state is touched.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

from .._version import __version__
from . import frame as _frame
from .detector import (Detector, bias_model, dark_current_map, filter_hash,
                       flat_response)

__all__ = [
    "Detector",
    "RawSimulation",
    "StarField",
    "simulate_raw",
    "make_star_field",
    "bias_model",
    "dark_current_map",
    "flat_response",
    "default_sky",
    "default_flat_level",
    "default_flat_exptime",
    "KINDS",
]

#: Canonical frame kinds and the aliases :func:`simulate_raw` accepts.
KINDS = {"bias": "bias", "zero": "bias", "dark": "dark", "flat": "flat",
         "domeflat": "flat", "science": "science", "object": "science", "arc": "arc",
         "wave": "arc"}
#: Default IMAGETYP / OBSTYPE per canonical kind.
IMAGETYP = {"bias": "BIAS", "dark": "DARK", "flat": "FLAT", "science": "OBJECT",
            "arc": "WAVE,LAMP"}

#: Sky, e-/s per unbinned pixel, per filter (others: 1.0).
SKY_RATE = {"U": 0.3, "B": 0.5, "V": 1.0, "R": 1.5, "I": 3.0}
#: Dome-flat level, ADU above bias at unit flat response, per filter
#: (others: 20000-30000 from a hash of the name).
FLAT_LEVEL = {"U": 20000.0, "B": 22000.0, "V": 25000.0, "R": 28000.0, "I": 30000.0}
#: Dome-flat exposure time, s, per filter (others: 5).
FLAT_EXPTIME = {"U": 20.0, "B": 8.0, "V": 5.0, "R": 4.0, "I": 3.0}
#: Default start of the observations (DATE-OBS of a frame without ``date_obs``).
DEFAULT_DATE_OBS = "2024-03-15T18:00:00.000"


def default_sky(filter):
    """Default sky rate for ``filter``, e- per second per unbinned pixel."""
    return SKY_RATE.get(str(filter), 1.0)


def default_flat_level(filter):
    """Default dome-flat level for ``filter``, ADU above bias (20000-30000)."""
    f = str(filter)
    if f in FLAT_LEVEL:
        return FLAT_LEVEL[f]
    return 20000.0 + float(filter_hash(f) % 10001)


def default_flat_exptime(filter):
    """Default dome-flat exposure time for ``filter``, s."""
    return FLAT_EXPTIME.get(str(filter), 5.0)


@dataclass(frozen=True)
class StarField:
    """Stars on the imaging area: centres ``x``, ``y`` (output px, pixel
    centres at integers), total ``flux`` in e-/s (before the flat), and the
    Gaussian PSF ``fwhm`` (output px). Shared by the frames of a group."""

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    fwhm: float = 3.0

    def scaled(self, factor):
        """The same stars with fluxes times ``factor`` (scalar or per star)."""
        return dataclasses.replace(self, flux=self.flux * np.asarray(factor, dtype=float))

    def to_arrays(self):
        return {"x": self.x, "y": self.y, "flux": self.flux,
                "fwhm": np.float64(self.fwhm)}


def make_star_field(detector: Detector | None = None, seed=0, *, exptime=300.0,
                    filter="V", sky=None, n_stars=None, n_saturated=2,
                    fwhm=3.0) -> StarField:
    """Random stars for ``detector``, as :func:`~crdask.simulate.frame.simulate_frame`
    draws them: ``n_stars`` (default 200 per 512 x 512 output px) whose
    brightest pixel, in an ``exptime`` exposure, holds log-uniform 1 sky sigma
    to 90% of the headroom below saturation, plus ``n_saturated`` stars 3-30
    times brighter than the headroom. ``sky`` is in e-/s per unbinned pixel
    (default :func:`default_sky`)."""
    detector = Detector() if detector is None else detector
    ny, nx = detector.image_shape
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7]))
    n_stars = (int(round(_frame.STARS_PER_512SQ * ny * nx / 512.0 ** 2))
               if n_stars is None else int(n_stars))
    n_saturated = int(n_saturated)
    if min(n_stars, n_saturated) < 0:
        raise ValueError("n_stars and n_saturated must be >= 0")
    exptime = float(exptime)
    if not exptime > 0:
        raise ValueError(f"exptime must be > 0 s, got {exptime}")
    sky = default_sky(filter) if sky is None else float(sky)
    sky_e = sky * detector.bin_area * exptime
    rn = detector.readnoise
    headroom = (detector.saturation - detector.bias_level) * detector.gain - sky_e
    if headroom <= 0:
        raise ValueError("the sky saturates the detector in this exposure time")
    sky_sigma = math.sqrt(sky_e + rn ** 2)
    sigma = float(fwhm) / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    n_all = n_stars + n_saturated
    xs = rng.uniform(-2.0, nx + 1.0, n_all)
    ys = rng.uniform(-2.0, ny + 1.0, n_all)
    lo = min(sky_sigma, 0.5 * headroom)
    peaks = np.exp(rng.uniform(math.log(lo), math.log(0.9 * headroom), n_all))
    peaks[n_stars:] = headroom * np.exp(rng.uniform(math.log(3), math.log(30), n_saturated))
    frac = _peak_fraction(xs, ys, sigma)
    flux = peaks / frac / exptime
    return StarField(x=xs, y=ys, flux=flux, fwhm=float(fwhm))


def _peak_fraction(x, y, sigma):
    """Fraction of a unit-flux star at (x, y) (arrays) in its nearest pixel,
    computed as :func:`crdask.simulate.frame._pixel_fractions` does."""
    def frac(c):
        c = np.asarray(c, dtype=np.float64)
        lo = np.round(c)                      # half to even, like round()
        s = math.sqrt(2.0) * sigma
        hi_cdf = _frame.erf_array((lo + 0.5 - c) / s).astype(np.float64)
        lo_cdf = _frame.erf_array((lo - 0.5 - c) / s).astype(np.float64)
        return 0.5 * (hi_cdf - lo_cdf)
    return frac(x) * frac(y)


def _render_stars(img, stars: StarField, exptime, dx, dy, floor):
    """Add ``stars`` (e- in ``exptime``), shifted by (dx, dy) px, to ``img``."""
    sigma = stars.fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    xs, ys = stars.x + dx, stars.y + dy
    peaks = stars.flux * exptime * _peak_fraction(xs, ys, sigma)
    for x, y, peak in zip(xs.tolist(), ys.tolist(), peaks.tolist()):
        if peak > 0:
            _frame.add_star(img, x, y, peak, sigma, floor)


# ---------------------------------------------------------------------------
# raw frames


@dataclass
class RawSimulation:
    """A raw frame and its truth.

    hdu : ``fits.PrimaryHDU`` with uint16 data (written as int16 with
        ``BZERO = 32768``) of shape ``detector.raw_shape``.
    truth : dict (never written into the raw file):
        ``crmask`` bool, imaging area -- true CR pixels (all False without CRs);
        ``crcharge`` float32 e-, imaging area -- expected CR charge;
        ``electrons`` float32 e-, imaging area -- expected (noise-free)
        electrons without CRs: ``t * (sky + stars) * flat + t * dark``;
        ``scene`` float32 e-, imaging area -- the light before the flat,
        ``t * (sky + stars)`` (the ideal calibrated image; lamp for flats;
        zeros for bias/dark);
        ``bias`` float32 ADU, whole raw array -- true bias incl. the offset;
        ``flat`` (flats and science only) and ``dark_current`` (e-/s) --
        the detector's patterns, read-only;
        scalars ``gain``, ``readnoise``, ``bias_offset`` (ADU), ``exptime``,
        ``n_cosmics`` (events deposited), ``lamp_scale`` (flats),
        ``dither`` ((dx, dy) px, science), ``kind``, ``seed``.
    header : the FITS header (the same object as ``hdu.header``).
    """

    hdu: fits.PrimaryHDU
    truth: dict
    header: fits.Header = field(repr=False)

    @property
    def data(self):
        return self.hdu.data


def _format_date(date_obs):
    if date_obs is None:
        return DEFAULT_DATE_OBS
    if isinstance(date_obs, _dt.datetime):
        return date_obs.strftime("%Y-%m-%dT%H:%M:%S.") + f"{date_obs.microsecond // 1000:03d}"
    return str(date_obs)


def simulate_raw(kind, detector: Detector | None = None, *, exptime=None, filter=None,
                 seed=0, sky=None, scene: StarField | None = None, dither=(0.0, 0.0),
                 cosmics=True, date_obs=None, object=None, imagetyp=None,
                 flat_level=None, cr_threshold=3.0, light=None, extra_crcharge=None,
                 extra_header=None) -> RawSimulation:
    """Simulate one raw frame.

    Parameters
    ----------
    kind : ``'bias'`` (alias ``'zero'``), ``'dark'``, ``'flat'`` (``'domeflat'``)
        or ``'science'`` (``'object'``).
    detector : :class:`Detector` (default ``Detector()``, 2048 x 2048).
    exptime : s. Default 0 for bias (forced), 300 for dark and science,
        :func:`default_flat_exptime` for flats.
    filter : FILTER keyword; default ``'V'`` for flats and science, ``'NONE'``
        for bias and dark.
    seed : int >= 0; the frame is a deterministic function of it and of the
        other arguments (written as ``SIMSEED``).
    sky : science sky, e-/s per unbinned pixel (default :func:`default_sky`).
    scene : :class:`StarField` for science frames; default: drawn from
        ``seed`` with :func:`make_star_field` (share one between the frames
        of a group to get equivalent exposures).
    dither : (dx, dy) px by which the scene is shifted in this frame.
    cosmics : add CRs to darks and science frames (rate ``detector.cr_rate``
        times ``exptime``); flats and biases never get any.
    date_obs : DATE-OBS (ISO string or datetime).
    object : OBJECT (default ``'Bias'``, ``'Dark'``, ``'Dome flat <filter>'``,
        ``'field'``).
    imagetyp : IMAGETYP override (e.g. ``'zero'``); default BIAS, DARK, FLAT,
        OBJECT. OBSTYPE always carries the default.
    flat_level : dome level, ADU above bias at unit response (default
        :func:`default_flat_level`); each flat varies by 1% rms around it.
    cr_threshold : CR truth threshold, noise sigmas (see module docstring).
    light : optional array, imaging-area shape, e-/s per output pixel before
        the flat: replaces the lamp (flats), the sky and stars (science), and
        is the only light of an ``'arc'`` frame (spectra: see
        :mod:`crdask.simulate.longslit`). Required for arcs.
    extra_crcharge : optional array, imaging-area shape, e-: CR charge added
        to this frame's own CRs (same pixels in two frames: "double hits").
    extra_header : optional dict of header cards to add (e.g. DISPAXIS).
    """
    if str(kind).lower() not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    kind = KINDS[str(kind).lower()]
    detector = Detector() if detector is None else detector
    if not isinstance(detector, Detector):
        raise TypeError(f"detector must be a Detector, got {type(detector).__name__}")
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if kind == "bias":
        if exptime not in (None, 0, 0.0):
            raise ValueError(f"a bias has exptime 0, got {exptime}")
        exptime = 0.0
    elif exptime is None:
        exptime = default_flat_exptime(filter or "V") if kind == "flat" else 300.0
    exptime = float(exptime)
    if exptime < 0 or not math.isfinite(exptime):
        raise ValueError(f"exptime must be >= 0 s, got {exptime}")
    if filter is None:
        filter = "V" if kind in ("flat", "science") else "NONE"
    filter = str(filter)

    s_noise, s_rn, s_cr, s_crnoise, s_frame, s_scene = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6))
    ny, nx = detector.image_shape
    gain, rn = float(detector.gain), float(detector.readnoise)
    truth = {"kind": kind, "seed": seed, "gain": gain, "readnoise": rn, "exptime": exptime}

    # -- expected electrons, imaging area -------------------------------------
    scene_e = None
    dark = dark_current_map(detector)
    if kind == "arc" and light is None:
        raise ValueError("an arc frame needs light= (the lamp spectrum, e-/s per pixel)")
    if light is not None:
        light = np.asarray(light, dtype=np.float64)
        if light.shape != (ny, nx):
            raise ValueError(f"light must have the imaging shape {(ny, nx)}, "
                             f"got {light.shape}")
    if kind == "bias":
        expected = None
    elif kind == "dark":
        expected = dark.astype(np.float64) * exptime
    elif light is not None:
        flat = flat_response(detector, filter)
        truth["flat"] = flat
        scale = 1.0
        if kind == "flat":
            scale = float(1.0 + 0.01 * s_frame.standard_normal())
            truth["lamp_scale"] = scale
        if kind == "science":
            truth["dither"] = tuple(float(v) for v in dither)
        scene_e = light * (exptime * scale)
        expected = scene_e * flat
        expected += dark * exptime
    else:
        flat = flat_response(detector, filter)
        truth["flat"] = flat
        if kind == "flat":
            level = default_flat_level(filter) if flat_level is None else float(flat_level)
            lamp_scale = float(1.0 + 0.01 * s_frame.standard_normal())
            truth["lamp_scale"] = lamp_scale
            scene_e = np.full((ny, nx), level * gain * lamp_scale, dtype=np.float64)
        else:
            sky_rate = (default_sky(filter) if sky is None else float(sky)) * detector.bin_area
            scene_e = np.full((ny, nx), sky_rate * exptime, dtype=np.float64)
            if scene is None:
                scene = make_star_field(detector, int(s_scene.integers(2 ** 31)),
                                        exptime=max(exptime, 1.0), filter=filter,
                                        sky=sky)
            dx, dy = (float(v) for v in dither)
            truth["dither"] = (dx, dy)
            floor = 0.1 * math.sqrt(sky_rate * exptime + rn ** 2) if rn or sky_rate else 0.1
            _render_stars(scene_e, scene, exptime, dx, dy, max(floor, 0.1))
        expected = scene_e * flat
        expected += dark * exptime
    truth["dark_current"] = dark

    # -- cosmic rays -------------------------------------------------------------
    crcharge = np.zeros((ny, nx), dtype=np.float64)
    n_cr = 0
    if cosmics and kind in ("dark", "science") and exptime > 0:
        mean = detector.cr_rate * exptime * detector.shape[0] * detector.shape[1] / 512.0 ** 2
        n_cr = int(s_cr.poisson(mean))
        kinds = s_cr.choice(3, size=n_cr, p=_frame.CR_KIND_FRACTIONS)
        qs = np.exp(s_cr.uniform(*np.log(_frame.CR_PEAK_RANGE), n_cr))
        for k, q in zip(kinds, qs):
            _frame.deposit_cosmic(crcharge, s_cr, _frame.CR_KINDS[k], q)
    if extra_crcharge is not None:
        extra = np.asarray(extra_crcharge, dtype=np.float64)
        if extra.shape != (ny, nx):
            raise ValueError(f"extra_crcharge must have the imaging shape {(ny, nx)}")
        crcharge += extra
        n_cr += 1 if np.any(extra > 0) else 0
    truth["n_cosmics"] = n_cr

    # -- electrons -> ADU ---------------------------------------------------------
    offset = float(detector.bias_drift * s_frame.standard_normal())
    truth["bias_offset"] = offset
    bias = bias_model(detector) + np.float32(offset)
    ys, xs = detector.data_slice
    rn_adu = s_rn.standard_normal(detector.raw_shape, dtype=np.float32)
    # per raw column: each amplifier's read noise (ADU) and, on the imaging
    # columns, its gain
    rn_col = np.empty(detector.raw_shape[1], np.float32)
    gain_col = np.empty(nx, np.float32)
    for amp in detector.amps():
        rn_col[amp["bias"][1] if amp["bias"] is not None else slice(0, 0)] = \
            amp["readnoise"] / amp["gain"]
        rn_col[amp["data"][1]] = amp["readnoise"] / amp["gain"]
        cs = amp["data"][1]
        gain_col[cs.start - xs.start:cs.stop - xs.start] = amp["gain"]
    if detector.amplifiers == 1:
        rn_col[:] = np.float32(rn / gain)      # prescan/overscan rows too
        gain_col[:] = np.float32(gain)
    rn_adu *= rn_col[None, :]
    adu = bias + rn_adu
    if expected is not None:
        electrons = s_noise.poisson(expected).astype(np.float32)
    else:
        electrons = np.zeros((ny, nx), dtype=np.float32)
    touched = crcharge > 0
    crmask = np.zeros((ny, nx), dtype=bool)
    if n_cr:
        gmap = np.broadcast_to(gain_col[None, :], (ny, nx))
        clean_t = (electrons[touched] / gmap[touched] + adu[ys, xs][touched])
        model_t = expected[touched] if expected is not None else 0.0
        crmask[touched] = ((crcharge[touched] > cr_threshold * np.sqrt(model_t + rn ** 2))
                           & (np.rint(clean_t) < detector.saturation))
        electrons[touched] += s_crnoise.poisson(crcharge[touched]).astype(np.float32)
    adu[ys, xs] += electrons / gain_col[None, :]
    np.rint(adu, out=adu)
    np.clip(adu, 0, detector.saturation, out=adu)
    data = adu.astype(np.uint16)

    truth["crmask"] = crmask
    truth["crcharge"] = crcharge.astype(np.float32)
    truth["electrons"] = (np.zeros((ny, nx), np.float32) if expected is None
                          else expected.astype(np.float32))
    truth["scene"] = (np.zeros((ny, nx), np.float32) if scene_e is None
                      else scene_e.astype(np.float32))
    truth["bias"] = bias

    header = _raw_header(kind, detector, exptime=exptime, filter=filter, seed=seed,
                         date_obs=date_obs, object=object, imagetyp=imagetyp)
    for key, value in (extra_header or {}).items():
        header[key] = value
    hdu = fits.PrimaryHDU(data=data, header=header)
    return RawSimulation(hdu=hdu, truth=truth, header=hdu.header)


def _raw_header(kind, detector, *, exptime, filter, seed, date_obs, object, imagetyp):
    h = fits.Header()
    if object is None:
        object = {"bias": "Bias", "dark": "Dark", "flat": f"Dome flat {filter}",
                  "science": "field", "arc": "Arc"}[kind]
    h["INSTRUME"] = (detector.instrument, "instrument")
    h["DETECTOR"] = ("SIMCCD", "detector")
    h["IMAGETYP"] = (IMAGETYP[kind] if imagetyp is None else str(imagetyp), "image type")
    h["OBSTYPE"] = (IMAGETYP[kind], "observation type")
    h["OBJECT"] = (str(object), "object name")
    h["DATE-OBS"] = (_format_date(date_obs), "UTC start of exposure")
    h["EXPTIME"] = (float(exptime), "[s] exposure time")
    h["DARKTIME"] = (float(exptime), "[s] dark time")
    h["FILTER"] = (filter, "filter")
    if detector.amplifiers == 1:
        h["GAIN"] = (float(detector.gain), "[e-/ADU] gain")
        h["RDNOISE"] = (float(detector.readnoise), "[e-] read noise")
    else:
        h["NAMPS"] = (detector.amplifiers, "amplifiers read out")
        for n, amp in enumerate(detector.amps(), 1):
            h[f"GAIN{n}"] = (round(amp["gain"], 6), f"[e-/ADU] gain, amplifier {n}")
            h[f"RDNOISE{n}"] = (round(amp["readnoise"], 6),
                                f"[e-] read noise, amplifier {n}")
    h["SATURATE"] = (int(detector.saturation), "[ADU] saturation level")
    for key, value in detector.sections().items():
        h[key] = (value, {"DATASEC": "imaging area", "TRIMSEC": "section to keep",
                          "BIASSEC": "overscan region"}.get(
                              key, f"amplifier {key[-1]} " + (
                                  "imaging area" if key.startswith("DATA") else "overscan")))
    h["CCDSUM"] = (detector.ccdsum, "binning x y")
    h["BUNIT"] = ("adu", "raw counts")
    h["SIMSEED"] = (int(seed), "crdask.simulate seed of this frame")
    h["SIMDET"] = (int(detector.seed), "crdask.simulate detector seed")
    h["ORIGIN"] = (f"crdask {__version__} simulate_raw", "")
    return h
