"""FITS image sections (``DATASEC``, ``BIASSEC``, ``TRIMSEC``, ``CCDSEC``, ...).

A section is written ``'[x1:x2,y1:y2]'``: ``x`` runs along ``NAXIS1``
(columns), ``y`` along ``NAXIS2`` (rows); numbers are 1-based and both ends
are inclusive, so ``'[1:50,1:100]'`` is 50 columns by 100 rows. A range with
``x1 > x2`` (or ``y1 > y2``) is *reversed*: the same pixels read backwards,
as some instruments write for amplifiers that read out the other way.
``*`` stands for the whole axis (IRAF notation). Whitespace anywhere is
ignored. Steps (``[1:100:2,...]``) are not part of the header convention and
are rejected.

This is the one place where FITS regions become numpy indices (DESIGN.md:
"convert once, in io"): :attr:`Section.slices` gives 0-based, ascending
``(slice_y, slice_x)`` for ``array[...]`` on ``(ny, nx)`` arrays, and
:func:`apply_section` returns the view in the section's own orientation
(flipped where a range is reversed).

Errors are :class:`SectionError` (a ``ValueError``) whose text is one line,
``"<where>: <problem>"``, e.g.
``raw/b1.fits[0] BIASSEC: malformed section '[1:50,1:]' (expected [x1:x2,y1:y2], 1-based)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Section", "SectionError", "parse_section", "apply_section", "header_section"]

#: Keywords that hold sections in detector (unbinned) coordinates: they are
#: not checked against the image shape by :func:`header_section`.
DETECTOR_KEYWORDS = ("CCDSEC", "DETSEC", "AMPSEC")

_RANGE = r"\s*(?:(\*)|(-?\d+)\s*:\s*(-?\d+))\s*"
_SECTION_RE = re.compile(rf"^\s*\[{_RANGE},{_RANGE}\]\s*$", re.ASCII)
_EXPECTED = "(expected [x1:x2,y1:y2], 1-based)"


class SectionError(ValueError):
    """A malformed or out-of-bounds section. ``str(err)`` is one line:
    ``"<where>: <problem>"`` (just ``"<problem>"`` when ``where`` is empty)."""

    def __init__(self, problem, where=""):
        self.problem = problem
        self.where = where
        super().__init__(f"{where}: {problem}" if where else problem)

    def __reduce__(self):  # picklable across Dask workers
        return (type(self), (self.problem, self.where))


@dataclass(frozen=True)
class Section:
    """A rectangular FITS section, kept in FITS numbers.

    ``x1, x2`` (columns, ``NAXIS1``) and ``y1, y2`` (rows, ``NAXIS2``) are
    1-based and inclusive; ``x1 > x2`` means the columns are read in reverse.
    An axis given as ``*`` without a shape to resolve it against is stored as
    ``None, None`` and means "the whole axis".
    """

    x1: int | None
    x2: int | None
    y1: int | None
    y2: int | None

    def __post_init__(self):
        for a, b in ((self.x1, self.x2), (self.y1, self.y2)):
            if (a is None) != (b is None):
                raise SectionError(f"range needs both ends, got {a}:{b}")
            if a is not None and (int(a) != a or int(b) != b or min(a, b) < 1):
                raise SectionError(f"range {a}:{b} must be integers >= 1 (1-based)")

    # --- orientation ------------------------------------------------------
    @property
    def flip_x(self) -> bool:
        """True if the columns are reversed (``x1 > x2``)."""
        return self.x1 is not None and self.x1 > self.x2

    @property
    def flip_y(self) -> bool:
        """True if the rows are reversed (``y1 > y2``)."""
        return self.y1 is not None and self.y1 > self.y2

    # --- numpy view --------------------------------------------------------
    @staticmethod
    def _slice(a, b):
        if a is None:
            return slice(None)
        lo, hi = min(a, b), max(a, b)
        return slice(lo - 1, hi)

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(slice_y, slice_x)``: 0-based, ascending (step ``None``), covering
        the section's pixels. Orientation is in :attr:`flip_y` / :attr:`flip_x`;
        :func:`apply_section` applies both."""
        return self._slice(self.y1, self.y2), self._slice(self.x1, self.x2)

    @property
    def shape(self) -> tuple[int | None, int | None]:
        """``(ny, nx)`` in pixels; ``None`` for an unresolved ``*`` axis."""
        def n(a, b):
            return None if a is None else abs(b - a) + 1
        return n(self.y1, self.y2), n(self.x1, self.x2)

    def resolve(self, shape) -> "Section":
        """This section with ``*`` axes replaced by the full range of an image
        of ``shape = (ny, nx)`` (no bounds check; see :func:`parse_section`)."""
        ny, nx = shape
        x1, x2 = (1, nx) if self.x1 is None else (self.x1, self.x2)
        y1, y2 = (1, ny) if self.y1 is None else (self.y1, self.y2)
        return Section(x1, x2, y1, y2)

    def __str__(self):
        def r(a, b):
            return "*" if a is None else f"{a}:{b}"
        return f"[{r(self.x1, self.x2)},{r(self.y1, self.y2)}]"


