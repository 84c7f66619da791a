"""The simulated CCD: geometry, readout and fixed patterns (see :mod:`crdask.simulate.raw`).

:class:`Detector` describes a CCD and its readout (imaging area, prescan /
overscan, one or two amplifiers, gain, read noise, bias structure, dark
current, flat-field response); :func:`bias_model`, :func:`dark_current_map`
and :func:`flat_response` draw its fixed patterns, each a function of the
detector (including ``Detector.seed``) only, cached and read-only.

Example
-------
>>> d = Detector(shape=(64, 96), overscan=16, amplifiers=2)
>>> d.raw_shape, d.sections()["BIASSEC2"]
((64, 128), '[113:128,1:64]')
"""

from __future__ import annotations

import dataclasses
import functools
import math
import zlib
from dataclasses import dataclass

import numpy as np

__all__ = ["Detector", "bias_model", "dark_current_map", "flat_response", "filter_hash",
           "HOT_PIXELS_PER_2048SQ"]

#: Hot pixels per 2048 x 2048 output pixels when ``Detector.hot_pixels`` is None.
HOT_PIXELS_PER_2048SQ = 300


def filter_hash(name):
    """A stable (process-independent) integer for a filter name."""
    return zlib.crc32(str(name).encode("utf-8"))


@dataclass(frozen=True)
class Detector:
    """A CCD and its readout; every fixed pattern is seeded by ``seed``.

    Parameters
    ----------
    shape : (ny, nx) unbinned imaging area, pixels.
    prescan, overscan : columns left / right of the imaging area (output px).
    overscan_rows : rows above the imaging area (output px).
    gain : e-/ADU.  readnoise : e- rms.
    bias_level : ADU.  bias_ramp : ADU, slow linear change of the bias from
        the first to the last row.  bias_transient : ADU, extra bias on the
        first row, decaying exponentially over ``bias_transient_rows`` rows.
    bias_column_rms : ADU, fixed per-column bias pattern (imaging columns).
    bias_drift : ADU rms of the per-frame bias offset.
    dark_current : e-/s per unbinned pixel.
    hot_pixels : number of hot pixels (None: 300 per 2048 x 2048 output px,
        at least 3), with dark current log-uniform in ``hot_range`` e-/s.
    bad_column : ``'hot'`` (one column with extra dark current, 0.5-3 e-/s,
        from a random row to the top), ``'dead'`` (one column with 2% of the
        normal response) or None.
    saturation : ADU, the ADC limit (65535 for 16-bit).
    binning : (bx, by), CCDSUM order (x first).
    prnu : rms pixel-to-pixel response.  vignetting : fractional loss of
        response at the corners.  n_dust : dust donuts on the window (common
        to all filters); each filter adds two of its own.
    cr_rate : CR events per second per 512 x 512 unbinned pixels.
    instrument : INSTRUME keyword.
    amplifiers : 1, or 2 for a two-amplifier readout: the left half of the
        imaging area is read by amplifier 1, whose overscan strip
        (``overscan`` columns) is at the left edge of the raw array, the right
        half by amplifier 2 with its strip at the right edge
        (``prescan`` must be 0). Amplifier 2's bias is ``amp_bias_step`` ADU
        higher, its gain ``amp_gain_ratio`` and read noise
        ``amp_readnoise_ratio`` times amplifier 1's. Headers then carry
        ``NAMPS = 2`` and, per amplifier n, ``DATASECn``, ``BIASSECn``,
        ``GAINn``, ``RDNOISEn`` (as two-amplifier CCD controllers write
        them, cf. DECam's DATASECA/B); ``DATASEC``/``TRIMSEC`` is the
        whole imaging area, and there is deliberately no plain ``GAIN``,
        ``RDNOISE`` or ``BIASSEC``, so a one-amplifier reduction stops with a
        "no gain" error instead of using one amplifier's numbers for both.
    seed : int >= 0, seeds all the fixed patterns.
    """

    shape: tuple = (2048, 2048)
    prescan: int = 0
    overscan: int = 32
    overscan_rows: int = 0
    gain: float = 1.5
    readnoise: float = 4.5
    bias_level: float = 1000.0
    bias_ramp: float = 6.0
    bias_transient: float = 8.0
    bias_transient_rows: float = 20.0
    bias_column_rms: float = 1.0
    bias_drift: float = 2.0
    dark_current: float = 0.02
    hot_pixels: int | None = None
    hot_range: tuple = (1.0, 50.0)
    bad_column: str | None = "hot"
    saturation: int = 65535
    binning: tuple = (1, 1)
    prnu: float = 0.01
    vignetting: float = 0.15
    n_dust: int = 3
    cr_rate: float = 0.5
    instrument: str = "CRDASK-SIM"
    amplifiers: int = 1
    amp_bias_step: float = 20.0
    amp_gain_ratio: float = 1.08
    amp_readnoise_ratio: float = 1.15
    seed: int = 0

    def __post_init__(self):
        # normalise sequences to tuples so the detector stays hashable
        object.__setattr__(self, "shape", tuple(int(v) for v in self.shape))
        object.__setattr__(self, "binning", tuple(int(v) for v in self.binning))
        object.__setattr__(self, "hot_range", tuple(float(v) for v in self.hot_range))
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ValueError(f"Detector.shape must be (ny, nx) > 0, got {self.shape}")
        if len(self.binning) != 2 or min(self.binning) < 1:
            raise ValueError(f"Detector.binning must be (bx, by) >= 1, got {self.binning}")
        if min(self.image_shape) < 1:
            raise ValueError(f"binning {self.binning} leaves no pixels of {self.shape}")
        for name in ("prescan", "overscan", "overscan_rows"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"Detector.{name} must be >= 0, got {getattr(self, name)}")
        if not self.gain > 0:
            raise ValueError(f"Detector.gain must be > 0 (e-/ADU), got {self.gain}")
        if not self.readnoise >= 0:
            raise ValueError(f"Detector.readnoise must be >= 0 (e-), got {self.readnoise}")
        if not 0 < self.saturation <= 65535:
            raise ValueError(f"Detector.saturation must be in 1..65535 ADU, "
                             f"got {self.saturation}")
        if self.bad_column not in ("hot", "dead", None):
            raise ValueError(f"Detector.bad_column must be 'hot', 'dead' or None, "
                             f"got {self.bad_column!r}")
        if int(self.seed) < 0:
            raise ValueError(f"Detector.seed must be >= 0, got {self.seed}")
        if self.amplifiers not in (1, 2):
            raise ValueError(f"Detector.amplifiers must be 1 or 2, got {self.amplifiers}")
        if self.amplifiers == 2 and (self.prescan or not self.overscan
                                     or self.image_shape[1] < 2):
            raise ValueError("Detector.amplifiers = 2 needs prescan = 0 and overscan > 0 "
                             "(each amplifier gets an overscan strip of that width)")

    # -- geometry ----------------------------------------------------------

    @property
    def image_shape(self):
        """(ny, nx) of the imaging area as written (binned)."""
        return (self.shape[0] // self.binning[1], self.shape[1] // self.binning[0])

    @property
    def _left(self):
        """Columns left of the imaging area (amplifier 1's strip for 2 amps)."""
        return self.overscan if self.amplifiers == 2 else self.prescan

    @property
    def raw_shape(self):
        """(ny, nx) of the whole raw array."""
        ny, nx = self.image_shape
        return (ny + self.overscan_rows, self._left + nx + self.overscan)

    def amps(self):
        """One dict per amplifier: ``data`` and ``bias`` (numpy slices of the
        raw array), ``gain`` (e-/ADU), ``readnoise`` (e-), ``bias_step``
        (ADU added to the bias level)."""
        ny, nx = self.image_shape
        g, rn = float(self.gain), float(self.readnoise)
        if self.amplifiers == 1:
            return [{"data": self.data_slice, "bias": self.bias_slice, "gain": g,
                     "readnoise": rn, "bias_step": 0.0}]
        o, h = self.overscan, nx // 2
        rows = slice(0, ny)
        return [{"data": (rows, slice(o, o + h)), "bias": (rows, slice(0, o)),
                 "gain": g, "readnoise": rn, "bias_step": 0.0},
                {"data": (rows, slice(o + h, o + nx)),
                 "bias": (rows, slice(o + nx, o + nx + o)),
                 "gain": g * float(self.amp_gain_ratio),
                 "readnoise": rn * float(self.amp_readnoise_ratio),
                 "bias_step": float(self.amp_bias_step)}]

    @property
    def bin_area(self):
        return self.binning[0] * self.binning[1]

    @property
    def data_slice(self):
        """Numpy slices ``(ys, xs)`` of the imaging area in the raw array."""
        ny, nx = self.image_shape
        return (slice(0, ny), slice(self._left, self._left + nx))

    @property
    def bias_slice(self):
        """Numpy slices of the BIASSEC region, or None if there is none."""
        ny, nx = self.image_shape
        if self.overscan:
            return (slice(0, ny), slice(self._left + nx, self._left + nx + self.overscan))
        if self.prescan:
            return (slice(0, ny), slice(0, self.prescan))
        if self.overscan_rows:
            return (slice(ny, ny + self.overscan_rows),
                    slice(self.prescan, self.prescan + nx))
        return None

    def sections(self):
        """FITS sections: ``{'DATASEC': '[x1:x2,y1:y2]', 'TRIMSEC': ..., 'BIASSEC': ...}``
        (no BIASSEC when there is no prescan/overscan)."""
        out = {"DATASEC": _fits_section(self.data_slice)}
        out["TRIMSEC"] = out["DATASEC"]
        if self.amplifiers == 2:
            for n, amp in enumerate(self.amps(), 1):
                out[f"DATASEC{n}"] = _fits_section(amp["data"])
                out[f"BIASSEC{n}"] = _fits_section(amp["bias"])
        elif self.bias_slice is not None:
            out["BIASSEC"] = _fits_section(self.bias_slice)
        return out

    @property
    def ccdsum(self):
        return f"{self.binning[0]} {self.binning[1]}"

    def n_hot_pixels(self):
        if self.hot_pixels is not None:
            return int(self.hot_pixels)
        ny, nx = self.image_shape
        return max(3, int(round(HOT_PIXELS_PER_2048SQ * ny * nx / 2048.0 ** 2)))

    def to_dict(self):
        """JSON-serialisable description (with the derived sections)."""
        d = dataclasses.asdict(self)
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}
        d["image_shape"] = list(self.image_shape)
        d["raw_shape"] = list(self.raw_shape)
        d.update(self.sections())
        return d


