"""How simulated raw frames are written to disk: the file formats instruments use.

* ``single`` -- one primary HDU (``name.fits``), all keywords in it.
* ``mef`` -- multi-extension FITS (``name.fits``): the primary header holds
  the instrument and exposure keywords (:data:`PRIMARY_KEYWORDS`: GAIN,
  RDNOISE, EXPTIME, DATASEC, BIASSEC, IMAGETYP, ...) and no data; extension 1
  (``EXTNAME = 'SCI'``) holds the pixels with the rest (BUNIT, CCDSUM, ...),
  as many observatory archives write a one-CCD camera.
* ``gzip`` -- the ``single`` file gzip-compressed (``name.fits.gz``; gzip
  header time 0, so the bytes depend only on the frame).
* ``fpack`` -- tile-compressed (``name.fits.fz``) as ``fpack`` writes it: an
  empty primary HDU, the image in a ``COMPRESSED_IMAGE`` extension with
  RICE_1 compression, which is lossless for integer data, and all keywords
  in that extension's header.

All four hold the same stored numbers (uint16 via BZERO = 32768) and the
same keywords, so a catalogue must describe them identically.

Example
-------
>>> from crdask.simulate import simulate_raw, Detector
>>> sim = simulate_raw("bias", Detector(shape=(64, 64)))
>>> raw_name("bias_001", "fpack")
'bias_001.fits.fz'
>>> write_raw(sim, "bias_001.fits.fz", "fpack", overwrite=True)  # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import io

import numpy as np
from astropy.io import fits

from ..io.atomic import atomic_open
from . import frame as _frame

__all__ = ["FORMATS", "PRIMARY_KEYWORDS", "raw_name", "write_raw", "double_hit_charge"]

#: File formats :func:`write_raw` writes, with their file-name endings.
FORMATS = {"single": ".fits", "mef": ".fits", "gzip": ".fits.gz", "fpack": ".fits.fz"}

#: Keywords a ``mef`` file keeps in its primary header (with any numbered
#: per-amplifier versions: GAIN1, DATASEC2, ...).
PRIMARY_KEYWORDS = ("INSTRUME", "DETECTOR", "IMAGETYP", "OBSTYPE", "OBJECT", "DATE-OBS",
                    "EXPTIME", "DARKTIME", "FILTER", "GRISM", "SLIT", "DISPAXIS", "GAIN",
                    "RDNOISE", "SATURATE", "DATASEC", "TRIMSEC", "BIASSEC", "NAMPS",
                    "SIMSEED", "SIMDET", "ORIGIN")
_STRUCTURAL = ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "BZERO",
               "BSCALE")


def raw_name(stem, format):
    """File name for ``stem`` in ``format`` (one of :data:`FORMATS`)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    return stem + FORMATS[format]


def _in_primary(key):
    base = key.rstrip("0123456789")
    return key in PRIMARY_KEYWORDS or (base != key and base in PRIMARY_KEYWORDS)


def _cards(header, keep):
    out = fits.Header()
    for card in header.cards:
        if card.keyword in _STRUCTURAL or card.keyword in ("COMMENT", "HISTORY", ""):
            continue
        if keep(card.keyword):
            out.append(card)
    return out


def _hdulist(sim, format):
    data, header = sim.hdu.data, sim.hdu.header
    if format in ("single", "gzip"):
        return fits.HDUList([fits.PrimaryHDU(data=data, header=_cards(header, bool))])
    if format == "mef":
        prim = fits.PrimaryHDU(header=_cards(header, _in_primary))
        ext = fits.ImageHDU(data=data, header=_cards(header, lambda k: not _in_primary(k)),
                            name="SCI")
        return fits.HDUList([prim, ext])
    comp = fits.CompImageHDU(data=data, header=_cards(header, bool),
                             compression_type="RICE_1")
    return fits.HDUList([fits.PrimaryHDU(), comp])


def write_raw(sim, path, format="single", *, overwrite=False):
    """Write one :class:`~crdask.simulate.raw.RawSimulation` to ``path`` in
    ``format`` (see the module docstring), atomically. Returns ``path``."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    hdul = _hdulist(sim, format)
    with atomic_open(path, overwrite=overwrite) as fh:
        if format == "gzip":
            buf = io.BytesIO()
            hdul.writeto(buf)
            fh.write(gzip.compress(buf.getvalue(), mtime=0))
        else:
            hdul.writeto(fh)
    return path


def double_hit_charge(detector, seed, n_events):
    """CR charge (e-, float64, imaging-area shape of ``detector``) of
    ``n_events`` CR events drawn with ``seed``: the same array is added to
    two frames so the same pixels are hit in both ("double hits")."""
    ny, nx = detector.image_shape
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7]))
    charge = np.zeros((ny, nx), dtype=np.float64)
    kinds = rng.choice(3, size=int(n_events), p=_frame.CR_KIND_FRACTIONS)
    qs = np.exp(rng.uniform(*np.log(_frame.CR_PEAK_RANGE), int(n_events)))
    for k, q in zip(kinds, qs):
        _frame.deposit_cosmic(charge, rng, _frame.CR_KINDS[k], q)
    return charge
