"""Header keywords as instruments write them (layer 3).

Two rules every keyword lookup in crdask follows (catalogue, raw reading,
calibration), implemented once here:

* **The image HDU's header over the primary's.** Multi-extension (MEF)
  files keep instrument keywords (GAIN, RDNOISE, EXPTIME, DATASEC, ...) in
  the primary header and the pixels in an extension. A keyword is looked up
  in the image HDU's header first, then in the primary header -- except the
  cards that describe one HDU's own layout or encoding (:data:`LOCAL_KEYWORDS`:
  BITPIX, NAXISn, BZERO, BSCALE, BLANK, EXTNAME, CHECKSUM, ...), which are
  only ever read from the image HDU. :class:`MergedCards` is the fast lookup
  (the catalogue), :class:`MergedHeader` the full astropy header
  (:func:`crdask.io.raw.read_header`, ``RawFrame.header``); both follow the
  same rule and carry the HDU actually read, so errors can name it.
* **Keywords by the names people write.** ESO HIERARCH keywords are named as
  ``'ESO DPR TYPE'`` or ``'HIERARCH ESO DPR TYPE'`` (any case), everywhere a
  keyword is named (KeywordMap entries, workflow ``keywords:`` lists).

Cards that are not printable ASCII (e.g. ``OBJECT = 'Café'`` written by a
careless observing tool) make astropy raise ``VerifyError`` on access.
:func:`sanitize_header_bytes` reads such cards leniently, ``?`` for every
byte outside printable ASCII, and returns a note naming the card; the notes end up in the catalogue's
per-file ``warnings`` and in ``RawFrame.warnings``. Files are never changed.

Example
-------
>>> from crdask.io.headers import sanitize_header_bytes
>>> card = b"OBJECT  = 'Caf\\xc3\\xa9'".ljust(80) + b"END".ljust(80)
>>> fixed, notes = sanitize_header_bytes(card)
>>> fixed[:80].rstrip(), notes
(b"OBJECT  = 'Caf??'", ["card OBJECT has non-ASCII bytes (b'\\\\xc3\\\\xa9'); read as 'Caf??'"])
"""

from __future__ import annotations

import functools
import re

from astropy.io import fits

__all__ = ["LOCAL_KEYWORDS", "normalize_keyword", "sanitize_header_bytes", "HeaderCards",
           "MergedCards", "MergedHeader", "merge_headers", "sanitize_header"]

_CARD = 80

#: Keywords describing one HDU's own structure or stored encoding: read only
#: from the image HDU, never inherited from the primary header.
LOCAL_KEYWORDS = frozenset((
    "SIMPLE", "XTENSION", "BITPIX", "NAXIS", "EXTEND", "PCOUNT", "GCOUNT", "GROUPS",
    "EXTNAME", "EXTVER", "EXTLEVEL", "INHERIT", "CHECKSUM", "DATASUM", "BZERO",
    "BSCALE", "BLANK", "ZIMAGE", "ZBITPIX", "ZNAXIS", "ZCMPTYPE", "ZQUANTIZ", "ZTENSION",
    "ZSIMPLE", "ZEXTEND", "ZPCOUNT", "ZGCOUNT", "ZHECKSUM", "ZDATASUM", "END"))
_LOCAL_RE = re.compile(r"^(?:Z?NAXIS\d+|ZTILE\d+|ZNAME\d+|ZVAL\d+|TFORM\d+|TTYPE\d+)$")
_COMMENTARY = ("COMMENT", "HISTORY", "", "CONTINUE")


@functools.lru_cache(maxsize=4096)
def normalize_keyword(key):
    """The keyword as astropy names it: upper case, single spaces, without a
    leading ``HIERARCH`` (``'hierarch eso dpr type'`` -> ``'ESO DPR TYPE'``)."""
    k = " ".join(str(key).split()).upper()
    if k.startswith("HIERARCH "):
        k = k[len("HIERARCH "):]
    return k


@functools.lru_cache(maxsize=4096)
def _is_local(key):
    return key in LOCAL_KEYWORDS or bool(_LOCAL_RE.match(key))


def _card_keyword(card):
    """Keyword of one raw card, for messages (HIERARCH names spelled out)."""
    head = card[:8].decode("ascii", "replace").strip()
    if head.upper() == "HIERARCH":
        return normalize_keyword(card.split(b"=", 1)[0].decode("ascii", "replace"))
    return head or "(blank)"


