"""Finding a 2-D image HDU in a FITS file without reading its pixels (layer 3).

:func:`locate_hdu` walks the 2880-byte header blocks itself (plain or gzip
stream) to find the image HDU and the byte offset of its data; anything it
is unsure about (tile-compressed HDUs, HDUs chosen by name, non-standard
files) goes through ``fits.open``. The result, :class:`HduInfo`, holds the
image and primary headers for fast keyword lookup and where the pixels are
(:class:`DataLoc`), for :mod:`crdask.io.raw` to read.

Example
-------
>>> locate_hdu("missing.fits")
Traceback (most recent call last):
...
crdask.io.fits.FitsInputError: missing.fits: no such file
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass

from astropy.io import fits

from .fits import FitsInputError, hdu_label, parse_hdu, select_hdu
from .headers import HeaderCards, MergedCards, sanitize_header

__all__ = ["HduInfo", "DataLoc", "locate_hdu", "astropy_open", "BITPIX_DTYPE"]

_BLOCK = 2880
_CARD = 80
#: Stored dtype (big-endian) for each BITPIX.
BITPIX_DTYPE = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class HduInfo:
    """Where one 2-D image HDU is and what its headers say (no data read).

    ``shape`` is ``(ny, nx)`` = ``(NAXIS2, NAXIS1)`` of the image.
    ``cards`` / ``primary_cards``: fast keyword lookup (:class:`HeaderCards`,
    or an astropy Header when astropy found the HDU) on the image HDU's and
    on HDU 0's header; :attr:`header` / :attr:`primary` are the astropy
    Headers. ``storage`` is ``"plain"`` (memory-mappable at byte
    ``offset``), ``"gzip"`` (``offset`` into the decompressed stream) or
    ``"compressed"`` (tile-compressed: ``offset`` is None, astropy decodes it).
    """

    path: str
    hdu: object
    index: int
    cards: object
    primary_cards: object
    shape: tuple
    storage: str
    offset: int | None

    @property
    def header(self) -> fits.Header:
        c = self.cards
        return c.header if isinstance(c, HeaderCards) else c

    @property
    def primary(self) -> fits.Header:
        c = self.primary_cards
        return c.header if isinstance(c, HeaderCards) else c

    @property
    def merged(self) -> MergedCards:
        """Fast lookup over the image header, then the primary header (the
        one rule of :mod:`crdask.io.headers`); ``.header`` is the astropy
        :class:`~crdask.io.headers.MergedHeader`."""
        m = getattr(self, "_merged", None)
        if m is None:
            m = MergedCards(self.cards, self.primary_cards, path=self.path, hdu=self.hdu,
                            index=self.index)
            self._merged = m
        return m

    @property
    def warnings(self):
        """Notes about header cards read leniently (see :mod:`~crdask.io.headers`)."""
        return self.merged.warnings

    @property
    def location(self) -> "DataLoc":
        """Where the pixels are, without the headers (small, picklable)."""
        dtype = None if self.storage == "compressed" else BITPIX_DTYPE[self.cards["BITPIX"]]
        return DataLoc(self.path, self.hdu, self.index, self.storage, self.offset,
                        self.shape, dtype)


@dataclass(frozen=True)
class DataLoc:
    path: str
    hdu: object
    index: int
    storage: str
    offset: int | None
    shape: tuple
    dtype: str | None    # stored big-endian dtype, e.g. '>i2'


# ---------------------------------------------------------------------------
# finding the HDU

def _one_line(err):
    return " ".join(str(err).split()) or type(err).__name__


class _NotFits(Exception):
    """The primary header is certainly broken (the fast walk words it)."""


def _read_header_blocks(f, first):
    """Bytes of one header (whole blocks up to the END card), or None if the
    stream does not hold a complete header here. For the primary header
    (``first``) a certain problem raises :class:`_NotFits` instead."""
    chunks = []
    while True:
        blk = f.read(_BLOCK)
        if not chunks and not blk.startswith(b"SIMPLE  =" if first else b"XTENSION="):
            if not first:
                return None
            raise _NotFits("empty file" if not blk else
                           "not a FITS file (does not start with a SIMPLE card)")
        if len(blk) != _BLOCK:
            if not first:
                return None
            raise _NotFits(f"truncated FITS header (no END card in the first "
                           f"{sum(map(len, chunks)) + len(blk)} bytes)")
        chunks.append(blk)
        for i in range(0, _BLOCK, _CARD):
            if blk[i:i + 8] == b"END     ":
                return b"".join(chunks)
        if len(chunks) > 1000:   # 36000 cards: not a sane header
            return None


def _int_key(h, key, default=None):
    v = h.get(key, default)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _data_bytes(h):
    """Size of the data unit in bytes (unpadded), or None if unsure."""
    naxis = _int_key(h, "NAXIS")
    bitpix = _int_key(h, "BITPIX")
    if naxis is None or bitpix not in BITPIX_DTYPE or h.get("GROUPS") is True:
        return None
    if naxis == 0:
        return 0
    n = 1
    for i in range(1, naxis + 1):
        v = _int_key(h, f"NAXIS{i}")
        if v is None or v < 0:
            return None
        n *= v
    pcount, gcount = _int_key(h, "PCOUNT", 0), _int_key(h, "GCOUNT", 1)
    if pcount is None or gcount is None:
        return None
    return abs(bitpix) // 8 * gcount * (pcount + n)


def _fast_locate(f, path, spec, gz):
    """:class:`HduInfo` by walking the blocks of the open binary stream ``f``
    (``spec`` None or an int); None whenever the walk is unsure (the caller
    then asks astropy)."""
    primary, index, pos = None, 0, 0
    while True:
        raw = _read_header_blocks(f, first=primary is None)
        if raw is None:
            return None
        h = HeaderCards(raw)
        if primary is None:
            primary = h
        pos += len(raw)
        size = _data_bytes(h)
        if size is None or h.get("ZIMAGE") is True:
            return None         # unusual or tile-compressed: astropy decides
        is_image = index == 0 or h.get("XTENSION") == "IMAGE"
        shape = tuple(h.get(f"NAXIS{i}", 0) for i in (2, 1))
        good = is_image and h.get("NAXIS") == 2 and min(shape) > 0
        if (spec is None and good) or spec == index:
            if not good:
                return None     # astropy words the error
            return HduInfo(path=path, hdu=index, index=index, cards=h,
                           primary_cards=primary, shape=shape,
                           storage="gzip" if gz else "plain", offset=pos)
        pos += -(-size // _BLOCK) * _BLOCK
        f.seek(pos)
        index += 1


def astropy_open(path, label):
    """Read-only, lazy, stored (unscaled) numbers; errors as FitsInputError."""
    try:
        return fits.open(path, mode="readonly", memmap=True, lazy_load_hdus=True,
                         do_not_scale_image_data=True)
    except Exception as e:
        raise FitsInputError(path, label, f"not a readable FITS file: "
                             f"{_one_line(e)}") from None


def _astropy_locate(path, spec, label, gz):
    hdul = astropy_open(path, label)
    try:
        index, label, image = select_hdu(hdul, spec, path)
        header, _ = sanitize_header(image.header)
        primary = header if index == 0 else sanitize_header(hdul[0].header)[0]
        shape = tuple(header.get(f"NAXIS{i}", 0) for i in (2, 1))
        if isinstance(image, fits.CompImageHDU):
            storage, offset = "compressed", None
        else:
            storage = "gzip" if gz else "plain"
            offset = getattr(image, "_data_offset", None)
            if offset is None:   # private attribute gone: the public (slow) way
                offset = hdul.fileinfo(index)["datLoc"]
    finally:
        hdul.close()
    if storage != "compressed" and header.get("BITPIX") not in BITPIX_DTYPE:
        raise FitsInputError(path, label, f"unsupported BITPIX = "
                             f"{header.get('BITPIX')!r}", keyword="BITPIX")
    return HduInfo(path=path, hdu=label, index=index, cards=header, primary_cards=primary,
                   shape=shape, storage=storage, offset=offset)


def locate_hdu(path, hdu=None) -> HduInfo:
    """Find one 2-D image HDU and read its header (and the primary header),
    without reading data. ``hdu``: index, EXTNAME, (EXTNAME, EXTVER) or
    ``"NAME,VER"``; ``None`` = the first HDU with 2-D image data. Raises
    :class:`~crdask.io.fits.FitsInputError`."""
    path = os.fspath(path)
    spec = parse_hdu(hdu)
    label = hdu_label(spec)
    try:
        f = open(path, "rb")        # one open: few system calls (GIL hand-offs)
    except FileNotFoundError:
        raise FitsInputError(path, label, "no such file") from None
    except IsADirectoryError:
        raise FitsInputError(path, label, "is a directory, not a FITS file") from None
    except PermissionError:
        raise FitsInputError(path, label, "permission denied") from None
    except OSError as e:
        raise FitsInputError(path, label, f"cannot open file: {_one_line(e)}") from None
    info = None
    with f:
        gz = f.peek(2)[:2] == _GZIP_MAGIC
        if spec is None or (isinstance(spec, int) and spec >= 0):
            try:
                info = _fast_locate(gzip.GzipFile(fileobj=f) if gz else f, path, spec, gz)
            except _NotFits as e:
                raise FitsInputError(path, label, str(e)) from None
            except Exception:   # corrupt gzip stream, odd header...: astropy words it
                info = None
    return info if info is not None else _astropy_locate(path, spec, label, gz)