def _fits_section(slices):
    ys, xs = slices
    return f"[{xs.start + 1}:{xs.stop},{ys.start + 1}:{ys.stop}]"


def _fixed_rng(detector, *key):
    """Generator for a fixed pattern: a function of the detector seed and key."""
    words = [int(detector.seed)] + [int(k) for k in key]
    return np.random.default_rng(np.random.SeedSequence(words))


def _readonly(a):
    a.setflags(write=False)
    return a


@functools.lru_cache(maxsize=8)
def bias_model(detector: Detector) -> np.ndarray:
    """Fixed bias structure of the whole raw array, ADU, float32 (read-only):
    level + row ramp everywhere + column pattern on the imaging columns.
    A frame adds its own offset (``truth['bias_offset']``)."""
    rng = _fixed_rng(detector, 1)
    nyr, nxr = detector.raw_shape
    ys, xs = detector.data_slice
    y = np.arange(nyr, dtype=np.float64)
    ramp = (detector.bias_ramp * y / max(nyr - 1, 1)
            + detector.bias_transient * np.exp(-y / max(detector.bias_transient_rows, 1e-9)))
    cols = np.zeros(nxr)
    cols[xs] = rng.normal(0.0, detector.bias_column_rms, xs.stop - xs.start)
    for amp in detector.amps()[1:]:        # amplifier 2: its data half and its strip
        cols[amp["data"][1]] += amp["bias_step"]
        cols[amp["bias"][1]] += amp["bias_step"]
    out = (detector.bias_level + ramp[:, None] + cols[None, :]).astype(np.float32)
    return _readonly(out)