def sanitize_header_bytes(raw):
    """``(bytes, notes)``: the header bytes with every card that holds bytes
    outside printable ASCII (0x20-0x7E) replaced by an ASCII card (each such
    byte becomes ``?``, as astropy does when it opens a file, so a UTF-8
    ``é`` reads as ``??``), and one note per such card naming its keyword. ``raw`` is returned unchanged
    (same object) when it is clean, which is the common case."""
    if not raw.translate(None, _PRINTABLE):     # one C pass: the common case
        return raw, []
    out, notes = bytearray(raw), []
    for i in range(0, len(raw) - len(raw) % _CARD, _CARD):
        card = raw[i:i + _CARD]
        if not card.translate(None, _PRINTABLE):
            if card[:8] == b"END     ":
                break
            continue
        # byte by byte, as astropy does when it opens a file: the card keeps
        # its 80 columns and a value the same length
        text = "".join(chr(b) if 0x20 <= b <= 0x7E else "?" for b in card)
        fixed = text.encode("ascii")[:_CARD].ljust(_CARD)
        out[i:i + _CARD] = fixed
        bad = bytes(b for b in card if b > 0x7E or b < 0x20)
        value = fits.Card.fromstring(fixed.decode("ascii"))
        try:
            shown = value.value
        except Exception:  # still not a valid card: astropy's own repair reads it
            shown = fixed[10:].decode("ascii").strip()
        notes.append(f"card {_card_keyword(card)} has non-ASCII bytes ({bad!r}); "
                     f"read as {shown!r}")
    return bytes(out), notes


_PRINTABLE = bytes(range(0x20, 0x7F))


def sanitize_header(header):
    """``(header, notes)`` for an astropy Header (a file astropy opened): the
    same header when every card parses, else a rebuilt one in which bad cards
    were read leniently (see :func:`sanitize_header_bytes`)."""
    notes = []
    for card in header.cards:
        try:
            card.value
        except Exception:
            notes.append(card.keyword)
    if not notes:
        return header, []
    raw = b"".join(c.image.encode("latin-1", "replace") for c in header.cards)
    fixed, notes = sanitize_header_bytes(raw + b"END".ljust(_CARD))
    try:
        return fits.Header.fromstring(fixed), notes
    except Exception:
        bad = [c.keyword for c in header.cards if not _parses(c)]
        h = header.copy()
        for k in bad:
            h.remove(k, ignore_missing=True, remove_all=True)
        return h, [f"card {k} cannot be parsed; ignored" for k in bad]


def _parses(card):
    try:
        card.value
        return True
    except Exception:
        return False


class HeaderCards:
    """Keyword lookup straight on the bytes of one header, for speed.

    ``key in cards``, ``cards[key]`` and ``cards.get(key, default)`` behave
    like an :class:`astropy.io.fits.Header` for ordinary 8-character keywords
    (first occurrence wins; strings lose trailing blanks; ``T``/``F`` are
    bools; an undefined value is ``None``), but parse only the cards asked
    for. HIERARCH cards (``'ESO DPR TYPE'``) are indexed on the bytes too.
    Anything unusual -- commentary cards, CONTINUE'd strings, complex
    numbers -- is answered by the full astropy header, which :attr:`header`
    builds once, on first use. Keys may be HIERARCH names
    (:func:`normalize_keyword`). Non-ASCII cards are read
    leniently; ``warnings`` lists them (:func:`sanitize_header_bytes`).
    """

    __slots__ = ("raw", "_index", "_hier", "_values", "_header", "warnings")

    def __init__(self, raw: bytes):
        raw, self.warnings = sanitize_header_bytes(raw)
        self.raw = raw
        index = {}      # keyword -> offset of its (first) card
        hier = None     # HIERARCH keyword -> offset of the value after its '='
        for i in range(0, len(raw), _CARD):
            kw = raw[i:i + 8]
            if kw == b"END     ":
                break
            if kw == b"HIERARCH":            # ESO long keywords: 'HIERARCH ESO DPR TYPE ='
                j = raw.find(b"=", i + 9, i + _CARD)
                if j > 0:
                    name = normalize_keyword(raw[i + 9:j].decode("ascii", "replace"))
                    if name not in index:
                        index[name] = i
                        hier = {} if hier is None else hier
                        hier[name] = j + 1
                continue
            index.setdefault(kw.rstrip().decode("ascii", "replace").upper(), i)
        self._hier = hier or {}
        self._index = index
        self._values = {}
        self._header = None

    @property
    def parsed(self) -> bool:
        """True once the full astropy header has been built."""
        return self._header is not None

    @property
    def header(self) -> fits.Header:
        """The whole header, parsed by astropy (cached)."""
        if self._header is None:
            self._header = fits.Header.fromstring(self.raw)
        return self._header

    def __contains__(self, key):
        key = normalize_keyword(key)
        if key in _COMMENTARY:
            return key in self.header
        return key in self._index          # HIERARCH cards are indexed too

    def __getitem__(self, key):
        key = normalize_keyword(key)
        if key in _COMMENTARY:
            return self.header[key]
        if key in self._values:
            return self._values[key]
        i = self._index[key]               # KeyError like a Header
        v = self._hier.get(key)
        if v is None:
            v = i + 10 if self.raw[i + 8:i + 10] == b"= " else None
        value = _ASK_ASTROPY if v is None else _card_value(self.raw[v:i + _CARD])
        if value is _ASK_ASTROPY:
            value = self.header[key]
        self._values[key] = value
        return value

    def get(self, key, default=None):
        return self[key] if key in self else default



