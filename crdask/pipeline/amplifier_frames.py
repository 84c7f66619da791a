"""A raw frame read through several amplifiers, as the night calibrates it (layer 4).

:func:`crdask.pipeline.calibration.electrons` -- the one per-frame
pre-processing of every frame kind (bias, dark, flat, science) -- calls
:func:`amplifier_frame` when the workflow sets ``instrument.amplifiers``:

* ``'header'``: each frame's own keywords (numbered ``DATASECn``/
  ``BIASSECn``/``GAINn``/``RDNOISEn``/``DETSECn`` of the merged image +
  primary header, else the single ``DATASEC``/``BIASSEC``/``GAIN``/
  ``RDNOISE``), read with :func:`crdask.io.amplifiers.amplifiers_from_header`
  and the workflow's gain/read-noise keyword lists;
* a list of amplifiers (``instrument.amplifiers: [{name, data, overscan,
  gain, readnoise, detsec, ...}]``), read with
  :func:`crdask.io.amplifiers.amplifiers_from_config` against the frame's
  raw shape, ``detsec`` binned with the header's ``CCDSUM``.

Each amplifier's strip gives its own bias level (``instrument.
overscan_statistic`` / ``overscan_fit`` / ``overscan_order``, as the
one-amplifier path), its data section is converted with its own gain, and
the pieces are assembled in detector order
(:func:`crdask.calib.amplifiers.assemble_amplifiers`). The saturation mask
is assembled the same way, so it stays aligned with the pixels. The frame's
read noise becomes a per-pixel map (each amplifier's), which the science
variance uses; the scalar ``readnoise`` handed to CR methods and the master
bias model is the median over the amplifiers' pixels (an approximation the
HISTORY states). ``instrument.overscan``, ``trim``, ``gain``, ``readnoise``
and ``bias_level`` do not apply then: the amplifiers carry their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from ..calib.amplifiers import Amplifier, assemble_amplifiers
from ..io.amplifiers import amplifiers_from_config, amplifiers_from_header

__all__ = ["AmplifierFrame", "amplifier_frame", "layout_history"]


@dataclass
class AmplifierFrame:
    """What :func:`amplifier_frame` returns: lazy ``data`` (e-, float32) and
    ``saturated`` (bool) in detector order, ``readnoise_map`` (e-, float32),
    scalar ``gain``/``readnoise`` (medians over the pixels, for messages and
    scalar consumers), ``layout`` (:class:`~crdask.calib.amplifiers.
    AmplifierLayout`, lazy bias levels) and ``notes`` (HISTORY words)."""

    data: object
    saturated: object
    readnoise_map: object
    gain: float
    readnoise: float
    layout: object
    notes: list


def _ccdsum(header):
    text = header.get("CCDSUM")
    if text is None:
        return (1, 1)
    parts = re.split(r"[\sx,]+", str(text).strip())
    try:
        return int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        return (1, 1)


def _amplifiers(setup, header, shape, where):
    if setup.amplifiers == "header":
        return amplifiers_from_header(header, path=getattr(header, "path", None) or where,
                                      hdu=getattr(header, "hdu", None),
                                      gain_keys=tuple(setup.keymap.gain_keys),
                                      readnoise_keys=tuple(setup.keymap.rdnoise_keys))
    return amplifiers_from_config([{k: v for k, v in e.items() if v is not None}
                                   for e in setup.amplifiers], shape,
                                  binning=_ccdsum(header))


def _pixel_median(layout, values):
    """Median of per-amplifier ``values`` over the assembled pixels."""
    sizes = [(sy.stop - sy.start) * (sx.stop - sx.start) for sy, sx in layout.placement]
    order = np.argsort(values)
    cum = np.cumsum(np.asarray(sizes)[order])
    return float(np.asarray(values)[order][np.searchsorted(cum, cum[-1] / 2.0)])


def amplifier_frame(raw, saturated, header, setup, *, where):
    """Per-amplifier overscan, gain and assembly of one raw frame.

    Parameters
    ----------
    raw : dask.array.Array (ny_raw, nx_raw)
        The raw frame, ADU, overscan strips included.
    saturated : dask.array.Array (ny_raw, nx_raw) bool
        ``raw >= saturation`` (ADU).
    header : header of the image HDU merged over the primary.
    setup : :class:`crdask.pipeline.calibration.CalibSetup` with
        ``amplifiers`` set (``'header'`` or a list of mappings).
    where : str
        ``FILE[HDU]`` for messages.

    Returns
    -------
    AmplifierFrame

    Raises
    ------
    ValueError
        One line naming the file (and the keyword or the amplifier).

    Example
    -------
    >>> import dask.array as da, numpy as np
    >>> from crdask.pipeline.calibration import CalibSetup
    >>> raw = np.zeros((8, 24), np.uint16); raw[:, :12] += 100; raw[:, 12:] += 120
    >>> setup = CalibSetup(amplifiers=[
    ...     {"data": "[3:12,1:8]", "overscan": "[1:2,1:8]", "gain": 1.5, "readnoise": 4},
    ...     {"data": "[13:22,1:8]", "overscan": "[23:24,1:8]", "gain": 2.0, "readnoise": 5}])
    >>> a = amplifier_frame(da.from_array(raw), da.from_array(raw > 6e4), {}, setup,
    ...                     where="f.fits[0]")
    >>> a.data.shape, float(abs(a.data).max().compute())
    ((8, 20), 0.0)
    """
    try:
        amps = _amplifiers(setup, header, tuple(raw.shape), where)
        kw = dict(statistic=setup.overscan_statistic, fit=setup.overscan_fit,
                  order=setup.overscan_order)
        out = assemble_amplifiers(raw, amps, **kw)
        # The saturation mask through the same placement (no bias, gain 1).
        flags = [Amplifier(a.name, a.datasec, 1.0, 0.0, detsec=a.detsec) for a in amps]
        sat = assemble_amplifiers(saturated.astype(np.float32), flags).data > 0.5
    except ValueError as e:
        msg = str(e).splitlines()[0]
        raise ValueError(msg if msg.startswith(where.rpartition("[")[0] or where)
                         else f"{where}: {msg}") from None
    gains = [float(a.gain) for a in amps]
    rns = [float(a.readnoise) for a in amps]
    gain = _pixel_median(out.layout, gains)
    rn = _pixel_median(out.layout, rns)
    notes = [f"{len(amps)} amplifier(s) from "
             + ("the header" if setup.amplifiers == "header" else "instrument.amplifiers")
             + f", overscan {setup.overscan_statistic}"
             + (f" {setup.overscan_fit}({setup.overscan_order})" if setup.overscan_fit else "")
             + f"; scalar gain/readnoise = pixel medians {gain:g}/{rn:g}"]
    return AmplifierFrame(data=out.data, saturated=sat, readnoise_map=out.readnoise,
                          gain=gain, readnoise=rn, layout=out.layout, notes=notes)


def layout_history(layout, levels):
    """HISTORY lines of an amplifier layout with its bias levels computed
    (``levels``: one float per amplifier, ADU, e.g. from the same
    ``dask.compute`` as the frame, so the raw file is read once)."""
    return replace(layout, levels=tuple(float(v) for v in levels)).history()