@functools.lru_cache(maxsize=8)
def _bad_column(detector: Detector):
    """(column index in the imaging area, first row) of the bad column."""
    rng = _fixed_rng(detector, 2)
    ny, nx = detector.image_shape
    col = int(rng.integers(nx))
    row0 = int(rng.integers(max(ny // 2, 1)))
    rate = float(rng.uniform(0.5, 3.0))
    return col, row0, rate


@functools.lru_cache(maxsize=8)
def dark_current_map(detector: Detector) -> np.ndarray:
    """True dark current of the imaging area, e-/s per output pixel, float32
    (read-only): uniform level, hot pixels and the hot column (if any)."""
    rng = _fixed_rng(detector, 3)
    ny, nx = detector.image_shape
    dark = np.full((ny, nx), detector.dark_current * detector.bin_area, dtype=np.float64)
    n_hot = min(detector.n_hot_pixels(), ny * nx)
    idx = rng.choice(ny * nx, size=n_hot, replace=False)
    lo, hi = detector.hot_range
    dark.ravel()[idx] += np.exp(rng.uniform(math.log(lo), math.log(hi), n_hot))
    if detector.bad_column == "hot":
        col, row0, rate = _bad_column(detector)
        dark[row0:, col] += rate * detector.bin_area
    return _readonly(dark.astype(np.float32))


@functools.lru_cache(maxsize=32)
def flat_response(detector: Detector, filter: str) -> np.ndarray:
    """True relative response of the imaging area in ``filter``, float32
    (read-only), mean 1 over the good pixels: vignetting, a faint gradient,
    pixel-to-pixel response (``prnu``), dust donuts and the dead column."""
    ny, nx = detector.image_shape
    common = _fixed_rng(detector, 4)
    own = _fixed_rng(detector, 5, filter_hash(filter))
    # vignetting about a slightly off-centre optical axis
    cx = (nx - 1) / 2 + common.uniform(-0.1, 0.1) * nx + own.uniform(-0.01, 0.01) * nx
    cy = (ny - 1) / 2 + common.uniform(-0.1, 0.1) * ny + own.uniform(-0.01, 0.01) * ny
    vig = detector.vignetting * own.uniform(0.8, 1.2)
    yy = np.arange(ny, dtype=np.float64)[:, None]
    xx = np.arange(nx, dtype=np.float64)[None, :]
    r2max = ((nx / 2) ** 2 + (ny / 2) ** 2) * 1.1
    resp = 1.0 - vig * ((xx - cx) ** 2 + (yy - cy) ** 2) / r2max
    gx, gy = own.uniform(-0.005, 0.005, 2)
    resp = resp + gx * (xx / nx - 0.5) + gy * (yy / ny - 0.5)
    # pixel-to-pixel response: mostly common, weakly filter-dependent
    base = common.standard_normal((ny, nx), dtype=np.float32)
    extra = own.standard_normal((ny, nx), dtype=np.float32)
    a = own.uniform(0.8, 1.2)
    resp = resp * (1.0 + detector.prnu * (a * base + 0.3 * extra))
    # dust donuts: on the window (all filters) and on the filter (its own)
    for rng, n in ((common, int(detector.n_dust)), (own, 2)):
        for _ in range(n):
            _add_donut(resp, rng)
    if detector.bad_column == "dead":
        col, row0, _ = _bad_column(detector)
        resp[:, col] = 0.02
        good = np.ones(resp.shape, bool)
        good[:, col] = False
        resp = resp / resp[good].mean()
    else:
        resp = resp / resp.mean()
    return _readonly(resp.astype(np.float32))


def _add_donut(resp, rng):
    """Multiply ``resp`` by an out-of-focus dust shadow: a darker ring around a
    less dark centre, smooth edges."""
    ny, nx = resp.shape
    big = max(min(ny, nx), 8)
    radius = max(rng.uniform(0.02, 0.06) * big, 3.0)
    depth = rng.uniform(0.02, 0.08)
    cx, cy = rng.uniform(0, nx), rng.uniform(0, ny)
    x0, x1 = max(int(cx - radius - 2), 0), min(int(cx + radius + 3), nx)
    y0, y1 = max(int(cy - radius - 2), 0), min(int(cy + radius + 3), ny)
    if x0 >= x1 or y0 >= y1:
        return
    r = np.hypot(np.arange(x0, x1)[None, :] - cx, np.arange(y0, y1)[:, None] - cy)
    edge = max(0.08 * radius, 0.7)
    disk = 1.0 / (1.0 + np.exp((r - radius) / edge))
    ring = np.exp(-0.5 * ((r - 0.8 * radius) / (0.12 * radius)) ** 2)
    resp[y0:y1, x0:x1] *= 1.0 - depth * (0.5 * disk + 0.5 * ring)


# ---------------------------------------------------------------------------
# star fields
