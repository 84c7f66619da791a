"""Multi-amplifier readouts: per-amplifier overscan and gain, then assembly (layer 2).

A CCD read through several output amplifiers gives a raw frame in which each
amplifier owns a *data section* (its part of the image) and usually an
*overscan (bias) section* of its own, with its own bias level, gain and read
noise. Calibrating such a frame with one overscan and one gain leaves a step
at every amplifier boundary. :func:`assemble_amplifiers` corrects each
amplifier on its own:

1. the bias level of the amplifier's own strip is measured per row (or per
   column) -- optionally smoothed by a fit along the readout -- exactly as
   :func:`crdask.calib.overscan.overscan_model`, and subtracted from the
   amplifier's data section only (float32 ADU, as
   :func:`~crdask.calib.overscan.subtract_overscan`);
2. the result is multiplied by the amplifier's gain (e-/ADU), as
   :func:`crdask.calib.calibrate.to_electrons`;
3. the corrected data sections are placed in *detector order*: at their
   ``detsec`` (FITS ``DETSEC``, reversed ranges flip the pixels) when every
   amplifier has one, else in the order of their data sections in the raw
   frame with the gaps (overscan strips between amplifiers) removed.

With one amplifier the result equals ``to_electrons(trim(subtract_overscan(raw,
BIASSEC), DATASEC), GAIN)`` bit for bit, so a one-amplifier instrument loses
nothing by going through this function.

Regions
-------
Sections come from the io layer already parsed (DESIGN.md: FITS text is
converted once, in io, and calib may not import io): a
``crdask.io.sections.Section`` (anything with ``.slices`` and, optionally,
``.flip_x``/``.flip_y``) or a ``(slice_y, slice_x)`` tuple, 0-based, end
exclusive. ``datasec`` and ``biassec`` are in pixels of the raw array;
``detsec`` is in pixels of the *assembled* frame (binned, starting anywhere:
the assembly is shifted so the smallest ``detsec`` corner is ``(0, 0)``).
:func:`crdask.io.amplifiers.amplifiers_from_header` reads the usual header
conventions (numbered ``DATASECn``/``BIASSECn``/``GAINn``/``RDNOISEn``/
``DETSECn``, one extension per amplifier with ``DATASEC``/``BIASSEC``/
``DETSEC``, ESO ``HIERARCH ESO DET OUTn ...``) and a workflow list, and
converts unbinned ``DETSEC`` to binned output pixels.

How the pipeline should use it
------------------------------
Read the amplifiers once per setup (from the workflow's ``instrument.
amplifiers`` list when given, else from the header of each raw frame with
:func:`crdask.io.amplifiers.amplifiers_from_header`), call
:func:`assemble_amplifiers` on the raw frame (numpy or Dask) instead of
``subtract_overscan`` + ``trim`` + ``to_electrons``, feed ``.data`` (e-) to
:func:`crdask.calib.calibrate.calibrate_frame` with ``readnoise=.readnoise``
(the per-pixel map; it accepts an array), build every master (bias, dark,
flat) from frames assembled the same way, and write ``.history()`` into the
product headers.

Dask: the per-amplifier overscan model is a small Dask array (see
``overscan.py``), the correction is element-wise, and the assembly is
:func:`dask.array.block`; every step applies the same numpy operations to the
same numbers as the numpy path, so the result equals it bit for bit whatever
the chunking.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from ..kernels.calibrate import COLUMNS, ROWS, SCALAR
from .overscan import as_slices, correct_bias, overscan_model

__all__ = ["Amplifier", "AmplifierLayout", "AssembledFrame", "assemble_amplifiers"]


def _is_dask(a):
    return type(a).__module__.split(".")[0] == "dask"


def _region_text(region):
    """FITS text of a region for HISTORY (Section's own text, else 1-based)."""
    if region is None:
        return "none"
    if hasattr(region, "x1") and str(region).startswith("["):
        return str(region)
    sy, sx = region.slices if hasattr(region, "slices") else region
    return f"[{sx.start + 1}:{sx.stop},{sy.start + 1}:{sy.stop}]"


def _flips(region):
    return bool(getattr(region, "flip_y", False)), bool(getattr(region, "flip_x", False))


@dataclass(frozen=True)
class Amplifier:
    """One readout amplifier of a CCD.

    Parameters
    ----------
    name : str
        Label used in HISTORY and error messages (e.g. ``"1"``, ``"L"``).
    datasec : Section or (slice_y, slice_x)
        Image pixels read by this amplifier, in raw-array pixels.
    gain : float
        e-/ADU (> 0).
    readnoise : float
        e- rms (>= 0).
    biassec : Section or (slice_y, slice_x) or None
        This amplifier's overscan/prescan strip in raw-array pixels; ``None``
        = no overscan correction (then ``bias_level`` is used).
    detsec : Section or (slice_y, slice_x) or None
        Where the data section goes in the assembled frame (binned pixels);
        a reversed range (``flip_x``/``flip_y``) mirrors the pixels.
    overscan_axis : {None, 0, 1}
        Axis of the strip collapsed by the statistic (``overscan_model``'s
        ``axis``): ``1`` a block of columns (one level per row), ``0`` a block
        of rows (one level per column); ``None`` guesses from its shape.
    bias_level : float
        Constant ADU subtracted when ``biassec`` is ``None`` (default 0).

    Example
    -------
    >>> left = Amplifier("1", (slice(0, 100), slice(0, 50)), gain=1.5,
    ...                  readnoise=4.0, biassec=(slice(0, 100), slice(100, 110)))
    """

    name: str
    datasec: object
    gain: float
    readnoise: float
    biassec: object = None
    detsec: object = None
    overscan_axis: int | None = None
    bias_level: float = 0.0

    def check(self, shape):
        """Validate against a raw frame of ``shape = (ny, nx)``; return the
        0-based ``(datasec, biassec)`` slices (``biassec`` may be ``None``).
        Errors are one line naming the amplifier and the parameter."""
        where = f"amplifier {self.name}"
        if not (isinstance(self.gain, numbers.Real) and self.gain > 0
                and math.isfinite(self.gain)):
            raise ValueError(f"{where}: gain must be > 0 e-/ADU, got {self.gain!r}")
        if not (isinstance(self.readnoise, numbers.Real) and self.readnoise >= 0
                and math.isfinite(self.readnoise)):
            raise ValueError(f"{where}: readnoise must be >= 0 e-, got {self.readnoise!r}")
        if self.overscan_axis not in (None, 0, 1):
            raise ValueError(f"{where}: overscan_axis must be None, 0 or 1, "
                             f"got {self.overscan_axis!r}")
        if not math.isfinite(float(self.bias_level)):
            raise ValueError(f"{where}: bias_level must be finite, got {self.bias_level!r}")
        data = as_slices(self.datasec, shape, where=f"{where} datasec")
        bias = None
        if self.biassec is not None:
            bias = as_slices(self.biassec, shape, where=f"{where} biassec")
        return data, bias


@dataclass(frozen=True)
class AmplifierLayout:
    """Where each amplifier went and what was done to it (for HISTORY).

    ``amplifiers`` : the input :class:`Amplifier` list. ``placement`` : for
    each, ``(slice_y, slice_x)`` in the assembled frame. ``levels`` : median
    subtracted bias level per amplifier (ADU; a float, or a 0-d Dask array
    for Dask input). ``shape`` : ``(ny, nx)`` of the assembled frame.
    """

    amplifiers: tuple
    placement: tuple
    levels: tuple
    shape: tuple

    def history(self):
        """HISTORY lines, one per amplifier, e.g. ``AMP 1 DATASEC=[1:50,1:100]
        BIASSEC=[101:110,1:100] -> [1:50,1:100] GAIN=1.5 RDNOISE=4 BIAS=...``."""
        lines = [f"crdask: {len(self.amplifiers)} amplifier(s), each overscan-"
                 "corrected and gain-converted on its own"]
        for amp, (sy, sx), level in zip(self.amplifiers, self.placement, self.levels):
            lev = float(level) if not _is_dask(level) else float(level.compute())
            lines.append(
                f"AMP {amp.name} DATASEC={_region_text(amp.datasec)} "
                f"BIASSEC={_region_text(amp.biassec)} -> "
                f"[{sx.start + 1}:{sx.stop},{sy.start + 1}:{sy.stop}] "
                f"GAIN={amp.gain:g} RDNOISE={amp.readnoise:g} BIAS={lev:.2f}")
        return lines


@dataclass(frozen=True)
class AssembledFrame:
    """Result of :func:`assemble_amplifiers`.

    ``data`` : float32 ``(ny, nx)`` in e-, bias-corrected, in detector order.
    ``readnoise`` : float32 ``(ny, nx)`` e- rms of the amplifier that read
    each pixel. ``layout`` : :class:`AmplifierLayout`. numpy or Dask, as the
    input.
    """

    data: object
    readnoise: object
    layout: AmplifierLayout


def _intervals(starts_stops, what):
    """Sorted distinct intervals; they must be identical or disjoint."""
    uniq = sorted(set(starts_stops))
    for (a0, a1), (b0, b1) in zip(uniq, uniq[1:]):
        if b0 < a1:
            raise ValueError(f"amplifier {what} ranges {a0}:{a1} and {b0}:{b1} overlap "
                             "without being equal: the amplifiers do not tile a grid")
    return uniq


def _placements(amps, data_slices):
    """Output (slice_y, slice_x) for each amplifier and the output shape."""
    if all(a.detsec is not None for a in amps):
        det = []
        for a, (dy, dx) in zip(amps, data_slices):
            sy, sx = a.detsec.slices if hasattr(a.detsec, "slices") else a.detsec
            if (sy.stop - sy.start, sx.stop - sx.start) != (dy.stop - dy.start,
                                                             dx.stop - dx.start):
                raise ValueError(
                    f"amplifier {a.name}: detsec {_region_text(a.detsec)} is "
                    f"{sx.stop - sx.start} x {sy.stop - sy.start} pixels but datasec "
                    f"{_region_text(a.datasec)} is {dx.stop - dx.start} x "
                    f"{dy.stop - dy.start} (bin the detsec first)")
            det.append((sy, sx))
        y0 = min(s[0].start for s in det)
        x0 = min(s[1].start for s in det)
        place = [(slice(sy.start - y0, sy.stop - y0), slice(sx.start - x0, sx.stop - x0))
                 for sy, sx in det]
    elif any(a.detsec is not None for a in amps):
        raise ValueError("detsec given for some amplifiers but not all: give it for "
                         "every amplifier or for none")
    else:
        # Data sections in raw order, gaps (strips between amplifiers) removed.
        ys = _intervals([(dy.start, dy.stop) for dy, _ in data_slices], "y")
        xs = _intervals([(dx.start, dx.stop) for _, dx in data_slices], "x")
        yoff = np.cumsum([0] + [b - a for a, b in ys])
        xoff = np.cumsum([0] + [b - a for a, b in xs])
        place = []
        for dy, dx in data_slices:
            i, j = ys.index((dy.start, dy.stop)), xs.index((dx.start, dx.stop))
            place.append((slice(int(yoff[i]), int(yoff[i + 1])),
                          slice(int(xoff[j]), int(xoff[j + 1]))))
    ny = max(p[0].stop for p in place)
    nx = max(p[1].stop for p in place)
    return place, (ny, nx)


def _grid(place, shape, names):
    """Index grid ``cells[i][j] -> amplifier index`` of a tiling, or an error."""
    ys = _intervals([(p[0].start, p[0].stop) for p in place], "output y")
    xs = _intervals([(p[1].start, p[1].stop) for p in place], "output x")
    if (ys[0][0], ys[-1][1], xs[0][0], xs[-1][1]) != (0, shape[0], 0, shape[1]) or \
            any(a[1] != b[0] for a, b in zip(ys, ys[1:])) or \
            any(a[1] != b[0] for a, b in zip(xs, xs[1:])):
        raise ValueError("the amplifiers' output sections leave gaps in the assembled "
                         "frame")
    cells = [[None] * len(xs) for _ in ys]
    for k, (sy, sx) in enumerate(place):
        i, j = ys.index((sy.start, sy.stop)), xs.index((sx.start, sx.stop))
        if cells[i][j] is not None:
            raise ValueError(f"amplifiers {names[cells[i][j]]} and {names[k]} land on "
                             "the same output section")
        cells[i][j] = k
    for row in cells:
        if any(c is None for c in row):
            raise ValueError("the amplifiers do not cover the assembled frame (a cell "
                             "of the grid has no amplifier)")
    return cells


def _level_rows(data, dy, bias, axis, kw):
    """Overscan level for the data rows ``dy`` (axis=1) or columns (axis=0),
    float64, as ``overscan_model`` on the smallest band holding both."""
    by, bx = bias
    if axis == 1:      # one level per row: band of rows spanning data and strip
        lo, hi = min(dy.start, by.start), max(dy.stop, by.stop)
        band = data[lo:hi, :]
        model = overscan_model(band, (slice(by.start - lo, by.stop - lo), bx),
                               axis=1, **kw)
        return model[dy.start - lo:dy.stop - lo]
    lo, hi = min(dy.start, bx.start), max(dy.stop, bx.stop)   # dy = data columns here
    band = data[:, lo:hi]
    model = overscan_model(band, (by, slice(bx.start - lo, bx.stop - lo)), axis=0, **kw)
    return model[dy.start - lo:dy.stop - lo]


def _correct(piece, level, along, gain):
    """(piece - level) as float32 ADU, then x gain as float32 e- (the same
    two roundings as subtract_overscan followed by to_electrons), in one
    pass: ``along`` 0 (a level per row), 1 (per column) or None (a number)."""
    return correct_bias(piece, level, {0: ROWS, 1: COLUMNS, None: SCALAR}[along], gain=gain)


def assemble_amplifiers(data, amplifiers, *, statistic="median", fit=None, order=3,
                        clip_sigma=3.0, clip_iters=5, fit_sigma=3.0, fit_iters=3):
    """Overscan-correct and gain-convert each amplifier, then assemble the frame.

    Parameters
    ----------
    data : numpy.ndarray or dask.array.Array, shape (ny_raw, nx_raw)
        Raw frame in ADU (any real dtype), overscan strips included.
    amplifiers : sequence of Amplifier
        One entry per readout amplifier (see :class:`Amplifier`). Their
        output sections must tile a rectangle (a grid: 1x2, 2x1, 2x2, ...).
    statistic, fit, order, clip_sigma, clip_iters, fit_sigma, fit_iters
        How each amplifier's strip becomes a bias level: the parameters of
        :func:`crdask.calib.overscan.overscan_model`, applied to every
        amplifier. The strip must span the amplifier's data rows (columns)
        unless a ``fit`` extrapolates.

    Returns
    -------
    AssembledFrame
        ``data`` float32 e-, ``readnoise`` float32 e- map, both of the
        assembled shape; ``layout`` for HISTORY. Dask in, Dask out (equal to
        the numpy result bit for bit).

    Raises
    ------
    ValueError
        One line naming the amplifier and the problem (bad gain, a section
        outside the frame, sections that do not tile, ...).

    Example
    -------
    >>> import numpy as np
    >>> raw = np.zeros((100, 120), np.uint16); raw[:, :60] += 1000; raw[:, 60:] += 1020
    >>> amps = [Amplifier("1", (slice(0, 100), slice(0, 50)), 1.5, 4.0,
    ...                   biassec=(slice(0, 100), slice(50, 60))),
    ...         Amplifier("2", (slice(0, 100), slice(70, 120)), 2.1, 5.0,
    ...                   biassec=(slice(0, 100), slice(60, 70)))]
    >>> out = assemble_amplifiers(raw, amps)
    >>> out.data.shape, float(abs(out.data).max())
    ((100, 100), 0.0)
    """
    if not _is_dask(data):
        data = np.asarray(data)
    if data.ndim != 2:
        raise ValueError(f"data must be a 2-D (y, x) raw frame, got shape {data.shape}")
    amps = tuple(amplifiers)
    if not amps:
        raise ValueError("amplifiers: need at least one Amplifier")
    names = [a.name for a in amps]
    if len(set(names)) != len(names):
        raise ValueError(f"amplifiers: names must be unique, got {names}")
    checked = [a.check(data.shape) for a in amps]
    kw = dict(statistic=statistic, fit=fit, order=order, clip_sigma=clip_sigma,
              clip_iters=clip_iters, fit_sigma=fit_sigma, fit_iters=fit_iters)
    place, shape = _placements(amps, [c[0] for c in checked])
    cells = _grid(place, shape, names)

    pieces, levels = [], []
    for amp, (dsl, bsl) in zip(amps, checked):
        dy, dx = dsl
        piece = data[dy, dx]
        if bsl is None:
            along, level = None, float(amp.bias_level)
        else:
            strip_shape = (bsl[0].stop - bsl[0].start, bsl[1].stop - bsl[1].start)
            axis = amp.overscan_axis
            if axis is None:   # ccdproc's guess, as overscan_model
                axis = 0 if strip_shape[1] > strip_shape[0] else 1
            try:
                level = _level_rows(data, dy if axis == 1 else dx, bsl, axis, kw)
            except ValueError as err:
                raise ValueError(f"amplifier {amp.name}: {err}") from None
            along = 0 if axis == 1 else 1
        out = _correct(piece, level, along, amp.gain)
        # the data section in its own orientation, then mirrored into detsec
        fy, fx = _flips(amp.datasec)
        if amp.detsec is not None:
            gy, gx = _flips(amp.detsec)
            fy, fx = fy != gy, fx != gx
        if fy:
            out = out[::-1, :]
        if fx:
            out = out[:, ::-1]
        pieces.append(out)
        if along is None:
            levels.append(level)
        elif _is_dask(level):
            import dask.array as da
            levels.append(da.median(level, axis=0))
        else:
            levels.append(float(np.median(level)))

    rn = [np.float32(a.readnoise) for a in amps]
    if _is_dask(data):
        import dask.array as da
        sci = da.block([[pieces[k] for k in row] for row in cells])
        rn_blocks = [[da.full(pieces[k].shape, rn[k], dtype=np.float32,
                              chunks=pieces[k].chunks) for k in row] for row in cells]
        rnmap = da.block(rn_blocks)
    else:
        sci = np.empty(shape, np.float32)
        rnmap = np.empty(shape, np.float32)
        for k, (sy, sx) in enumerate(place):
            sci[sy, sx] = pieces[k]
            rnmap[sy, sx] = rn[k]
    layout = AmplifierLayout(amplifiers=amps, placement=tuple(place),
                             levels=tuple(levels), shape=shape)
    return AssembledFrame(data=sci, readnoise=rnmap, layout=layout)