_ASK_ASTROPY = object()
_INT_RE = re.compile(rb"^[+-]?\d+$")
_FLOAT_RE = re.compile(rb"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[EeDd][+-]?\d+)?$")


def _card_value(rest):
    """The value of a card like astropy gives it, from the bytes after its
    ``=``, or _ASK_ASTROPY."""
    rest = rest.lstrip(b" ")
    if rest.startswith(b"'"):
        out, i = [], 1
        while True:
            j = rest.find(b"'", i)
            if j < 0:
                return _ASK_ASTROPY
            out.append(rest[i:j])
            if rest[j + 1:j + 2] == b"'":    # '' is a quote inside the string
                out.append(b"'")
                i = j + 2
                continue
            break
        text = b"".join(out).rstrip(b" ")
        if text.endswith(b"&"):              # may continue on CONTINUE cards
            return _ASK_ASTROPY
        try:
            return text.decode("ascii")
        except UnicodeDecodeError:
            return _ASK_ASTROPY
    token = rest.split(b"/", 1)[0].strip(b" ")
    if token == b"":
        return None                          # undefined value
    if token == b"T":
        return True
    if token == b"F":
        return False
    if _INT_RE.match(token):
        return int(token)
    if _FLOAT_RE.match(token):
        return float(token.replace(b"D", b"E").replace(b"d", b"e"))
    return _ASK_ASTROPY




class MergedCards:
    """Keyword lookup over one image HDU's header and the primary header
    (image first; :data:`LOCAL_KEYWORDS` from the image only).

    ``image`` and ``primary`` are :class:`HeaderCards` or astropy Headers
    (the same object for a primary-HDU image). ``key in m``, ``m[key]``,
    ``m.get(key, default)`` accept HIERARCH names. :attr:`header` is the
    equivalent :class:`MergedHeader` (built on first use). ``path``, ``hdu``
    (label as asked or the index found) and ``index`` say what was read.
    """

    __slots__ = ("image", "primary", "path", "hdu", "index", "_merged")

    def __init__(self, image, primary, *, path=None, hdu=None, index=0):
        self.image, self.primary = image, primary
        self.path, self.hdu, self.index = path, hdu, index
        self._merged = None

    def __contains__(self, key):
        key = normalize_keyword(key)
        if key in self.image:
            return True
        return self.primary is not self.image and not _is_local(key) and key in self.primary

    def __getitem__(self, key):
        key = normalize_keyword(key)
        if key in self.image:
            return self.image[key]
        if self.primary is not self.image and not _is_local(key) and key in self.primary:
            return self.primary[key]
        raise KeyError(f"Keyword {key!r} not found.")

    def get(self, key, default=None):
        key = normalize_keyword(key)
        if key in self.image:
            return self.image[key]
        if self.primary is not self.image and not _is_local(key) and key in self.primary:
            return self.primary[key]
        return default

    @property
    def warnings(self):
        """Notes about cards read leniently, image header first, each once."""
        out = []
        for h in (self.image, self.primary):
            for w in getattr(h, "warnings", ()):
                if w not in out:
                    out.append(w)
        return out

    @property
    def header(self) -> "MergedHeader":
        if self._merged is None:
            self._merged = merge_headers(_astropy(self.image), _astropy(self.primary),
                                         path=self.path, hdu=self.hdu, index=self.index,
                                         warnings=self.warnings)
        return self._merged


def _astropy(h):
    return h.header if isinstance(h, HeaderCards) else h


class MergedHeader(fits.Header):
    """An astropy Header holding the image HDU's cards followed by the
    primary header's cards that the image header lacks (commentary and
    :data:`LOCAL_KEYWORDS` excepted), with what was read: ``path``, ``hdu``
    (label of the HDU actually read, for messages ``FILE[HDU]``),
    ``hdu_index`` (its index in the file; not ``index``, which is a Header
    method) and ``warnings`` (cards read leniently). Its BZERO/BSCALE/NAXISn are the
    image HDU's, so it describes the stored image exactly."""

    path = None
    hdu = None
    hdu_index = 0
    warnings = ()

    @property
    def where(self):
        """``"FILE[HDU]"`` for one-line messages."""
        return f"{self.path}[{self.hdu}]"


def merge_headers(image, primary, *, path=None, hdu=None, index=0, warnings=()):
    """The :class:`MergedHeader` of an image header and its file's primary
    header (pass the same object twice for a primary-HDU image).

    Example
    -------
    >>> from astropy.io import fits
    >>> p = fits.Header({"GAIN": 1.1, "BZERO": 0}); e = fits.Header({"EXTNAME": "SCI"})
    >>> m = merge_headers(e, p, hdu=1)
    >>> m["GAIN"], "BZERO" in m, m.hdu
    (1.1, False, 1)
    """
    out = MergedHeader(image)
    if primary is not None and primary is not image:
        for card in primary.cards:
            key = card.keyword
            if key in _COMMENTARY or _is_local(key) or key in out:
                continue
            out.append(card, end=True)
    out.path, out.hdu, out.hdu_index = path, hdu, index
    out.warnings = list(warnings)
    return out
