"""Seeded synthetic CCD frames with a known cosmic-ray truth.

For tests, benchmarks and the demo: :func:`simulate_frame` draws a frame of
flat sky, Gaussian-PSF stars (some saturated), photon and read noise, and
cosmic rays (CRs) of three shapes, and returns it together with the same
frame *without* the CRs (same noise realisation) and the true CR mask.
:func:`score` measures a detected CR mask against that truth.

Conventions (see ``DESIGN.md``): arrays are ``(ny, nx)`` = ``(y, x)``; pixel
``[i, j]`` covers ``x in [j - 0.5, j + 0.5)``, ``y in [i - 0.5, i + 0.5)``.
Everything is computed in electrons (e-) in float64 and returned in ADU
(``e- / gain + bias``) as float32. Pure numpy; deterministic from ``seed``
(no global random state is touched).

Noise model
-----------
``clean = min(Poisson(sky_e + stars_e) + Normal(0, readnoise), sat_e) / gain``
(in ADU, plus ``bias``) and ``data`` adds the CR charge with its own Poisson
noise *on top of the same realisation* before clipping, so ``data - clean``
is exactly 0 on every pixel no CR touched and ``>= 0`` everywhere. Values are
not quantised to integer ADU. There is no bleeding along columns: saturated
stars are simply clipped at ``saturation`` ADU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["SimulatedFrame", "simulate_frame", "score", "label_components",
           "CR_KINDS", "deposit_cosmic"]

#: Default densities, per 512 x 512 pixels.
STARS_PER_512SQ = 200
COSMICS_PER_512SQ = 150
#: Nominal exposure time written to ``EXPTIME`` (s); ``sky`` is per frame.
EXPTIME = 300.0
#: Fractions of CR events that are single-pixel hits, blobs and tracks.
CR_KIND_FRACTIONS = (0.35, 0.35, 0.30)
#: Peak CR charge per pixel, log-uniform between these (e-).
CR_PEAK_RANGE = (300.0, 20000.0)
#: Track length range (px) and Gaussian cross-section sigma range (px).
TRACK_LENGTH_RANGE = (3.0, 30.0)
TRACK_WIDTH_RANGE = (0.2, 0.5)
#: Sub-pixel sampling (per axis) used to deposit tracks.
TRACK_OVERSAMPLE = 5

erf_array = np.frompyfunc(math.erf, 1, 1)


@dataclass
class SimulatedFrame:
    """A synthetic frame and its truth. All images have shape ``(ny, nx)``.

    data : float32, ADU -- the frame with CRs (sky + stars + noise + CRs,
        plus ``bias``), clipped at ``satlevel``.
    clean : float32, ADU -- the same frame and noise realisation without CRs.
    crmask : bool -- true CR pixels: the CR deposited more than
        ``cr_threshold`` (default 3) times the local noise sigma there and the
        pixel is not saturated in ``clean`` (see :func:`simulate_frame`).
    saturated : bool -- pixels of ``data`` at or above ``satlevel``.
    gain : e-/ADU.  readnoise : e-.  satlevel : ADU (``data`` is clipped here;
        ``satlevel * gain`` is the e- value L.A.Cosmic's ``satlevel`` wants).
    header : FITS-like keywords (str -> int/float/str): GAIN, RDNOISE,
        EXPTIME, SATURATE, NCR (CR events deposited), NCRVIS (events with at
        least one ``crmask`` pixel), NCRSING/NCRBLOB/NCRTRACK, NCRPIX,
        CRTHRESH, NSTARS, NSATSTAR, SKYLEVEL, BIASLEV, FWHM, SEED, BUNIT, ...
    crcharge : float32, e- -- expected (noise-free) CR charge per pixel.
    """

    data: np.ndarray
    clean: np.ndarray
    crmask: np.ndarray
    saturated: np.ndarray
    gain: float
    readnoise: float
    satlevel: float
    header: dict
    crcharge: np.ndarray | None = field(default=None, repr=False)


def simulate_frame(shape=(512, 512), seed=0, *, sky=200.0, gain=2.0, readnoise=5.0,
                   n_stars=None, n_cosmics=None, fwhm=2.5, saturation=60000.0,
                   n_saturated=2, bias=0.0, dtype=np.float32,
                   cr_threshold=3.0) -> SimulatedFrame:
    """Simulate one CCD frame with stars, noise and cosmic rays.

    Parameters
    ----------
    shape : (ny, nx) in pixels.
    seed : int >= 0; the whole frame is a deterministic function of it (and of
        the other arguments). Stars, noise and CRs use independent streams
        spawned from ``seed``, so e.g. changing ``n_cosmics`` leaves the stars
        and the ``clean`` noise unchanged. ``None`` draws a fresh seed, which
        is recorded in ``header['SEED']``.
    sky : flat sky level, ADU per pixel (above bias).
    gain : e-/ADU.  readnoise : e- rms.
    n_stars : number of unsaturated stars; default ``200`` per 512x512 px.
        Peak (brightest-pixel) star signals are log-uniform from 1 sky-noise
        sigma to 90% of the headroom below saturation, so faint and bright
        stars are both common.
    n_cosmics : number of CR events; default ``150`` per 512x512 px. 35% are
        single-pixel hits, 35% blobs of 2-6 touching pixels, 30% straight
        tracks (random angle, length 3-30 px, Gaussian cross-section sigma
        0.25-0.7 px, charge varying along the track, deposited with 5x5
        sub-pixel sampling). Peak charge per pixel is log-uniform in
        300-20000 e-. Event positions are uniform, so CRs hit stars and the
        image edges (tracks may run off the frame).
    fwhm : Gaussian PSF FWHM in pixels; stars are integrated exactly over
        pixels (erf differences) at uniform sub-pixel centres.
    saturation : ADU level (bias included) at which ``data`` and ``clean``
        are clipped.
    n_saturated : number of extra stars whose peak is 3-30x the saturation
        headroom (so their cores are clipped).
    bias : constant ADU offset added to ``data`` and ``clean``.
    dtype : float dtype of ``data``/``clean`` (float32).
    cr_threshold : truth threshold in units of the local noise sigma.

    Returns
    -------
    SimulatedFrame

    Notes
    -----
    Truth rule: ``crmask[i, j]`` is True when the *expected* CR charge
    deposited in the pixel exceeds ``cr_threshold * sigma``, with
    ``sigma = sqrt(sky_e + stars_e + readnoise**2)`` the local noise of the
    noise-free CR-less image in e-, and the pixel is not saturated in
    ``clean`` (a CR on a saturated core changes nothing). Sub-noise tails of
    tracks and blobs are therefore not truth pixels, so a detector is not
    charged with misses it cannot see; they are still in ``data`` (and in
    ``crcharge``). Overlapping events add up.
    """
    ny, nx = _check_shape(shape)
    gain = float(gain)
    readnoise = float(readnoise)
    sky = float(sky)
    bias = float(bias)
    saturation = float(saturation)
    fwhm = float(fwhm)
    if not gain > 0:
        raise ValueError(f"gain must be > 0 (e-/ADU), got {gain}")
    if not readnoise >= 0:
        raise ValueError(f"readnoise must be >= 0 (e-), got {readnoise}")
    if not sky >= 0:
        raise ValueError(f"sky must be >= 0 (ADU), got {sky}")
    if not fwhm > 0:
        raise ValueError(f"fwhm must be > 0 (px), got {fwhm}")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype must be a float dtype, got {dtype}")
    area = ny * nx / 512.0 ** 2
    n_stars = int(round(STARS_PER_512SQ * area)) if n_stars is None else int(n_stars)
    n_cosmics = int(round(COSMICS_PER_512SQ * area)) if n_cosmics is None else int(n_cosmics)
    n_saturated = int(n_saturated)
    if min(n_stars, n_cosmics, n_saturated) < 0:
        raise ValueError("n_stars, n_cosmics and n_saturated must be >= 0")

    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2 ** 31))
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    rng_stars, rng_noise, rng_cr, rng_crnoise = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4))

    sky_e = sky * gain
    sat_e = (saturation - bias) * gain          # clip level, e- above bias
    headroom = sat_e - sky_e
    if headroom <= 0:
        raise ValueError(f"sky + bias ({sky + bias} ADU) is not below saturation "
                         f"({saturation} ADU)")
    sky_sigma = math.sqrt(sky_e + readnoise ** 2)

    # -- noise-free image, e- ---------------------------------------------
    model = np.full((ny, nx), sky_e, dtype=np.float64)
    sigma_psf = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    n_all = n_stars + n_saturated
    xs = rng_stars.uniform(-2.0, nx + 1.0, n_all)
    ys = rng_stars.uniform(-2.0, ny + 1.0, n_all)
    lo_peak = min(sky_sigma, 0.5 * headroom)
    peaks = np.exp(rng_stars.uniform(math.log(lo_peak), math.log(0.9 * headroom), n_all))
    peaks[n_stars:] = headroom * np.exp(rng_stars.uniform(math.log(3), math.log(30),
                                                          n_saturated))
    for x, y, peak in zip(xs, ys, peaks):
        add_star(model, x, y, peak, sigma_psf, 0.1 * sky_sigma)

    # -- CR charge, e- (expected), and per-event footprints ----------------
    crcharge = np.zeros((ny, nx), dtype=np.float64)
    kinds = rng_cr.choice(3, size=n_cosmics, p=CR_KIND_FRACTIONS)
    qs = np.exp(rng_cr.uniform(*np.log(CR_PEAK_RANGE), n_cosmics))
    footprints = []
    for kind, q in zip(kinds, qs):
        if kind == 0:
            fp = _deposit_single(crcharge, rng_cr, q)
        elif kind == 1:
            fp = _deposit_blob(crcharge, rng_cr, q)
        else:
            fp = _deposit_track(crcharge, rng_cr, q)
        footprints.append(fp)

    # -- noise -------------------------------------------------------------
    clean_e = rng_noise.poisson(model).astype(np.float64)
    if readnoise > 0:
        clean_e += rng_noise.normal(0.0, readnoise, (ny, nx))
    data_e = clean_e.copy()
    touched = crcharge > 0
    data_e[touched] += rng_crnoise.poisson(crcharge[touched])

    clean_sat = clean_e >= sat_e
    saturated = data_e >= sat_e
    np.minimum(clean_e, sat_e, out=clean_e)
    np.minimum(data_e, sat_e, out=data_e)
    clean = (clean_e / gain + bias).astype(dtype)
    data = (data_e / gain + bias).astype(dtype)

    crmask = np.zeros((ny, nx), dtype=bool)
    crmask[touched] = ((crcharge[touched]
                        > cr_threshold * np.sqrt(model[touched] + readnoise ** 2))
                       & ~clean_sat[touched])
    flat_mask = crmask.ravel()
    n_visible = sum(1 for fp in footprints if fp.size and flat_mask[fp].any())

    header = {
        "BUNIT": "adu",
        "GAIN": gain,
        "RDNOISE": readnoise,
        "EXPTIME": EXPTIME,
        "SATURATE": saturation,
        "BIASLEV": bias,
        "SKYLEVEL": sky,
        "FWHM": fwhm,
        "NSTARS": n_stars,
        "NSATSTAR": n_saturated,
        "NCR": n_cosmics,
        "NCRVIS": n_visible,
        "NCRSING": int(np.count_nonzero(kinds == 0)),
        "NCRBLOB": int(np.count_nonzero(kinds == 1)),
        "NCRTRACK": int(np.count_nonzero(kinds == 2)),
        "NCRPIX": int(np.count_nonzero(crmask)),
        "CRTHRESH": float(cr_threshold),
        "SEED": seed,
        "OBJECT": "crdask.simulate",
        "IMAGETYP": "object",
    }
    return SimulatedFrame(data=data, clean=clean, crmask=crmask, saturated=saturated,
                          gain=gain, readnoise=readnoise, satlevel=saturation,
                          header=header, crcharge=crcharge.astype(np.float32))


def _check_shape(shape):
    try:
        ny, nx = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (ny, nx), got {shape!r}") from None
    if ny < 1 or nx < 1:
        raise ValueError(f"shape must be positive, got {shape!r}")
    return ny, nx


# ---------------------------------------------------------------------------
# stars


def _pixel_fractions(c, sigma, lo, hi):
    """Fraction of a 1-D unit Gaussian (centre ``c``, px) in pixels lo..hi-1."""
    edges = (np.arange(lo, hi + 1, dtype=np.float64) - 0.5 - c) / (math.sqrt(2.0) * sigma)
    cdf = erf_array(edges).astype(np.float64)
    return 0.5 * np.diff(cdf)


def add_star(img, x, y, peak, sigma, floor):
    """Add a pixel-integrated Gaussian star whose brightest pixel (if fully
    on the frame) holds ``peak`` e-; stamp radius reaches ``floor`` e-."""
    ny, nx = img.shape
    # Brightest-pixel fraction of a unit-flux star at this sub-pixel centre.
    fx = _pixel_fractions(x, sigma, round(x), round(x) + 1)[0]
    fy = _pixel_fractions(y, sigma, round(y), round(y) + 1)[0]
    flux = peak / (fx * fy)
    r = sigma * math.sqrt(2.0 * math.log(max(peak / floor, 1.0))) + 1.0
    x0, x1 = max(int(math.floor(x - r)), 0), min(int(math.ceil(x + r)) + 1, nx)
    y0, y1 = max(int(math.floor(y - r)), 0), min(int(math.ceil(y + r)) + 1, ny)
    if x0 >= x1 or y0 >= y1:
        return
    px = _pixel_fractions(x, sigma, x0, x1)
    py = _pixel_fractions(y, sigma, y0, y1)
    img[y0:y1, x0:x1] += flux * np.outer(py, px)


# ---------------------------------------------------------------------------
# cosmic rays; each returns the flat indices of the pixels it touched


def _deposit_single(img, rng, q):
    ny, nx = img.shape
    i, j = int(rng.integers(ny)), int(rng.integers(nx))
    img[i, j] += q
    return np.array([i * nx + j])


_NEIGHBOURS8 = np.array([(-1, -1), (-1, 0), (-1, 1), (0, -1),
                         (0, 1), (1, -1), (1, 0), (1, 1)])


def _deposit_blob(img, rng, q):
    ny, nx = img.shape
    n = int(rng.integers(2, 7))
    pix = [(int(rng.integers(ny)), int(rng.integers(nx)))]
    while len(pix) < n:
        base = pix[int(rng.integers(len(pix)))]
        dy, dx = _NEIGHBOURS8[int(rng.integers(8))]
        cand = (base[0] + int(dy), base[1] + int(dx))
        if cand not in pix:
            pix.append(cand)
    charges = q * np.concatenate(([1.0], rng.uniform(0.1, 0.8, n - 1)))
    iy = np.array([p[0] for p in pix])
    ix = np.array([p[1] for p in pix])
    keep = (iy >= 0) & (iy < ny) & (ix >= 0) & (ix < nx)
    np.add.at(img, (iy[keep], ix[keep]), charges[keep])
    return iy[keep] * nx + ix[keep]


def _deposit_track(img, rng, q):
    """Straight track: line charge with a Gaussian cross-section, integrated
    over pixels by ``TRACK_OVERSAMPLE**2`` sub-samples. ``q`` is the charge a
    pixel centred on a track along a pixel row would receive (on average)."""
    ny, nx = img.shape
    length = rng.uniform(*TRACK_LENGTH_RANGE)
    theta = rng.uniform(0.0, math.pi)
    sw = rng.uniform(*TRACK_WIDTH_RANGE)
    xc, yc = rng.uniform(-0.5, nx - 0.5), rng.uniform(-0.5, ny - 0.5)
    knots = rng.uniform(0.5, 1.5, 4)            # dE/dx variation along the track
    dx, dy = 0.5 * length * math.cos(theta), 0.5 * length * math.sin(theta)
    ax, ay, bx, by = xc - dx, yc - dy, xc + dx, yc + dy
    pad = 3.5 * sw + 1.0
    x0 = max(int(math.floor(min(ax, bx) - pad)), 0)
    x1 = min(int(math.ceil(max(ax, bx) + pad)) + 1, nx)
    y0 = max(int(math.floor(min(ay, by) - pad)), 0)
    y1 = min(int(math.ceil(max(ay, by) + pad)) + 1, ny)
    if x0 >= x1 or y0 >= y1:
        return np.empty(0, dtype=np.int64)
    os_ = TRACK_OVERSAMPLE
    offs = (np.arange(os_) + 0.5) / os_ - 0.5
    sx = (np.arange(x0, x1)[:, None] + offs).ravel()       # (nxs,)
    sy = (np.arange(y0, y1)[:, None] + offs).ravel()       # (nys,)
    ux, uy = (bx - ax) / length, (by - ay) / length
    px = sx[None, :] - ax
    py = sy[:, None] - ay
    t = np.clip(px * ux + py * uy, 0.0, length)            # along-track distance
    d2 = (px - t * ux) ** 2 + (py - t * uy) ** 2
    lam = q / math.erf(0.5 / (math.sqrt(2.0) * sw))         # e- per px of track
    lam = lam * np.interp(t / length, np.linspace(0.0, 1.0, knots.size), knots)
    dens = lam * np.exp(-0.5 * d2 / sw ** 2) / (math.sqrt(2.0 * math.pi) * sw)
    stamp = dens.reshape(y1 - y0, os_, x1 - x0, os_).mean(axis=(1, 3))
    stamp[stamp < 0.5] = 0.0                                 # drop < 0.5 e- wisps
    img[y0:y1, x0:x1] += stamp
    iy, ix = np.nonzero(stamp)
    return (iy + y0) * nx + (ix + x0)


#: Names of the CR shapes, in the order of ``CR_KIND_FRACTIONS``.
CR_KINDS = ("single", "blob", "track")


def deposit_cosmic(img, rng, kind, q):
    """Add one CR event of shape ``kind`` with peak charge ``q`` to ``img``.

    The public face of the shapes :func:`simulate_frame` draws (for
    injection-recovery tests, ``crdask.cosmic.inject``): ``'single'`` one
    pixel, ``'blob'`` 2-6 touching pixels, ``'track'`` a straight track of
    3-30 px. The position, size and angle are drawn from ``rng``
    (``numpy.random.Generator``); ``img`` (float64, ``(ny, nx)``, e-) is
    modified in place. Returns the flat indices of the touched pixels.
    """
    if kind == "single":
        return _deposit_single(img, rng, q)
    if kind == "blob":
        return _deposit_blob(img, rng, q)
    if kind == "track":
        return _deposit_track(img, rng, q)
    raise ValueError(f"kind must be one of {', '.join(CR_KINDS)}; got {kind!r}")


# ---------------------------------------------------------------------------
# scoring


def score(found, truth, *, tolerance=0) -> dict:
    """Compare a detected CR mask with the true one.

    Parameters
    ----------
    found, truth : bool arrays (or anything ``np.asarray(..., bool)`` takes,
        e.g. uint8 masks), same shape ``(ny, nx)``; True = CR pixel.
    tolerance : int >= 0, pixels. For counting false positives only, ``truth``
        is grown by a ``(2*tolerance + 1)``-square (Chebyshev distance), so a
        found pixel within ``tolerance`` px of a true CR pixel is not false.

    Returns
    -------
    dict with (counts are pixels unless stated, fractions in [0, 1]):

    ``n_true``, ``n_found`` : pixels in ``truth`` / ``found``.
    ``true_positives`` : pixels in both.  ``false_negatives`` : truth only.
    ``recall`` : ``true_positives / n_true`` (1.0 when ``n_true == 0``).
    ``false_positives`` : found pixels outside the grown truth.
    ``precision`` : ``1 - false_positives / n_found`` (1.0 when nothing found).
    ``n_events`` : CR events in ``truth``, counted as 8-connected components
        (overlapping events merge into one).
    ``events_found`` : fraction of those events with at least one found pixel
        (1.0 when there are none).
    """
    found = np.asarray(found).astype(bool, copy=False)
    truth = np.asarray(truth).astype(bool, copy=False)
    if found.shape != truth.shape or found.ndim != 2:
        raise ValueError(f"found and truth must be 2-D of the same shape, got "
                         f"{found.shape} and {truth.shape}")
    tolerance = int(tolerance)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    n_true = int(np.count_nonzero(truth))
    n_found = int(np.count_nonzero(found))
    tp = int(np.count_nonzero(found & truth))
    grown = _dilate_square(truth, tolerance)
    fp = int(np.count_nonzero(found & ~grown))
    labels, n_events = label_components(truth)
    hit = np.unique(labels[found & truth])
    n_hit = int(np.count_nonzero(hit))
    return {
        "recall": tp / n_true if n_true else 1.0,
        "false_positives": fp,
        "precision": 1.0 - fp / n_found if n_found else 1.0,
        "n_true": n_true,
        "n_found": n_found,
        "true_positives": tp,
        "false_negatives": n_true - tp,
        "n_events": n_events,
        "events_found": n_hit / n_events if n_events else 1.0,
    }


def _dilate_square(mask, r):
    """Binary dilation by a ``(2r+1)``-square, with numpy slicing."""
    if r == 0:
        return mask.copy()
    out = mask.copy()
    for _ in range(r):                     # r passes of a 3-wide max, rows
        tmp = out.copy()
        tmp[1:, :] |= out[:-1, :]
        tmp[:-1, :] |= out[1:, :]
        out = tmp
    for _ in range(r):                     # then columns
        tmp = out.copy()
        tmp[:, 1:] |= out[:, :-1]
        tmp[:, :-1] |= out[:, 1:]
        out = tmp
    return out


def label_components(mask):
    """8-connected components of a 2-D bool mask, pure numpy.

    Returns ``(labels, n)``: int32 ``labels`` of the mask's shape, 0 outside
    the mask and 1..n inside, numbered in raster order of each component's
    first pixel (as ``scipy.ndimage.label`` with a 3x3 structure does).
    """
    mask = np.asarray(mask, dtype=bool)
    ny, nx = mask.shape
    flat = np.flatnonzero(mask)
    labels = np.zeros(mask.shape, dtype=np.int32)
    n = flat.size
    if n == 0:
        return labels, 0
    iy, ix = np.divmod(flat, nx)
    src, dst = [], []
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):        # forward neighbours
        ok = (iy + dy < ny) & (ix + dx >= 0) & (ix + dx < nx)
        nb = flat[ok] + dy * nx + dx
        pos = np.searchsorted(flat, nb)
        pos = np.minimum(pos, n - 1)
        hit = flat[pos] == nb
        src.append(np.nonzero(ok)[0][hit])
        dst.append(pos[hit])
    src = np.concatenate(src)
    dst = np.concatenate(dst)
    root = np.arange(n)
    while True:                                  # min-label propagation
        new = root.copy()
        np.minimum.at(new, src, root[dst])
        np.minimum.at(new, dst, root[src])
        while True:                              # pointer jumping
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, root):
            break
        root = new
    _, inverse = np.unique(root, return_inverse=True)
    labels.ravel()[flat] = inverse.astype(np.int32) + 1
    return labels, int(inverse.max()) + 1
