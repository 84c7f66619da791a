"""Writing calibration products: masters and calibrated science frames (layer 3).

Layouts (all written atomically through :func:`crdask.io.fits.write_fits_atomic`):

* master: primary HDU = the master (float32) with ``BUNIT``, HISTORY lines
  (crdask version, how it was made), ``NCOMBINE``; ``VARIANCE`` (float32,
  BUNIT^2) when known; ``NFRAMES`` (uint16, frames used per pixel) when
  known; ``INPUTS`` binary table: file name, SHA-256 of the file, and any
  per-frame columns given (exposure time, scale...).
* Write errors (disk full, quota, read-only filesystem...) raise
  :class:`crdask.io.atomic.OutputWriteError`, one line naming the file
  (``out/x_cal.fits: no space left on device``), and leave no partial or
  temporary file.
* calibrated frame: primary HDU = science data (float32, e-) with the input
  header and HISTORY naming the masters used; ``UNCERT`` = variance (e-^2)
  with ``UTYPE = 'VarianceUncertainty'``, and ``MASK`` (uint8 bit flags,
  ``MASKB<n>`` cards name the bits): ``CCDData.read(path)`` gives data,
  variance uncertainty and (boolean) mask.
"""

import os

import numpy as np
from astropy.io import fits
from astropy.table import Table

from .._version import __version__
from ..calib.bits import describe_bits
from .checksums import hash_file
from .fits import clean_header, history_lines, write_fits_atomic

__all__ = ["sha256_of", "write_master", "write_calibrated", "read_master"]


def sha256_of(path):
    """Hex SHA-256 of a file's bytes (used to record and check inputs).

    Examples
    --------
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "x")
    >>> _ = open(p, "wb").write(b"abc")
    >>> sha256_of(p)[:8]
    'ba7816bf'
    """
    return hash_file(path)


def _history(header, what, params):
    header["HISTORY"] = f"crdask {__version__} {what}"
    for line in history_lines([f"{k}={v}" for k, v in params.items()]):
        header["HISTORY"] = line


def write_master(path, data, *, kind, unit, inputs, params=None, variance=None,
                 count=None, columns=None, header=None, overwrite=False, checksums=None):
    """Write a master calibration frame.

    Parameters
    ----------
    path : output file.
    data : (ny, nx) float32 master.
    kind : 'bias' | 'dark' | 'flat' | 'bpm' ... (keyword ``MASTER``).
    unit : ``BUNIT`` string, e.g. 'electron', 'electron/s', '' (flat).
    inputs : list of input file paths (recorded with their SHA-256).
    params : dict of parameters recorded as HISTORY.
    variance : (ny, nx) variance of the master, or None.
    count : (ny, nx) frames used per pixel, or None.
    columns : dict name -> per-input values for the ``INPUTS`` table.
    header : extra cards (e.g. FILTER, EXPTIME).
    checksums : dict, optional
        ``{input path: SHA-256 hex}`` already known (the ledger's cache);
        inputs not in it are hashed here.
    """
    checksums = checksums or {}
    hdr = fits.Header() if header is None else header.copy()
    hdr["MASTER"] = (kind, "kind of master calibration frame")
    hdr["BUNIT"] = unit
    hdr["NCOMBINE"] = (len(inputs), "number of input frames")
    _history(hdr, f"master {kind}", params or {})
    hdus = [fits.PrimaryHDU(np.asarray(data, dtype=np.float32), header=hdr)]
    if variance is not None:
        hdus.append(fits.ImageHDU(np.asarray(variance, dtype=np.float32), name="VARIANCE"))
    if count is not None:
        hdus.append(fits.ImageHDU(np.asarray(count, dtype=np.uint16), name="NFRAMES"))
    table = Table({"FILE": [os.path.basename(str(p)) for p in inputs],
                   "SHA256": [checksums.get(str(p)) or sha256_of(p) for p in inputs]})
    for name, values in (columns or {}).items():
        table[name] = values
    hdus.append(fits.BinTableHDU(table, name="INPUTS"))
    write_fits_atomic(fits.HDUList(hdus), path, overwrite=overwrite)
    return path


def read_master(path):
    """(data float32, header, variance or None, inputs Table) of a master."""
    with fits.open(path, memmap=False) as hdul:
        data = np.asarray(hdul[0].data, dtype=np.float32)
        var = (np.asarray(hdul["VARIANCE"].data, dtype=np.float32)
               if "VARIANCE" in hdul else None)
        inputs = Table(hdul["INPUTS"].data) if "INPUTS" in hdul else None
        return data, hdul[0].header.copy(), var, inputs


def write_calibrated(path, sci, var, mask, *, header, history=(), overwrite=False):
    """Write SCI (primary, e-), UNCERT (variance, e-^2) and MASK (uint8 bits)."""
    hdr = clean_header(header)
    for key in ("BIASSEC", "TRIMSEC"):  # they describe the raw frame's pixels
        hdr.remove(key, ignore_missing=True)
    if "DATASEC" in hdr:  # the frame is the data section now
        ny, nx = np.shape(sci)
        hdr["DATASEC"] = f"[1:{nx},1:{ny}]"
    hdr["BUNIT"] = "electron"
    hdr["HISTORY"] = f"crdask {__version__} calibrate"
    for line in history:
        hdr["HISTORY"] = line
    unc = fits.Header()
    unc["UTYPE"] = "VarianceUncertainty"
    unc["BUNIT"] = "electron2"
    mhdr = describe_bits(fits.Header())
    hdul = fits.HDUList([
        fits.PrimaryHDU(np.asarray(sci, dtype=np.float32), header=hdr),
        fits.ImageHDU(np.asarray(var, dtype=np.float32), header=unc, name="UNCERT"),
        fits.ImageHDU(np.asarray(mask, dtype=np.uint8), header=mhdr, name="MASK"),
    ])
    write_fits_atomic(hdul, path, overwrite=overwrite)
    return path
