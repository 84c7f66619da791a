"""Inject synthetic cosmic rays into a real frame, with the truth (layer 2).

To measure how complete a CR method is on *real* data (where the true CRs
are unknown) we add synthetic CRs of known position and strength to a copy of
the frame, run the method, and count what it recovers
(:func:`crdask.pipeline.qa.completeness`). This module does the adding.

Shapes are the simulator's (:func:`crdask.simulate.frame.deposit_cosmic`:
single-pixel hits, 2-6 pixel blobs, 3-30 px straight tracks with a Gaussian
cross-section), so injection and simulation share one definition of what a
CR looks like. (``crdask.simulate.frame`` is pure numpy helper code outside
the layer stack; it is imported when injecting, not with this module.) Each
event's amplitude is set by its *peak signal-to-noise*: the charge in its
brightest pixel divided by the frame's noise there, ``sqrt(var)``, drawn
log-uniformly in ``snr_range``; pixels of an event that would receive less
than 1% of their local sigma are not touched. So a faint 4-sigma hit
on a bright galaxy and on dark sky are equally hard in noise units, which is
what a completeness curve in S/N should measure.

Units: ``image`` and ``var`` in any consistent units (e- and e-^2 after
calibration; ADU and ADU^2 work too); the injected charge is in the same
units as ``image``. Injection adds the noise-free charge (no extra Poisson
noise): the S/N is then exact, and the extra shot noise of a 10-sigma CR
would be ~3% of its amplitude.

Determinism: the events (kinds, shapes, positions, S/N) depend only on
``seed``, the frame shape and ``avoid``/``var`` (redraws); Dask input gives the
same numbers as numpy, bit for bit (each block adds the events' charges that
fall in it; charges are summed in float64 and added once, in float32).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

__all__ = ["CR_KINDS", "InjectionTruth", "inject_cosmics", "DEFAULT_DENSITY"]

#: The simulator's CR shapes (``crdask.simulate.frame.CR_KINDS``; a test checks
#: they agree). Named here so importing this module does not import the
#: simulator package, whose ``__init__`` pulls in FITS writing (layer 3).
CR_KINDS = ("single", "blob", "track")

#: Default number of injected events per 512 x 512 pixels: sparse enough that
#: events rarely touch (so each is scored on its own), dense enough for a
#: curve from one frame.
DEFAULT_DENSITY = 100
#: Nominal peak charge of a deposited shape before rescaling.
_NOMINAL = 1.0e9
#: Injected pixels carrying less than this many local sigma are dropped.
_WISP = 0.01


def _is_dask(a):
    return type(a).__module__.split(".")[0] == "dask"


@dataclass
class InjectionTruth:
    """What was injected.

    Per event (arrays of length ``n``): ``kind`` (str), ``peak_y``,
    ``peak_x`` (px, the brightest pixel), ``snr`` (charge / sqrt(var) at the
    peak), ``peak`` (charge there, image units), ``npix`` (pixels above
    ``threshold`` sigma). Per touched pixel: ``pixels`` (flat index into the
    ``(ny, nx)`` frame), ``charge`` (float64, summed over events),
    ``event`` (index of the event depositing most charge there), ``above``
    (charge > ``threshold`` * sqrt(var): a truth pixel). ``shape`` and
    ``threshold`` as given.
    """

    kind: np.ndarray
    peak_y: np.ndarray
    peak_x: np.ndarray
    snr: np.ndarray
    peak: np.ndarray
    npix: np.ndarray
    pixels: np.ndarray
    charge: np.ndarray
    event: np.ndarray
    above: np.ndarray
    shape: tuple
    threshold: float

    @property
    def n(self):
        """Number of injected events."""
        return int(self.snr.size)

    def mask(self):
        """Bool ``(ny, nx)`` truth mask: pixels where injected charge exceeds
        ``threshold`` times the local noise."""
        m = np.zeros(self.shape, bool)
        m.ravel()[self.pixels[self.above]] = True
        return m

    def touched(self):
        """Bool ``(ny, nx)``: every pixel that received injected charge."""
        m = np.zeros(self.shape, bool)
        m.ravel()[self.pixels] = True
        return m


def _add_block(block, pixels, charge, nx, block_info=None):
    """Add the sparse charges falling into one block (float32 result)."""
    out = np.array(block, dtype=np.float32, copy=True)
    if block_info is None:
        loc = ((0, out.shape[0]), (0, out.shape[1]))
    else:
        loc = block_info[0]["array-location"]
    (y0, y1), (x0, x1) = loc
    iy, ix = np.divmod(pixels, nx)
    sel = (iy >= y0) & (iy < y1) & (ix >= x0) & (ix < x1)
    out[iy[sel] - y0, ix[sel] - x0] += charge[sel].astype(np.float32)
    return out


def _check(n, kinds, snr_range, threshold, max_tries):
    if not (isinstance(n, numbers.Integral) and n >= 0):
        raise ValueError(f"n must be an integer >= 0 (events), got {n!r}")
    kinds = tuple(kinds)
    if not kinds or any(k not in CR_KINDS for k in kinds):
        raise ValueError(f"kinds must be a non-empty subset of {', '.join(CR_KINDS)}; "
                         f"got {kinds!r}")
    lo, hi = (float(v) for v in snr_range)
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise ValueError(f"snr_range must be (low, high) with 0 < low <= high, got "
                         f"{snr_range!r}")
    if not (threshold > 0 and math.isfinite(threshold)):
        raise ValueError(f"threshold must be a positive number (sigma), got {threshold!r}")
    if not (isinstance(max_tries, numbers.Integral) and max_tries >= 1):
        raise ValueError(f"max_tries must be an integer >= 1, got {max_tries!r}")
    return kinds, lo, hi


def inject_cosmics(image, var, seed=0, *, n=None, kinds=CR_KINDS, snr_range=(3.0, 100.0),
                   avoid=None, threshold=3.0, border=0, max_tries=100):
    """Add synthetic cosmic rays to a copy of a frame.

    Parameters
    ----------
    image : numpy.ndarray or dask.array.Array, shape (ny, nx)
        The frame (e.g. calibrated, e-). Never modified.
    var : array of the same shape (numpy or dask)
        Its variance (image units squared); sets the noise at each CR's peak.
    seed : int or numpy.random.Generator
        Random stream for kinds, shapes, positions and S/N.
    n : int, optional
        Number of events; default :data:`DEFAULT_DENSITY` per 512x512 px.
    kinds : sequence of {'single', 'blob', 'track'}
        Shapes drawn with equal probability.
    snr_range : (low, high)
        Peak S/N, drawn log-uniformly.
    avoid : bool array (ny, nx), optional
        Pixels where no event may *peak* nor touch (bad pixels, saturated
        stars, CRs already in the frame): an event touching one is redrawn,
        as one whose peak has a non-finite or non-positive variance.
    border : int
        Events may not touch the outermost ``border`` rows and columns (e.g.
        3: L.A.Cosmic never flags there without padding); 0 = anywhere.
    threshold : float
        Truth rule, in sigma: a pixel is a truth pixel when the injected
        charge exceeds ``threshold * sqrt(var)`` there (as the simulator).
    max_tries : int
        Redraws per event before giving up (``ValueError``).

    Returns
    -------
    (damaged, truth)
        ``damaged``: float32 copy of ``image`` with the charges added (numpy
        or lazy Dask, as the input); ``truth``: :class:`InjectionTruth`.

    Example
    -------
    >>> import numpy as np
    >>> img = np.full((64, 64), 100.0, np.float32); var = img + 25.0
    >>> damaged, truth = inject_cosmics(img, var, seed=1, n=5, snr_range=(20, 20))
    >>> truth.n, bool(np.allclose(truth.snr, 20))
    (5, True)
    """
    lazy = _is_dask(image)
    if not lazy:
        image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (y, x), got shape {image.shape}")
    if tuple(var.shape) != tuple(image.shape):
        raise ValueError(f"var has shape {tuple(var.shape)}, image {tuple(image.shape)}")
    ny, nx = image.shape
    if n is None:
        n = int(round(DEFAULT_DENSITY * ny * nx / 512.0 ** 2))
    kinds, lo, hi = _check(n, kinds, snr_range, threshold, max_tries)
    # the simulator's shapes, imported on use (see CR_KINDS above)
    from ..simulate.frame import deposit_cosmic

    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    # the variance is needed at the touched pixels only; a Dask var is
    # computed once (one frame) so every draw sees the same numbers
    var_np = np.asarray(var.compute() if _is_dask(var) else var, dtype=np.float64)
    avoid_np = None if avoid is None else np.asarray(
        avoid.compute() if _is_dask(avoid) else avoid, dtype=bool)
    if avoid_np is not None and avoid_np.shape != (ny, nx):
        raise ValueError(f"avoid has shape {avoid_np.shape}, image {(ny, nx)}")
    occupied = np.zeros((ny, nx), bool) if avoid_np is None else avoid_np.copy()
    if not (isinstance(border, numbers.Integral) and 0 <= 2 * border < min(ny, nx)):
        raise ValueError(f"border must be an integer >= 0 smaller than half the frame, "
                         f"got {border!r}")

    scratch = np.zeros((ny, nx), np.float64)
    flat_scratch = scratch.ravel()
    ev_kind, ev_py, ev_px, ev_snr, ev_peak = [], [], [], [], []
    pix_all, q_all, id_all = [], [], []
    for k in range(n):
        kind = kinds[int(rng.integers(len(kinds)))]
        snr = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        for _ in range(max_tries):
            # a huge nominal charge, so the simulator's absolute 0.5 e- cut of
            # faint track wisps does not shape the event; rescaled below
            fp = np.unique(deposit_cosmic(scratch, rng, kind, _NOMINAL))
            shape_q = flat_scratch[fp].copy()
            flat_scratch[fp] = 0.0
            if fp.size == 0:
                continue
            ipk = int(np.argmax(shape_q))
            v = var_np.ravel()[fp[ipk]]
            if not (np.isfinite(v) and v > 0):
                continue
            # drop the wisps that would carry < WISP sigma of the local noise
            with np.errstate(invalid="ignore"):
                keep = (shape_q * (snr * math.sqrt(v) / shape_q[ipk])
                        >= _WISP * np.sqrt(var_np.ravel()[fp]))
            keep[ipk] = True
            fp, shape_q = fp[keep], shape_q[keep]
            ipk = int(np.argmax(shape_q))
            # keep events apart and off avoided pixels: a 1-px margin
            iy, ix = np.divmod(fp, nx)
            if not (np.isfinite(v) and v > 0) or _touches(occupied, iy, ix, ny, nx):
                continue
            if border and (iy.min() < border or ix.min() < border or
                           iy.max() >= ny - border or ix.max() >= nx - border):
                continue
            break
        else:
            raise ValueError(f"inject_cosmics: could not place event {k} ({kind}) in "
                             f"{max_tries} tries (frame too crowded or avoid too large)")
        scale = snr * math.sqrt(v) / shape_q[ipk]
        q = shape_q * scale
        occupied[iy, ix] = True
        ev_kind.append(kind)
        ev_py.append(int(iy[ipk]))
        ev_px.append(int(ix[ipk]))
        ev_snr.append(snr)
        ev_peak.append(float(q[ipk]))
        pix_all.append(fp)
        q_all.append(q)
        id_all.append(np.full(fp.size, k, np.int64))

    if n:
        pix = np.concatenate(pix_all)
        q = np.concatenate(q_all)
        ids = np.concatenate(id_all)
    else:
        pix, q, ids = (np.empty(0, np.int64), np.empty(0), np.empty(0, np.int64))
    # events do not overlap (occupied), so each pixel has one event
    order = np.argsort(pix, kind="stable")
    pix, q, ids = pix[order], q[order], ids[order]
    above = q > threshold * np.sqrt(var_np.ravel()[pix])
    npix = np.bincount(ids[above], minlength=n) if n else np.zeros(0, np.int64)
    truth = InjectionTruth(kind=np.array(ev_kind, dtype="<U6"),
                           peak_y=np.array(ev_py, np.int64), peak_x=np.array(ev_px, np.int64),
                           snr=np.array(ev_snr), peak=np.array(ev_peak), npix=npix,
                           pixels=pix, charge=q, event=ids, above=above, shape=(ny, nx),
                           threshold=float(threshold))
    if lazy:
        damaged = image.map_blocks(_add_block, pix, q, nx, dtype=np.float32,
                                   meta=np.empty((0, 0), np.float32))
    else:
        damaged = _add_block(image, pix, q, nx)
    return damaged, truth


def _touches(occupied, iy, ix, ny, nx):
    """True if any 8-neighbour of the pixels (iy, ix) is occupied."""
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            y, x = iy + dy, ix + dx
            ok = (y >= 0) & (y < ny) & (x >= 0) & (x < nx)
            if occupied[y[ok], x[ok]].any():
                return True
    return False