def parse_section(text, *, shape=None, where="") -> Section:
    """Parse a FITS section string ``'[x1:x2,y1:y2]'``.

    Parameters
    ----------
    text : str
        The header value, e.g. ``'[51:1074,1:226]'`` or ``'[*,1:100]'``.
    shape : (ny, nx), optional
        Shape of the image the section refers to (pixels). When given, ``*``
        is resolved to the full axis and both ends of each range must lie in
        ``1..nx`` (x) and ``1..ny`` (y).
    where : str
        Prefix for error messages, conventionally ``"FILE[HDU] KEYWORD"``.

    Returns :class:`Section`; raises :class:`SectionError` (one line).
    """
    if not isinstance(text, str):
        raise SectionError(f"section must be a string like '[x1:x2,y1:y2]', "
                           f"got {text!r}", where)
    m = _SECTION_RE.match(text)
    if m is None:
        raise SectionError(f"malformed section {text!r} {_EXPECTED}", where)
    star_x, x1, x2, star_y, y1, y2 = m.groups()
    nums = [int(v) for v in (x1, x2, y1, y2) if v is not None]
    if any(v < 1 for v in nums):
        raise SectionError(f"section {text!r} has a pixel number < 1 {_EXPECTED}", where)
    sec = Section(None if star_x else int(x1), None if star_x else int(x2),
                  None if star_y else int(y1), None if star_y else int(y2))
    if shape is None:
        return sec
    ny, nx = (int(s) for s in shape)
    sec = sec.resolve((ny, nx))
    for axis, a, b, n in (("x", sec.x1, sec.x2, nx), ("y", sec.y1, sec.y2, ny)):
        if max(a, b) > n:
            raise SectionError(f"section {text!r} exceeds the image: {axis} range "
                               f"{a}:{b} outside 1:{n} (image is {nx} x {ny}, "
                               "NAXIS1 x NAXIS2)", where)
    return sec


def apply_section(array, section):
    """The part of ``array`` (shape ``(..., ny, nx)``) inside ``section``, as a
    view, flipped along any reversed axis, so ``apply_section(a, s)[0, 0]`` is
    pixel ``(x1, y1)``. Works for numpy and dask arrays. Raises
    :class:`SectionError` if the section does not fit in the array."""
    if isinstance(section, str):
        section = parse_section(section)
    ny, nx = array.shape[-2:]
    if section.x1 is not None and max(section.x1, section.x2) > nx or \
            section.y1 is not None and max(section.y1, section.y2) > ny:
        raise SectionError(f"section {section} exceeds the array of shape (ny, nx) = "
                           f"({ny}, {nx})")
    sy, sx = section.slices
    out = array[..., sy, sx]
    if section.flip_y:
        out = out[..., ::-1, :]
    if section.flip_x:
        out = out[..., :, ::-1]
    return out


def header_section(header, keyword, *, shape="header", path=None, hdu=None):
    """The section in ``header[keyword]``, or ``None`` if the keyword is absent.

    ``shape`` is the image shape ``(ny, nx)`` to check against; the default
    ``"header"`` takes it from ``NAXIS2, NAXIS1`` (or ``ZNAXIS*`` for a
    tile-compressed header) for image-pixel sections (DATASEC, BIASSEC,
    TRIMSEC, ...), but not for :data:`DETECTOR_KEYWORDS` (CCDSEC, DETSEC,
    AMPSEC), which are in unbinned detector pixels. Pass ``None`` for no
    check. Errors name ``path[hdu] KEYWORD``; for a
    :class:`~crdask.io.headers.MergedHeader` (what
    :func:`~crdask.io.raw.read_header` returns) ``path`` and ``hdu`` default
    to the file and the HDU actually read, and a keyword in the primary
    header of a MEF file is found. HIERARCH names work
    (``'ESO DET OUT1 DATASEC'``).
    """
    path = getattr(header, "path", None) if path is None else path
    hdu = getattr(header, "hdu", None) if hdu is None else hdu
    keyword = " ".join(keyword.split()).upper().removeprefix("HIERARCH ")
    if keyword not in header:
        return None
    if isinstance(shape, str) and shape == "header":
        shape = None
        if keyword not in DETECTOR_KEYWORDS:
            z = "Z" if "ZNAXIS1" in header else ""
            if f"{z}NAXIS2" in header:
                shape = (header[f"{z}NAXIS2"], header[f"{z}NAXIS1"])
    where = keyword
    if path is not None:
        where = f"{path}[{hdu}] {keyword}" if hdu is not None else f"{path} {keyword}"
    return parse_section(header[keyword], shape=shape, where=where)

