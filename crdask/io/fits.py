"""Reading image HDUs and header keywords from FITS files (layer 3).

Everything here reports problems as :class:`FitsInputError`, whose text is the
one line the CLI prints: ``FILE[HDU]: problem``.

Inputs are opened read-only and fully read into memory (``memmap=False``), so
the file is closed when a function returns and is never modified. Integer
data with ``BZERO``/``BSCALE`` are returned as *physical* values (astropy's
default scaling; e.g. BZERO = 32768 int16 becomes uint16), and ``BLANK``
pixels become NaN, which the CR algorithms treat as bad pixels.
"""

import numbers
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
from astropy.io import fits

from ..cosmic.params import wrap_words

from .atomic import atomic_open
from .headers import sanitize_header

__all__ = [
    "FitsInputError",
    "ImageInput",
    "read_image",
    "parse_hdu",
    "header_number",
    "output_header",
    "history_lines",
    "write_fits_atomic",
    "clean_header",
    "STRUCTURAL_KEYWORDS",
    "SCALING_KEYWORDS",
]

#: Cards that describe the layout of an HDU; astropy writes them itself.
STRUCTURAL_KEYWORDS = ("SIMPLE", "XTENSION", "BITPIX", "NAXIS", "EXTEND", "PCOUNT",
                       "GCOUNT", "GROUPS", "EXTNAME", "EXTVER", "EXTLEVEL", "INHERIT",
                       "CHECKSUM", "DATASUM")

#: Cards about the stored integer encoding or the old pixel values: they no
#: longer apply to cleaned float32 data.
SCALING_KEYWORDS = ("BZERO", "BSCALE", "BLANK", "BUNIT_RAW", "O_BZERO", "O_BSCALE",
                    "DATAMIN", "DATAMAX")


class FitsInputError(Exception):
    """A problem with one input file, HDU or header keyword.

    ``str(err)`` is ``"FILE[HDU]: problem"`` (``"FILE: problem"`` when no HDU
    applies yet).
    """

    def __init__(self, path, hdu, problem, keyword=None):
        self.path = os.fspath(path)
        self.hdu = hdu
        self.problem = problem
        self.keyword = keyword
        super().__init__(str(self))

    def __str__(self):
        where = self.path if self.hdu is None else f"{self.path}[{self.hdu}]"
        return f"{where}: {self.problem}"

    def __reduce__(self):  # picklable across Dask workers
        return (type(self), (self.path, self.hdu, self.problem, self.keyword))


@dataclass
class ImageInput:
    """One image read from a FITS file."""

    path: str
    hdu: object                 #: label for messages: index, or EXTNAME as asked
    index: int                  #: index of the HDU in the file
    data: np.ndarray            #: physical values, a private copy
    header: fits.Header         #: the image HDU's header
    primary_header: fits.Header  #: header of HDU 0 (same object if index == 0)
    mask: np.ndarray = None     #: bool bad-pixel mask (True = bad), or None
    warnings: list = field(default_factory=list)  #: astropy warnings while reading


def parse_hdu(spec):
    """An ``--hdu`` value as astropy understands it: int index, EXTNAME, or
    ``(EXTNAME, EXTVER)`` from ``"NAME,VER"``. ``None`` stays ``None``."""
    if spec is None or isinstance(spec, (int, tuple)):
        return spec
    s = str(spec).strip()
    try:
        return int(s)
    except ValueError:
        pass
    if "," in s:
        name, _, ver = s.partition(",")
        try:
            return (name.strip(), int(ver))
        except ValueError:
            pass
    return s


def hdu_label(spec):
    if isinstance(spec, tuple):
        return ",".join(map(str, spec))
    return spec


def _image_shape(hdu):
    """Shape of an image HDU from its header, or None if not an image HDU."""
    if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        return None
    h = hdu.header
    n = h.get("NAXIS", 0)
    return tuple(h.get(f"NAXIS{i}", 0) for i in range(n, 0, -1))


