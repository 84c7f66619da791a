"""Gain and read noise of a night, measured from its own flats and biases (layer 4).

``measure_gain(directory)``: catalogue the directory, take the bias frames and
the flats of the filter with most flats, overscan-correct and trim them in
ADU (no gain applied), and run Janesick's photon-transfer estimate
(:func:`crdask.calib.noise.gain_readnoise`). The result is compared with the
header values (GAIN/RDNOISE or the keyword map's alternatives).
"""

from dataclasses import dataclass, replace

import dask
import numpy as np

from ..calib.noise import compare_with_header, gain_readnoise
from ..io.catalog import build_catalog
from .calibration import CalibSetup, FrameRejected, check_frames, electrons

__all__ = ["GainReport", "measure_gain"]


@dataclass
class GainReport:
    """Measured values (``result``), header values, warnings and frames used."""

    result: object
    header_gain: float | None
    header_readnoise: float | None
    warnings: list
    flats: list
    biases: list
    rejected: list


def _adu_frames(infos, setup, rejected):
    preps = []
    for info in infos:
        try:
            # gain=1 so that ``electrons`` leaves the values in ADU
            p = electrons(info.path, replace(setup, gain=1.0, readnoise=0.0), info.exptime)
            preps.append(p)
        except FrameRejected as e:
            rejected.append((info.path, str(e)))
    arrays = dask.compute(*[p.data for p in preps])
    kept = []
    for p, a in zip(preps, arrays):
        a = np.asarray(a)
        ny, nx = a.shape
        centre = a[ny // 4:ny - ny // 4 or None, nx // 4:nx - nx // 4 or None]
        if not np.isfinite(centre).all():   # photon transfer needs every pixel
            rejected.append((p.path, f"{p.path}: {int((~np.isfinite(centre)).sum())} "
                                     "non-finite pixels in the frame's centre (NaN/inf); "
                                     "not used"))
            continue
        kept.append((a, p.path, p.header))
    return [k[0] for k in kept], [k[1] for k in kept], [k[2] for k in kept]


def measure_gain(directory, setup=None, *, filter=None, region=None):
    """Gain (e-/ADU) and read noise (e-) from the night's flats and biases.

    Raises ``ValueError`` (one line) when there are fewer than two usable
    bias frames or two usable flats.
    """
    setup = setup or CalibSetup()
    catalog = build_catalog(directory, setup.keymap, hdu=setup.hdu)
    rejected = []
    biases = check_frames(catalog.of_type("bias"), "bias", setup, rejected)
    flats = check_frames(catalog.of_type("flat"), "flat", setup, rejected)
    by_filter = {}
    for f in flats:
        by_filter.setdefault(f.filter, []).append(f)
    if filter is None and by_filter:
        filter = max(by_filter, key=lambda k: (len(by_filter[k]), str(k)))
    flats = by_filter.get(filter, [])
    if len(biases) < 2 or len(flats) < 2:
        raise ValueError(f"{directory}: need at least 2 bias frames and 2 flats of one "
                         f"filter, found {len(biases)} biases and {len(flats)} flats"
                         + (f" for filter {filter!r}" if filter else ""))
    b, bpaths, bheaders = _adu_frames(biases, setup, rejected)
    f, fpaths, _ = _adu_frames(flats, setup, rejected)
    if len(b) < 2 or len(f) < 2:
        raise ValueError(f"{directory}: need at least 2 usable bias frames and 2 flats of "
                         f"one filter, {len(b)} and {len(f)} left after setting aside "
                         + "; ".join(why for _, why in rejected))
    res = gain_readnoise(f, b, region=region)
    hdr = bheaders[0]
    hg = next((float(hdr[k]) for k in setup.keymap.gain_keys if k in hdr), None)
    hr = next((float(hdr[k]) for k in setup.keymap.rdnoise_keys if k in hdr), None)
    warnings = compare_with_header(res, hg, hr) if (hg is not None or hr is not None) else []
    return GainReport(res, hg, hr, warnings, fpaths, bpaths, rejected)