def select_hdu(hdul, spec, path):
    """(index, label, hdu) for ``spec``, or the first HDU with 2-D image data."""
    if spec is None:
        for i, hdu in enumerate(hdul):
            shape = _image_shape(hdu)
            if shape is not None and len(shape) == 2 and min(shape) > 0:
                return i, i, hdu
        raise FitsInputError(path, None, "no HDU with 2-D image data")
    label = hdu_label(spec)
    try:
        hdu = hdul[spec]
    except (KeyError, IndexError):
        names = [h.name for h in hdul]
        raise FitsInputError(path, label, f"no such HDU (file has {len(hdul)}: "
                             f"{', '.join(repr(n) for n in names)})") from None
    index = hdul.index(hdu)
    shape = _image_shape(hdu)
    if shape is None:
        raise FitsInputError(path, label, f"HDU is a {type(hdu).__name__}, not an image")
    if len(shape) != 2 or min(shape, default=0) == 0:
        what = "no data" if not shape or min(shape) == 0 else f"{len(shape)}-D data {shape}"
        raise FitsInputError(path, label, f"HDU has {what}; need a 2-D image")
    return index, label, hdu


def _read_data(hdu, path, label):
    try:
        data = hdu.data
    except Exception as e:  # truncated files give ValueError/OSError/TypeError
        raise FitsInputError(path, label, f"cannot read image data (truncated or "
                             f"corrupt file?): {e}") from None
    if data is None or data.ndim != 2:
        raise FitsInputError(path, label, "HDU has no 2-D image data")
    if data.dtype.kind not in "biuf":
        raise FitsInputError(path, label, f"unsupported data type {data.dtype}")
    return np.array(data)  # private copy, detached from the file


def read_image(path, hdu=None, mask_hdu=None):
    """Read one 2-D image (and optionally a bad-pixel mask) from ``path``.

    Parameters
    ----------
    path : str or path-like
    hdu : int, str, (str, int) or None
        Index, EXTNAME or (EXTNAME, EXTVER) of the image; ``None`` picks the
        first HDU with 2-D image data (so an empty primary is skipped).
    mask_hdu : same, optional
        An HDU of the same file with a same-shaped bad-pixel mask: non-zero
        (or NaN) pixels are bad.

    Returns :class:`ImageInput`; raises :class:`FitsInputError`.
    """
    path = os.fspath(path)
    hdu = parse_hdu(hdu)
    mask_hdu = parse_hdu(mask_hdu)
    label = hdu_label(hdu)
    if not os.path.exists(path):
        raise FitsInputError(path, label, "no such file")
    if os.path.isdir(path):
        raise FitsInputError(path, label, "is a directory, not a FITS file")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hdul = fits.open(path, mode="readonly", memmap=False,
                             do_not_scale_image_data=False, uint=True)
        except Exception as e:
            raise FitsInputError(path, label, f"not a readable FITS file: {e}") from None
        try:
            index, label, image_hdu = select_hdu(hdul, hdu, path)
            data = _read_data(image_hdu, path, label)
            # non-ASCII cards are read leniently (a note each), never a VerifyError later
            header, notes = sanitize_header(image_hdu.header.copy())
            primary = header
            if index != 0:
                primary, more = sanitize_header(hdul[0].header.copy())
                notes += more
            mask = None
            if mask_hdu is not None:
                _, mlabel, m_hdu = select_hdu(hdul, mask_hdu, path)
                m = _read_data(m_hdu, path, mlabel)
                if m.shape != data.shape:
                    raise FitsInputError(path, mlabel, f"mask shape {m.shape} differs "
                                         f"from image shape {data.shape}")
                mask = m != 0  # NaN != 0 too: a NaN mask pixel is bad
        finally:
            hdul.close()
    msgs = list(notes)
    for w in caught:
        text = " ".join(str(w.message).split())
        if text not in msgs:
            msgs.append(text)
    return ImageInput(path=path, hdu=label, index=index, data=data, header=header,
                      primary_header=primary, mask=mask, warnings=msgs)


def header_number(image, keyword):
    """The numeric value of ``keyword`` in ``image``'s HDU header, falling back
    to the primary header (instrument keywords of multi-extension files often
    live there). Raises :class:`FitsInputError` naming file, HDU and keyword
    if it is missing or not a finite real number."""
    for h in (image.header, image.primary_header):
        if keyword in h:
            value = h[keyword]
            break
    else:
        raise FitsInputError(image.path, image.hdu, f"keyword {keyword} not found",
                             keyword=keyword)
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real)
            or not np.isfinite(value)):
        raise FitsInputError(image.path, image.hdu, f"keyword {keyword} = {value!r} "
                             "is not a finite number", keyword=keyword)
    return float(value)


def clean_header(header):
    """A copy of ``header`` without structural and integer-scaling cards (for
    writing processed float data under an input's header)."""
    out = header.copy()
    naxes = [k for k in out if k.startswith("NAXIS") and k[5:].isdigit()]
    for key in (*STRUCTURAL_KEYWORDS, *SCALING_KEYWORDS, *naxes):
        out.remove(key, ignore_missing=True, remove_all=True)
    return out


def output_header(image):
    """Header for a cleaned image written as a primary HDU.

    The input HDU's header (for an extension: the primary header's cards,
    then the extension's, which win) without the structural cards and
    without BZERO/BSCALE/BLANK/DATAMIN/DATAMAX, which describe the stored
    integers or the uncleaned values. WCS and everything else is kept.
    """
    out = clean_header(image.header)
    if image.index == 0:
        return out
    merged = clean_header(image.primary_header)
    for card in out.cards:
        if card.keyword in ("COMMENT", "HISTORY", "") or card.keyword not in merged:
            merged.append(card, end=True)
        else:
            merged[card.keyword] = (card.value, card.comment)
    return merged


def history_lines(words, width=72):
    """Pack ``words`` (e.g. ``"sigclip=4.5"``) into HISTORY-sized lines
    (:func:`crdask.cosmic.params.wrap_words`)."""
    return wrap_words(words, width)


class _PlainWriter:
    """A minimal write-only view of a file for ``HDUList.writeto``.

    astropy hands a real file to ``numpy.ndarray.tofile``, which reports a
    full disk as ``OSError: 360000 requested and 261424 written`` -- no
    errno -- and its own error handler then fails with ``AttributeError:
    'list' object has no attribute '_file'``. Through this object astropy
    uses ``write()``, whose ``OSError`` keeps ``errno`` (ENOSPC, EDQUOT...),
    so :func:`~crdask.io.atomic.atomic_open` can name the file and the cause.
    """

    mode = "wb"

    def __init__(self, f):
        self._f = f
        self.name = getattr(f, "name", None)

    def write(self, data):
        return self._f.write(data)

    def flush(self):
        self._f.flush()

    def tell(self):
        return self._f.tell()

    def seekable(self):
        return False

    @property
    def closed(self):
        return self._f.closed


def write_fits_atomic(hdul, path, *, overwrite=False):
    """Write ``hdul`` to ``path`` atomically (see :mod:`crdask.io.atomic`).

    Parameters
    ----------
    hdul : astropy.io.fits.HDUList or list of HDUs
    path : str or os.PathLike
        The final file name; a hidden temporary file next to it is written,
        synced and renamed.
    overwrite : bool
        Replace an existing ``path``.

    Non-standard cards inherited from an input header are fixed where astropy
    can (``output_verify="fix+warn"``) rather than failing the whole frame.

    Raises
    ------
    crdask.io.atomic.OutputExistsError
        ``path`` exists and not ``overwrite``.
    crdask.io.atomic.OutputWriteError
        The system refused the write (disk full, quota, read-only, no
        permission): one line ``path: no space left on device``; no partial
        file and no temporary file are left.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> d = tempfile.mkdtemp()
    >>> write_fits_atomic([fits.PrimaryHDU(np.zeros((2, 3), "f4"))], os.path.join(d, "z.fits"))
    >>> fits.getdata(os.path.join(d, "z.fits")).shape
    (2, 3)
    """
    if not isinstance(hdul, fits.HDUList):
        hdul = fits.HDUList(hdul)
    with atomic_open(path, overwrite=overwrite) as f:
        hdul.writeto(_PlainWriter(f), output_verify="fix+warn")
